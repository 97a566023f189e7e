// Package sim is a deterministic simulation of a fleet of virtual devices
// driven by the real fleet/rollout state machine, with failures injected:
// devices dying, going offline and coming back, failing on a bad version
// (unhealthy, crash-looping, rolled back by their agent), deferring the
// update with an update lock. Randomness comes from one seeded
// math/rand/v2 source, time is virtual and advanced by the simulator, so
// a seed replays exactly. Invariants are checked at every step; a
// failure names the seed and carries a trace of the last decisions.
//
// The simulator is the controller's shell in miniature: it feeds
// observations, steps the rollout, publishes (records) the desired
// revisions with generations, and now and then persists the rollout to
// JSON and loads it back, as a restarted controller would.
package sim

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/tender-edge/tender/fleet/rollout"
)

// The revisions rolled from and to.
const (
	RevA = "aaaaaaaa"
	RevB = "bbbbbbbb"
)

// Options describe one simulated rollout.
type Options struct {
	Seed    uint64
	Devices int
	// Bad makes RevB fail on a share BadRate of the devices (default 1):
	// on two thirds of them as it starts, on the others after it was
	// healthy for 5 to 35 minutes.
	Bad     bool
	BadRate float64
	// Per device and per virtual minute, during the chaos period.
	OfflineRate float64 // goes offline for 5 minutes to 3 hours
	DieRate     float64 // goes offline for good
	// DeferRate is the share of update requests met by an update lock
	// held for 10 minutes to 2 hours.
	DeferRate float64
	// Windows gives a third of the devices maintenance windows in
	// various time zones.
	Windows bool

	Waves            []string
	MaxUnavailable   string
	FailureThreshold string
	HealthyFor       time.Duration
	Pace             int

	// An operator pauses the rollout at PauseAt and resumes it at
	// ResumeAt (virtual time since the start; zero: never), and undoes it
	// once it has succeeded if UndoAfterSuccess.
	PauseAt, ResumeAt time.Duration
	UndoAfterSuccess  bool

	// Chaos is how long failures are injected (default 6h); the run then
	// lets every device come back and stops when the fleet has settled,
	// or at Horizon (default 4 days) of virtual time.
	Chaos, Horizon time.Duration
}

// Start is the virtual time a run starts at: a Monday, midnight UTC.
var Start = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

const tick = time.Minute

type phase int

const (
	idle      phase = iota
	deferring       // update lock held until lockUntil
	pulling         // until doneAt
	starting        // until doneAt
	failing         // unhealthy on a bad version; the agent may roll back at doneAt
)

// device is the simulator's truth about one device.
type device struct {
	id          string
	wave        int // 1-based, computed by the simulator itself
	win         *simWindow
	zone        *time.Location
	online      bool
	dead        bool
	offlineTill time.Time
	since       time.Time

	running  string
	health   rollout.Health
	observed uint64 // generation converged on
	desired  string // latest published (retained) desired revision
	gen      uint64
	phase    phase
	doneAt   time.Time
	deferred bool
	willFail bool // this device fails on RevB
	lateFail bool // ... after it was healthy for a while

	everB          bool // was ever asked for RevB
	reportedFailed bool // a report showed RevB failing on it
	last           rollout.Observation
}

// simWindow is a maintenance window the simulator checks on its own:
// every day of days, from start to end minutes after midnight.
type simWindow struct {
	label      string
	days       [7]bool
	start, end int
	schedule   string
}

func (w *simWindow) open(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if w.start < w.end {
		return w.days[t.Weekday()] && m >= w.start && m < w.end
	}
	return w.days[t.Weekday()] && m >= w.start || w.days[(t.Weekday()+6)%7] && m < w.end
}

var windows = []*simWindow{
	{label: "night", days: [7]bool{false, true, true, true, true, true, false}, start: 60, end: 300, schedule: "mon-fri 01:00-05:00"},
	{label: "evening", days: [7]bool{true, true, true, true, true, true, true}, start: 22 * 60, end: 6 * 60, schedule: "daily 22:00-06:00"},
}

var zones = []struct {
	name string
	loc  *time.Location
}{
	{"", time.UTC}, {"+05:30", time.FixedZone("+05:30", 5*3600+1800)},
	{"-08:00", time.FixedZone("-08:00", -8*3600)}, {"Asia/Tokyo", time.FixedZone("JST", 9*3600)},
}

// World is one run.
type World struct {
	opt      Options
	rng      *rand.Rand
	now      time.Time
	r        *rollout.Rollout
	devs     []*device
	byID     map[string]*device
	waveEnds []int
	locs     map[string]*time.Location

	steps    int
	paused   bool
	undone   bool
	crossed  int // step at which reports first showed a wave over its threshold; -1 none
	starts   []time.Time
	trace    []string // ring of the last lines
	traceAt  int
	hash     [32]byte
	hashed   int
	finished bool
}

// New builds a world and its rollout.
func New(o Options) (*World, error) {
	if o.BadRate == 0 {
		o.BadRate = 1
	}
	if o.Chaos == 0 {
		o.Chaos = 6 * time.Hour
	}
	if o.Horizon == 0 {
		o.Horizon = 4 * 24 * time.Hour
	}
	w := &World{opt: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x5eed)), now: Start,
		byID: map[string]*device{}, crossed: -1, trace: make([]string, 0, 400), locs: map[string]*time.Location{}}
	spec := rollout.Spec{App: "sim", From: RevA, To: RevB, Waves: o.Waves, MaxUnavailable: o.MaxUnavailable,
		FailureThreshold: o.FailureThreshold, HealthyFor: o.HealthyFor, Pace: o.Pace}
	if o.Windows {
		for _, sw := range windows {
			spec.Windows = append(spec.Windows, rollout.Window{Selector: map[string]string{"window": sw.label}, Schedule: sw.schedule})
		}
	}
	for _, z := range zones {
		w.locs[z.name] = z.loc
	}
	for i := range o.Devices {
		d := &device{id: fmt.Sprintf("dev-%05d", i), online: true, running: RevA, health: rollout.HealthHealthy, desired: RevA}
		rd := rollout.Device{ID: d.id}
		if o.Windows && w.rng.IntN(3) == 0 {
			d.win = windows[w.rng.IntN(len(windows))]
			z := zones[w.rng.IntN(len(zones))]
			d.zone = z.loc
			rd.Labels = map[string]string{"window": d.win.label}
			rd.Zone = z.name
		}
		w.devs = append(w.devs, d)
		w.byID[d.id] = d
		spec.Devices = append(spec.Devices, rd)
	}
	w.waveEnds = waveEnds(o.Waves, o.Devices)
	for i, d := range w.devs {
		for d.wave = 1; i >= w.waveEnds[d.wave-1]; d.wave++ {
		}
	}
	r, err := rollout.New(spec, w.now)
	if err != nil {
		return nil, err
	}
	w.r = r
	if fmt.Sprint(r.WaveEnds) != fmt.Sprint(w.waveEnds) {
		return nil, fmt.Errorf("rollout waves %v, the simulator computes %v", r.WaveEnds, w.waveEnds)
	}
	for _, d := range w.devs {
		w.report(d)
	}
	return w, nil
}

// waveEnds computes the cumulative wave sizes independently of the
// rollout package: counts, or percentages rounded up; the last is all.
func waveEnds(waves []string, n int) []int {
	if len(waves) == 0 {
		return []int{n}
	}
	var ends []int
	prev := 0
	for i, s := range waves {
		var c int
		if p, ok := strings.CutSuffix(s, "%"); ok {
			var pct int
			fmt.Sscan(p, &pct)
			c = (pct*n + 99) / 100
		} else {
			fmt.Sscan(s, &c)
		}
		c = max(prev, min(c, n))
		if i == len(waves)-1 {
			c = n
		}
		ends = append(ends, c)
		prev = c
	}
	return ends
}

func (w *World) logf(format string, args ...any) {
	line := fmt.Sprintf("%s step=%d ", w.now.Sub(Start), w.steps) + fmt.Sprintf(format, args...)
	if len(w.trace) < cap(w.trace) {
		w.trace = append(w.trace, line)
	} else {
		w.trace[w.traceAt] = line
		w.traceAt = (w.traceAt + 1) % len(w.trace)
	}
}

// Trace returns the last lines of the run's trace.
func (w *World) Trace() string {
	return strings.Join(append(w.trace[w.traceAt:len(w.trace):len(w.trace)], w.trace[:w.traceAt]...), "\n")
}

// Hash is a digest of every decision of the run, in order.
func (w *World) Hash() [32]byte { return w.hash }

// Rollout is the state machine under test.
func (w *World) Rollout() *rollout.Rollout { return w.r }

func (w *World) calm() bool { return w.now.Sub(Start) >= w.opt.Chaos }

// report sends device d's observation to the rollout if it changed.
func (w *World) report(d *device) {
	o := rollout.Observation{Online: d.online, Since: d.since}
	if d.online {
		o.Revision, o.Generation, o.Health, o.Deferred = d.running, d.observed, d.health, d.deferred
	}
	if o == d.last {
		return
	}
	d.last = o
	if d.online && (o.Revision == RevB && (o.Health == rollout.HealthUnhealthy || o.Health == rollout.HealthCrashLoop) || o.Health == rollout.HealthRolledBack) {
		d.reportedFailed = true
	}
	if err := w.r.Observe(d.id, o); err != nil {
		panic(err) // every device is part of the rollout
	}
}

// live advances device d by one tick.
func (w *World) live(d *device, dt time.Duration) {
	if d.dead {
		return
	}
	if !w.calm() {
		p := float64(dt/tick) * w.opt.DieRate
		q := float64(dt/tick) * w.opt.OfflineRate
		switch x := w.rng.Float64(); {
		case d.online && x < p:
			d.dead, d.online, d.since = true, false, w.now
			w.logf("%s dies", d.id)
			return
		case d.online && x < p+q:
			d.online, d.since = false, w.now
			d.offlineTill = w.now.Add(5*time.Minute + time.Duration(w.rng.IntN(175))*time.Minute)
			return
		}
	}
	if !d.online {
		if !w.now.Before(d.offlineTill) {
			d.online, d.since = true, w.now
		} else {
			return
		}
	}
	switch d.phase {
	case deferring:
		if !w.now.Before(d.doneAt) {
			d.deferred, d.phase, d.doneAt = false, pulling, w.now.Add(time.Duration(1+w.rng.IntN(3))*tick)
		}
	case pulling:
		if !w.now.Before(d.doneAt) {
			d.running, d.observed, d.health = d.desired, d.gen, rollout.HealthStarting
			d.phase, d.doneAt = starting, w.now.Add(time.Duration(1+w.rng.IntN(2))*tick)
		}
	case starting:
		if !w.now.Before(d.doneAt) {
			if d.running == RevB && d.willFail && !d.lateFail {
				d.health = []rollout.Health{rollout.HealthUnhealthy, rollout.HealthCrashLoop}[w.rng.IntN(2)]
				d.phase, d.doneAt = failing, w.now.Add(time.Duration(2+w.rng.IntN(10))*tick)
			} else {
				d.health, d.phase = rollout.HealthHealthy, idle
				d.doneAt = w.now.Add(time.Duration(5+w.rng.IntN(30)) * tick)
			}
		}
	case idle:
		if d.running == RevB && d.willFail && d.lateFail && !w.now.Before(d.doneAt) {
			d.health = rollout.HealthUnhealthy
			d.phase, d.doneAt = failing, w.now.Add(time.Duration(2+w.rng.IntN(10))*tick)
		}
	case failing:
		if !w.now.Before(d.doneAt) && w.rng.IntN(2) == 0 {
			d.running, d.health, d.phase = RevA, rollout.HealthRolledBack, idle // the agent's own rollback
		}
	}
}

// publish is the publisher: a new generation, retained for the device.
func (w *World) publish(d *device, rev string) {
	d.gen++
	d.desired = rev
	w.r.Published(d.id, rev, d.gen)
	if rev == RevB {
		d.everB = true
		d.willFail = w.opt.Bad && w.rng.Float64() < w.opt.BadRate
		d.lateFail = d.willFail && w.rng.IntN(3) == 0
	}
	switch {
	case rev == d.running:
		d.observed, d.phase, d.deferred = d.gen, idle, false
		d.health = rollout.HealthHealthy
	case rev == RevB && !w.calm() && w.rng.Float64() < w.opt.DeferRate:
		d.phase, d.deferred, d.doneAt = deferring, true, w.now.Add(10*time.Minute+time.Duration(w.rng.IntN(110))*time.Minute)
	default:
		d.phase, d.deferred, d.doneAt = pulling, false, w.now.Add(time.Duration(1+w.rng.IntN(3))*tick)
	}
}

// unavailable: online, and not serving healthily.
func (d *device) unavailable() bool {
	return d.online && (d.phase == pulling || d.phase == starting || d.phase == failing)
}

// Run runs the world to its end, checking invariants at every step.
func (w *World) Run() error {
	dt := tick
	for w.now.Sub(Start) < w.opt.Horizon {
		w.now = w.now.Add(dt)
		w.steps++
		for _, d := range w.devs {
			w.live(d, dt)
			w.report(d)
		}
		if err := w.step(); err != nil {
			return fmt.Errorf("seed=%d step=%d t=%s: %w", w.opt.Seed, w.steps, w.now.Sub(Start), err)
		}
		if w.steps%500 == 0 {
			if err := w.reload(); err != nil {
				return err
			}
		}
		if w.calm() && w.settled() {
			w.finished = true
			break
		}
		dt = tick
		if w.calm() && w.quiet() {
			dt = 10 * tick // waiting for a window or a straggler: skip ahead
		}
	}
	if err := w.checkEnd(); err != nil {
		return fmt.Errorf("seed=%d at the end (t=%s, %d steps): %w", w.opt.Seed, w.now.Sub(Start), w.steps, err)
	}
	return nil
}

// step steps the rollout and checks its decisions.
func (w *World) step() error {
	if err := w.operate(); err != nil {
		return err
	}
	unavail := 0
	for _, d := range w.devs {
		if d.unavailable() {
			unavail++
		}
	}
	if w.crossed < 0 && w.overThreshold() {
		w.crossed = w.steps
		w.logf("reports show a wave over its failure threshold")
	}
	acts := w.r.Step(rollout.Input{Now: w.now, Locations: w.locs})
	h := sha256.New()
	h.Write(w.hash[:])
	disrupted := 0
	var why []string
	for _, a := range acts {
		fmt.Fprintf(h, "%d %s\n", w.steps, a)
		if a.Kind != rollout.ActSetDesired {
			w.logf("%s", a)
		}
		if a.Kind != rollout.ActSetDesired {
			continue
		}
		d := w.byID[a.Device]
		if a.Revision == RevB {
			w.logf("%s", a)
			if w.crossed >= 0 {
				return fmt.Errorf("%s asked for the bad version after the failure threshold was crossed (step %d)", d.id, w.crossed)
			}
			if w.paused || w.undone {
				return fmt.Errorf("%s asked for the new version while the rollout is paused (%v) or undone (%v)", d.id, w.paused, w.undone)
			}
			if d.win != nil && !d.win.open(w.now.In(d.zone)) {
				return fmt.Errorf("%s started outside its window %q (local %s)", d.id, d.win.schedule, w.now.In(d.zone).Format("Mon 15:04"))
			}
			w.starts = append(w.starts, w.now)
		}
		if d.online && !d.unavailable() && a.Revision != d.running {
			disrupted++
			why = append(why, fmt.Sprintf("%s (%s %s phase %d deferred %v)", d.id, d.running, d.health, d.phase, d.deferred))
		}
		w.publish(d, a.Revision)
	}
	copy(w.hash[:], h.Sum(nil))
	if disrupted > 0 && unavail+disrupted > w.r.MaxUnavailable {
		return fmt.Errorf("%d devices unavailable and %d more taken down, maxUnavailable is %d: %s", unavail, disrupted, w.r.MaxUnavailable, strings.Join(why, ", "))
	}
	if p := w.opt.Pace; p > 0 {
		n := 0
		for _, t := range w.starts {
			if w.now.Sub(t) < time.Minute {
				n++
			}
		}
		if n > p {
			return fmt.Errorf("%d devices started within a minute, pace is %d", n, p)
		}
	}
	if len(w.starts) > 1000 {
		w.starts = append(w.starts[:0], w.starts[len(w.starts)-100:]...)
	}
	return nil
}

// operate plays the operator's commands.
func (w *World) operate() error {
	since := w.now.Sub(Start)
	cmd := func(c rollout.Command) error {
		w.logf("operator: %s", c)
		if err := w.r.Command(c, w.now); err != nil {
			return fmt.Errorf("operator %s: %w", c, err)
		}
		return nil
	}
	switch {
	case w.opt.PauseAt > 0 && !w.paused && since >= w.opt.PauseAt && since < w.opt.ResumeAt && w.r.Phase == rollout.PhaseProgressing:
		w.paused = true
		return cmd(rollout.Pause)
	case w.paused && since >= w.opt.ResumeAt:
		w.paused = false
		if w.r.Phase != rollout.PhaseProgressing {
			return nil // rolled back meanwhile
		}
		return cmd(rollout.Resume)
	case w.opt.UndoAfterSuccess && !w.undone && w.r.Phase == rollout.PhaseSucceeded:
		w.undone = true
		return cmd(rollout.Undo)
	}
	return nil
}

// overThreshold: reports show more failed devices in some wave than the
// threshold the spec gives it.
func (w *World) overThreshold() bool {
	failed := make([]int, len(w.waveEnds))
	for _, d := range w.devs {
		if d.reportedFailed {
			failed[d.wave-1]++
		}
	}
	for i, n := range failed {
		if n > w.r.Thresholds[i] {
			return true
		}
	}
	return false
}

// reload persists the rollout and loads it back, as a restarted
// controller does.
func (w *World) reload() error {
	b, err := json.Marshal(w.r)
	if err != nil {
		return fmt.Errorf("persist rollout: %w", err)
	}
	r := new(rollout.Rollout)
	if err := json.Unmarshal(b, r); err != nil {
		return fmt.Errorf("load rollout: %w", err)
	}
	w.r = r
	return nil
}

func (w *World) terminal() bool {
	return w.r.Phase == rollout.PhaseSucceeded || w.r.Phase == rollout.PhaseRolledBack
}

// settled: the rollout has ended and every live device is online, idle,
// on the revision it was asked for.
func (w *World) settled() bool { return w.unsettled() == "" }

// unsettled names what keeps the fleet from having settled, "" if nothing.
func (w *World) unsettled() string {
	if !w.terminal() {
		return "rollout " + string(w.r.Phase)
	}
	if w.opt.UndoAfterSuccess && !w.undone && w.r.Phase == rollout.PhaseSucceeded {
		return "to be undone"
	}
	for _, d := range w.devs {
		if !d.dead && (!d.online || d.phase != idle || d.running != d.desired) {
			return fmt.Sprintf("%s online=%v phase=%d runs %s, desired %s", d.id, d.online, d.phase, d.running, d.desired)
		}
	}
	want := RevB
	if w.r.Phase == rollout.PhaseRolledBack {
		want = RevA
	}
	for _, d := range w.devs {
		if !d.dead && d.everB && d.desired != want && !d.reportedFailed {
			return fmt.Sprintf("%s got B, desired %s", d.id, d.desired)
		}
	}
	if w.r.Phase == rollout.PhaseSucceeded {
		for _, d := range w.devs {
			if !d.dead && d.desired != RevB && !d.reportedFailed {
				return fmt.Sprintf("%s desired %s", d.id, d.desired)
			}
		}
	}
	return ""
}

// quiet: nothing in flight, so time may move faster.
func (w *World) quiet() bool {
	for _, d := range w.devs {
		if d.phase != idle && !d.dead {
			return false
		}
	}
	return true
}

func (w *World) checkEnd() error {
	var errs []error
	if !w.finished {
		errs = append(errs, fmt.Errorf("fleet not settled at the horizon: %s; %+v", w.unsettled(), w.r.Status()))
	}
	switch {
	case w.undone && w.crossed < 0:
		if w.r.Phase != rollout.PhaseRolledBack {
			errs = append(errs, fmt.Errorf("undone, yet the rollout is %s", w.r.Phase))
		}
		for _, d := range w.devs {
			if !d.dead && (d.running != RevA || d.desired != RevA) {
				errs = append(errs, fmt.Errorf("%s runs %s (desired %s) after undo", d.id, d.running, d.desired))
			}
		}
	case w.opt.Bad && w.crossed >= 0:
		if w.r.Phase != rollout.PhaseRolledBack {
			errs = append(errs, fmt.Errorf("threshold crossed, yet the rollout is %s", w.r.Phase))
		}
		for _, d := range w.devs {
			if !d.dead && d.everB && (d.running != RevA || d.desired != RevA) {
				errs = append(errs, fmt.Errorf("%s got the bad version and runs %s (desired %s)", d.id, d.running, d.desired))
			}
		}
	case w.opt.Bad:
		// Failures stayed under the thresholds: the rollout went on, and
		// kept the devices it failed on on A.
		if w.r.Phase != rollout.PhaseSucceeded {
			errs = append(errs, fmt.Errorf("failures under the thresholds, yet the rollout is %s (%s)", w.r.Phase, w.r.Reason))
		}
		for _, d := range w.devs {
			if d.dead {
				continue
			}
			if d.reportedFailed && d.running != RevA || !d.reportedFailed && (d.running != RevB || d.health != rollout.HealthHealthy) {
				errs = append(errs, fmt.Errorf("%s runs %s (%s), failed=%v", d.id, d.running, d.health, d.reportedFailed))
			}
		}
	case !w.opt.Bad:
		if w.r.Phase != rollout.PhaseSucceeded {
			errs = append(errs, fmt.Errorf("good version: rollout is %s (%s)", w.r.Phase, w.r.Reason))
		}
		for _, d := range w.devs {
			if !d.dead && (d.running != RevB || d.health != rollout.HealthHealthy) {
				errs = append(errs, fmt.Errorf("%s runs %s (%s) after a good rollout", d.id, d.running, d.health))
			}
		}
	}
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return errors.Join(errs...)
}

// Summary is one line about the run.
func (w *World) Summary() string {
	dead, everB := 0, 0
	for _, d := range w.devs {
		if d.dead {
			dead++
		}
		if d.everB {
			everB++
		}
	}
	return fmt.Sprintf("seed=%d devices=%d phase=%s t=%s steps=%d dead=%d gotB=%d undone=%v reason=%q",
		w.opt.Seed, len(w.devs), w.r.Phase, w.now.Sub(Start), w.steps, dead, everB, w.undone, w.r.Reason)
}
