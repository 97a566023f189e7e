package controller

import (
	"context"
	"time"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/placement"
	"github.com/tender-edge/tender/fleet/store"
)

// Several controllers on one store (etcd) elect one leader. Only the
// leader runs the loop's rollouts and publishes desired documents, every
// write of its loop fenced by its term (store.WithFence: SECURITY.md
// F-13); every controller ingests (shared subscriptions), serves the API
// and the console, and writes what the API changes to the store.
//
//	turn (each tick, kick, leadership change)
//	  leading, same term as the loop's  → pass with the fenced context
//	  leading, new term                 → publisher's memory dropped, the
//	                                       loop read back from the store
//	                                       (loadLoop), then pass
//	  following                          → followPass: the snapshot the API
//	                                       reads, made from the store
//	  a fenced write refused (deposed)  → the loop is dropped, the term
//	                                       is not used again
//
// A new leader thus resumes each rollout where the store says it is: the
// stored rollouts and assignments are what the last leader committed
// under its term, and nothing it did after is (its writes were refused).

// Leadership says whether this controller leads (etcdstore.Election).
// With no Leadership (bbolt: one controller) it always leads, unfenced.
type Leadership interface {
	// Leading returns the fence of the current term and true while this
	// controller leads.
	Leading() (store.Fence, bool)
	// Changes is signalled when leading starts or stops.
	Changes() <-chan struct{}
	// Members lists the controllers, the leader marked.
	Members(ctx context.Context) ([]store.Member, error)
}

// leaderState is the loop goroutine's view of its term.
type leaderState struct {
	term    store.Fence // of the loop held, zero if none
	refused store.Fence // a term whose writes the store refused
}

// turn runs one pass as leader or follower; *lpp is the leader's loop
// state, nil while following.
func (c *Controller) turn(ctx context.Context, lpp **loop) {
	if c.ld == nil {
		c.pass(ctx, *lpp)
		return
	}
	f, leading := c.ld.Leading()
	if leading && f == c.lead.refused {
		leading = false // the session has not noticed yet; the store did
	}
	if !leading {
		if *lpp != nil {
			c.log.Warn().Str("term", c.lead.term.String()).Msg("following: the loop stops, another controller leads")
			*lpp, c.lead.term = nil, store.Fence{}
		}
		c.followPass(ctx)
		return
	}
	fctx := store.WithFence(ctx, f)
	if *lpp == nil || c.lead.term != f {
		c.pub.Reset()
		lp, err := c.loadLoop(fctx)
		if err != nil {
			c.log.Error().Err(err).Msg("leading: read the loop's state back")
			c.followPass(ctx)
			return
		}
		*lpp, c.lead.term = lp, f
		c.log.Info().Str("term", f.String()).Int("rollouts", len(lp.rollouts)).Msg("leading: the loop resumes from the store")
		c.audit(fctx, "controller", "leader", "controller "+c.cfg.ID, "", "leads ("+f.String()+")")
	}
	// A follower's API may have stored rollout commands, and its ingest
	// written devices this controller was not told of: read the commands
	// (a store read per rollout) at every pass, and every device unless
	// the store's watch tells which (issue 13: at 50,000 devices, reading
	// them all at every pass, on leader and follower, took most of etcd).
	c.cmds.Store(true)
	if !c.watching.Load() {
		(*lpp).resyncAt = time.Time{}
	}
	c.follow = nil // its copy misses what this term's passes take
	c.deposed.Store(false)
	c.pass(fctx, *lpp)
	if c.deposed.Load() {
		c.log.Warn().Str("term", f.String()).Msg("deposed: the store refused this term's writes; following")
		c.lead.refused = f
		*lpp, c.lead.term = nil, store.Fence{}
	}
}

// refusedByFence notes a loop write refused because this controller no
// longer leads.
func (c *Controller) refusedByFence(err error) {
	if store.IsDeposed(err) {
		c.deposed.Store(true)
	}
}

// followPass makes the snapshot the API reads from the store alone: the
// rollouts and assignments as the leader stored them, every device, and
// placement's decision over them (pure: nothing is written).
func (c *Controller) followPass(ctx context.Context) {
	now := c.cfg.Now()
	lp, err := c.loadLoop(ctx)
	if err != nil {
		c.log.Error().Err(err).Msg("follower: read the leader's state")
		return
	}
	// Every device at each pass, unless the store's watch says which
	// were written since the last (then every Config.Resync).
	ids, all := c.changes.takeWritten()
	if f := c.follow; f != nil && c.watching.Load() {
		lp.devs, lp.byID, lp.resyncAt = f.devs, f.byID, f.resyncAt
	}
	c.follow = nil
	if err := c.refreshDevices(ctx, lp, now, ids, all); err != nil {
		c.log.Error().Err(err).Msg("follower: read devices")
		return
	}
	c.follow = &loop{devs: lp.devs, byID: lp.byID, resyncAt: lp.resyncAt}
	apps, err := c.st.Apps.List(ctx)
	if err != nil {
		c.log.Error().Err(err).Msg("follower: list apps")
		return
	}
	current, specs, err := c.appSpecs(ctx, lp, apps)
	if err != nil {
		c.log.Error().Err(err).Msg("follower: read app revisions")
		return
	}
	pdevs, _ := placementDevices(lp.byID)
	if dec, err := placement.Place(placement.Request{Apps: specs, Devices: pdevs, Current: lp.assign, Reserve: c.cfg.Reserve, Grace: c.cfg.Grace, Now: now}); err == nil {
		lp.decision = &dec
	}
	for name := range lp.rollouts {
		sc, _, err := c.readCommands(ctx, name)
		if err == nil && len(sc.Commands) > 0 {
			// Commands the leader has not applied yet: Rollout shows
			// them replayed on the stored rollout (applied 0).
			continue
		}
		lp.rollouts[name].applied = sc.Last
	}
	c.publishView(ctx, lp, current)
}

// members lists the controllers for Status.
func (c *Controller) members(ctx context.Context) ([]api.Member, string, error) {
	if c.ld == nil {
		return nil, "self", nil
	}
	ms, err := c.ld.Members(ctx)
	if err != nil {
		return nil, "", err
	}
	out := make([]api.Member, len(ms))
	leader := "(none: an election is under way)"
	if st, stale := store.StaleReadsOf(ctx).Stale(); stale {
		// Read from a member without a quorum: there is no leader to
		// name (none can hold its term without one), and the members
		// listed are those registered as of st.
		for i, m := range ms {
			out[i] = api.Member{ID: m.ID, API: m.API, Started: m.Started, Self: m.ID == c.cfg.ID}
		}
		return out, "(unknown: the store has " + st.String() + ")", nil
	}
	for i, m := range ms {
		out[i] = api.Member{ID: m.ID, API: m.API, Started: m.Started, Leader: m.Leader, Self: m.ID == c.cfg.ID}
		if m.Leader {
			leader = m.ID
		}
	}
	return out, leader, nil
}
