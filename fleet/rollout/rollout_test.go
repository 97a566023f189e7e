package rollout_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/tender-edge/tender/fleet/rollout"
)

const revA, revB = "aaaaaaaa", "bbbbbbbb"

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) // a Monday

// fleet drives a Rollout the way the controller does: it publishes
// (records) the desired revisions with generations, and reports what the
// test says the devices do.
type fleet struct {
	t       *testing.T
	r       *rollout.Rollout
	now     time.Time
	gen     map[string]uint64 // last generation published per device
	desired map[string]string
	log     []rollout.Action
}

func newFleet(t *testing.T, n int, mod func(*rollout.Spec)) *fleet {
	t.Helper()
	spec := rollout.Spec{App: "thermo", From: revA, To: revB}
	for i := range n {
		spec.Devices = append(spec.Devices, rollout.Device{ID: fmt.Sprintf("d%02d", i)})
	}
	if mod != nil {
		mod(&spec)
	}
	r, err := rollout.New(spec, t0)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, r: r, now: t0, gen: map[string]uint64{}, desired: map[string]string{}}
	for _, d := range spec.Devices {
		f.report(d.ID, revA, rollout.HealthHealthy)
	}
	return f
}

func (f *fleet) observe(id string, o rollout.Observation) {
	f.t.Helper()
	if err := f.r.Observe(id, o); err != nil {
		f.t.Fatal(err)
	}
}

// report makes device id online, running rev with health h, having seen
// the last generation published to it.
func (f *fleet) report(id, rev string, h rollout.Health) {
	f.t.Helper()
	f.observe(id, rollout.Observation{Online: true, Revision: rev, Generation: f.gen[id], Health: h})
}

func (f *fleet) offline(id string) {
	f.t.Helper()
	f.observe(id, rollout.Observation{Online: false, Since: f.now})
}

// step advances the clock by d, steps, and publishes.
func (f *fleet) step(d time.Duration) []rollout.Action {
	f.t.Helper()
	f.now = f.now.Add(d)
	acts := f.r.Step(rollout.Input{Now: f.now})
	for _, a := range acts {
		if a.Kind == rollout.ActSetDesired {
			f.gen[a.Device]++
			f.desired[a.Device] = a.Revision
			f.r.Published(a.Device, a.Revision, f.gen[a.Device])
		}
	}
	f.log = append(f.log, acts...)
	return acts
}

// converge makes every device asked for a revision run it with health h.
func (f *fleet) converge(h rollout.Health) {
	for id, rev := range f.desired {
		f.report(id, rev, h)
	}
}

func started(acts []rollout.Action, rev string) []string {
	var ids []string
	for _, a := range acts {
		if a.Kind == rollout.ActSetDesired && a.Revision == rev {
			ids = append(ids, a.Device)
		}
	}
	slices.Sort(ids)
	return ids
}

func has(acts []rollout.Action, k rollout.ActionKind) bool {
	return slices.ContainsFunc(acts, func(a rollout.Action) bool { return a.Kind == k })
}

func (f *fleet) state(id string) rollout.DeviceState {
	for _, d := range f.r.Devices {
		if d.ID == id {
			return d.State
		}
	}
	f.t.Fatalf("no device %s", id)
	return ""
}

func TestNew_RefusesBadSpecs(t *testing.T) {
	dev := []rollout.Device{{ID: "a"}, {ID: "b"}}
	for _, tc := range []struct {
		field string
		spec  rollout.Spec
	}{
		{"to", rollout.Spec{Devices: dev}},
		{"to", rollout.Spec{From: revA, To: revA, Devices: dev}},
		{"devices[1].id", rollout.Spec{To: revB, Devices: []rollout.Device{{ID: "a"}, {ID: "a"}}}},
		{"devices[0].zone", rollout.Spec{To: revB, Devices: []rollout.Device{{ID: "a", Zone: "+25:00"}}}},
		{"waves[1]", rollout.Spec{To: revB, Devices: dev, Waves: []string{"1", "ten"}}},
		{"waves[0]", rollout.Spec{To: revB, Devices: dev, Waves: []string{"120%"}}},
		{"maxUnavailable", rollout.Spec{To: revB, Devices: dev, MaxUnavailable: "-1"}},
		{"failureThreshold", rollout.Spec{To: revB, Devices: dev, FailureThreshold: "x%"}},
		{"healthyFor", rollout.Spec{To: revB, Devices: dev, HealthyFor: -time.Second}},
		{"pace", rollout.Spec{To: revB, Devices: dev, Pace: -1}},
		{"windows[0]", rollout.Spec{To: revB, Devices: dev, Windows: []rollout.Window{{Selector: map[string]string{"a": "b"}, Schedule: "mon 1-2"}}}},
		{"windows[0].selector", rollout.Spec{To: revB, Devices: dev, Windows: []rollout.Window{{Schedule: "mon 01:00-02:00"}}}},
	} {
		_, err := rollout.New(tc.spec, t0)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(fmt.Sprint(err), tc.field) {
			t.Errorf("%s: err = %v, want invalid argument naming the field", tc.field, err)
		}
	}
}

func TestNew_WavesAreCumulative(t *testing.T) {
	f := newFleet(t, 10, func(s *rollout.Spec) {
		s.Waves = []string{"1", "10%", "50%", "80%"}
		s.FailureThreshold = "50%"
	})
	if want := []int{1, 1, 5, 10}; !slices.Equal(f.r.WaveEnds, want) {
		t.Errorf("wave ends %v, want %v (cumulative, rounded up, last is everything)", f.r.WaveEnds, want)
	}
	if want := []int{0, 0, 2, 2}; !slices.Equal(f.r.Thresholds, want) {
		t.Errorf("thresholds %v, want %v (of each wave's size, rounded down)", f.r.Thresholds, want)
	}
	if f.r.MaxUnavailable != 1 {
		t.Errorf("maxUnavailable %d, want the default 10%% of 10", f.r.MaxUnavailable)
	}
}

func TestStep_WavesSoakAndSucceed(t *testing.T) {
	f := newFleet(t, 10, func(s *rollout.Spec) {
		s.Waves = []string{"1", "50%"}
		s.MaxUnavailable = "2"
		s.HealthyFor = time.Minute
	})
	if got := started(f.step(0), revB); !slices.Equal(got, []string{"d00"}) {
		t.Fatalf("first step started %v, want the canary d00 only", got)
	}
	f.report("d00", revB, rollout.HealthStarting)
	if got := started(f.step(time.Second), revB); got != nil || f.state("d00") != rollout.StateUpdated {
		t.Fatalf("started %v while the canary is %s", got, f.state("d00"))
	}
	f.converge(rollout.HealthHealthy)
	if got := started(f.step(time.Second), revB); got != nil {
		t.Fatalf("started %v before the soak", got)
	}
	if got := started(f.step(59*time.Second), revB); got != nil {
		t.Fatalf("started %v before the soak ended", got)
	}
	if got := started(f.step(time.Second), revB); !slices.Equal(got, []string{"d01", "d02"}) {
		t.Fatalf("after the soak started %v, want d01 d02 (maxUnavailable 2)", got)
	}
	if got := f.r.Status().Waves[1]; got.Updating != 2 || got.Pending != 7 || got.Size != 9 {
		t.Errorf("wave 2 status %+v", got)
	}
	for i := 0; f.r.Phase == rollout.PhaseProgressing; i++ {
		if i > 100 {
			t.Fatalf("no end: %+v", f.r.Status())
		}
		f.converge(rollout.HealthHealthy)
		acts := f.step(30 * time.Second)
		if n := len(started(acts, revB)); n > 2 {
			t.Fatalf("started %d devices at once, maxUnavailable is 2", n)
		}
	}
	if f.r.Phase != rollout.PhaseSucceeded || !has(f.log, rollout.ActDone) {
		t.Fatalf("phase %s, done emitted %v", f.r.Phase, has(f.log, rollout.ActDone))
	}
	for _, d := range f.r.Devices {
		if d.State != rollout.StateHealthy {
			t.Errorf("%s: %s", d.ID, d.State)
		}
	}
}

func TestStep_ThresholdCrossedRollsBack(t *testing.T) {
	f := newFleet(t, 10, func(s *rollout.Spec) {
		s.Waves = []string{"2", "100%"}
		s.MaxUnavailable = "5"
		s.FailureThreshold = "50%" // 1 of wave 1's 2
	})
	f.step(0)
	f.converge(rollout.HealthHealthy)
	f.step(time.Second) // wave 1 healthy; no soak: wave 2 starts
	if got := f.r.Status().Waves[1].Updating; got != 5 {
		t.Fatalf("wave 2 updating %d, want 5", got)
	}
	f.report("d02", revB, rollout.HealthUnhealthy)
	acts := f.step(time.Second)
	if has(acts, rollout.ActFailed) || f.r.Phase != rollout.PhaseProgressing {
		t.Fatalf("one failure of wave 2 (threshold 4) stopped the rollout: %v", acts)
	}
	if !slices.Contains(started(acts, revA), "d02") {
		t.Fatalf("failed d02 not asked back to A: %v", acts)
	}
	f.report("d03", revB, rollout.HealthCrashLoop)
	f.report("d04", revA, rollout.HealthRolledBack)
	f.report("d05", revB, rollout.HealthUnhealthy)
	f.report("d06", revB, rollout.HealthUnhealthy)
	acts = f.step(time.Second)
	if !has(acts, rollout.ActFailed) || f.r.Phase != rollout.PhaseRollingBack {
		t.Fatalf("5 failures of 8 in wave 2 (threshold 4): phase %s, %v", f.r.Phase, acts)
	}
	// Wave 1's healthy devices go back within the budget; the rest at once.
	if got := started(acts, revA); !slices.Equal(got, []string{"d03", "d04", "d05", "d06"}) {
		t.Errorf("asked back to A: %v", got)
	}
	for i := 0; f.r.Phase == rollout.PhaseRollingBack; i++ {
		if i > 20 {
			t.Fatalf("no end: %+v", f.r.Status())
		}
		f.converge(rollout.HealthHealthy)
		f.step(time.Second)
	}
	for _, d := range f.r.Devices {
		if f.desired[d.ID] == revB || d.Wave == 2 && d.ID > "d06" && d.Touched {
			t.Errorf("%s: desired %q touched %v after rollback", d.ID, f.desired[d.ID], d.Touched)
		}
	}
	if f.state("d00") != rollout.StateRolledBack || f.state("d07") != rollout.StatePending {
		t.Errorf("d00 %s (want rolled-back), d07 %s (never touched: pending)", f.state("d00"), f.state("d07"))
	}
}

func TestStep_OfflineNeitherStallsNorFails(t *testing.T) {
	f := newFleet(t, 4, func(s *rollout.Spec) { s.MaxUnavailable = "4" })
	f.offline("d01") // before it was asked
	acts := f.step(0)
	if got := started(acts, revB); !slices.Equal(got, []string{"d00", "d02", "d03"}) {
		t.Fatalf("started %v", got)
	}
	f.offline("d02") // after it was asked
	f.step(time.Second)
	f.converge(rollout.HealthHealthy)
	f.offline("d02")
	f.step(time.Hour)
	if f.r.Phase != rollout.PhaseSucceeded {
		t.Fatalf("offline devices stalled the rollout: %+v", f.r.Status())
	}
	if f.state("d01") != rollout.StateOffline || f.state("d02") != rollout.StateOffline {
		t.Fatalf("d01 %s d02 %s, want offline", f.state("d01"), f.state("d02"))
	}
	// Back after hours: d01 is started now, d02 finishes its update.
	f.report("d01", revA, rollout.HealthHealthy)
	f.observe("d02", rollout.Observation{Online: true, Revision: revA, Health: rollout.HealthHealthy}) // has not seen B yet
	f.step(3 * time.Hour)
	if f.desired["d01"] != revB || f.state("d02") != rollout.StateUpdating {
		t.Fatalf("back online: d01 desired %q, d02 %s", f.desired["d01"], f.state("d02"))
	}
	f.converge(rollout.HealthHealthy)
	f.step(time.Second)
	for _, d := range f.r.Devices {
		if d.State != rollout.StateHealthy {
			t.Errorf("%s: %s", d.ID, d.State)
		}
	}
}

func TestStep_DeferredShownAndNotStalling(t *testing.T) {
	f := newFleet(t, 2, func(s *rollout.Spec) { s.MaxUnavailable = "2" })
	f.step(0)
	f.observe("d00", rollout.Observation{Online: true, Revision: revA, Health: rollout.HealthHealthy, Deferred: true})
	f.report("d01", revB, rollout.HealthHealthy)
	acts := f.step(time.Second)
	if f.state("d00") != rollout.StateDeferred || f.r.Phase != rollout.PhaseSucceeded || !has(acts, rollout.ActDone) {
		t.Fatalf("d00 %s, phase %s", f.state("d00"), f.r.Phase)
	}
	if got := f.r.Status().Waves[0].Deferred; got != 1 {
		t.Errorf("status deferred %d", got)
	}
	f.report("d00", revB, rollout.HealthHealthy) // lock released
	f.step(time.Second)
	if f.state("d00") != rollout.StateHealthy {
		t.Errorf("d00 %s after its lock was released", f.state("d00"))
	}
}

func TestStep_RefusedOrStuckDeviceFails(t *testing.T) {
	f := newFleet(t, 2, func(s *rollout.Spec) {
		s.MaxUnavailable = "2"
		s.FailureThreshold = "2"
		s.ProgressDeadline = 10 * time.Minute
	})
	f.step(0)
	f.report("d00", revA, rollout.HealthHealthy) // saw its generation, still runs A: refused
	f.step(time.Second)
	if f.state("d00") != rollout.StateFailed {
		t.Fatalf("d00 %s, want failed (refused)", f.state("d00"))
	}
	f.observe("d01", rollout.Observation{Online: true, Revision: revA, Health: rollout.HealthHealthy}) // never sees it
	f.step(10*time.Minute - time.Second)
	if f.state("d01") != rollout.StateUpdating {
		t.Fatalf("d01 %s at the deadline", f.state("d01"))
	}
	f.step(time.Second)
	if f.state("d01") != rollout.StateFailed {
		t.Fatalf("d01 %s past the deadline, want failed", f.state("d01"))
	}
}

// A removal (To "") goes through waves like any change: the app leaves
// the first wave's devices, then the rest once those are settled; undone,
// it comes back.
func TestStep_RemovalInWaves(t *testing.T) {
	f := newFleet(t, 10, func(s *rollout.Spec) {
		s.To = ""
		s.Waves = []string{"1", "100%"}
		s.MaxUnavailable = "100%"
	})
	if got := started(f.step(0), ""); !slices.Equal(got, []string{"d00"}) {
		t.Fatalf("first wave removed from %v, want [d00]", got)
	}
	if got := started(f.step(time.Second), ""); len(got) != 0 {
		t.Fatalf("removed from %v before the first wave settled", got)
	}
	// A report from before the removal, of an app the agent had rolled
	// back by itself, is no verdict on the removal.
	f.observe("d00", rollout.Observation{Online: true, Revision: revA, Health: rollout.HealthRolledBack})
	f.step(time.Second)
	if s := f.state("d00"); s != rollout.StateUpdating {
		t.Fatalf("d00 is %s on a stale rolled-back report, want updating", s)
	}
	f.report("d00", "", rollout.HealthUnknown) // the app gone from its report
	if got := started(f.step(time.Second), ""); len(got) != 9 {
		t.Fatalf("second wave removed from %d devices, want 9", len(got))
	}
	f.converge(rollout.HealthUnknown)
	f.step(time.Second)
	if f.r.Phase != rollout.PhaseSucceeded {
		t.Fatalf("phase %s after every device dropped the app, want succeeded", f.r.Phase)
	}
	if err := f.r.Command(rollout.Undo, f.now); err != nil {
		t.Fatal(err)
	}
	if got := started(f.step(time.Second), revA); len(got) != 10 {
		t.Fatalf("undo of a removal gave the app back to %d devices, want 10", len(got))
	}
}

func TestStep_Pace(t *testing.T) {
	f := newFleet(t, 30, func(s *rollout.Spec) {
		s.MaxUnavailable = "100%"
		s.Pace = 4
	})
	for i, want := range []int{4, 0, 4} {
		if got := len(started(f.step(time.Duration(i)*30*time.Second), revB)); got != want {
			t.Fatalf("step %d (t+%ds) started %d, want %d", i, i*30, got, want)
		}
	}
}

func TestStep_MaintenanceWindows(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	f := newFleet(t, 3, func(s *rollout.Spec) {
		s.MaxUnavailable = "3"
		s.Devices[0].Labels = map[string]string{"site": "berlin"}
		s.Devices[0].Zone = "Europe/Berlin"
		s.Devices[1].Labels = map[string]string{"site": "nyc"}
		s.Devices[1].Zone = "-05:00"
		s.Windows = []rollout.Window{
			{Selector: map[string]string{"site": "berlin"}, Schedule: "mon-fri 14:00-15:00"},
			{Selector: map[string]string{"site": "nyc"}, Schedule: "mon 08:00-09:00"},
		}
	})
	zones := map[string]*time.Location{"Europe/Berlin": berlin}
	step := func(at time.Time, locs map[string]*time.Location) []string {
		return started(f.r.Step(rollout.Input{Now: at, Locations: locs}), revB)
	}
	// 12:30 UTC: 13:30 in Berlin, 07:30 in New York.
	if got := step(t0.Add(30*time.Minute), zones); !slices.Equal(got, []string{"d02"}) {
		t.Fatalf("started %v, want d02 only (no window)", got)
	}
	// 13:00 UTC: 08:00 in New York; 14:00 in Berlin, but its zone is not loaded.
	if got := step(t0.Add(time.Hour), nil); !slices.Equal(got, []string{"d01"}) {
		t.Fatalf("started %v, want d01 (08:00 New York), not d00 whose zone is unknown", got)
	}
	if got := step(t0.Add(time.Hour), zones); !slices.Equal(got, []string{"d00"}) {
		t.Fatalf("started %v, want d00 (14:00 Berlin)", got)
	}
}

func TestCommand_PauseResumeAbortUndo(t *testing.T) {
	f := newFleet(t, 4, func(s *rollout.Spec) { s.MaxUnavailable = "1" })
	f.step(0)
	if err := f.r.Command(rollout.Pause, f.now); err != nil {
		t.Fatal(err)
	}
	f.converge(rollout.HealthHealthy)
	if got := started(f.step(time.Second), revB); got != nil {
		t.Fatalf("paused, yet started %v", got)
	}
	if err := f.r.Command(rollout.Resume, f.now); err != nil {
		t.Fatal(err)
	}
	if got := started(f.step(time.Second), revB); !slices.Equal(got, []string{"d01"}) {
		t.Fatalf("resumed: started %v", got)
	}
	if err := f.r.Command(rollout.Abort, f.now); err != nil {
		t.Fatal(err)
	}
	f.report("d01", revB, rollout.HealthUnhealthy)
	if acts := f.step(time.Second); has(acts, rollout.ActSetDesired) || f.state("d01") != rollout.StateFailed {
		t.Fatalf("aborted: %v, d01 %s", acts, f.state("d01"))
	}
	if err := f.r.Command(rollout.Resume, f.now); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("resume after abort: %v", err)
	}
	if err := f.r.Command(rollout.Undo, f.now); err != nil {
		t.Fatal(err)
	}
	for i := 0; f.r.Phase == rollout.PhaseRollingBack; i++ {
		if i > 10 {
			t.Fatalf("no end: %+v", f.r.Status())
		}
		f.step(time.Second)
		f.converge(rollout.HealthHealthy)
	}
	if f.r.Phase != rollout.PhaseRolledBack || f.desired["d00"] != revA || f.desired["d01"] != revA {
		t.Fatalf("after undo: phase %s, desired %v", f.r.Phase, f.desired)
	}
	if _, ok := f.desired["d02"]; ok {
		t.Errorf("undo touched d02, which never got B")
	}
	if err := f.r.Command(rollout.Undo, f.now); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("undo twice: %v", err)
	}
	if err := f.r.Command("restart", f.now); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("unknown command: %v", err)
	}
}

// A rollout persisted and loaded back (the controller restarted) decides
// exactly as the one that stayed in memory.
func TestRollout_JSONRoundTripDecidesTheSame(t *testing.T) {
	mk := func() *fleet {
		return newFleet(t, 20, func(s *rollout.Spec) {
			s.Waves = []string{"1", "50%"}
			s.MaxUnavailable = "3"
			s.Pace = 5
			s.Devices[3].Labels = map[string]string{"night": "yes"}
			s.Windows = []rollout.Window{{Selector: map[string]string{"night": "yes"}, Schedule: "daily 13:00-14:00"}}
		})
	}
	a, b := mk(), mk()
	for i := range 40 {
		a.step(time.Minute)
		b.step(time.Minute)
		data, err := json.Marshal(b.r)
		if err != nil {
			t.Fatal(err)
		}
		b.r = new(rollout.Rollout)
		if err := json.Unmarshal(data, b.r); err != nil {
			t.Fatal(err)
		}
		h := rollout.HealthHealthy
		if i == 7 {
			h = rollout.HealthUnhealthy
		}
		a.converge(h)
		b.converge(h)
	}
	if fmt.Sprint(a.log) != fmt.Sprint(b.log) {
		t.Fatalf("decisions differ after reloading:\n%v\n%v", a.log, b.log)
	}
}

// A device that was healthy and turns unhealthy later counts as failed
// and goes back to A; during a rollback, a healthy device that drops
// off is asked back to A at once (retained), costing no availability.
func TestStep_LateFailureAndOfflineDuringRollback(t *testing.T) {
	f := newFleet(t, 4, func(s *rollout.Spec) {
		s.MaxUnavailable = "1"
		s.FailureThreshold = "1"
	})
	for range 8 {
		f.step(time.Second)
		f.converge(rollout.HealthHealthy)
	}
	if f.r.Phase != rollout.PhaseSucceeded {
		t.Fatalf("phase %s", f.r.Phase)
	}
	f.report("d00", revB, rollout.HealthUnhealthy)
	acts := f.step(time.Second)
	if f.state("d00") != rollout.StateFailed || !slices.Equal(started(acts, revA), []string{"d00"}) {
		t.Fatalf("late failure: d00 %s, %v", f.state("d00"), acts)
	}
	f.report("d01", revB, rollout.HealthCrashLoop) // a second failure: over the threshold of 1
	f.report("d00", revA, rollout.HealthHealthy)
	acts = f.step(time.Second)
	if f.r.Phase != rollout.PhaseRollingBack || !has(acts, rollout.ActFailed) {
		t.Fatalf("two failures over a threshold of 1 after success: phase %s", f.r.Phase)
	}
	f.offline("d03")
	if acts := f.step(time.Second); !slices.Contains(started(acts, revA), "d03") {
		t.Fatalf("d03 went offline while waiting to go back, not asked back: %v", acts)
	}
}

// Undo decided on what was known before the latest reports: a device
// reported unhealthy meanwhile goes back at once, outside the budget,
// since it is out of service already.
func TestCommand_UndoJudgesTheLatestReports(t *testing.T) {
	f := newFleet(t, 3, func(s *rollout.Spec) {
		s.MaxUnavailable = "1"
		s.FailureThreshold = "3"
	})
	for range 6 {
		f.step(time.Second)
		f.converge(rollout.HealthHealthy)
	}
	f.step(time.Second)
	if f.r.Phase != rollout.PhaseSucceeded {
		t.Fatalf("phase %s", f.r.Phase)
	}
	f.report("d02", revB, rollout.HealthUnhealthy)
	if err := f.r.Command(rollout.Undo, f.now); err != nil {
		t.Fatal(err)
	}
	acts := f.step(time.Second)
	if got := started(acts, revA); !slices.Equal(got, []string{"d02"}) {
		t.Fatalf("undo asked back %v, want d02 (unhealthy: at once), which takes the budget of 1", got)
	}
	if got := f.r.Unavailable(); got != 1 {
		t.Fatalf("unavailable %d, want 1 (d02)", got)
	}
}

func TestStep_NoDevicesSucceedsAndNewAppFailsToRemoval(t *testing.T) {
	r, err := rollout.New(rollout.Spec{App: "thermo", To: revB}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if acts := r.Step(rollout.Input{Now: t0}); !has(acts, rollout.ActDone) {
		t.Fatalf("no devices: %v", acts)
	}
	// A new app (From ""): a device it fails on is asked to remove it.
	f := newFleet(t, 2, func(s *rollout.Spec) { s.From, s.FailureThreshold, s.MaxUnavailable = "", "1", "2" })
	f.step(0)
	f.report("d00", revB, rollout.HealthCrashLoop)
	acts := f.step(time.Second)
	if f.state("d00") != rollout.StateFailed || !slices.Equal(started(acts, ""), []string{"d00"}) {
		t.Fatalf("d00 %s, %v", f.state("d00"), acts)
	}
}
