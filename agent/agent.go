// Package agent is the device daemon's shell: it owns the device's
// workloads and converges them on the desired state, whether that came from
// a local apply or from the fleet. One loop gathers a snapshot (desired
// state, containers, health, images, locks, restart requests), asks
// reconcile.Plan what to do, persists the decision, then carries it out.
// Containers run under the root's monitor process, so they outlive the agent.
//
// The agent reaches the container runtime and the image store through the
// narrow Containers and Images interfaces, and keeps all its state in
// agent/store. The fleet link (agent/fleetlink) and the local API
// (agent/api) reach the agent through interfaces of their own, which
// *Agent implements; agent/daemon wires them together.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tender-edge/tender/agent/policy"
	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/sync/wire"
)

// Deps are the agent's collaborators, wired by agent/daemon (or a test).
type Deps struct {
	Log zerolog.Logger
	// Now is the clock (default time.Now).
	Now        func() time.Time
	Store      *store.DB
	Containers Containers
	Images     Images
	// Capacity is what the device gives to apps (default: read from the
	// host, minus the configured reserve).
	Capacity *reconcile.Capacity
	// Policy bounds what any app may ask for, whoever signed it (default:
	// policy.Default()).
	Policy *policy.Policy
	// Version is the agent's version as stamped at build time; reports
	// carry it.
	Version string
}

// Agent is the daemon's shell. Create it with New and run it with Run.
type Agent struct {
	cfg     Config
	log     zerolog.Logger
	now     func() time.Time
	version string

	db     *store.DB
	policy *policy.Policy
	images Images
	rt     Containers
	health *healthMonitor
	exits  *exitWatcher
	pulls  *puller

	capacity reconcile.Capacity
	kick     chan struct{}
	changed  chan struct{} // signalled after each round and event
	ready    chan struct{} // closed after the first round

	known     []wire.App // app versions that may have containers (loop only)
	committed []byte     // the progress last committed, as JSON (loop only)

	mu       sync.Mutex // guards status and requests
	status   []reconcile.AppStatus
	requests map[string]time.Time // restart requests: runtime name → start of the run to restart
}

// New prepares the agent over its store, runtime and image store. It
// starts nothing.
func New(cfg Config, deps Deps) (*Agent, error) {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Store == nil || deps.Containers == nil || deps.Images == nil {
		return nil, errors.New("agent: store, containers and images are required")
	}
	if deps.Policy == nil {
		deps.Policy = policy.Default()
	}
	a := &Agent{
		cfg: cfg, log: deps.Log, now: deps.Now, version: agentVersion(deps.Version),
		db: deps.Store, policy: deps.Policy, images: deps.Images, rt: deps.Containers,
		kick: make(chan struct{}, 1), changed: make(chan struct{}, 1), ready: make(chan struct{}),
		requests: map[string]time.Time{},
	}
	a.health = newHealthMonitor(a.wake, deps.Now, deps.Log)
	a.health.event = a.event
	a.exits = newExitWatcher(a.wake)
	a.pulls = newPuller(deps.Images, cfg.RegistryConfig(), a.wake, deps.Now, deps.Log)
	a.pulls.pulled = func(ref string) {
		a.event("", wire.EventPulled, ref)
		a.enforceBudget()
	}
	if deps.Capacity != nil {
		a.capacity = *deps.Capacity
	} else {
		var err error
		if a.capacity, err = deviceCapacity(cfg); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Wake asks the loop for a new round.
func (a *Agent) Wake() { a.wake() }

func (a *Agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Changed is signalled after each round and each event: the status or the
// event log may have changed. It has one reader (the fleet link).
func (a *Agent) Changed() <-chan struct{} { return a.changed }

func (a *Agent) notifyChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Ready is closed once the first round has run.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run converges the device until ctx ends. On the way out it stops and
// waits for every goroutine it started (probes, exit watchers, pulls);
// containers keep running.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	a.health.start(ctx)
	a.pulls.start(ctx)
	g.Go(func() error { return a.loop(ctx) })
	err := g.Wait()
	a.health.stopAll()
	a.exits.stopAll()
	a.pulls.wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// event records one event outside a reconcile round (health changes,
// finished pulls).
func (a *Agent) event(app string, kind wire.EventKind, msg string) {
	err := a.db.Update(func(tx *store.Tx) error {
		_, err := tx.AppendEvents(store.Event{Time: a.now(), App: app, Kind: kind, Message: msg})
		return err
	})
	if err != nil {
		a.log.Warn().Err(err).Str("event", string(kind)).Msg("recording event")
	}
	a.notifyChanged()
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

// loop is the only goroutine that acts on containers.
func (a *Agent) loop(ctx context.Context) error {
	if err := a.rebuild(); err != nil {
		a.log.Error().Err(err).Msg("rebuilding desired state from containers")
	}
	a.enforceBudget()
	first := true
	for {
		wakeAt, err := a.reconcileOnce(ctx)
		if err != nil {
			a.log.Warn().Err(err).Msg("reconcile round")
		}
		if first {
			first = false
			close(a.ready)
		}
		wait := a.cfg.ReconcileInterval.Duration
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

// reconcileOnce runs one round: snapshot, plan, persist, act. A failed
// action is logged once, where it is handled (act), and retried soon; the
// round's error is for a round that could not plan or persist.
func (a *Agent) reconcileOnce(ctx context.Context) (time.Time, error) {
	in, ctrs, err := a.snapshot()
	if err != nil {
		return time.Time{}, fmt.Errorf("snapshot: %w", err)
	}
	d := reconcile.Plan(in)
	if err := a.persist(d, in); err != nil {
		return time.Time{}, err
	}
	a.known = knownApps(in.Desired, d.Progress)
	failed := a.act(ctx, d.Actions)
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
	a.notifyChanged()
	wake := d.Wake
	if failed > 0 {
		// Try again soon, but not in a tight loop. Each failure was
		// logged where it happened (act).
		if retry := in.Now.Add(2 * time.Second); wake.IsZero() || retry.Before(wake) {
			wake = retry
		}
	}
	return wake, nil
}

// persist commits the decision's progress and events, in one transaction,
// unless the round changed nothing: flash storage wears, and every bbolt
// commit is an fsync.
func (a *Agent) persist(d reconcile.Decision, in reconcile.Input) error {
	events := append(d.Events, containerEvents(d.Actions, in.Observed)...)
	progress, err := json.Marshal(d.Progress)
	if err != nil {
		return fmt.Errorf("persist decision: %w", err)
	}
	if len(events) > 0 || !bytes.Equal(progress, a.committed) {
		if err := a.db.Commit(d.Progress, events, in.Now); err != nil {
			return fmt.Errorf("persist decision: %w", err)
		}
		a.committed = progress
	}
	for _, ev := range events {
		a.log.Info().Str("app", ev.App).Str("event", string(ev.Kind)).Str("reason", ev.Reason).Msg("app event")
	}
	return nil
}

// act carries out a round's actions; after an action of an app fails, the
// app's other actions wait for the next round. It returns how many failed.
func (a *Agent) act(ctx context.Context, acts []reconcile.Action) int {
	failed := map[string]bool{}
	for _, act := range acts {
		if failed[act.App] {
			continue
		}
		if err := a.apply(ctx, act); err != nil {
			failed[act.App] = true
			a.log.Warn().Err(err).Str("app", act.App).Str("action", string(act.Kind)).
				Str("container", act.Name).Str("image", act.Image).Msg("action failed")
		}
	}
	return len(failed)
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
			if o, ok := obs[act.Name]; ok && o.Status == reconcile.StatusExited && !o.RestartRequested {
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

// owned tells the daemon's containers from containers run by hand: the
// daemon writes labelApp on every container it creates, and nothing else
// can (the CLI sets no labels), whatever the container is named.
func owned(c *container.Container) bool {
	if c.Labels[labelApp] == "" {
		return false
	}
	_, _, _, ok := reconcile.ParseName(c.Name)
	return ok
}

// snapshot gathers reconcile's input from the store, the runtime, the
// health monitor, the image store, the lock files and restart requests.
func (a *Agent) snapshot() (reconcile.Input, []*container.Container, error) {
	now := a.now()
	desired, err := a.db.Desired()
	if err != nil && !errdefs.IsNotFound(err) {
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
		Images: map[string]bool{}, Locked: map[string]bool{}, Refused: map[string]string{},
	}
	a.mu.Lock()
	present := map[string]bool{}
	for _, c := range ctrs {
		present[c.Name] = true
	}
	for name := range a.requests {
		if !present[name] {
			delete(a.requests, name)
		}
	}
	for _, c := range ctrs {
		if !owned(c) {
			continue
		}
		o := reconcile.Observed{
			Name: c.Name, Status: reconcile.RunState(c.State.Status), ExitCode: c.State.ExitCode,
			OOMKilled: c.State.OOMKilled, StartedAt: c.State.StartedAt, FinishedAt: c.State.FinishedAt,
		}
		if run, ok := a.requests[c.Name]; ok {
			if c.State.StartedAt.Equal(run) {
				o.RestartRequested = true
			} else {
				delete(a.requests, c.Name) // done: this is a later run
			}
		}
		if c.State.Status == container.Running {
			o.Health, o.HealthSince = a.health.status(c.ID)
		}
		in.Observed = append(in.Observed, o)
	}
	a.mu.Unlock()
	conflicts := portConflicts(desired.Apps)
	for _, app := range desired.Apps {
		if err := a.policy.Check(app); err != nil {
			in.Refused[app.Name] = strings.ReplaceAll(err.Error(), "\n", "; ")
		} else if err := conflicts[app.Name]; err != nil {
			in.Refused[app.Name] = err.Error()
		} else if usesBridge(app) {
			if err := bridgeProbe(); err != nil {
				in.Refused[app.Name] = "network bridge cannot run on this host: " + err.Error()
			}
		}
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
		if c.State.Status != container.Running || !owned(c) {
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

// Desired is the stored desired document (errdefs.ErrNotFound if none).
func (a *Agent) Desired() (store.Desired, error) { return a.db.Desired() }

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
