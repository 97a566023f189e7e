package reconcile

import (
	"go/build"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// behaviour is what a simulated container does once started.
type behaviour struct {
	exitAfter time.Duration // 0: runs until stopped
	exitCode  int
	oom       bool
	unhealthy bool // with a health check: never passes it
	// healthyAfter: with a health check, passes it this long after the
	// start (0: after 3 s).
	healthyAfter time.Duration
}

// world is a simulated device: Plan's actions change it, time is stepped.
type world struct {
	t        *testing.T
	now      time.Time
	desired  []wire.App
	progress map[string]Progress
	images   map[string]bool
	locked   map[string]bool
	capacity Capacity
	refused  map[string]string
	ctrs     map[string]*Observed
	behave   func(name string) behaviour
	events   []Event
	actions  []Action
	last     Decision
	restarts int // containers (re)started
}

func newWorld(t *testing.T, apps ...wire.App) *world {
	w := &world{t: t, now: t0, desired: apps, progress: map[string]Progress{}, images: map[string]bool{},
		locked: map[string]bool{}, ctrs: map[string]*Observed{}, behave: func(string) behaviour { return behaviour{} }}
	return w
}

func (w *world) input() Input {
	var obs []Observed
	for _, o := range w.ctrs {
		obs = append(obs, *o)
	}
	return Input{Now: w.now, Desired: w.desired, Observed: obs, Progress: w.progress, Images: w.images, Locked: w.locked, Capacity: w.capacity, Refused: w.refused}
}

// step plans once, applies the actions, then advances time by one second
// and lets the containers act.
func (w *world) step() Decision {
	d := Plan(w.input())
	w.last = d
	w.progress = d.Progress
	w.events = append(w.events, d.Events...)
	w.actions = append(w.actions, d.Actions...)
	for _, a := range d.Actions {
		switch a.Kind {
		case KindPull:
			w.images[a.Image] = true
		case KindStart, KindRestart:
			if a.Spec == nil || !w.images[a.Spec.Image] {
				w.t.Fatalf("%s %s without its image", a.Kind, a.Name)
			}
			if o, ok := w.ctrs[a.Name]; a.Kind == KindStart && ok && o.Status == StatusRunning {
				w.t.Fatalf("start of running container %s", a.Name)
			}
			var health Health
			if a.Spec.Health != nil {
				health = HealthStarting
			}
			w.ctrs[a.Name] = &Observed{Name: a.Name, Status: StatusRunning, StartedAt: w.now, Health: health, HealthSince: w.now}
			w.restarts++
		case KindRemove:
			if _, ok := w.ctrs[a.Name]; !ok {
				w.t.Fatalf("remove of unknown container %s", a.Name)
			}
			delete(w.ctrs, a.Name)
		}
	}
	w.now = w.now.Add(time.Second)
	for name, o := range w.ctrs {
		if o.Status != StatusRunning {
			continue
		}
		b := w.behave(name)
		if b.exitAfter > 0 && !w.now.Before(o.StartedAt.Add(b.exitAfter)) {
			o.Status, o.FinishedAt, o.ExitCode, o.OOMKilled = StatusExited, o.StartedAt.Add(b.exitAfter), b.exitCode, b.oom
			continue
		}
		after := 3 * time.Second
		if b.healthyAfter > 0 {
			after = b.healthyAfter
		}
		if o.Health == HealthStarting && w.now.Sub(o.StartedAt) >= after {
			o.Health, o.HealthSince = HealthHealthy, w.now
			if b.unhealthy {
				o.Health = HealthUnhealthy
			}
		}
	}
	return d
}

func (w *world) run(d time.Duration) {
	end := w.now.Add(d)
	for w.now.Before(end) {
		w.step()
	}
}

// running lists the running containers, sorted.
func (w *world) running() []string {
	var out []string
	for n, o := range w.ctrs {
		if o.Status == StatusRunning {
			out = append(out, n)
		}
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func app(name, version string, cs ...wire.Container) wire.App {
	return wire.App{Name: name, Version: version, Containers: cs}
}

func ctr(name, image string) wire.Container { return wire.Container{Name: name, Image: image} }

func withHealth(c wire.Container) wire.Container {
	c.Health = &wire.Health{TCP: "127.0.0.1:80"}
	return c
}

func cname(a wire.App, c string) string { return ContainerName(a.Name, c, a.Revision()) }

func TestContainerName(t *testing.T) {
	a := app("thermo", "1", ctr("reader", "busybox"))
	n := cname(a, "reader")
	if got, c, rev, ok := ParseName(n); !ok || got != "thermo" || c != "reader" || rev != a.Revision() {
		t.Fatalf("ParseName(%q) = %q %q %q %v", n, got, c, rev, ok)
	}
	for _, bad := range []string{"thermo", "a.b", "a.b.c.d", "a.b.zzzzzzzz", "A.b.0123abcd", "a.b.0123abc", "my-container"} {
		if _, _, _, ok := ParseName(bad); ok {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

func TestPlan_StartsMissingApp(t *testing.T) {
	a := app("web", "1", ctr("srv", "img:1"), ctr("side", "img:2"))
	w := newWorld(t, a)
	d := w.step()
	if len(d.Actions) != 2 || d.Actions[0].Kind != KindPull || d.Actions[1].Kind != KindPull || d.Apps[0].Phase != PhasePulling {
		t.Fatalf("first round: %+v", d)
	}
	d = w.step()
	if len(d.Actions) != 2 || d.Actions[0].Kind != KindStart || d.Actions[0].Name != cname(a, "srv") || d.Actions[0].Spec.Image != "img:1" {
		t.Fatalf("second round: %+v", d.Actions)
	}
	w.run(31 * time.Second)
	if p := w.progress["web"]; p.Confirmed == nil || p.Confirmed.Revision() != a.Revision() || w.last.Apps[0].Phase != PhaseRunning {
		t.Fatalf("not confirmed: %+v %+v", p, w.last.Apps)
	}
	if got := w.running(); len(got) != 2 {
		t.Fatalf("running %v", got)
	}
	// Steady state: nothing to do, nothing to wake for.
	d = w.step()
	if len(d.Actions) != 0 || !d.Wake.IsZero() {
		t.Fatalf("steady state: %+v wake %v", d.Actions, d.Wake)
	}
}

func TestPlan_Deterministic(t *testing.T) {
	a := app("web", "1", ctr("srv", "img:1"), ctr("b", "img:2"))
	b := app("db", "1", ctr("srv", "img:3"))
	w := newWorld(t, a, b)
	w.behave = func(string) behaviour { return behaviour{exitAfter: 2 * time.Second, exitCode: 3} }
	w.run(40 * time.Second)
	in := w.input()
	d1, d2 := Plan(in), Plan(in)
	if !reflect.DeepEqual(d1, d2) {
		t.Fatalf("two plans differ:\n%+v\n%+v", d1, d2)
	}
}

func TestPlan_RestartsCrashedWorkloadWithBackoff(t *testing.T) {
	a := app("web", "1", ctr("srv", "img:1"))
	// The container runs 5s and fails; measure each restart's delay after
	// the exit.
	var delays []time.Duration
	w2 := newWorld(t, a)
	w2.images["img:1"] = true
	w2.behave = func(string) behaviour { return behaviour{exitAfter: 5 * time.Second, exitCode: 1} }
	var lastFinish time.Time
	for w2.now.Before(t0.Add(3 * time.Hour)) {
		if o := w2.ctrs[cname(a, "srv")]; o != nil && o.Status == StatusExited {
			lastFinish = o.FinishedAt
		}
		d := w2.step()
		for _, act := range d.Actions {
			if act.Kind == KindRestart {
				delays = append(delays, w2.now.Add(-time.Second).Sub(lastFinish))
			}
		}
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	for i, wd := range want {
		if i >= len(delays) || delays[i] != wd*time.Second {
			t.Fatalf("restart delays %v, want prefix %v s", delays, want)
		}
	}
	// Never gives up: still restarting at the cap after 3 hours.
	if n := len(delays); n < 30 || delays[n-1] != DefaultBackoffCap {
		t.Fatalf("%d restarts, last delay %v", n, delays[n-1])
	}
	st := w2.last.Apps[0]
	// A first install has nothing to roll back to: it is failing, and
	// still restarted.
	if st.Phase != PhaseFailing || !strings.Contains(st.Message, "crash-looping") {
		t.Fatalf("status %+v", st)
	}
	if c := st.Containers[0]; c.State != StateCrashLoop && c.State != StateStarting {
		t.Fatalf("container state %+v", c)
	}
	if !strings.Contains(w2.actions[len(w2.actions)-1].Reason, "exited with code 1") {
		t.Errorf("reason %q", w2.actions[len(w2.actions)-1].Reason)
	}
}

func TestPlan_BackoffResetsAfterLongRun(t *testing.T) {
	a := app("web", "1", ctr("srv", "img:1"))
	w := newWorld(t, a)
	w.images["img:1"] = true
	w.behave = func(string) behaviour { return behaviour{exitAfter: 11 * time.Minute, exitCode: 1} }
	w.run(time.Hour)
	for name, log := range w.progress["web"].Restarts {
		if log.Streak != 1 {
			t.Fatalf("%s: streak %d after long runs, want 1", name, log.Streak)
		}
	}
	if n := countKind(w.actions, KindRestart); n < 4 {
		t.Fatalf("%d restarts in an hour", n)
	}
}

func countKind(as []Action, k Kind) int {
	n := 0
	for _, a := range as {
		if a.Kind == k {
			n++
		}
	}
	return n
}

func TestPlan_RestartPolicies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		policy    string
		b         behaviour
		restarted bool
		state     State
	}{
		{"always restarts clean exit", wire.RestartAlways, behaviour{exitAfter: time.Second}, true, ""},
		{"on-failure restarts failure", wire.RestartOnFailure, behaviour{exitAfter: time.Second, exitCode: 2}, true, ""},
		{"on-failure leaves clean exit", wire.RestartOnFailure, behaviour{exitAfter: time.Second}, false, StateCompleted},
		{"on-failure restarts OOM kill", wire.RestartOnFailure, behaviour{exitAfter: time.Second, oom: true}, true, ""},
		{"never leaves failure", wire.RestartNever, behaviour{exitAfter: time.Second, exitCode: 1}, false, StateExited},
		{"never leaves OOM kill", wire.RestartNever, behaviour{exitAfter: time.Second, oom: true}, false, StateExited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ctr("srv", "img:1")
			c.Restart = tc.policy
			a := app("job", "1", c)
			w := newWorld(t, a)
			w.images["img:1"] = true
			w.behave = func(string) behaviour { return tc.b }
			w.run(10 * time.Second)
			if got := countKind(w.actions, KindRestart) > 0; got != tc.restarted {
				t.Fatalf("restarted = %v, want %v; actions %+v", got, tc.restarted, w.actions)
			}
			if tc.state != "" {
				if got := w.last.Apps[0].Containers[0].State; got != tc.state {
					t.Fatalf("state %q, want %q", got, tc.state)
				}
			}
			if tc.b.oom && tc.restarted && !strings.Contains(w.actions[len(w.actions)-1].Reason, "OOM-killed") {
				t.Errorf("reason %q does not say OOM", w.actions[len(w.actions)-1].Reason)
			}
		})
	}
}

func TestPlan_RestartsUnhealthyContainer(t *testing.T) {
	a := app("web", "1", withHealth(ctr("srv", "img:1")))
	w := newWorld(t, a)
	w.images["img:1"] = true
	w.behave = func(string) behaviour { return behaviour{unhealthy: true} }
	w.run(30 * time.Second)
	if n := countKind(w.actions, KindRestart); n == 0 {
		t.Fatal("unhealthy container not restarted")
	}
}

// confirmedWorld returns a world where version 1 of app web runs confirmed.
func confirmedWorld(t *testing.T, v1 wire.App) *world {
	w := newWorld(t, v1)
	w.run(time.Minute)
	if p := w.progress[v1.Name]; p.Confirmed == nil || p.Confirmed.Version != v1.Version {
		t.Fatalf("v1 not confirmed: %+v", w.last.Apps)
	}
	return w
}

func TestPlan_UpdateHealthyIsConfirmed(t *testing.T) {
	v1 := app("web", "1", withHealth(ctr("srv", "img:1")))
	v2 := app("web", "2", withHealth(ctr("srv", "img:2")))
	w := confirmedWorld(t, v1)
	w.desired = []wire.App{v2}

	d := w.step()
	if len(d.Actions) != 1 || d.Actions[0].Kind != KindPull || d.Actions[0].Image != "img:2" {
		t.Fatalf("update must pull first, while v1 runs: %+v", d.Actions)
	}
	if got := w.running(); len(got) != 1 || got[0] != cname(v1, "srv") {
		t.Fatalf("running during pull: %v", got)
	}
	d = w.step()
	if len(d.Actions) != 2 || d.Actions[0].Kind != KindRemove || d.Actions[0].Name != cname(v1, "srv") || d.Actions[1].Kind != KindStart {
		t.Fatalf("swap: %+v", d.Actions)
	}
	if d.Apps[0].Phase != PhaseVerifying || !slicesContains(d.KeepImages, "img:1") {
		t.Fatalf("during verification: %+v keep %v", d.Apps[0], d.KeepImages)
	}
	w.run(40 * time.Second)
	p := w.progress["web"]
	if p.Confirmed == nil || p.Confirmed.Version != "2" || p.Target != nil || w.last.Apps[0].Phase != PhaseRunning {
		t.Fatalf("v2 not confirmed: %+v", w.last.Apps[0])
	}
	if slicesContains(w.last.KeepImages, "img:1") {
		t.Errorf("v1's image still kept after confirmation: %v", w.last.KeepImages)
	}
	if !hasEvent(w.events, PhaseRunning, "version 2 confirmed") {
		t.Errorf("events %+v", w.events)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func hasEvent(evs []Event, k Phase, sub string) bool {
	for _, e := range evs {
		if e.Kind == k && strings.Contains(e.Reason, sub) {
			return true
		}
	}
	return false
}

func TestPlan_UpdateUnhealthyIsRolledBack(t *testing.T) {
	v1 := app("web", "1", withHealth(ctr("srv", "img:1")))
	v2 := app("web", "2", withHealth(ctr("srv", "img:2")))
	w := confirmedWorld(t, v1)
	bad := cname(v2, "srv")
	w.behave = func(n string) behaviour { return behaviour{unhealthy: n == bad} }
	// v2 never passes its health check (it is restarted meanwhile).
	w.desired = []wire.App{v2}
	w.run(10 * time.Minute)

	st := w.last.Apps[0]
	if st.Phase != PhaseRolledBack || st.Version != "1" {
		t.Fatalf("status %+v", st)
	}
	if got := w.running(); len(got) != 1 || got[0] != cname(v1, "srv") {
		t.Fatalf("running after rollback: %v", got)
	}
	p := w.progress["web"]
	if p.RolledBack == nil || p.RolledBack.Version != "2" || p.Confirmed.Version != "1" {
		t.Fatalf("progress %+v", p)
	}
	if !hasEvent(w.events, PhaseRolledBack, "version 2 rolled back to 1") {
		t.Fatalf("events %+v", w.events)
	}
	t.Logf("reason: %s", p.RolledBack.Reason)

	// Not retried while version 2 stays desired.
	before := len(w.actions)
	w.run(time.Hour)
	for _, a := range w.actions[before:] {
		if a.Revision == v2.Revision() || a.Image == "img:2" {
			t.Fatalf("rolled-back version retried: %+v", a)
		}
	}
	// A new desired version is tried.
	v3 := app("web", "3", withHealth(ctr("srv", "img:3")))
	w.desired = []wire.App{v3}
	w.run(time.Minute)
	if p := w.progress["web"]; p.Confirmed.Version != "3" || p.RolledBack != nil {
		t.Fatalf("v3 not confirmed: %+v", w.last.Apps[0])
	}
}

func TestPlan_UpdateCrashLoopIsRolledBack(t *testing.T) {
	v1 := app("web", "1", ctr("srv", "img:1"))
	v2 := app("web", "2", ctr("srv", "img:2"))
	w := confirmedWorld(t, v1)
	bad := cname(v2, "srv")
	w.behave = func(n string) behaviour {
		if n == bad {
			return behaviour{exitAfter: 2 * time.Second, exitCode: 1, oom: true}
		}
		return behaviour{}
	}
	w.desired = []wire.App{v2}
	w.run(3 * time.Minute)
	p := w.progress["web"]
	if p.RolledBack == nil || !strings.Contains(p.RolledBack.Reason, "crash-looping") || !strings.Contains(p.RolledBack.Reason, "OOM-killed") {
		t.Fatalf("progress %+v", p.RolledBack)
	}
	if got := w.running(); len(got) != 1 || got[0] != cname(v1, "srv") {
		t.Fatalf("running after rollback: %v", got)
	}
}

func TestPlan_UpdateLock(t *testing.T) {
	v1 := app("web", "1", ctr("srv", "img:1"))
	v2 := app("web", "2", ctr("srv", "img:2"))
	t.Run("deferred, then proceeds when released", func(t *testing.T) {
		w := confirmedWorld(t, v1)
		w.locked["web"] = true
		w.desired = []wire.App{v2}
		w.run(time.Minute)
		if st := w.last.Apps[0]; st.Phase != PhaseDeferred || st.Version != "1" || !strings.Contains(st.Message, "update lock") {
			t.Fatalf("status %+v", st)
		}
		if !w.images["img:2"] {
			t.Error("image not pulled while deferred")
		}
		if got := w.running(); len(got) != 1 || got[0] != cname(v1, "srv") {
			t.Fatalf("running while deferred: %v", got)
		}
		if n := len(w.events); w.events[n-1].Kind != PhaseDeferred || hasEventCount(w.events, PhaseDeferred) != 1 {
			t.Fatalf("events %+v", w.events)
		}
		delete(w.locked, "web")
		w.run(time.Minute)
		if p := w.progress["web"]; p.Confirmed.Version != "2" {
			t.Fatalf("not updated after the lock went: %+v", w.last.Apps[0])
		}
	})
	t.Run("override", func(t *testing.T) {
		w := confirmedWorld(t, v1)
		w.locked["web"] = true
		v2o := v2
		v2o.UpdateOverride = true
		w.desired = []wire.App{v2o}
		w.run(time.Minute)
		if p := w.progress["web"]; p.Confirmed.Version != "2" {
			t.Fatalf("override did not proceed: %+v", w.last.Apps[0])
		}
	})
}

func hasEventCount(evs []Event, k Phase) int {
	n := 0
	for _, e := range evs {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func mem(c wire.Container, m string) wire.Container {
	c.Resources.Memory = m
	return c
}

func TestPlan_Admission(t *testing.T) {
	running := app("a", "1", mem(ctr("srv", "img:1"), "512Mi"))
	newcomer := app("b", "1", mem(ctr("srv", "img:1"), "600Mi"))
	small := app("c", "1", mem(ctr("srv", "img:1"), "300Mi"))
	w := confirmedWorld(t, running)
	w.capacity = Capacity{Memory: 1 << 30, ReserveMemory: 128 << 20, MilliCPU: 2000}
	// The newcomer comes first in the document; the running app still wins.
	w.desired = []wire.App{newcomer, running, small}
	st := w.step().Apps[0]
	want := "app b needs 600Mi memory, 384Mi free of 1Gi (reserve 128Mi)"
	if st.Phase != PhaseRefused || st.Message != want {
		t.Fatalf("status %+v, want message %q", st, want)
	}
	// Once c runs, it keeps its place ahead of b too.
	w.run(time.Minute)
	if st := w.last.Apps[0]; st.Message != "app b needs 600Mi memory, 84Mi free of 1Gi (reserve 128Mi)" {
		t.Fatalf("status %+v", st)
	}
	if w.last.Apps[2].Phase != PhaseRunning || w.last.Apps[1].Phase != PhaseRunning {
		t.Fatalf("others: %+v", w.last.Apps)
	}
	for _, n := range w.running() {
		if strings.HasPrefix(n, "b.") {
			t.Fatalf("refused app runs: %v", w.running())
		}
	}
	// CPU.
	greedy := app("d", "1", ctr("srv", "img:1"))
	greedy.Containers[0].Resources.CPU = "1.5"
	w.capacity.ReserveMilliCPU = 1000
	w.desired = []wire.App{running, greedy}
	d := w.step()
	if want := "app d needs 1500m cpu, 1000m free of 2000m (reserve 1000m)"; d.Apps[1].Message != want {
		t.Fatalf("got %q, want %q", d.Apps[1].Message, want)
	}
	// An update that does not fit keeps the running version.
	bigger := app("a", "2", mem(ctr("srv", "img:1"), "2Gi"))
	w.desired = []wire.App{bigger}
	w.run(10 * time.Second)
	if st := w.last.Apps[0]; st.Phase != PhaseRefused || st.Version != "1" || !strings.Contains(st.Message, "update to version 2 refused: app a needs 2Gi memory, 896Mi free") {
		t.Fatalf("status %+v", st)
	}
}

func TestPlan_RemovesUndesiredApp(t *testing.T) {
	a := app("web", "1", ctr("srv", "img:1"), ctr("side", "img:1"))
	w := confirmedWorld(t, a)
	w.desired = nil
	d := w.step()
	if countKind(d.Actions, KindRemove) != 2 || len(w.ctrs) != 0 {
		t.Fatalf("actions %+v", d.Actions)
	}
	if _, ok := d.Progress["web"]; ok || !hasEvent(d.Events, PhaseRemoved, "web") {
		t.Fatalf("progress %+v events %+v", d.Progress, d.Events)
	}
	if d := w.step(); len(d.Actions)+len(d.Events) != 0 {
		t.Fatalf("second round: %+v", d)
	}
}

func TestPlan_AdoptsRunningContainersWithoutProgress(t *testing.T) {
	// The state file was lost: the containers found running are taken back.
	a := app("web", "1", ctr("srv", "img:1"))
	w := confirmedWorld(t, a)
	w.progress = nil
	d := w.step()
	if len(d.Actions) != 0 {
		t.Fatalf("actions after losing progress: %+v", d.Actions)
	}
	w.run(time.Minute)
	if p := w.progress["web"]; p.Confirmed == nil {
		t.Fatal("not confirmed again")
	}
}

func TestPlan_IgnoresForeignContainers(t *testing.T) {
	w := newWorld(t)
	w.ctrs["my-test"] = &Observed{Name: "my-test", Status: StatusRunning}
	if d := w.step(); len(d.Actions) != 0 {
		t.Fatalf("actions on a foreign container: %+v", d.Actions)
	}
}

// TestDeps keeps the core pure (STYLE.md §1).
func TestDeps(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		switch {
		case imp == "os", imp == "net", imp == "math/rand", imp == "math/rand/v2",
			strings.Contains(imp, "bbolt"), strings.Contains(imp, "zerolog"), strings.HasPrefix(imp, "os/"), strings.HasPrefix(imp, "net/"):
			t.Errorf("core package imports %s", imp)
		}
	}
	for _, f := range pkg.GoFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "time.Now") {
			t.Errorf("%s reads the clock", f)
		}
	}
}

// An operator's restarts, however many and whenever (here: every few
// seconds while a new version is being verified), restart the containers
// at once and are never failures: no backoff, no crash loop, no rollback.
func TestPlan_RequestedRestartsAreNotFailures(t *testing.T) {
	v1 := app("web", "1", withHealth(ctr("srv", "img:1")))
	v2 := app("web", "2", withHealth(ctr("srv", "img:2")))
	w := confirmedWorld(t, v1)
	w.images["img:2"] = true
	w.desired = []wire.App{v2}
	w.step() // swap to v2: verifying
	name := cname(v2, "srv")
	for range 20 {
		o := w.ctrs[name]
		if o == nil {
			t.Fatalf("v2 container gone: %v", w.running())
		}
		before := w.restarts
		o.RestartRequested = true
		d := w.step()
		if len(d.Actions) != 1 || d.Actions[0].Kind != KindRestart || d.Actions[0].Name != name {
			t.Fatalf("requested restart: actions %+v", d.Actions)
		}
		if w.restarts != before+1 {
			t.Fatalf("restart not carried out")
		}
		if st := d.Apps[0].Containers[0]; st.Restarts != 0 || st.State == StateCrashLoop {
			t.Fatalf("a requested restart counted as a failure: %+v", st)
		}
		w.run(2 * time.Second)
	}
	w.run(3 * time.Minute)
	p := w.progress["web"]
	if p.RolledBack != nil || p.Confirmed == nil || p.Confirmed.Version != "2" {
		t.Fatalf("restarts during verification changed the outcome: %+v", w.last.Apps[0])
	}
}

func TestPlan_PolicyRefusal(t *testing.T) {
	v1 := app("web", "1", ctr("srv", "img:1"))
	w := newWorld(t, v1)
	w.images["img:1"] = true
	w.refused = map[string]string{"web": "app web, container srv: device /dev/sda is not allowed"}
	d := w.step()
	if len(d.Actions) != 0 || d.Apps[0].Phase != PhaseRefused || !strings.Contains(d.Apps[0].Message, "/dev/sda") {
		t.Fatalf("refused app: %+v %+v", d.Actions, d.Apps[0])
	}
	// A version admitted before keeps running when its update is refused.
	w = confirmedWorld(t, v1)
	v2 := app("web", "2", ctr("srv", "img:2"))
	w.images["img:2"] = true
	w.desired = []wire.App{v2}
	w.refused = map[string]string{"web": "device /dev/sda is not allowed"}
	w.run(time.Minute)
	if got := w.running(); len(got) != 1 || got[0] != cname(v1, "srv") || w.last.Apps[0].Phase != PhaseRefused ||
		!strings.Contains(w.last.Apps[0].Message, "update to version 2 refused") {
		t.Fatalf("running %v, status %+v", got, w.last.Apps[0])
	}
}

// A first install that turns healthy only after its deadline (a slow
// device: the emulated guests of make vmtest) is failing meanwhile, and
// running, confirmed, once it has been healthy for healthyFor.
func TestPlan_SlowFirstInstallRecovers(t *testing.T) {
	v1 := app("web", "1", withHealth(ctr("srv", "img:1")))
	w := newWorld(t, v1)
	w.images["img:1"] = true
	w.behave = func(string) behaviour { return behaviour{healthyAfter: 10 * time.Minute} }
	w.run(9 * time.Minute)
	if ph := w.last.Apps[0].Phase; ph != PhaseFailing {
		t.Fatalf("phase %s past the deadline, not yet healthy: want failing", ph)
	}
	w.run(3 * time.Minute)
	p := w.progress["web"]
	if ph := w.last.Apps[0].Phase; ph != PhaseRunning || p.Confirmed == nil || p.Confirmed.Version != "1" {
		t.Fatalf("phase %s, confirmed %+v after a minute healthy: want running, version 1 confirmed (%s)", ph, p.Confirmed, w.last.Apps[0].Message)
	}
}
