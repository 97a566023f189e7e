package agent

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/agent/health"
	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/nsenter"
	"github.com/tender-edge/tender/sync/wire"
)

// exitWatcher wakes the loop as soon as a container's process exits, so a
// crash is handled at once instead of at the next periodic round.
type exitWatcher struct {
	wake    func()
	mu      sync.Mutex
	watched map[string]func() // stops the watch
	wg      sync.WaitGroup    // the watch goroutines
}

func newExitWatcher(wake func()) *exitWatcher {
	return &exitWatcher{wake: wake, watched: map[string]func(){}}
}

func (w *exitWatcher) watch(id string, pid int, start uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.watched[id]; ok {
		return
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		w.wake() // already gone
		return
	}
	if s, err := nsenter.StartTime(pid); err != nil || s != start {
		unix.Close(fd)
		w.wake()
		return
	}
	// The pidfd waits in the Go poller, which holds no thread (a goroutine
	// blocked in poll(2) held one per container); closing it cancels.
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		w.wake()
		return
	}
	w.watched[id] = func() { f.Close() }
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer f.Close()
		// Read returns once the function reports the pidfd readable, as
		// it is when the process has exited, or with an error when the
		// watch is cancelled.
		err := rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return err == nil && n > 0
		})
		if err == nil {
			w.wake()
		}
	}()
}

// keepOnly stops watching containers that are not in ids.
func (w *exitWatcher) keepOnly(ids map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, cancel := range w.watched {
		if !ids[id] {
			cancel()
			delete(w.watched, id)
		}
	}
}

// stopAll stops every watch and waits for their goroutines.
func (w *exitWatcher) stopAll() {
	w.keepOnly(nil)
	w.wg.Wait()
}

// healthMonitor probes each running container that has a health check, on
// its own goroutine, and tells the loop when a status changes.
type healthMonitor struct {
	wake   func()
	event  func(app string, kind wire.EventKind, msg string) // health changes, for the fleet
	now    func() time.Time
	log    zerolog.Logger
	mu     sync.Mutex
	ctx    context.Context // the agent's run: probes end with it
	probes map[string]*prober
	wg     sync.WaitGroup // the probe goroutines
}

type prober struct {
	name   string // the container's runtime name
	cancel context.CancelFunc
	status health.Status
	since  time.Time
}

func newHealthMonitor(wake func(), now func() time.Time, log zerolog.Logger) *healthMonitor {
	return &healthMonitor{wake: wake, now: now, log: log, probes: map[string]*prober{}, ctx: context.Background()}
}

// start makes ctx the parent of every probe.
func (m *healthMonitor) start(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
}

// status is a container's health as reconcile reads it ("" if unprobed).
func (m *healthMonitor) status(id string) (reconcile.Health, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.probes[id]
	if p == nil {
		return "", time.Time{}
	}
	return reconcile.Health(p.status), p.since
}

// ensure starts probing c with h unless it is probed already.
func (m *healthMonitor) ensure(c *container.Container, h wire.Health) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.probes[c.ID]; ok {
		return
	}
	probe := health.Probe{
		HTTP: h.HTTP, TCP: h.TCP, Exec: h.Exec, Interval: h.IntervalOrDefault(),
		Timeout: h.TimeoutOrDefault(), StartPeriod: h.StartPeriod.Duration, Retries: h.RetriesOrDefault(),
	}.Normalized()
	target := health.Target{Pid: c.State.Pid, PidStart: c.State.PidStart, HostNetwork: hostNetwork(c)}
	if len(h.Exec) > 0 {
		cgPath := c.Cgroup
		target.Exec = health.ExecWith(nsenter.ExecOptions{
			Pid: c.State.Pid, PidStart: c.State.PidStart, Process: c.Spec.Process, User: c.User, Seccomp: c.Seccomp,
			Place: func(pid int) error {
				cg, err := cgroups.Load(cgPath)
				if err != nil {
					return err
				}
				return cg.Add(pid)
			},
		})
	}
	ctx, cancel := context.WithCancel(m.ctx)
	p := &prober{name: c.Name, cancel: cancel, status: health.Starting, since: m.now()}
	m.probes[c.ID] = p
	tracker := health.NewTracker(probe, c.State.StartedAt)
	name := c.Name
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// The first probe comes soon after the start, then every interval.
		delay := min(probe.Interval, time.Second)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = probe.Interval
			cctx, ccancel := context.WithTimeout(ctx, probe.Timeout)
			r := health.Check(cctx, probe, target)
			ccancel()
			if ctx.Err() != nil {
				return
			}
			if errors.Is(r.Err, nsenter.ErrNotRunning) {
				return // the exit watcher handles a container that is gone
			}
			st, changed := tracker.Observe(r, m.now())
			if changed {
				m.mu.Lock()
				p.status, p.since = st, m.now()
				m.mu.Unlock()
				ev := m.log.Info()
				if st == health.Unhealthy {
					ev = m.log.Warn().Err(r.Err).Str("output", r.Output)
				}
				ev.Str("container", name).Str("health", string(st)).Msg("health changed")
				if m.event != nil && st != health.Starting {
					kind, msg := wire.EventHealthy, name
					if st == health.Unhealthy {
						kind = wire.EventUnhealthy
						if r.Err != nil {
							msg += ": " + r.Err.Error()
						}
					}
					app, _, _, _ := reconcile.ParseName(name)
					m.event(app, kind, msg)
				}
				m.wake()
			}
		}
	}()
}

func hostNetwork(c *container.Container) bool {
	for _, ns := range c.Spec.Linux.Namespaces {
		if ns.Type == "network" {
			return false
		}
	}
	return true
}

// keepOnly stops probing containers not in ids.
func (m *healthMonitor) keepOnly(ids map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, p := range m.probes {
		if !ids[id] {
			p.cancel()
			delete(m.probes, id)
		}
	}
}

// stopAll stops every probe and waits for their goroutines.
func (m *healthMonitor) stopAll() {
	m.keepOnly(nil)
	m.wg.Wait()
}
