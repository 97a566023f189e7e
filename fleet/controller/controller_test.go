package controller_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

var admin = api.Caller{Name: "admin", Role: store.RoleAdmin, From: "127.0.0.1:1"}

// harness is a controller on a real bbolt file and a real mochi broker,
// reached through an mqttc client as with --broker.
type harness struct {
	t      *testing.T
	dir    string
	broker string
	key    ed25519.PrivateKey
	pub    ed25519.PublicKey

	db     *boltdb.DB
	st     store.Store
	c      *controller.Controller
	cl     *mqttc.Client
	cancel context.CancelFunc
	done   chan error
	clDone chan struct{}
	starts int
	// resolver, if set before start, resolves image tags at Apply.
	resolver controller.Resolver
	// limiter, if set before start, is Config.EnrollLimiter.
	limiter *enroll.Limiter
	// now, if set before start, is Config.Now.
	now func() time.Time
	// gate, if set before start, sits in front of the transport's
	// publishes.
	gate *gate
	// logs, if set before start, gets the controller's log too.
	logs io.Writer
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t}
	h.init()
	return h
}

// init makes the data directory and the broker, and starts the
// controller.
func (h *harness) init() {
	t := h.t
	h.dir = filepath.Join(t.TempDir(), "data")
	if err := controller.PrepareDir(h.dir); err != nil {
		t.Fatal(err)
	}
	key, err := controller.LoadOrCreateKey(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	h.key, h.pub = key, key.Public().(ed25519.PublicKey)
	h.broker = mqtttest.StartMochi(t, "127.0.0.1:0", nil).Addr
	h.start()
	t.Cleanup(h.stop)
}

func (h *harness) start() {
	t := h.t
	db, err := boltdb.Open(filepath.Join(h.dir, controller.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.db, h.st = db, db.Store()
	cl, err := mqttc.New(mqttc.Config{Broker: "tcp://" + h.broker, ClientID: fmt.Sprintf("tender-controller-%d", h.starts), Log: zerolog.Nop(), CleanSession: true})
	h.starts++
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cl, h.cancel, h.clDone, h.done = cl, cancel, make(chan struct{}), make(chan error, 1)
	go func() { defer close(h.clDone); _ = cl.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := cl.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	mq := controller.MQTT{Client: cl}
	var tr controller.Transport = mq
	if h.gate != nil {
		tr = gated{Transport: mq, g: h.gate}
	}
	h.c, err = controller.New(ctx, controller.Config{Dir: h.dir, Tick: 20 * time.Millisecond, CommandTimeout: 5 * time.Second, EnrollLimiter: h.limiter, Now: h.now, Log: testLog(t, h.logs)},
		controller.Deps{Store: h.st, Key: h.key, Transport: tr, Revoker: mq, Resolver: h.resolver})
	if err != nil {
		t.Fatal(err)
	}
	c := h.c
	go func() { h.done <- c.Run(ctx) }()
	// Run has subscribed once a message it cannot decode is counted: a
	// device's message published before would be lost.
	before := c.Stats().Malformed
	eventually(t, "the controller's subscription", func() bool {
		if err := cl.Publish(wctx, "tender/v1/devices/probe/presence", []byte("not a presence"), false); err != nil {
			t.Fatal(err)
		}
		return c.Stats().Malformed > before
	})
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil && !errors.Is(err, context.Canceled) {
		h.t.Errorf("controller run: %v", err)
	}
	<-h.clDone
	_ = h.db.Close()
	h.cancel = nil
}

func (h *harness) restart() {
	h.stop()
	h.start()
}

// enroll records a device as enrollment does.
func (h *harness) enroll(id string, labels map[string]string) {
	h.t.Helper()
	if _, err := h.st.Devices.Put(context.Background(), store.Device{ID: id, Labels: labels, Facts: wire.DeviceFacts{Arch: "amd64", MemoryBytes: 1 << 30, CPUs: 2}, EnrolledAt: time.Now()}, 0); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) device(id string, labels map[string]string) *fakeDevice {
	h.enroll(id, labels)
	f := newFakeDevice(h.t, id, h.broker, h.pub)
	f.Start()
	h.t.Cleanup(func() { f.Check() })
	return f
}

func (h *harness) apply(version string, waves ...string) api.AppView {
	h.t.Helper()
	spec := fmt.Sprintf(`name: thermo
version: %q
containers:
  - name: main
    image: registry.example/thermo@sha256:%s
placement:
  selector: {site: berlin}
rollout:
  waves: [%s]
  maxUnavailable: "1"
`, version, strings.Repeat(version[:1], 64), strings.Join(waves, ", "))
	v, err := h.c.Apply(context.Background(), admin, []byte(spec))
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

// eventually polls cond until it holds (failing after a generous bound,
// which no passing run comes near).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) phase(app string) string {
	r, err := h.c.Rollout(context.Background(), app)
	if err != nil {
		return err.Error()
	}
	return r.Phase
}

func (h *harness) auditHas(action, detail string) bool {
	es, err := h.st.Audit.List(context.Background(), 0, 10000)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range es {
		if e.Action == action && strings.Contains(e.Detail, detail) {
			return true
		}
	}
	return false
}

func (h *harness) auditIndex(action, detail string) int {
	es, _ := h.st.Audit.List(context.Background(), 0, 10000)
	for i, e := range es {
		if e.Action == action && strings.Contains(e.Detail, detail) {
			return i
		}
	}
	return -1
}

var berlin = map[string]string{"site": "berlin"}

// The first version and a good second one roll out in waves to the
// matching devices only; a bad third one stops at the first wave and is
// rolled back.
func TestRollout_WavesThenBadVersionRolledBack(t *testing.T) {
	h := newHarness(t)
	gws := []*fakeDevice{h.device("gw-1", berlin), h.device("gw-2", berlin), h.device("gw-3", berlin)}
	paris := h.device("gw-9", map[string]string{"site": "paris"})

	h.apply("1.0", `"1"`, `"100%"`)
	eventually(t, "1.0 on every berlin device", func() bool {
		return gws[0].Running("thermo") == "1.0" && gws[1].Running("thermo") == "1.0" && gws[2].Running("thermo") == "1.0"
	})
	eventually(t, "first rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })

	h.apply("2.0", `"1"`, `"100%"`)
	eventually(t, "2.0 on every berlin device", func() bool {
		return gws[0].Running("thermo") == "2.0" && gws[1].Running("thermo") == "2.0" && gws[2].Running("thermo") == "2.0"
	})
	eventually(t, "second rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })
	w1, w2 := h.auditIndex("rollout wave-completed", "wave 1"), h.auditIndex("rollout wave-started", "wave 2")
	if w1 < 0 || w2 < 0 {
		t.Fatalf("audit log lacks the waves: wave 1 completed at %d, wave 2 started at %d", w1, w2)
	}
	if paris.Running("thermo") != "" {
		t.Fatal("the app reached a device its selector does not match")
	}
	v, err := h.c.App(context.Background(), "thermo")
	if err != nil || v.Placed != 3 || v.Version != "2.0" {
		t.Fatalf("app view %+v %v", v, err)
	}

	for _, g := range gws {
		g.mu.Lock()
		g.bad["3.0"] = true
		g.mu.Unlock()
	}
	h.apply("3.0", `"1"`, `"100%"`)
	eventually(t, "bad version rolled back", func() bool { return h.phase("thermo") == "rolled-back" })
	for _, g := range gws {
		if got := g.Running("thermo"); got != "2.0" {
			t.Errorf("%s runs %q after the rollback, want 2.0", g.id, got)
		}
	}
	// Only the first wave's device was ever sent 3.0.
	r, _ := h.c.Rollout(context.Background(), "thermo")
	if len(r.Waves) != 2 || r.Waves[0].Failed != 1 && r.Waves[0].RolledBack != 1 {
		t.Fatalf("waves %+v", r.Waves)
	}
	sent3 := 0
	for _, g := range gws {
		g.mu.Lock()
		if g.seen["3.0"] {
			sent3++
		}
		g.mu.Unlock()
	}
	if sent3 != 1 {
		t.Fatalf("%d devices got the bad version, want 1 (the first wave)", sent3)
	}

	// Commands: a signed logs command answered by the device.
	res, err := h.c.Logs(context.Background(), admin, "gw-1", "thermo", "main", 10)
	if err != nil || !res.OK || res.Output != "logs of thermo" {
		t.Fatalf("logs: %+v %v", res, err)
	}

	// Removing the app is a rollout too: the first wave's device is sent a
	// document without it, and the others wait until it has settled.
	gws[0].mu.Lock()
	gws[0].holdAll = true
	gws[0].mu.Unlock()
	if _, err := h.c.RemoveApp(context.Background(), admin, "thermo", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removal's first wave underway, the second waiting", func() bool {
		r, err := h.c.Rollout(context.Background(), "thermo")
		return err == nil && r.To == "" && gws[0].Held() && len(r.Waves) == 2 && r.Waves[1].Pending == 2
	})
	if gws[1].Running("thermo") != "2.0" || gws[2].Running("thermo") != "2.0" {
		t.Fatal("the second wave lost the app while the first had not settled")
	}
	gws[0].Release("")
	eventually(t, "the app gone from every device and from the store", func() bool {
		_, err := h.c.App(context.Background(), "thermo")
		return errdefs.IsNotFound(err) && gws[0].Running("thermo") == "" && gws[1].Running("thermo") == "" && gws[2].Running("thermo") == ""
	})
}

// A controller restarted mid-rollout resumes it; a device offline during
// the rollout gets the version when it comes back; generations strictly
// increase per device across the restart (fakeDevice.Check).
func TestRollout_ResumesAfterRestartAndOfflineDeviceCatchesUp(t *testing.T) {
	h := newHarness(t)
	gws := []*fakeDevice{h.device("gw-1", berlin), h.device("gw-2", berlin), h.device("gw-3", berlin)}
	h.apply("1.0")
	eventually(t, "1.0 everywhere", func() bool {
		return gws[0].Running("thermo") == "1.0" && gws[1].Running("thermo") == "1.0" && gws[2].Running("thermo") == "1.0"
	})
	eventually(t, "first rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })

	gws[2].Stop()
	eventually(t, "gw-3 seen offline", func() bool {
		d, err := h.st.Devices.Get(context.Background(), "gw-3")
		return err == nil && d.Status.Presence == wire.Offline
	})
	gws[0].mu.Lock()
	gws[0].hold["2.0"] = true
	gws[0].mu.Unlock()
	h.apply("2.0", `"1"`, `"100%"`)
	eventually(t, "gw-1 received 2.0 and holds it", gws[0].Held)
	var before api.RolloutView
	eventually(t, "the rollout to 2.0 in the loop's view", func() bool { // a pass old at most
		var err error
		before, err = h.c.Rollout(context.Background(), "thermo")
		return err == nil && before.To == "2.0 (2)" && before.Phase != controller.PhasePending
	})

	h.restart()
	after, err := h.c.Rollout(context.Background(), "thermo")
	if err != nil || !after.Started.Equal(before.Started) || after.Waves[0].Updating+after.Waves[0].Offline != 1 {
		t.Fatalf("after the restart: %+v %v; before: %+v (want the same rollout, its wave 1 device still updating)", after, err, before)
	}
	if err := h.st.Audit.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := h.phase("thermo"); p != "progressing" {
		t.Fatalf("after restart the rollout is %q, want progressing", p)
	}
	if gws[1].Running("thermo") != "1.0" {
		t.Fatal("wave 2 started before wave 1 was healthy")
	}
	gws[0].Release("2.0")
	eventually(t, "rollout succeeded after the restart", func() bool { return h.phase("thermo") == "succeeded" })
	if gws[1].Running("thermo") != "2.0" {
		t.Fatalf("gw-2 runs %q", gws[1].Running("thermo"))
	}
	if got := gws[2].Running("thermo"); got != "1.0" {
		t.Fatalf("offline gw-3 runs %q", got)
	}
	gws[2].Start()
	defer func() {
		if t.Failed() {
			b, _ := h.st.Rollouts.Get(context.Background(), "thermo")
			d, _ := h.st.Devices.Get(context.Background(), "gw-3")
			t.Logf("rollout %s\ngw-3 %+v", b.Data, d.Status)
		}
	}()
	eventually(t, "gw-3 gets 2.0 once back", func() bool { return gws[2].Running("thermo") == "2.0" })
	for _, g := range gws {
		g.mu.Lock()
		n := len(g.gens)
		g.mu.Unlock()
		if n < 2 {
			t.Errorf("%s accepted %d documents", g.id, n)
		}
	}
}

// F-08: a report published on gw-1's topic naming gw-2 is dropped and
// counted; gw-2's status does not change. Logs to an offline device fail
// at once with ErrUnavailable.
func TestIngest_RefusesAnotherDevicesReportAndOfflineCommand(t *testing.T) {
	h := newHarness(t)
	h.enroll("gw-1", berlin)
	h.enroll("gw-2", berlin)
	liar, err := mqttc.New(mqttc.Config{Broker: "tcp://" + h.broker, ClientID: "gw-1", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = liar.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := liar.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	rep := func(id string) []byte {
		b, _ := wire.Encode(&wire.Reported{Schema: 1, DeviceID: id, Time: time.Now(), Apps: []wire.AppStatus{}, Device: wire.DeviceFacts{Arch: "amd64"}})
		return b
	}
	if err := liar.Publish(ctx, "tender/v1/devices/gw-1/reported", rep("gw-2"), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lie counted", func() bool { return h.c.Stats().Refused == 1 })
	if err := liar.Publish(ctx, "tender/v1/devices/gw-1/reported", rep("gw-1"), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gw-1's own report stored", func() bool {
		d, err := h.st.Devices.Get(context.Background(), "gw-1")
		return err == nil && d.Status.Report != nil
	})
	if d, _ := h.st.Devices.Get(context.Background(), "gw-2"); d.Status.Report != nil {
		t.Fatalf("gw-2's status took gw-1's report: %+v", d.Status.Report)
	}
	eventually(t, "the lie refused by ingest and by the store (the store's count follows its write)", func() bool {
		st := h.c.Stats()
		return st.Refused == 1 && st.StoreRefused == 1
	})
	// The liar is flagged on its record (F-08), the other is not.
	if d, err := h.c.Device(context.Background(), "gw-1"); err != nil || d.Health != "flagged" || d.Status.Impersonations != 1 || d.Status.ImpersonatedAs != "gw-2" {
		t.Fatalf("gw-1 after one report as gw-2: health %q, status %+v, %v", d.Health, d.Status, err)
	}
	if d, _ := h.c.Device(context.Background(), "gw-2"); d.Health == "flagged" {
		t.Fatal("gw-2 flagged for gw-1's lie")
	}

	// gw-2 never connected; gw-1 goes offline.
	start := time.Now()
	_, err = h.c.Logs(context.Background(), admin, "gw-2", "thermo", "", 10)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "gw-2") {
		t.Fatalf("logs to a device never seen: %v", err)
	}
	if err := liar.Publish(ctx, "tender/v1/devices/gw-1/presence", []byte("offline"), true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gw-1 offline", func() bool {
		d, err := h.st.Devices.Get(context.Background(), "gw-1")
		return err == nil && d.Status.Presence == wire.Offline
	})
	_, err = h.c.Logs(context.Background(), admin, "gw-1", "thermo", "", 10)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "device gw-1 is offline since") {
		t.Fatalf("logs to an offline device: %v", err)
	}
	if time.Since(start) > 5*time.Second { // the command timeout: it must not have been waited for
		t.Fatalf("offline refusal waited for the command timeout")
	}
	_, err = h.c.Logs(context.Background(), admin, "gw-404", "thermo", "", 10)
	if !errdefs.IsNotFound(err) {
		t.Fatalf("logs to an unknown device: %v", err)
	}
	var fe *wire.FieldError
	_, err = h.c.Apply(context.Background(), admin, []byte("name: Bad\nversion: 1\ncontainers: []\n"))
	if !errdefs.IsInvalidArgument(err) || !errors.As(err, &fe) {
		t.Fatalf("apply of an invalid spec: %v", err)
	}
	_ = sign.KeyID
}

// testLog keeps the controller's log and shows it if the test fails.
func testLog(t *testing.T, also ...io.Writer) zerolog.Logger {
	w := &syncBuf{}
	var out io.Writer = w
	for _, a := range also {
		if a != nil {
			out = io.MultiWriter(out, a)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			w.mu.Lock()
			t.Logf("controller log:\n%s", w.b.String())
			w.mu.Unlock()
		}
	})
	return zerolog.New(out).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func init() { zerolog.TimeFieldFormat = time.RFC3339Nano }

// A maintenance window holds the devices it selects until it opens in the
// device's own time zone; other devices update at once; and the rollout
// policy stays the controller's: devices get only healthyFor.
func TestRollout_MaintenanceWindowInTheDevicesZone(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC) // Monday, 12:00 in Berlin
	h := &harness{t: t, now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	h.init()
	night := h.device("gw-night", map[string]string{"site": "berlin", "night": "yes"})
	day := h.device("gw-day", berlin)
	night.mu.Lock()
	night.zone = "Europe/Berlin"
	night.mu.Unlock()
	d, err := h.st.Devices.Get(context.Background(), "gw-night")
	if err != nil {
		t.Fatal(err)
	}
	d.Facts.TimeZone = "Europe/Berlin" // as the agent enrolls with it
	if _, err := h.st.Devices.Put(context.Background(), d, d.Rev); err != nil {
		t.Fatal(err)
	}

	spec := `name: thermo
version: "1.0"
containers:
  - name: main
    image: registry.example/thermo@sha256:` + strings.Repeat("1", 64) + `
placement:
  selector: {site: berlin}
rollout:
  healthyFor: 1s
  pace: 30
  windows:
    - selector: {night: "yes"}
      schedule: "daily 02:00-04:00"
`
	if _, err := h.c.Apply(context.Background(), admin, []byte(spec)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the device outside any window updated", func() bool { return day.Running("thermo") == "1.0" })
	// (Settled before the clock jumps 14 hours: an unsettled device would
	// be past its progress deadline.)
	eventually(t, "the rollout waits on the windowed device, the other settled", func() bool {
		r, err := h.c.Rollout(context.Background(), "thermo")
		return err == nil && len(r.Waves) == 1 && r.Waves[0].Pending == 1 && r.Waves[0].Healthy == 1
	})
	if night.Running("thermo") != "" {
		t.Fatal("the windowed device was updated at noon, outside its 02:00-04:00 window")
	}

	// 01:30 UTC is 02:30 in Berlin (CET): open there, not in UTC.
	mu.Lock()
	now = time.Date(2026, 12, 1, 1, 30, 0, 0, time.UTC)
	mu.Unlock()
	eventually(t, "the windowed device updated once its window opened in its zone", func() bool { return night.Running("thermo") == "1.0" })

	night.mu.Lock()
	p := night.policy["thermo"]
	night.mu.Unlock()
	if p == nil || p.HealthyFor.Duration != time.Second || p.Pace != 0 || len(p.Windows) != 0 {
		t.Fatalf("the device was sent the rollout policy %+v, want healthyFor only", p)
	}
}

// An app's removal undone keeps the app: the devices that dropped it get it
// back, and the app is no longer being deleted.
func TestRemoveApp_UndoKeepsTheApp(t *testing.T) {
	h := newHarness(t)
	gws := []*fakeDevice{h.device("gw-1", berlin), h.device("gw-2", berlin)}
	h.apply("1.0", `"1"`, `"100%"`)
	eventually(t, "1.0 everywhere", func() bool { return gws[0].Running("thermo") == "1.0" && gws[1].Running("thermo") == "1.0" })
	eventually(t, "rollout succeeded", func() bool { return h.phase("thermo") == "succeeded" })

	gws[0].mu.Lock()
	gws[0].holdAll = true
	gws[0].mu.Unlock()
	if _, err := h.c.RemoveApp(context.Background(), admin, "thermo", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first wave's device sent the removal", gws[0].Held)
	// (A command names the rollout the API shows: wait until that is the
	// removal, or the undo is for the rollout it replaced, and dropped.)
	eventually(t, "the API shows the removal", func() bool {
		r, err := h.c.Rollout(context.Background(), "thermo")
		return err == nil && r.ID == "thermo@"
	})
	if _, err := h.c.Apply(context.Background(), admin, []byte("name: thermo\nversion: '9'\ncontainers: [{name: main, image: 'registry.example/thermo@sha256:"+strings.Repeat("9", 64)+"'}]\n")); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("apply during the removal: %v, want a failed precondition", err)
	}
	if _, err := h.c.RolloutCommand(context.Background(), admin, "thermo", "undo"); err != nil {
		t.Fatal(err)
	}
	gws[0].Release("")
	eventually(t, "the app kept, on both devices", func() bool {
		v, err := h.c.App(context.Background(), "thermo")
		return err == nil && !v.Deleting && v.Version == "1.0" && gws[0].Running("thermo") == "1.0" && gws[1].Running("thermo") == "1.0"
	})
	// The loop appends the audit entry just after it stored the app.
	eventually(t, "an audit entry for the kept app", func() bool { return h.auditHas("app kept", "removal was rolled back") })
}
