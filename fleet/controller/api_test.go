package controller_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/sync/wire"
)

// gate holds the controller's publishes while closed: the loop, which
// publishes, stops in the middle of a pass until it opens.
type gate struct {
	mu      sync.Mutex
	closed  bool
	failed  bool
	blocked int // publishes waiting
	cond    *sync.Cond
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) set(closed bool) {
	g.mu.Lock()
	g.closed = closed
	g.mu.Unlock()
	g.cond.Broadcast()
}

// fail lets the publishes waiting, and all later ones, fail.
func (g *gate) fail() {
	g.mu.Lock()
	g.failed = true
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocked
}

// gated is the real transport behind a gate.
type gated struct {
	controller.Transport
	g *gate
}

func (t gated) Publish(topic string, payload []byte, retained bool) error {
	g := t.g
	g.mu.Lock()
	g.blocked++
	for g.closed && !g.failed {
		g.cond.Wait()
	}
	g.blocked--
	failed := g.failed
	g.mu.Unlock()
	if failed {
		return errors.New("gate: transport stopped")
	}
	return t.Transport.Publish(topic, payload, retained)
}

// guard bounds a call that must not wait for the loop: the loop is
// stopped for good, so a call that waits for it never returns; the bound
// only turns that hang into a failure.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// busyLoop starts a controller whose loop stops in a publish: the
// rollout of thermo 2.0 has started and is stored, its first wave's device
// took 2.0, and the loop publishing 2.0 to the second wave does not
// return until the gate opens.
func busyLoop(t *testing.T) (*harness, []*fakeDevice) {
	h := &harness{t: t, gate: newGate()}
	h.init()
	t.Cleanup(h.gate.fail) // before h.stop: a loop stopped in a publish lets go
	gws := []*fakeDevice{h.device("gw-1", berlin), h.device("gw-2", berlin)}
	h.apply("1.0", `"1"`, `"100%"`)
	eventually(t, "1.0 on both devices", func() bool { return gws[0].Running("thermo") == "1.0" && gws[1].Running("thermo") == "1.0" })
	eventually(t, "first rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })

	for _, g := range gws {
		g.mu.Lock()
		g.hold["2.0"] = true
		g.mu.Unlock()
	}
	h.apply("2.0", `"1"`, `"100%"`)
	eventually(t, "the first wave's device received 2.0", func() bool { return gws[0].Held() || gws[1].Held() })
	eventually(t, "the rollout to 2.0 stored", func() bool {
		r, err := h.c.Rollout(context.Background(), "thermo")
		return err == nil && r.To == "2.0 (2)" && r.Phase == "progressing"
	})
	h.gate.set(true)
	for _, g := range gws {
		g.Release("2.0")
	}
	eventually(t, "the loop stopped in its publish to the second wave", func() bool { return h.gate.waiting() > 0 })
	return h, gws
}

// With the loop stopped in the middle of a pass, the API still answers:
// reads from what the last pass published, writes stored and answered
// at once. A rollout command is answered with the rollout as it will be,
// and the loop applies it once it runs again.
func TestAPI_AnswersWhileTheLoopIsBusy(t *testing.T) {
	h, gws := busyLoop(t)
	ctx := guard(t)
	if _, err := h.c.Apps(ctx); err != nil {
		t.Fatalf("apps while the loop is busy: %v", err)
	}
	v, err := h.c.App(ctx, "thermo")
	if err != nil || v.Version != "2.0" || v.Placed != 2 || v.Rollout != "progressing" {
		t.Fatalf("app while the loop is busy: %+v %v", v, err)
	}
	if _, err := h.c.Apply(ctx, admin, []byte("name: other\nversion: \"1\"\ncontainers: [{name: main, image: \"registry.example/o@sha256:"+strings.Repeat("0", 64)+"\"}]\n")); err != nil {
		t.Fatalf("apply while the loop is busy: %v", err)
	}
	// Applied since the loop's last pass: pending, not another rollout's
	// phase nor "no rollout".
	if v, err := h.c.App(ctx, "other"); err != nil || v.Rollout != controller.PhasePending {
		t.Fatalf("app applied while the loop is busy: %+v %v", v, err)
	}
	if r, err := h.c.Rollout(ctx, "other"); err != nil || r.Phase != controller.PhasePending || r.To != "1 (1)" {
		t.Fatalf("rollout of an app applied while the loop is busy: %+v %v", r, err)
	}
	if st, err := h.c.Status(ctx); err != nil || st.Rollouts != 1 || st.Apps != 2 {
		t.Fatalf("status while the loop is busy: %+v %v", st, err)
	}
	if _, err := h.c.Explain(ctx, "thermo", ""); err != nil {
		t.Fatalf("explain while the loop is busy: %v", err)
	}
	if d, err := h.c.Device(ctx, "gw-1"); err != nil || len(d.Assigned) != 1 {
		t.Fatalf("device while the loop is busy: %+v %v", d, err)
	}
	if _, err := h.c.LabelDevice(ctx, admin, "gw-2", map[string]string{"rack": "7"}, nil); err != nil {
		t.Fatalf("label while the loop is busy: %v", err)
	}
	if r, err := h.c.Rollout(ctx, "thermo"); err != nil || r.Phase != "progressing" {
		t.Fatalf("rollout status while the loop is busy: %+v %v", r, err)
	}
	r, err := h.c.RolloutCommand(ctx, admin, "thermo", "pause")
	if err != nil || r.Phase != "paused" || r.To != "2.0 (2)" {
		t.Fatalf("pause while the loop is busy: %+v %v", r, err)
	}
	if r, err := h.c.Rollout(ctx, "thermo"); err != nil || r.Phase != "paused" {
		t.Fatalf("rollout status after the pause, the loop still busy: %+v %v", r, err)
	}
	// A second operator's command is checked against the first: resume
	// is fine, abort then too, pause after an abort is refused.
	if r, err := h.c.RolloutCommand(ctx, admin, "thermo", "resume"); err != nil || r.Phase != "progressing" {
		t.Fatalf("resume after a stored pause: %+v %v", r, err)
	}
	if _, err := h.c.RolloutCommand(ctx, admin, "thermo", "pause"); err != nil {
		t.Fatalf("pause again: %v", err)
	}
	if _, err := h.c.RolloutCommand(ctx, admin, "thermo", "dance"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("unknown command: %v", err)
	}
	if h.auditHas("rollout paused", "") {
		t.Fatal("the loop applied the pause while stopped")
	}

	h.gate.set(false)
	eventually(t, "the loop applied pause, resume and pause", func() bool {
		return h.phase("thermo") == "paused" && h.auditIndex("rollout resumed", "") > h.auditIndex("rollout paused", "")
	})
	if _, err := h.c.RolloutCommand(ctx, admin, "thermo", "resume"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2.0 on both devices once resumed", func() bool { return gws[0].Running("thermo") == "2.0" && gws[1].Running("thermo") == "2.0" })
	eventually(t, "the rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })
	if _, err := h.c.RolloutCommand(ctx, admin, "thermo", "pause"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("pause of a finished rollout: %v", err)
	}
}

// A command stored while the loop was busy survives a restart that comes
// before the loop applied it: the restarted loop applies it.
func TestAPI_RolloutCommandSurvivesRestart(t *testing.T) {
	h, gws := busyLoop(t)
	if r, err := h.c.RolloutCommand(guard(t), admin, "thermo", "pause"); err != nil || r.Phase != "paused" {
		t.Fatalf("pause: %+v %v", r, err)
	}
	// Stopped before the loop runs again: its store writes fail once the
	// context is done, and its publishes with the gate.
	h.cancel()
	h.gate.fail()
	if err := <-h.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	<-h.clDone
	_ = h.db.Close()
	h.cancel, h.gate = nil, nil
	h.start()

	eventually(t, "the restarted loop applied the stored pause", func() bool { return h.phase("thermo") == "paused" && h.auditHas("rollout paused", "") })
	if _, err := h.c.RolloutCommand(guard(t), admin, "thermo", "resume"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2.0 on both devices once resumed", func() bool { return gws[0].Running("thermo") == "2.0" && gws[1].Running("thermo") == "2.0" })
	eventually(t, "the rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })
}

// interleave is a Resolver that, at its first call, runs fn: another
// controller's write landing while this apply resolves its images.
type interleave struct {
	fn   func()
	done bool
}

func (r *interleave) Resolve(_ context.Context, ref string, _ []string) (string, error) {
	if !r.done {
		r.done = true
		r.fn()
	}
	name, _, _ := strings.Cut(ref, ":")
	return name + "@sha256:" + strings.Repeat("a", 64), nil
}

// TestApply_ConflictWhenAnotherApplyLandedMeanwhile: an apply of an app
// that another controller applied after this request read it is refused
// with a conflict naming the winner, and only the winner is stored; an
// apply that finds the app as stored goes through.
func TestApply_ConflictWhenAnotherApplyLandedMeanwhile(t *testing.T) {
	h := &harness{t: t}
	spec := func(v string) []byte {
		return []byte("name: thermo\nversion: \"" + v + "\"\ncontainers: [{name: main, image: \"registry.example/thermo:" + v + "\"}]\n")
	}
	var h2 *harness
	r := &interleave{fn: func() {
		a, err := wire.ParseApp(spec("2"))
		if err != nil {
			t.Fatal(err)
		}
		a.Containers[0].Image = "registry.example/thermo@sha256:" + strings.Repeat("b", 64)
		cur, err := h2.st.Apps.Get(context.Background(), "thermo")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h2.st.Apps.Apply(context.Background(), a, "ctl-2:ops", cur.Rev); err != nil {
			t.Fatal(err)
		}
	}}
	h.resolver, h2 = r, h
	h.init()
	ctx := context.Background()
	r.done = true // the first apply stores version 1 undisturbed
	if _, err := h.c.Apply(ctx, admin, spec("1")); err != nil {
		t.Fatal(err)
	}
	r.done = false
	_, err := h.c.Apply(ctx, admin, spec("3"))
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "app thermo changed since you read it: revision 2 (version 2) was applied by ctl-2:ops at ") ||
		!strings.Contains(err.Error(), "apply again") {
		t.Fatalf("apply over an app changed meanwhile: %v, want a conflict naming revision 2 and its author", err)
	}
	hist, err := h.c.AppHistory(ctx, "thermo")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[1].Version != "2" || !hist[1].Current {
		t.Fatalf("history %+v, want versions 1 and 2, 2 current", hist)
	}
	// Applied again, it goes through on top of the winner.
	if v, err := h.c.Apply(ctx, admin, spec("3")); err != nil || v.Revision != 3 {
		t.Fatalf("apply again: %+v, %v", v, err)
	}
}
