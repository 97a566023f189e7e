package agent

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/sync/wire"
)

// Apply makes app part of the local desired state (replacing an app of
// the same name) after validating it, and wakes the loop.
func (a *Agent) Apply(app wire.App) error {
	if err := app.Validate(); err != nil {
		return err
	}
	if err := a.policy.Check(app); err != nil {
		return err
	}
	err := a.updateDesired(func(apps []wire.App) ([]wire.App, error) {
		var others []wire.App
		for _, o := range apps {
			if o.Name != app.Name {
				others = append(others, o)
			}
		}
		if err := admitNetwork(app, others); err != nil {
			return nil, err
		}
		for i := range apps {
			if apps[i].Name == app.Name {
				apps[i] = app
				return apps, nil
			}
		}
		return append(apps, app), nil
	})
	if err != nil {
		return err
	}
	a.log.Info().Str("app", app.Name).Str("version", app.Version).Msg("app applied")
	a.wake()
	return nil
}

// RemoveApp takes an app out of the local desired state.
func (a *Agent) RemoveApp(name string) error {
	err := a.updateDesired(func(apps []wire.App) ([]wire.App, error) {
		for i := range apps {
			if apps[i].Name == name {
				return append(apps[:i], apps[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("no app %q: %w", name, errdefs.ErrNotFound)
	})
	if err != nil {
		return err
	}
	a.log.Info().Str("app", name).Msg("app removed")
	a.wake()
	return nil
}

// updateDesired edits the local desired document in one transaction,
// under the next store generation.
func (a *Agent) updateDesired(edit func([]wire.App) ([]wire.App, error)) error {
	return a.db.Update(func(tx *store.Tx) error {
		cur, err := tx.Desired()
		if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		apps, err := edit(append([]wire.App(nil), cur.Apps...))
		if err != nil {
			return err
		}
		return tx.PutDesired(store.Desired{Generation: cur.Generation + 1, Source: store.SourceLocal, Apps: apps})
	})
}

// rebuild recreates a lost desired state (a state file that was corrupt,
// or deleted) from the app specs that the agent's containers carry.
func (a *Agent) rebuild() error {
	if _, err := a.db.Desired(); !errdefs.IsNotFound(err) {
		return err
	}
	ctrs, err := a.rt.List() // newest first
	if err != nil {
		return err
	}
	apps := appsOf(ctrs)
	if len(apps) == 0 {
		return nil
	}
	if err := a.db.Update(func(tx *store.Tx) error {
		return tx.PutDesired(store.Desired{Generation: 1, Source: store.SourceRecovered, Apps: apps})
	}); err != nil {
		return err
	}
	names := make([]string, len(apps))
	for i, app := range apps {
		names[i] = app.Name + "@" + app.Version
	}
	a.log.Warn().Strs("apps", names).Msg("state was lost: desired apps rebuilt from the running containers")
	return nil
}

// appsOf are the app specs the daemon's containers carry, one per app:
// a running container's version before one that exited, newer first.
func appsOf(ctrs []*container.Container) []wire.App {
	running := map[string]bool{}
	for _, c := range ctrs {
		if app, ok := ownedApp(c); ok && c.State.Status == container.Running {
			running[app.Name] = true
		}
	}
	seen := map[string]bool{}
	var apps []wire.App
	for _, c := range ctrs {
		app, ok := ownedApp(c)
		if !ok || seen[app.Name] || (running[app.Name] && c.State.Status != container.Running) {
			continue
		}
		seen[app.Name] = true
		apps = append(apps, app)
	}
	return apps
}

// ownedApp is the valid app spec a container of the daemon carries.
func ownedApp(c *container.Container) (wire.App, bool) {
	if !owned(c) {
		return wire.App{}, false
	}
	var app wire.App
	if err := json.Unmarshal([]byte(c.Labels[labelApp]), &app); err != nil || app.Validate() != nil {
		return wire.App{}, false
	}
	if name, _, _, _ := reconcile.ParseName(c.Name); name != app.Name {
		return wire.App{}, false
	}
	return app, true
}
