package agent

// What the fleet link (agent/fleetlink) asks of the agent.

import (
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/fleetlink"
	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/logs"
)

// Containers describes the daemon's containers by runtime name, with
// their resource use (read from their cgroups) if stats is set.
func (a *Agent) Containers(stats bool) map[string]fleetlink.Container {
	out := map[string]fleetlink.Container{}
	ctrs, err := a.rt.List()
	if err != nil {
		a.log.Warn().Err(err).Msg("listing containers")
		return out
	}
	for _, c := range ctrs {
		if !owned(c) {
			continue
		}
		fc := fleetlink.Container{
			Image: c.Image, Running: c.State.Status == container.Running,
			ExitCode: c.State.ExitCode, OOMKilled: c.State.OOMKilled, StartedAt: c.State.StartedAt,
		}
		if fc.Running {
			fc.Health, _ = a.health.status(c.ID)
			if stats {
				if s, err := a.rt.Stats(c); err == nil {
					fc.CPUNanos, fc.MemoryBytes, fc.MemoryLimit = s.CPUUsageNanos, s.MemoryUsage, s.MemoryLimit
				}
			}
		}
		if _, dup := out[c.Name]; !dup { // newest first
			out[c.Name] = fc
		}
	}
	return out
}

// Restart restarts the running containers of app (only the one named
// container, if set) at the next round. An operator's restart is not a
// failure: it counts toward neither the backoff nor crash-loop detection,
// so it can never make a new version look broken and rolled back.
func (a *Agent) Restart(app, ctr string) error {
	var names []string
	for _, st := range a.Apps() {
		if st.Name != app {
			continue
		}
		for _, c := range st.Containers {
			if ctr == "" || c.Name == ctr {
				names = append(names, c.ID)
			}
		}
		if len(names) == 0 {
			return fmt.Errorf("app %q has no container %q: %w", app, ctr, errdefs.ErrNotFound)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no app %q on this device: %w", app, errdefs.ErrNotFound)
	}
	// A request names the run it restarts by that run's start time: it is
	// done once the container has started again.
	runs := map[string]time.Time{}
	for _, n := range names {
		if c, err := a.rt.Get(n); err == nil {
			runs[n] = c.State.StartedAt
		}
	}
	if len(runs) == 0 {
		return fmt.Errorf("app %q has no container to restart yet: %w", app, errdefs.ErrFailedPrecondition)
	}
	a.mu.Lock()
	for n, started := range runs {
		a.requests[n] = started
	}
	a.mu.Unlock()
	a.log.Info().Str("app", app).Strs("containers", names).Msg("restart requested")
	a.wake()
	return nil
}

// Logs gives the last lines of the output of app's container ctr (or its
// only one) to w: the newest container of that name, a running one first.
func (a *Agent) Logs(app, ctr string, lines int, w fleetlink.LineWriter) error {
	c, err := a.findContainer(app, ctr)
	if err != nil {
		return err
	}
	err = logs.TailFunc(a.rt.LogDir(c), "container", lines, func(e logs.Entry) error {
		if !w(e.Text) {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		return nil
	}
	return err
}

var errEnough = errors.New("enough output")

// findContainer is the newest container of app (named ctr, or the app's
// only one), running ones first.
func (a *Agent) findContainer(app, ctr string) (*container.Container, error) {
	all, err := a.rt.List() // newest first
	if err != nil {
		return nil, err
	}
	var found []*container.Container
	for _, c := range all {
		an, n, _, ok := reconcile.ParseName(c.Name)
		if ok && owned(c) && an == app && (ctr == "" || n == ctr) {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		if ctr == "" {
			return nil, fmt.Errorf("no container of app %q: %w", app, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("no container %q of app %q: %w", ctr, app, errdefs.ErrNotFound)
	}
	for _, c := range found {
		if c.State.Status == container.Running {
			return c, nil
		}
	}
	return found[0], nil
}
