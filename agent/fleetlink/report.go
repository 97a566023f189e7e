package fleetlink

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/sync/wire"
)

// reportSpacing is the least time between two reports that carry no news
// (only a new desired digest or a new count of dropped events): a flood of
// junk on the desired topic must not cost a disk write per message.
const reportSpacing = 2 * time.Second

// event puts one event in the outbox.
func (l *Link) event(ev wire.Event) {
	ev.DeviceID = l.id
	if ev.Time.IsZero() {
		ev.Time = l.floor.Now()
	}
	if _, err := l.ob.AddEventFunc(func(seq uint64) ([]byte, error) {
		ev.Seq = seq
		return wire.Encode(&ev)
	}); err != nil {
		l.log.Error().Err(err).Str("kind", string(ev.Kind)).Msg("event lost: outbox")
	}
}

// sync forwards the store's new events to the outbox, in order, and
// writes a report if the status changed (or force, the heartbeat). A
// report with no news waits for reportSpacing; nextFlush says when.
func (l *Link) sync(force bool) {
	st, err := l.db.FleetState()
	if err != nil {
		l.log.Error().Err(err).Msg("reading the fleet state")
		return
	}
	l.forwardEvents(st.EventCursor)
	apps := l.agent.Apps()
	rep := l.report(st, apps, l.agent.Containers(false))
	b, err := json.Marshal(struct {
		A []wire.AppStatus
		G uint64
		C bool
	}{rep.Apps, rep.ObservedGeneration, rep.ClockUntrusted})
	news := string(b)
	extra := rep.DesiredDigest + " " + strconv.FormatUint(rep.DroppedEvents, 10)
	now := l.now()
	l.mu.Lock()
	quiet := news == l.lastNews && (extra == l.lastExtra || now.Before(l.lastReport.Add(reportSpacing)))
	l.mu.Unlock()
	if quiet && !force {
		return
	}
	withStats(&rep, apps, l.agent.Containers(true))
	b, err = wire.Encode(&rep)
	if err == nil {
		err = l.ob.PutReport(b)
	}
	if err != nil {
		l.log.Error().Err(err).Msg("report not queued")
		return
	}
	l.mu.Lock()
	l.lastNews, l.lastExtra, l.lastReport = news, extra, now
	l.mu.Unlock()
}

// nextFlush is how long until the loop must call flushRejections and
// sync again: the end of the rejection window, or a report held back by
// the spacing.
func (l *Link) nextFlush() (time.Duration, bool) {
	now := l.now()
	var at time.Time
	if !l.rejects.until.IsZero() {
		at = l.rejects.until
	}
	l.mu.Lock()
	due := l.lastReport.Add(reportSpacing)
	l.mu.Unlock()
	if now.Before(due) && (at.IsZero() || due.Before(at)) {
		at = due
	}
	if at.IsZero() {
		return 0, false
	}
	return max(at.Sub(now), time.Millisecond), true
}

// forwardEvents copies the store's events after cursor into the outbox.
// The cursor moves after each batch is queued; a crash in between may send
// events of that batch twice (their Seq differs, their content not).
func (l *Link) forwardEvents(cursor uint64) {
	for {
		var evs []store.Event
		if err := l.db.View(func(tx *store.Tx) error {
			var err error
			evs, err = tx.Events(cursor, 256)
			return err
		}); err != nil {
			l.log.Error().Err(err).Msg("reading events")
			return
		}
		if len(evs) == 0 {
			return
		}
		for _, e := range evs {
			l.event(wire.Event{Time: e.Time, Kind: e.Kind, App: e.App, Reason: e.Message})
			cursor = e.Seq
		}
		if err := l.db.SetEventCursor(cursor); err != nil {
			l.log.Error().Err(err).Msg("event cursor")
			return
		}
	}
}

// report builds the status report (without resource use).
func (l *Link) report(st store.FleetState, apps []reconcile.AppStatus, ctrs map[string]Container) wire.Reported {
	obs := l.observedIfConverged(st, apps)
	l.mu.Lock()
	if obs != 0 {
		l.observed = obs
	}
	r := wire.Reported{
		DeviceID: l.id, ObservedGeneration: l.observed, DesiredDigest: l.lastDigest,
		Device: l.facts, ClockUntrusted: l.floor.Untrusted(), Time: l.floor.Now(),
		Apps: []wire.AppStatus{},
	}
	l.mu.Unlock()
	r.DroppedEvents, _ = l.ob.Dropped()
	for _, a := range apps {
		as := wire.AppStatus{Name: a.Name, Version: a.Version, State: string(a.Phase), Message: a.Message, Containers: []wire.ContainerStatus{}}
		for _, c := range a.Containers {
			cs := wire.ContainerStatus{Name: c.Name, State: c.State, Restarts: uint32(c.Restarts), Health: ctrs[c.ID].Health}
			if c.State == reconcile.StateUnhealthy {
				cs.Health = wire.HealthUnhealthy
			}
			as.Containers = append(as.Containers, cs)
		}
		r.Apps = append(r.Apps, as)
	}
	return r
}

// observedIfConverged is the fleet generation if the stored desired state
// is still the fleet's document and every app runs it; 0 otherwise.
func (l *Link) observedIfConverged(st store.FleetState, apps []reconcile.AppStatus) uint64 {
	if st.Generation == 0 {
		return 0
	}
	d, err := l.db.Desired()
	if err != nil || d.Source != store.SourceFleet || d.Generation != st.StoredGeneration {
		return 0
	}
	byName := map[string]reconcile.AppStatus{}
	for _, a := range apps {
		byName[a.Name] = a
	}
	for _, app := range d.Apps {
		s, ok := byName[app.Name]
		if !ok || s.Revision != app.Revision() || len(s.Containers) != len(app.Containers) {
			return 0
		}
		for _, c := range s.Containers {
			if c.State != reconcile.StateRunning && c.State != reconcile.StateCompleted {
				return 0
			}
		}
	}
	return st.Generation
}

// withStats fills in the image, start time and resource use of each
// container.
func withStats(r *wire.Reported, apps []reconcile.AppStatus, ctrs map[string]Container) {
	for i := range r.Apps {
		for j := range r.Apps[i].Containers {
			cs := &r.Apps[i].Containers[j]
			c, ok := ctrs[runtimeName(apps, r.Apps[i].Name, cs.Name)]
			if !ok {
				continue
			}
			cs.Image, cs.ExitCode, cs.OOMKilled = c.Image, c.ExitCode, c.OOMKilled
			if !c.Running {
				continue
			}
			cs.StartedAt = c.StartedAt
			cs.CPUNanos, cs.MemoryBytes, cs.MemoryLimit = c.CPUNanos, c.MemoryBytes, c.MemoryLimit
		}
	}
}

func runtimeName(apps []reconcile.AppStatus, app, ctr string) string {
	for _, a := range apps {
		if a.Name != app {
			continue
		}
		for _, c := range a.Containers {
			if c.Name == ctr {
				return c.ID
			}
		}
	}
	return ""
}
