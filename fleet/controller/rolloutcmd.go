package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/rollout"
	"github.com/tender-edge/tender/fleet/store"
)

// Rollout commands (pause, resume, abort, undo) go from the API to the
// loop through the store: RolloutCommand checks the command against the
// stored rollout, appends it to the app's stored commands with a
// compare-and-swap on their revision (two operators racing: both are
// kept, in order, each checked against the other), and answers once that
// write is durable; the loop applies the stored commands at the start of
// its next pass, in order, stores the rollout, then drops them. A command
// applied again after a crash in between changes nothing (pause, resume
// and abort are idempotent; undo twice is refused, and logged).

// commandsKey is the store.Docs key of the commands stored for app's
// rollout.
func commandsKey(app string) string { return "controller/rollout-commands/" + app }

// storedCommands are the commands stored for an app's rollout.
type storedCommands struct {
	// Last is the sequence number of the newest command ever stored for
	// the app (kept when the commands are dropped).
	Last     uint64          `json:"last"`
	Commands []storedCommand `json:"commands,omitempty"`
}

type storedCommand struct {
	Seq     uint64 `json:"seq"`
	Command string `json:"command"`
	// To is the revision the rollout commanded goes to: a command left
	// for a rollout that a newer one replaced is dropped.
	To string    `json:"to"`
	At time.Time `json:"at"`
	By string    `json:"by"`
}

// readCommands returns app's stored commands and their revision (0: none
// stored yet).
func (c *Controller) readCommands(ctx context.Context, app string) (storedCommands, uint64, error) {
	b, err := c.st.Docs.Get(ctx, commandsKey(app))
	if errdefs.IsNotFound(err) {
		return storedCommands{}, 0, nil
	}
	if err != nil {
		return storedCommands{}, 0, fmt.Errorf("rollout commands of app %s: %w", app, err)
	}
	var sc storedCommands
	if err := json.Unmarshal(b.Data, &sc); err != nil {
		return storedCommands{}, 0, fmt.Errorf("rollout commands of app %s: %v: %w", app, err, errdefs.ErrDataLoss)
	}
	return sc, b.Rev, nil
}

// replay applies to r the stored commands for it, refusals ignored (as
// the loop will refuse them).
func replay(r *rollout.Rollout, sc storedCommands) {
	for _, sc := range sc.Commands {
		if sc.To == r.Spec.To {
			_ = r.Command(rollout.Command(sc.Command), sc.At)
		}
	}
}

// storedRollout reads app's rollout as the loop last stored it.
func (c *Controller) storedRollout(ctx context.Context, app string) (*rollout.Rollout, error) {
	b, err := c.st.Rollouts.Get(ctx, app)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("app %s has no rollout: %w", app, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var r rollout.Rollout
	if err := json.Unmarshal(b.Data, &r); err != nil {
		return nil, fmt.Errorf("rollout %s: %v: %w", app, err, errdefs.ErrDataLoss)
	}
	return &r, nil
}

// storeVersion gives the versions of app's revisions from the store.
func (c *Controller) storeVersion(ctx context.Context, app string) func(uint64) (string, error) {
	return func(rev uint64) (string, error) {
		r, err := c.st.Apps.Revision(ctx, app, rev)
		return r.Spec.Version, err
	}
}

// RolloutCommand implements api.Controller: the command is checked and
// stored, and answered with the rollout as it will be once the loop
// applies it (at its next pass).
func (c *Controller) RolloutCommand(ctx context.Context, who api.Caller, app, command string) (api.RolloutView, error) {
	switch cmd := rollout.Command(command); cmd {
	case rollout.Pause, rollout.Resume, rollout.Abort, rollout.Undo:
	default:
		return api.RolloutView{}, fmt.Errorf("rollout command %q: want pause, resume, abort or undo: %w", command, errdefs.ErrInvalidArgument)
	}
	now := c.cfg.Now()
	for range 16 {
		r, err := c.storedRollout(ctx, app)
		if err != nil {
			return api.RolloutView{}, err
		}
		sc, rev, err := c.readCommands(ctx, app)
		if err != nil {
			return api.RolloutView{}, err
		}
		replay(r, sc)
		if err := r.Command(rollout.Command(command), now); err != nil {
			return api.RolloutView{}, err
		}
		sc.Last++
		sc.Commands = append(sc.Commands, storedCommand{Seq: sc.Last, Command: command, To: r.Spec.To, At: now, By: who.Name})
		data, err := json.Marshal(sc)
		if err != nil {
			return api.RolloutView{}, err
		}
		if _, err := c.st.Docs.Put(ctx, commandsKey(app), data, rev); err != nil {
			if errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) {
				continue // another command got there first: check against it
			}
			return api.RolloutView{}, fmt.Errorf("store rollout command: %w", err)
		}
		c.cmds.Store(true)
		c.audit(ctx, who.Name, "rollout "+command, "app "+app, who.From, "")
		c.Kick()
		return rolloutView(app, r, c.storeVersion(ctx, app)), nil
	}
	return api.RolloutView{}, fmt.Errorf("rollout %s command %s: too many concurrent commands, try again: %w", app, command, errdefs.ErrConflict)
}

// Rollout implements api.Controller: the loop's last view of it, or,
// while a stored command waits for the loop, the stored rollout with the
// commands applied.
func (c *Controller) Rollout(ctx context.Context, app string) (api.RolloutView, error) {
	v, err := c.snapshot(ctx)
	if err != nil {
		return api.RolloutView{}, err
	}
	if a, err := c.st.Apps.Get(ctx, app); err == nil && !a.Deleting && !v.seen(a) {
		// Applied since the loop's last pass: its rollout, if it goes
		// anywhere, starts at the next one.
		to := revStr(a.Current)
		if r, err := c.st.Apps.Revision(ctx, app, a.Current); err == nil {
			to = fmt.Sprintf("%s (%s)", r.Spec.Version, to)
		}
		return api.RolloutView{App: app, ID: app + "@" + revStr(a.Current), To: to, Phase: PhasePending}, nil
	}
	rs, ok := v.rollouts[app]
	sc, _, err := c.readCommands(ctx, app)
	if err != nil {
		return api.RolloutView{}, err
	}
	if n := len(sc.Commands); n > 0 && (!ok || sc.Commands[n-1].Seq > rs.applied) {
		r, err := c.storedRollout(ctx, app)
		if err != nil {
			return api.RolloutView{}, err
		}
		replay(r, sc)
		return rolloutView(app, r, c.storeVersion(ctx, app)), nil
	}
	if !ok {
		return api.RolloutView{}, fmt.Errorf("app %s has no rollout: %w", app, errdefs.ErrNotFound)
	}
	return rs.view, nil
}

// takeCommands applies the stored commands to the loop's rollouts, in
// order: at the first pass, then after the API stored one. It returns,
// per app, the sequence number up to which they can be dropped once the
// rollout is stored.
func (c *Controller) takeCommands(ctx context.Context, lp *loop) map[string]uint64 {
	if !c.cmds.Swap(false) && lp.cmdsRead {
		return nil
	}
	lp.cmdsRead = true
	taken := map[string]uint64{}
	for name, r := range lp.rollouts {
		sc, _, err := c.readCommands(ctx, name)
		if err != nil {
			c.log.Error().Err(err).Str("app", name).Msg("loop: read rollout commands")
			c.cmds.Store(true) // again next pass
			continue
		}
		for _, sc := range sc.Commands {
			taken[name] = sc.Seq
			if sc.Seq <= r.applied {
				continue
			}
			r.applied = sc.Seq
			if sc.To != r.r.Spec.To {
				c.log.Warn().Str("app", name).Str("command", sc.Command).Str("for", sc.To).Str("rollout", r.r.Spec.To).
					Msg("rollout command for a rollout replaced since: dropped")
				continue
			}
			if err := r.r.Command(rollout.Command(sc.Command), sc.At); err != nil {
				c.log.Warn().Err(err).Str("app", name).Str("command", sc.Command).Msg("rollout command refused by the rollout's state now")
				c.audit(ctx, "controller", "rollout "+sc.Command+" refused", "app "+name, "", err.Error())
			}
		}
	}
	return taken
}

// doneCommands drops the commands taken once their rollout is stored.
func (c *Controller) doneCommands(ctx context.Context, taken map[string]uint64, saved map[string]bool) {
	for app, seq := range taken {
		if !saved[app] {
			c.cmds.Store(true) // dropped at a later pass
			continue
		}
		_, err := store.UpdateRollout(ctx, c.st.Docs, commandsKey(app), func(data []byte) ([]byte, error) {
			var sc storedCommands
			if err := json.Unmarshal(data, &sc); err != nil {
				return nil, fmt.Errorf("rollout commands of app %s: %v: %w", app, err, errdefs.ErrDataLoss)
			}
			kept := sc.Commands[:0]
			for _, c := range sc.Commands {
				if c.Seq > seq {
					kept = append(kept, c)
				}
			}
			sc.Commands = kept
			return json.Marshal(sc)
		})
		if err != nil {
			c.log.Error().Err(err).Str("app", app).Msg("loop: drop applied rollout commands")
		}
	}
}
