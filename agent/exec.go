package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/internal/trace"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/spec"
	"github.com/tender-edge/tender/sync/wire"
)

// labelApp holds, on each container the daemon makes, the app spec it
// belongs to: it marks the container as the daemon's (see owned), and it
// is enough to rebuild the desired state from the running containers when
// the state file is lost. Only the daemon writes labels.
const labelApp = "tender.app"

// lockMount is where an app's containers see their update-lock directory.
const lockMount = "/run/tender/lock"

// apply carries out one action of a decision.
func (a *Agent) apply(ctx context.Context, act reconcile.Action) error {
	a.log.Info().Str("app", act.App).Str("action", string(act.Kind)).Str("container", act.Name).
		Str("image", act.Image).Str("reason", act.Reason).Msg("applying action")
	switch act.Kind {
	case reconcile.KindPull:
		a.pulls.request(act.Image)
		return nil
	case reconcile.KindStart:
		if c, err := a.rt.Get(act.Name); err == nil {
			if c.State.Status == container.Running {
				return nil
			}
			if c.State.Status == container.Created {
				_, err := a.rt.StartDetached(c.ID)
				return err
			}
			if err := a.rt.Delete(c.ID, true); err != nil {
				return err
			}
		}
		return a.createAndStart(ctx, act)
	case reconcile.KindRestart:
		if err := a.removeContainer(act.Name); err != nil {
			return err
		}
		return a.createAndStart(ctx, act)
	case reconcile.KindRemove:
		return a.removeContainer(act.Name)
	}
	return fmt.Errorf("unknown action %q", act.Kind)
}

// removeContainer stops (with its grace period) and deletes a container;
// one that is already gone is fine.
func (a *Agent) removeContainer(name string) error {
	c, err := a.rt.Get(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := a.rt.Stop(c.ID, -1); err != nil {
		return err
	}
	return a.rt.Delete(c.ID, true)
}

func (a *Agent) createAndStart(ctx context.Context, act reconcile.Action) error {
	if act.Spec == nil {
		return fmt.Errorf("no container spec for %s", act.Name)
	}
	// The app spec on the container marks it as the daemon's (owned) and
	// lets a lost state file be rebuilt from the containers.
	app := a.appSpec(act.App, act.Revision)
	if app == nil {
		return fmt.Errorf("no known version of app %s with revision %s", act.App, act.Revision)
	}
	o, err := a.createOptions(act.App, act.Name, act.Spec)
	if err != nil {
		return err
	}
	if o.Options.Network == spec.NetBridge {
		o.Net = bridgeOptions(app, act.Spec)
	}
	b, err := json.Marshal(app)
	if err != nil {
		return err
	}
	o.Labels = map[string]string{labelApp: string(b)}
	var tr *trace.Recorder
	if trace.Enabled() {
		tr = trace.Begin("agent")
		ctx = trace.With(ctx, tr)
	}
	c, err := a.rt.Create(ctx, o)
	if err != nil {
		return err
	}
	if td, ok := a.rt.(tracedStarter); ok && tr != nil {
		_, err = td.StartDetachedContext(ctx, c.ID)
	} else {
		_, err = a.rt.StartDetached(c.ID)
	}
	if err != nil {
		return err
	}
	if tr != nil {
		ev := a.log.Debug().Str("app", act.App).Str("container", act.Name)
		var sum time.Duration
		for _, p := range trace.Timeline(tr.Phases()) {
			ev = ev.Dur(p.Proc+"."+p.Name, p.Duration())
			sum += p.Duration()
		}
		ev.Dur("total", sum).Msg("start traced")
	}
	return nil
}

// tracedStarter is the runtime's start that reports its phases
// (TENDER_TRACE=1).
type tracedStarter interface {
	StartDetachedContext(ctx context.Context, ref string) (*container.Container, error)
}

// bridgeOptions put a bridged container of app in the app's own group and
// in its shared networks, under its name in the spec (and NAME.APP), with
// its ports.
func bridgeOptions(app *wire.App, c *wire.Container) *container.NetOptions {
	n := &container.NetOptions{Groups: []string{"app:" + app.Name}, Aliases: []string{c.Name, c.Name + "." + app.Name}}
	for _, s := range app.Networks {
		n.Groups = append(n.Groups, "net:"+s)
	}
	n.Ports = app.Ports()[c.Name]
	return n
}

// createOptions maps a container of an app spec onto the runtime.
func (a *Agent) createOptions(app, name string, c *wire.Container) (container.CreateOptions, error) {
	o := spec.Options{
		Args: c.Args, Env: sortedEnv(c.Env), Memory: c.Resources.MemoryBytes(),
		CPUs: float64(c.Resources.MilliCPU()) / 1000, Pids: c.Resources.Pids, Network: c.NetworkMode(),
	}
	lock := a.lockDir(app)
	if err := os.MkdirAll(lock, 0o755); err != nil {
		return container.CreateOptions{}, fmt.Errorf("lock directory: %w", err)
	}
	o.Volumes = append(o.Volumes, spec.Volume{Source: lock, Target: lockMount})
	for _, v := range c.Volumes {
		dir := a.volumeDir(app, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return container.CreateOptions{}, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		o.Volumes = append(o.Volumes, spec.Volume{Source: dir, Target: v.Path, ReadOnly: v.ReadOnly})
	}
	for _, p := range c.Devices {
		d, err := container.HostDevice(p)
		if err != nil {
			return container.CreateOptions{}, err
		}
		o.Devices = append(o.Devices, d)
	}
	return container.CreateOptions{Name: name, Image: c.Image, Options: o}, nil
}
