package rollout

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// Phase is where a rollout is (see the diagram in the package doc).
type Phase string

// Phases.
const (
	PhaseProgressing Phase = "progressing"  // moving devices to To, wave by wave
	PhaseSucceeded   Phase = "succeeded"    // every wave done; stragglers still get To when they come back
	PhaseRollingBack Phase = "rolling-back" // moving every device that got To back to From
	PhaseRolledBack  Phase = "rolled-back"  // rollback done (threshold crossed, or undo)
	PhaseAborted     Phase = "aborted"      // stopped where it was: no more actions
)

// DeviceState is where one device is within a rollout.
type DeviceState string

// Device states.
const (
	StatePending    DeviceState = "pending"     // not asked yet (its wave, a window, the budget or the pace holds it)
	StateUpdating   DeviceState = "updating"    // desired revision published, not running it yet
	StateUpdated    DeviceState = "updated"     // running the revision, not healthy yet
	StateHealthy    DeviceState = "healthy"     // running To, healthy
	StateFailed     DeviceState = "failed"      // To failed on it (unhealthy, crash loop, rolled back or refused by the agent, no progress); asked back to From
	StateDeferred   DeviceState = "deferred"    // the app holds its update lock: the agent waits
	StateOffline    DeviceState = "offline"     // unreachable before it settled: neither stalls nor fails; resumes when back
	StateRolledBack DeviceState = "rolled-back" // back on From, healthy, after a rollback
)

// Health is the app's verdict on a device, as the shell reads it from the
// device's report.
type Health string

// Health values. The shell reports Healthy only once the agent confirmed
// the revision: every container running and passing its check (or having
// none).
const (
	HealthUnknown    Health = ""
	HealthStarting   Health = "starting"
	HealthHealthy    Health = "healthy"
	HealthUnhealthy  Health = "unhealthy"
	HealthCrashLoop  Health = "crash-loop"
	HealthRolledBack Health = "rolled-back" // the agent rolled the app back by itself
)

// Observation is what the shell knows of one device, from its presence and
// reports.
type Observation struct {
	Online bool      `json:"online"`
	Since  time.Time `json:"since,omitzero"` // when Online last changed
	// Revision is the app's revision running on the device ("" if absent).
	Revision string `json:"revision,omitempty"`
	// Generation is the desired generation the device reports it has
	// converged on.
	Generation uint64 `json:"generation,omitempty"`
	Health     Health `json:"health,omitempty"`
	// Deferred: the device holds off the update (update lock held).
	Deferred bool `json:"deferred,omitempty"`
}

// DeviceStatus is one device within a rollout.
type DeviceStatus struct {
	Device
	Wave  int         `json:"wave"` // 1-based
	State DeviceState `json:"state"`
	Since time.Time   `json:"since"` // when State was entered
	// Desired is the revision this rollout last asked for; Generation the
	// generation the publisher gave that document (0: not told yet).
	Desired    string `json:"desired,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	// Touched: the device was asked for To at some point.
	Touched bool `json:"touched,omitempty"`
	// Excluded: not part of the current pass (a rollback moves only
	// touched devices).
	Excluded bool `json:"excluded,omitempty"`
	// Recovered: a failed device runs From again, healthy.
	Recovered bool        `json:"recovered,omitempty"`
	Reason    string      `json:"reason,omitempty"`
	Observed  Observation `json:"observed"`
}

// ActionKind says what an Action asks of the shell.
type ActionKind string

// Action kinds.
const (
	// ActSetDesired: publish revision Revision of the app to Device ("":
	// the app is removed from the device). The publisher picks the
	// generation and reports it back with Published.
	ActSetDesired ActionKind = "set-desired"
	ActDone       ActionKind = "done"   // the rollout succeeded
	ActFailed     ActionKind = "failed" // the rollout failed: Reason; it rolls back
	ActEvent      ActionKind = "event"  // for the audit log
)

// EventKind names an audit event.
type EventKind string

// Audit events.
const (
	EventStarted         EventKind = "started"
	EventWaveStarted     EventKind = "wave-started"
	EventWaveCompleted   EventKind = "wave-completed"
	EventDeviceFailed    EventKind = "device-failed"
	EventPaused          EventKind = "paused"
	EventResumed         EventKind = "resumed"
	EventAborted         EventKind = "aborted"
	EventRollbackStarted EventKind = "rollback-started"
	EventRolledBack      EventKind = "rolled-back"
	EventSucceeded       EventKind = "succeeded"
)

// Action is one decision for the shell.
type Action struct {
	Kind     ActionKind `json:"kind"`
	Device   string     `json:"device,omitempty"`
	Revision string     `json:"revision,omitempty"`
	Event    EventKind  `json:"event,omitempty"`
	Wave     int        `json:"wave,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

func (a Action) String() string {
	switch a.Kind {
	case ActSetDesired:
		return fmt.Sprintf("set-desired %s %q", a.Device, a.Revision)
	case ActEvent:
		return fmt.Sprintf("event %s wave=%d device=%s %s", a.Event, a.Wave, a.Device, a.Reason)
	}
	return fmt.Sprintf("%s %s", a.Kind, a.Reason)
}

// Command is an operator's command.
type Command string

// Commands.
const (
	Pause  Command = "pause"  // start no more devices; failures are still handled
	Resume Command = "resume" // undo Pause
	Abort  Command = "abort"  // stop where it is: devices keep what they have, no more actions
	Undo   Command = "undo"   // move every device that got To back to From
)

// Input is the outside world at one Step.
type Input struct {
	Now time.Time
	// Locations resolves the IANA time zone names of Device.Zone (the
	// shell loads them; fixed offsets need none). A device in a
	// maintenance window whose zone is missing here is not started.
	Locations map[string]*time.Location
}

// Rollout is the state of one rollout. It is plain data: the controller
// persists it (JSON) after each call and may load it back at any time. It
// is not safe for concurrent use: one loop owns it.
type Rollout struct {
	Spec   Spec   `json:"spec"`
	Phase  Phase  `json:"phase"`
	Paused bool   `json:"paused,omitempty"`
	Target string `json:"target"` // revision of the current pass: To, or From when rolling back
	Reason string `json:"reason,omitempty"`
	// Wave is the current wave, 1-based; WaveEnds[i] is the cumulative
	// number of devices in waves 1..i+1.
	Wave           int       `json:"wave"`
	WaveEnds       []int     `json:"waveEnds"`
	Thresholds     []int     `json:"thresholds"`
	MaxUnavailable int       `json:"maxUnavailable"`
	SoakSince      time.Time `json:"soakSince,omitzero"`
	// Starts are the times devices were started in the last minute (pace).
	Starts  []time.Time    `json:"starts,omitempty"`
	Devices []DeviceStatus `json:"devices"`
	// Outbox holds actions decided outside Step (commands); Step returns
	// them first.
	Outbox  []Action  `json:"outbox,omitempty"`
	Created time.Time `json:"created"`

	// derived, rebuilt by prepare
	index   map[string]int
	windows [][]Schedule // per device: schedules of the windows that match it
	zones   map[string]*time.Location
}

// New validates spec and returns a rollout in phase progressing, its first
// wave started. Every device starts pending and offline until observed.
// Errors match errdefs.ErrInvalidArgument and name the field.
func New(spec Spec, now time.Time) (*Rollout, error) {
	p, err := spec.validate()
	if err != nil {
		return nil, err
	}
	if spec.ProgressDeadline == 0 {
		spec.ProgressDeadline = DefaultProgressDeadline
	}
	r := &Rollout{
		Spec: spec, Phase: PhaseProgressing, Target: spec.To, Wave: 1,
		WaveEnds: p.waveEnds, Thresholds: p.thresholds, MaxUnavailable: p.maxUnavailable,
		Devices: make([]DeviceStatus, len(spec.Devices)), Created: now,
	}
	w := 0
	for i, d := range spec.Devices {
		for i >= r.WaveEnds[w] {
			w++
		}
		r.Devices[i] = DeviceStatus{Device: d, Wave: w + 1, State: StatePending, Since: now}
	}
	r.Outbox = append(r.Outbox,
		Action{Kind: ActEvent, Event: EventStarted, Reason: fmt.Sprintf("%s: %q to %q on %d devices", spec.App, spec.From, spec.To, len(spec.Devices))},
		Action{Kind: ActEvent, Event: EventWaveStarted, Wave: 1, Reason: fmt.Sprintf("%d devices", r.WaveEnds[0])})
	return r, nil
}

// prepare rebuilds what is derived from the persisted fields.
func (r *Rollout) prepare() {
	if r.index != nil {
		return
	}
	r.index = make(map[string]int, len(r.Devices))
	r.zones = map[string]*time.Location{}
	scheds := make([]Schedule, len(r.Spec.Windows))
	for i, w := range r.Spec.Windows {
		scheds[i], _ = ParseSchedule(w.Schedule) // validated by New
	}
	r.windows = make([][]Schedule, len(r.Devices))
	for i := range r.Devices {
		d := &r.Devices[i]
		r.index[d.ID] = i
		for j, w := range r.Spec.Windows {
			if matches(w.Selector, d.Labels) {
				r.windows[i] = append(r.windows[i], scheds[j])
			}
		}
	}
}

// Observe records what the shell knows of device id. Unknown devices
// match errdefs.ErrNotFound.
func (r *Rollout) Observe(id string, o Observation) error {
	r.prepare()
	i, ok := r.index[id]
	if !ok {
		return fmt.Errorf("device %q is not part of the rollout of %s: %w", id, r.Spec.App, errdefs.ErrNotFound)
	}
	r.Devices[i].Observed = o
	return nil
}

// Published records the generation the publisher gave the document that
// carries revision to device id, so that a report of that generation with
// another revision is known for a refusal or an agent rollback.
func (r *Rollout) Published(id, revision string, generation uint64) {
	r.prepare()
	if i, ok := r.index[id]; ok && r.Devices[i].Desired == revision {
		r.Devices[i].Generation = generation
	}
}

// Command applies an operator's command. Commands that make no sense in
// the current phase match errdefs.ErrFailedPrecondition; repeating pause,
// resume or abort is harmless.
func (r *Rollout) Command(c Command, now time.Time) error {
	r.prepare()
	refuse := func() error {
		return fmt.Errorf("%s the rollout of %s: it is %s: %w", c, r.Spec.App, r.Phase, errdefs.ErrFailedPrecondition)
	}
	active := r.Phase == PhaseProgressing || r.Phase == PhaseRollingBack
	switch c {
	case Pause, Resume:
		if !active {
			return refuse()
		}
		if r.Paused != (c == Pause) {
			r.Paused = c == Pause
			ev := map[Command]EventKind{Pause: EventPaused, Resume: EventResumed}[c]
			r.Outbox = append(r.Outbox, Action{Kind: ActEvent, Event: ev, Wave: r.Wave})
		}
	case Abort:
		if r.Phase == PhaseAborted {
			return nil
		}
		if !active {
			return refuse()
		}
		r.Phase, r.Paused = PhaseAborted, false
		r.Outbox = append(r.Outbox, Action{Kind: ActEvent, Event: EventAborted, Wave: r.Wave})
	case Undo:
		if r.Phase == PhaseRollingBack || r.Phase == PhaseRolledBack {
			return refuse()
		}
		r.startRollback(now, "undo", &r.Outbox)
	default:
		return fmt.Errorf("rollout command %q: want pause, resume, abort or undo: %w", c, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Step decides, from the observations recorded so far and the time, what
// to do next, and returns it. The shell performs the actions in order,
// then persists the rollout.
func (r *Rollout) Step(in Input) []Action {
	r.prepare()
	now := in.Now
	acts := r.Outbox
	r.Outbox = nil
	for i := range r.Devices {
		r.advance(i, now, &acts)
	}
	if r.Phase == PhaseProgressing || r.Phase == PhaseSucceeded {
		r.checkThresholds(now, &acts)
	}
	if r.Phase == PhaseProgressing && !r.Paused {
		r.advanceWaves(now, &acts)
	}
	if r.Phase == PhaseRollingBack && !r.Paused && r.passSettled(len(r.Devices)) {
		r.Phase = PhaseRolledBack
		acts = append(acts, Action{Kind: ActEvent, Event: EventRolledBack, Reason: r.Reason})
	}
	if r.Phase != PhaseAborted && !r.Paused {
		r.start(in, &acts)
	}
	return acts
}

func (r *Rollout) set(d *DeviceStatus, s DeviceState, now time.Time) {
	if d.State != s {
		d.State, d.Since = s, now
	}
}

func (r *Rollout) rollingBack() bool {
	return r.Phase == PhaseRollingBack || r.Phase == PhaseRolledBack || r.Phase == PhaseAborted && r.Target == r.Spec.From
}

// publish asks device d for revision rev.
func (r *Rollout) publish(d *DeviceStatus, rev string, acts *[]Action) {
	d.Desired, d.Generation = rev, 0
	if rev == r.Spec.To {
		d.Touched = true
	}
	*acts = append(*acts, Action{Kind: ActSetDesired, Device: d.ID, Revision: rev})
}

// advance moves device i along what was observed of it.
func (r *Rollout) advance(i int, now time.Time, acts *[]Action) {
	d := &r.Devices[i]
	o := &d.Observed
	if r.rollingBack() && r.Phase != PhaseAborted && d.Touched && !o.Online && d.Desired != r.Spec.From {
		// Offline: going back costs no availability; the retained
		// document waits for it.
		r.publish(d, r.Spec.From, acts)
		if d.State != StateFailed {
			r.set(d, StateOffline, now)
		}
	}
	switch d.State {
	case StatePending:
		if !o.Online {
			r.set(d, StateOffline, now)
			return
		}
		if r.rollingBack() && r.Phase != PhaseAborted && d.Touched && !(o.Revision == r.Spec.To && o.Health == HealthHealthy) {
			// Waiting to go back, but not serving To healthily (any
			// more): back at once, it is out of service already.
			r.publish(d, r.Spec.From, acts)
			r.set(d, StateUpdating, now)
			r.converge(d, now, acts)
		}
	case StateOffline:
		if !o.Online {
			return
		}
		if d.Desired != r.Target || d.Excluded {
			r.set(d, StatePending, now)
			return
		}
		r.set(d, StateUpdating, now)
		r.converge(d, now, acts)
	case StateUpdating, StateUpdated, StateDeferred:
		if !o.Online {
			r.set(d, StateOffline, now)
			return
		}
		r.converge(d, now, acts)
	case StateHealthy:
		if o.Online && (o.Revision == r.Spec.To && (o.Health == HealthUnhealthy || o.Health == HealthCrashLoop) || o.Health == HealthRolledBack) {
			r.fail(d, now, fmt.Sprintf("became %s after it was healthy", o.Health), acts)
		}
	case StateFailed:
		if !d.Recovered && o.Online && o.Revision == r.Spec.From && (o.Health == HealthHealthy || o.Health == HealthRolledBack || r.Spec.From == "") {
			d.Recovered = true
		}
	}
}

// converge judges a device that was asked for the pass's target.
func (r *Rollout) converge(d *DeviceStatus, now time.Time, acts *[]Action) {
	o := &d.Observed
	t := r.Target
	seen := d.Generation != 0 && o.Generation >= d.Generation
	onT := o.Revision == t && (d.Generation == 0 || seen)
	done := StateHealthy
	if t != r.Spec.To {
		done = StateRolledBack
	}
	switch {
	case o.Health == HealthRolledBack && o.Revision != t && t != "":
		// (Removing the app: an earlier rollback by the agent is no
		// verdict on the removal; a device that keeps the app after
		// seeing it is refused below.)
		r.fail(d, now, "rolled back by the agent", acts)
	case onT && (o.Health == HealthUnhealthy || o.Health == HealthCrashLoop):
		r.fail(d, now, string(o.Health), acts)
	case onT && (o.Health == HealthHealthy || t == ""):
		r.set(d, done, now)
	case onT:
		r.set(d, StateUpdated, now)
		r.deadline(d, now, acts)
	case o.Deferred:
		r.set(d, StateDeferred, now)
	case seen:
		r.fail(d, now, fmt.Sprintf("refused: runs %q after observing generation %d", o.Revision, o.Generation), acts)
	default:
		r.set(d, StateUpdating, now)
		r.deadline(d, now, acts)
	}
}

// deadline fails a device that has been online and asked for longer than
// the progress deadline without becoming healthy.
func (r *Rollout) deadline(d *DeviceStatus, now time.Time, acts *[]Action) {
	from := d.Since // entered updating, or updated
	if d.Observed.Since.After(from) {
		from = d.Observed.Since // came back online since
	}
	if now.Sub(from) > r.Spec.ProgressDeadline {
		r.fail(d, now, fmt.Sprintf("no progress for %s", r.Spec.ProgressDeadline), acts)
	}
}

// fail marks a device failed and, unless the rollout was aborted, asks it
// back to From.
func (r *Rollout) fail(d *DeviceStatus, now time.Time, reason string, acts *[]Action) {
	r.set(d, StateFailed, now)
	d.Reason = reason
	d.Recovered = d.Observed.Revision == r.Spec.From && d.Observed.Health == HealthHealthy
	*acts = append(*acts, Action{Kind: ActEvent, Event: EventDeviceFailed, Device: d.ID, Wave: d.Wave, Reason: reason})
	if r.Phase != PhaseAborted && d.Desired != r.Spec.From {
		r.publish(d, r.Spec.From, acts)
	}
}

// checkThresholds starts the rollback when a wave has more failed devices
// than its threshold.
func (r *Rollout) checkThresholds(now time.Time, acts *[]Action) {
	failed := make([]int, len(r.WaveEnds))
	for i := range r.Devices {
		if r.Devices[i].State == StateFailed {
			failed[r.Devices[i].Wave-1]++
		}
	}
	for w, n := range failed {
		if n > r.Thresholds[w] {
			reason := fmt.Sprintf("wave %d: %d devices failed, more than the threshold of %d", w+1, n, r.Thresholds[w])
			*acts = append(*acts, Action{Kind: ActFailed, Wave: w + 1, Reason: reason})
			r.startRollback(now, reason, acts)
			return
		}
	}
}

// startRollback turns the rollout around: every touched device goes back
// to From, at once if it is not serving To healthily (failed, updating,
// deferred, offline), within the budget and the pace otherwise.
func (r *Rollout) startRollback(now time.Time, reason string, acts *[]Action) {
	r.Phase, r.Paused, r.Target, r.Reason = PhaseRollingBack, false, r.Spec.From, reason
	r.SoakSince = time.Time{}
	*acts = append(*acts, Action{Kind: ActEvent, Event: EventRollbackStarted, Wave: r.Wave, Reason: reason})
	for i := range r.Devices {
		d := &r.Devices[i]
		if !d.Touched {
			d.Excluded = true
			continue
		}
		switch d.State {
		case StateFailed:
			if d.Desired != r.Spec.From {
				r.publish(d, r.Spec.From, acts)
			}
		case StateHealthy:
			if d.Observed.Online {
				r.set(d, StatePending, now)
				continue
			}
			fallthrough
		default:
			r.publish(d, r.Spec.From, acts)
			if d.Observed.Online {
				r.set(d, StateUpdating, now)
			} else {
				r.set(d, StateOffline, now)
			}
		}
	}
}

// settled: a device that holds no wave back: it is offline, or done with
// (healthy, failed, rolled back, deferred, outside the pass).
func settled(d *DeviceStatus) bool {
	if d.Excluded || !d.Observed.Online {
		return true
	}
	switch d.State {
	case StatePending, StateUpdating, StateUpdated:
		return false
	}
	return true
}

// passSettled reports whether the first n devices are settled.
func (r *Rollout) passSettled(n int) bool {
	for i := range n {
		if !settled(&r.Devices[i]) {
			return false
		}
	}
	return true
}

// advanceWaves moves to the next wave once every device of the current
// one is settled and has stayed so for HealthyFor.
func (r *Rollout) advanceWaves(now time.Time, acts *[]Action) {
	for {
		if !r.passSettled(r.WaveEnds[r.Wave-1]) {
			r.SoakSince = time.Time{}
			return
		}
		if r.SoakSince.IsZero() {
			r.SoakSince = now
		}
		if now.Sub(r.SoakSince) < r.Spec.HealthyFor {
			return
		}
		*acts = append(*acts, Action{Kind: ActEvent, Event: EventWaveCompleted, Wave: r.Wave})
		r.SoakSince = time.Time{}
		if r.Wave == len(r.WaveEnds) {
			r.Phase = PhaseSucceeded
			*acts = append(*acts, Action{Kind: ActEvent, Event: EventSucceeded}, Action{Kind: ActDone})
			return
		}
		r.Wave++
		*acts = append(*acts, Action{Kind: ActEvent, Event: EventWaveStarted, Wave: r.Wave,
			Reason: fmt.Sprintf("%d devices", r.WaveEnds[r.Wave-1]-r.WaveEnds[r.Wave-2])})
	}
}

// Unavailable counts the online devices the rollout has taken out of
// service: asked and not healthy yet, or failed and not back on From.
func (r *Rollout) Unavailable() int {
	n := 0
	for i := range r.Devices {
		d := &r.Devices[i]
		if d.Observed.Online && (d.State == StateUpdating || d.State == StateUpdated || d.State == StateFailed && !d.Recovered) {
			n++
		}
	}
	return n
}

// start asks pending devices for the target, in order, within the wave,
// their windows, the unavailability budget and the pace.
func (r *Rollout) start(in Input, acts *[]Action) {
	now := in.Now
	budget := r.MaxUnavailable - r.Unavailable()
	if budget <= 0 {
		return
	}
	keep := r.Starts[:0]
	for _, t := range r.Starts {
		if now.Sub(t) < time.Minute {
			keep = append(keep, t)
		}
	}
	r.Starts = keep
	limit := len(r.Devices)
	if r.Phase == PhaseProgressing {
		limit = r.WaveEnds[r.Wave-1]
	}
	back := r.rollingBack()
	for i := range limit {
		if budget <= 0 || r.Spec.Pace > 0 && len(r.Starts) >= r.Spec.Pace {
			return
		}
		d := &r.Devices[i]
		if d.State != StatePending || d.Excluded || !d.Observed.Online || !back && !r.inWindow(i, in) {
			continue
		}
		r.publish(d, r.Target, acts)
		r.set(d, StateUpdating, now)
		r.Starts = append(r.Starts, now)
		budget--
	}
}

// inWindow reports whether device i may be started now: it matches no
// maintenance window, or one of its windows is open in its time zone.
func (r *Rollout) inWindow(i int, in Input) bool {
	ws := r.windows[i]
	if len(ws) == 0 {
		return true
	}
	d := &r.Devices[i]
	loc, ok := r.zones[d.Zone]
	if !ok {
		if loc, ok = fixedZone(d.Zone); ok {
			r.zones[d.Zone] = loc
		} else if loc = in.Locations[d.Zone]; loc == nil {
			d.Reason = fmt.Sprintf("time zone %q not loaded", d.Zone)
			return false
		}
	}
	t := in.Now.In(loc)
	for _, s := range ws {
		if s.Open(t) {
			return true
		}
	}
	return false
}
