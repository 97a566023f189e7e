// Package agent is the device daemon: it owns the device's workloads and
// converges them on the desired state, from a local apply today and from
// the fleet over MQTT later. It is the shell around agent/reconcile: one
// loop gathers a snapshot (desired state, containers, health, images,
// locks), asks reconcile.Plan what to do, persists the decision, then
// carries it out. Containers run under shims, so they outlive the agent.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

// Deps are the agent's collaborators that main wires in.
type Deps struct {
	Log zerolog.Logger
	// Now is the clock (default time.Now); tests and the RTC-less time
	// floor of issue 5 pass their own.
	Now func() time.Time
	// Getenv reads the environment (systemd's notify variables).
	Getenv func(string) string
}

// Agent is the daemon. Create it with New and run it with Run.
type Agent struct {
	cfg    Config
	log    zerolog.Logger
	now    func() time.Time
	notify notifier

	db     *store.DB
	images *image.Store
	rt     *container.Runtime
	health *healthMonitor
	exits  *exitWatcher
	pulls  *puller

	capacity reconcile.Capacity
	kick     chan struct{}
	fleet    *fleetLink // nil when standalone (fleet.go)

	known     []wire.App // app versions that may have containers (loop only)
	committed []byte     // the progress last committed, as JSON (loop only)

	mu     sync.Mutex // guards status
	status []reconcile.AppStatus
}

// New opens the agent's state: the bbolt state file (a corrupt one is set
// aside and reported, never fatal), the image store and the containers.
// It starts nothing.
func New(cfg Config, deps Deps) (*Agent, error) {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	log := deps.Log
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	db, err := store.Open(filepath.Join(cfg.StateDir, "agent.db"), &store.Options{Now: deps.Now})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if db.Recovered != nil {
		log.Error().Str("kept_as", db.Recovered.Path).AnErr("cause", db.Recovered.Cause).
			Msg("state file was corrupt: set aside, rebuilding from the running containers")
	}
	images, err := image.Open(filepath.Join(cfg.StateDir, "images"), image.Options{Log: log, KeepLayerBlobs: true})
	if err != nil {
		db.Close()
		return nil, err
	}
	rt, err := container.New(cfg.StateDir, images, log)
	if err != nil {
		images.Close()
		db.Close()
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, now: deps.Now, notify: newNotifier(deps.Getenv),
		db: db, images: images, rt: rt,
		kick: make(chan struct{}, 1),
	}
	a.health = newHealthMonitor(a.wake, deps.Now, log)
	a.health.event = a.event
	a.exits = newExitWatcher(a.wake)
	a.pulls = newPuller(images, cfg.RegistryConfig(), a.wake, deps.Now, log)
	a.pulls.pulled = func(ref string) {
		a.event("", wire.EventPulled, ref)
		a.enforceBudget()
	}
	a.capacity, err = deviceCapacity(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	if cfg.Fleet.Broker != "" {
		if a.fleet, err = newFleetLink(a, deps); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// Close releases the state files. Containers keep running.
func (a *Agent) Close() error {
	return errors.Join(a.images.Close(), a.db.Close())
}

// Images is the agent's image store, for the local API.
func (a *Agent) Images() *image.Store { return a.images }

// Runtime is the agent's container runtime, for the local API.
func (a *Agent) Runtime() *container.Runtime { return a.rt }

// wake asks the loop for a new round.
func (a *Agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run serves the local API and converges the device until ctx ends. On the
// way out it stops its own goroutines; containers keep running.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	srv, err := newAPIServer(a)
	if err != nil {
		return err
	}
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error { return a.loop(ctx) })
	if a.fleet != nil {
		g.Go(func() error { return a.fleet.run(ctx) })
	}
	if a.notify.watchdog > 0 {
		g.Go(func() error { return a.watchdog(ctx) })
	}
	err = g.Wait()
	a.health.stopAll()
	a.exits.stopAll()
	a.pulls.wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (a *Agent) watchdog(ctx context.Context) error {
	t := time.NewTicker(a.notify.watchdog)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			_ = a.notify.notify("WATCHDOG=1")
		}
	}
}

// containerEvents are the events of a round's container actions, for the
// fleet: how each restarted container ended (exited with a code, or killed
// for memory), and which containers start.
func containerEvents(acts []reconcile.Action, observed []reconcile.Observed) []reconcile.Event {
	obs := map[string]reconcile.Observed{}
	for _, o := range observed {
		obs[o.Name] = o
	}
	var out []reconcile.Event
	for _, act := range acts {
		switch act.Kind {
		case reconcile.KindStart:
			out = append(out, reconcile.Event{App: act.App, Kind: reconcile.Phase(wire.EventStarted), Reason: act.Name + ": " + act.Reason})
		case reconcile.KindRestart:
			if o, ok := obs[act.Name]; ok && o.Status == reconcile.StatusExited {
				if o.OOMKilled {
					out = append(out, reconcile.Event{App: act.App, Kind: reconcile.Phase(wire.EventOOMKilled), Reason: act.Name + ": killed for memory"})
				} else {
					out = append(out, reconcile.Event{App: act.App, Kind: reconcile.Phase(wire.EventExited), Reason: fmt.Sprintf("%s: exit code %d", act.Name, o.ExitCode)})
				}
			}
			out = append(out, reconcile.Event{App: act.App, Kind: reconcile.Phase(wire.EventRestarted), Reason: act.Name + ": " + act.Reason})
		}
	}
	return out
}

// event records one event outside a reconcile round (health changes,
// finished pulls).
func (a *Agent) event(app string, kind wire.EventKind, msg string) {
	err := a.db.Update(func(tx *store.Tx) error {
		_, err := tx.AppendEvents(store.Event{Time: a.now(), App: app, Kind: string(kind), Message: msg})
		return err
	})
	if err != nil {
		a.log.Warn().Err(err).Str("event", string(kind)).Msg("recording event")
	}
	a.fleet.changed()
}

// appSpec is the known version of app with revision rev.
func (a *Agent) appSpec(app, rev string) *wire.App {
	for i := range a.known {
		if a.known[i].Name == app && a.known[i].Revision() == rev {
			return &a.known[i]
		}
	}
	return nil
}

// rebuild recreates a lost desired state (a state file that was corrupt,
// or deleted) from the app specs that the agent's containers carry.
func (a *Agent) rebuild() error {
	if _, err := a.db.Desired(); !errors.Is(err, store.ErrNotFound) {
		return err
	}
	ctrs, err := a.rt.List() // newest first
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var apps []wire.App
	for _, c := range ctrs {
		appName, _, _, ok := reconcile.ParseName(c.Name)
		raw := c.Labels[labelApp]
		if !ok || raw == "" || seen[appName] {
			continue
		}
		var app wire.App
		if err := json.Unmarshal([]byte(raw), &app); err != nil || app.Validate() != nil || app.Name != appName {
			continue
		}
		// Prefer a running container's version to one that exited.
		if c.State.Status != container.Running && hasRunning(ctrs, appName) {
			continue
		}
		seen[appName] = true
		apps = append(apps, app)
	}
	if len(apps) == 0 {
		return nil
	}
	if err := a.db.Update(func(tx *store.Tx) error {
		return tx.PutDesired(store.Desired{Generation: 1, Source: "recovered", Apps: apps})
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

func hasRunning(ctrs []*container.Container, app string) bool {
	for _, c := range ctrs {
		if n, _, _, ok := reconcile.ParseName(c.Name); ok && n == app && c.State.Status == container.Running {
			return true
		}
	}
	return false
}

// loop is the only goroutine that acts on containers.
func (a *Agent) loop(ctx context.Context) error {
	if err := a.rebuild(); err != nil {
		a.log.Error().Err(err).Msg("rebuilding desired state from containers")
	}
	a.enforceBudget()
	ready := false
	for {
		wakeAt, err := a.reconcileOnce(ctx)
		if err != nil {
			a.log.Warn().Err(err).Msg("reconcile round")
		}
		if !ready {
			ready = true
			_ = a.notify.notify("READY=1")
			a.log.Info().Str("state_dir", a.cfg.StateDir).Str("socket", a.cfg.Socket).Msg("agent ready")
		}
		wait := time.Duration(a.cfg.ReconcileInterval)
		if !wakeAt.IsZero() {
			if d := wakeAt.Sub(a.now()); d < wait {
				wait = max(d, 10*time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-a.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// reconcileOnce runs one round: snapshot, plan, persist, act.
func (a *Agent) reconcileOnce(ctx context.Context) (time.Time, error) {
	in, ctrs, err := a.snapshot()
	if err != nil {
		return time.Time{}, fmt.Errorf("snapshot: %w", err)
	}
	d := reconcile.Plan(in)
	events := append(d.Events, containerEvents(d.Actions, in.Observed)...)
	// A round that changes nothing writes nothing: flash storage wears,
	// and every bbolt commit is an fsync.
	progress, err := json.Marshal(d.Progress)
	if err != nil {
		return time.Time{}, fmt.Errorf("persist decision: %w", err)
	}
	if len(events) > 0 || !bytes.Equal(progress, a.committed) {
		if err := a.db.Commit(d.Progress, events, in.Now); err != nil {
			return time.Time{}, fmt.Errorf("persist decision: %w", err)
		}
		a.committed = progress
	}
	for _, ev := range events {
		a.log.Info().Str("app", ev.App).Str("event", string(ev.Kind)).Str("reason", ev.Reason).Msg("app event")
	}
	a.known = knownApps(in.Desired, d.Progress)
	var errs []error
	failed := map[string]bool{}
	for _, act := range d.Actions {
		if failed[act.App] {
			continue
		}
		if err := a.apply(ctx, act); err != nil {
			failed[act.App] = true
			errs = append(errs, fmt.Errorf("%s %s: %w", act.Kind, act.Name+act.Image, err))
			a.log.Warn().Err(err).Str("app", act.App).Str("action", string(act.Kind)).Str("container", act.Name).Msg("action failed")
		}
	}
	if len(d.Actions) > 0 {
		// Watch and probe what this round started, not what it found.
		if now, err := a.rt.List(); err == nil {
			ctrs = now
		}
	}
	a.track(ctrs, a.known)
	a.mu.Lock()
	a.status = d.Apps
	a.mu.Unlock()
	a.fleet.changed()
	wake := d.Wake
	if len(errs) > 0 {
		// Try again soon, but not in a tight loop.
		retry := in.Now.Add(2 * time.Second)
		if wake.IsZero() || retry.Before(wake) {
			wake = retry
		}
	}
	return wake, errors.Join(errs...)
}

// snapshot gathers reconcile's input from the store, the runtime, the
// health monitor, the image store and the lock files.
func (a *Agent) snapshot() (reconcile.Input, []*container.Container, error) {
	now := a.now()
	desired, err := a.db.Desired()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return reconcile.Input{}, nil, err
	}
	progress, err := a.db.Progress()
	if err != nil {
		return reconcile.Input{}, nil, err
	}
	ctrs, err := a.rt.List()
	if err != nil {
		return reconcile.Input{}, nil, err
	}
	in := reconcile.Input{
		Now: now, Desired: desired.Apps, Progress: progress, Capacity: a.capacity, Policy: a.cfg.Restarts.Policy(),
		Images: map[string]bool{}, Locked: map[string]bool{},
	}
	for _, c := range ctrs {
		if _, _, _, ok := reconcile.ParseName(c.Name); !ok {
			continue // not ours: a container run by hand
		}
		o := reconcile.Observed{
			Name: c.Name, Status: string(c.State.Status), ExitCode: c.State.ExitCode,
			OOMKilled: c.State.OOMKilled, StartedAt: c.State.StartedAt, FinishedAt: c.State.FinishedAt,
		}
		if c.State.Status == container.Running {
			o.Health, o.HealthSince = a.health.status(c.ID)
		}
		in.Observed = append(in.Observed, o)
	}
	for _, app := range desired.Apps {
		for _, c := range app.Containers {
			if _, ok := in.Images[c.Image]; !ok {
				_, err := a.images.Get(c.Image)
				in.Images[c.Image] = err == nil
			}
		}
		if _, err := os.Stat(a.lockFile(app.Name)); err == nil && !app.UpdateOverride {
			in.Locked[app.Name] = true
		}
	}
	return in, ctrs, nil
}

// knownApps are the versions of apps that may have containers: the desired
// ones, and the confirmed and target versions of each app's progress (a
// rolled-back app runs its previous version).
func knownApps(desired []wire.App, progress map[string]reconcile.Progress) []wire.App {
	out := append([]wire.App(nil), desired...)
	for _, p := range progress {
		for _, app := range []*wire.App{p.Confirmed, p.Target} {
			if app != nil {
				out = append(out, *app)
			}
		}
	}
	return out
}

// track keeps exit watchers and health probes on the running containers
// of desired apps, and nothing else.
func (a *Agent) track(ctrs []*container.Container, apps []wire.App) {
	specs := map[string]*wire.Container{}
	for i := range apps {
		app := &apps[i]
		rev := app.Revision()
		for j := range app.Containers {
			c := &app.Containers[j]
			specs[reconcile.ContainerName(app.Name, c.Name, rev)] = c
		}
	}
	running := map[string]bool{}
	for _, c := range ctrs {
		if c.State.Status != container.Running {
			continue
		}
		if _, _, _, ok := reconcile.ParseName(c.Name); !ok {
			continue
		}
		running[c.ID] = true
		a.exits.watch(c.ID, c.State.Pid, c.State.PidStart)
		if s := specs[c.Name]; s != nil && s.Health != nil {
			a.health.ensure(c, *s.Health)
		}
	}
	a.exits.keepOnly(running)
	a.health.keepOnly(running)
}

// Apps is the status of each desired app as of the last round.
func (a *Agent) Apps() []reconcile.AppStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]reconcile.AppStatus(nil), a.status...)
}

// Apply makes app part of the local desired state (replacing an app of
// the same name) after validating it, and wakes the loop.
func (a *Agent) Apply(app wire.App) error {
	if err := app.Validate(); err != nil {
		return err
	}
	err := a.updateDesired(func(apps []wire.App) ([]wire.App, error) {
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
		return nil, fmt.Errorf("%w: no app %q", ErrNotFound, name)
	})
	if err != nil {
		return err
	}
	a.log.Info().Str("app", name).Msg("app removed")
	a.wake()
	return nil
}

// ErrNotFound is returned for unknown apps.
var ErrNotFound = errors.New("not found")

// updateDesired edits the local desired document in one transaction,
// bumping its generation.
func (a *Agent) updateDesired(edit func([]wire.App) ([]wire.App, error)) error {
	return a.db.Update(func(tx *store.Tx) error {
		cur, err := tx.Desired()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		apps, err := edit(append([]wire.App(nil), cur.Apps...))
		if err != nil {
			return err
		}
		return tx.PutDesired(store.Desired{Generation: cur.Generation + 1, Source: "local", Apps: apps})
	})
}

// lockFile is where an app holds its update lock: the app's containers
// see the directory at /run/tender/lock and create the file APP in it.
func (a *Agent) lockFile(app string) string {
	return filepath.Join(a.lockDir(app), app)
}

func (a *Agent) lockDir(app string) string {
	return filepath.Join(a.cfg.StateDir, "locks", app)
}

// volumeDir is the host directory of an app's named volume; it survives
// updates and restarts.
func (a *Agent) volumeDir(app, name string) string {
	return filepath.Join(a.cfg.StateDir, "volumes", app, name)
}

// deviceCapacity reads the device's memory and CPUs and the reserve.
func deviceCapacity(cfg Config) (reconcile.Capacity, error) {
	reserve, err := quantity.ParseBytes(cfg.Reserve.Memory)
	if err != nil {
		return reconcile.Capacity{}, err
	}
	return reconcile.Capacity{
		Memory: memTotal(), ReserveMemory: reserve,
		MilliCPU: int64(goruntime.NumCPU()) * 1000, ReserveMilliCPU: int64(cfg.Reserve.CPU * 1000),
	}, nil
}

// memTotal is MemTotal from /proc/meminfo in bytes, or 0 (no check) if it
// cannot be read.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// sortedEnv turns an env map into KEY=VALUE entries in a stable order.
func sortedEnv(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
