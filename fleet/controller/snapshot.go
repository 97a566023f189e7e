package controller

import (
	"context"
	"fmt"
	"maps"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/placement"
	"github.com/tender-edge/tender/fleet/rollout"
	"github.com/tender-edge/tender/fleet/store"
)

// snapshot is what the loop publishes at the end of each pass for the
// API to read: nothing in it changes once published. A read is thus at
// most a pass old, and never waits for one; writes go to the store and
// kick the loop.
type snapshot struct {
	// assign and decision are placement's, of the pass (decision nil
	// before the first).
	assign   placement.Assignments
	decision *placement.Decision
	// running counts, per app, the devices assigned to it that report
	// running the version of revision rev.
	running map[string]running
	// rollouts are the views of every rollout, by app.
	rollouts map[string]rolloutSnap
}

type running struct {
	rev uint64
	n   int
}

// PhasePending is the rollout phase the API shows for an app revision
// applied since the loop's last pass.
const PhasePending = "pending"

// seen reports whether the pass of v saw app a at its current revision.
func (v *snapshot) seen(a store.App) bool {
	r, ok := v.running[a.Name]
	return ok && r.rev == a.Current
}

type rolloutSnap struct {
	view api.RolloutView
	// active: progressing or rolling back.
	active bool
	// applied is the sequence number of the last stored command the
	// loop applied to it (rolloutcmd.go).
	applied uint64
}

// publishView makes the snapshot of the loop's state; apps are the apps
// of the pass by name.
func (c *Controller) publishView(ctx context.Context, lp *loop, apps map[string]store.App) {
	v := &snapshot{assign: maps.Clone(lp.assign), decision: lp.decision, running: map[string]running{}, rollouts: map[string]rolloutSnap{}}
	for name, a := range apps {
		if a.Deleting {
			continue
		}
		s, err := c.spec(ctx, lp, name, a.Current)
		if err != nil {
			continue
		}
		n := 0
		for _, id := range lp.assign[name] {
			if d := lp.byID[id]; d != nil && d.Status.Report != nil {
				for _, as := range d.Status.Report.Apps {
					if as.Name == name && as.Version == s.Version && as.State == "running" {
						n++
					}
				}
			}
		}
		v.running[name] = running{rev: a.Current, n: n}
	}
	for name, r := range lp.rollouts {
		v.rollouts[name] = rolloutSnap{
			view:    rolloutView(name, r.r, func(rev uint64) (string, error) { s, err := c.spec(ctx, lp, name, rev); return s.Version, err }),
			active:  r.r.Phase == rollout.PhaseProgressing || r.r.Phase == rollout.PhaseRollingBack,
			applied: r.applied,
		}
	}
	c.view.Store(v)
	c.readyOnce.Do(func() { close(c.ready) })
}

// rolloutView is the API's view of rollout r of app; version gives the
// version of one of the app's revisions.
func rolloutView(app string, r *rollout.Rollout, version func(rev uint64) (string, error)) api.RolloutView {
	ver := func(rev string) string {
		if rev == "" {
			return ""
		}
		if v, err := version(revNum(rev)); err == nil {
			return fmt.Sprintf("%s (%s)", v, rev)
		}
		return rev
	}
	st := r.Status()
	v := api.RolloutView{App: app, ID: app + "@" + r.Spec.To, From: ver(r.Spec.From), To: ver(r.Spec.To), Phase: phaseOf(r), Reason: r.Reason, Started: r.Created}
	for _, w := range st.Waves {
		v.Waves = append(v.Waves, api.WaveCounts{Index: w.Wave - 1, Devices: w.Size, Pending: w.Pending, Offline: w.Offline,
			Updating: w.Updating, Updated: w.Updated, Healthy: w.Healthy, Failed: w.Failed, Deferred: w.Deferred, RolledBack: w.RolledBack})
	}
	return v
}
