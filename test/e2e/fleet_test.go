package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

const deviceID = "gw-e2e"

// fleet plays the controller: it signs desired documents and collects
// what the device sends.
type fleet struct {
	t    *testing.T
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	send func(topic string, payload []byte, retained bool) error
	// broker is the broker's URL when the test runs one outside.
	broker string

	mu      sync.Mutex
	reports []wire.Reported
	events  []wire.Event
	results []wire.CommandResult
}

func newFleet(t *testing.T) *fleet {
	pub, priv, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, priv: priv, pub: pub}
}

// receive handles one message from the device.
func (f *fleet) receive(tp string, payload []byte) {
	_, k, err := topic.Parse(tp)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch k {
	case topic.Reported:
		if r, err := wire.DecodeReported(payload); err == nil {
			f.reports = append(f.reports, r)
		}
	case topic.Events:
		if e, err := wire.DecodeEvent(payload); err == nil {
			f.events = append(f.events, e)
		}
	case topic.CommandResult:
		if r, err := wire.DecodeCommandResult(payload); err == nil {
			f.results = append(f.results, r)
		}
	}
}

func (f *fleet) subs() map[string]mqtttest.Handler {
	m := map[string]mqtttest.Handler{}
	for _, k := range []topic.Kind{topic.Reported, topic.Events, topic.CommandResult} {
		m[topic.MustBuild(deviceID, k)] = f.receive
	}
	return m
}

// mqttController connects the fleet as an MQTT client (for mosquitto).
func (f *fleet) mqttController(broker, user, pass string, roots *tls.Config) {
	t := f.t
	c, err := mqttc.New(mqttc.Config{Broker: broker, ClientID: user, Username: user, Password: pass, TLS: roots,
		CleanSession: true, Backoff: mqttc.Backoff{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond},
		Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	for f2, h := range f.subs() {
		h := h
		if err := c.Subscribe(wctx, f2, func(m mqttc.Message) { h(m.Topic, m.Payload) }); err != nil {
			t.Fatal(err)
		}
	}
	f.send = func(tp string, p []byte, retained bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return c.Publish(ctx, tp, p, retained)
	}
}

// sleeper is an app whose container sleeps; v changes its env, so each
// version starts a new container.
func sleeper(name, v string) wire.App {
	return wire.App{Name: name, Version: v, Containers: []wire.Container{{
		Name: "main", Image: image, Args: []string{"sleep", "3600"}, Env: map[string]string{"V": v}, Restart: "always",
	}}, Rollout: &wire.Rollout{HealthyFor: wire.Duration{Duration: 500 * time.Millisecond}}}
}

func (f *fleet) doc(gen uint64, apps ...wire.App) wire.Desired {
	now := time.Now()
	return wire.Desired{DeviceID: deviceID, Generation: gen, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Apps: apps}
}

// signedCommand fills in c's device, id and validity and signs it as the
// controller does.
func (f *fleet) signedCommand(c *wire.Command) []byte {
	f.t.Helper()
	id, err := sign.NewCommandID(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	now := time.Now()
	c.DeviceID, c.ID, c.IssuedAt, c.ExpiresAt = deviceID, id, now, now.Add(5*time.Minute)
	env, err := sign.SignCommand(f.priv, *c)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := wire.Encode(env)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fleet) signed(d wire.Desired) []byte {
	f.t.Helper()
	env, err := sign.SignDesired(f.priv, d)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := wire.Encode(env)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fleet) publishDesired(payload []byte, retained bool) {
	f.t.Helper()
	if err := f.send(topic.MustBuild(deviceID, topic.Desired), payload, retained); err != nil {
		f.t.Fatal(err)
	}
}

// waitReport waits for a report with observed generation gen in which app
// runs.
func (f *fleet) waitReport(d *daemon, gen uint64, app string) wire.Reported {
	f.t.Helper()
	var got wire.Reported
	waitFor(f.t, fmt.Sprintf("a report of generation %d with %s running", gen, app), 60*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.reports {
			if r.ObservedGeneration != gen {
				continue
			}
			for _, a := range r.Apps {
				if a.Name == app && len(a.Containers) == 1 && a.Containers[0].State == "running" {
					got = r
					return true
				}
			}
		}
		return false
	})
	return got
}

// resultsFor are the command results received for id.
func (f *fleet) resultsFor(id string) []wire.CommandResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []wire.CommandResult
	for _, r := range f.results {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// eventsSnapshot copies the events received so far.
func (f *fleet) eventsSnapshot() []wire.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Event(nil), f.events...)
}

func (f *fleet) waitEvent(what string, match func(wire.Event) bool) wire.Event {
	f.t.Helper()
	var got wire.Event
	waitFor(f.t, what, 30*time.Second, func() bool {
		for _, e := range f.eventsSnapshot() {
			if match(e) {
				got = e
				return true
			}
		}
		return false
	})
	return got
}

// newFleetDaemon is newDaemon that prints the daemon's log when the test fails.
func newFleetDaemon(t *testing.T, config string) *daemon {
	d := newDaemon(t, config)
	d.ok("load", testImage)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log)
		}
	})
	return d
}

func fleetConfig(broker string, f *fleet, extra string) string {
	return fastPolicy + fmt.Sprintf("deviceId: %s\nfleet:\n  broker: %s\n  publicKey: %s\n  heartbeat: 2s\n  reconnectMax: 500ms\n%s",
		deviceID, broker, sign.EncodePublicKey(f.pub), extra)
}

// TestFleet_Mochi: desired → running → reported against the embedded
// broker, then every kind of rejected document, and commands.
func TestFleet_Mochi(t *testing.T) {
	f := newFleet(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", f.subs())
	f.send = m.Publish
	d := newFleetDaemon(t, fleetConfig("tcp://"+m.Addr, f, ""))
	f.publishDesired(f.signed(f.doc(1, sleeper("sl", "1"))), true)
	r := f.waitReport(d, 1, "sl")
	if r.Device.Arch == "" || r.Device.Kernel == "" || r.Device.CPUs == 0 || r.Device.MemoryBytes == 0 || r.Device.CgroupVersion == 0 {
		t.Errorf("device facts incomplete: %+v", r.Device)
	}
	ctrs := d.running("sl.")
	if len(ctrs) != 1 {
		t.Fatalf("%d running containers of sl, want 1", len(ctrs))
	}
	// Resource use shows in a later report (heartbeat).
	waitFor(t, "a report with memory use", 10*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.reports {
			for _, a := range r.Apps {
				if a.Name == "sl" && len(a.Containers) == 1 && a.Containers[0].MemoryBytes > 0 && a.Containers[0].Image != "" {
					return true
				}
			}
		}
		return false
	})

	_, otherPriv, _ := sign.GenerateKey(nil)
	good := f.signed(f.doc(2, sleeper("evil", "1")))
	var env wire.Envelope
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}
	encode := func(e wire.Envelope) []byte {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tampered := env
	tampered.Signature = append([]byte(nil), env.Signature...)
	tampered.Signature[5] ^= 1
	wrongKey, _ := sign.SignDesired(otherPriv, f.doc(2, sleeper("evil", "1")))
	otherDevice := f.doc(2, sleeper("evil", "1"))
	otherDevice.DeviceID = "gw-other"
	schema2 := f.doc(2, sleeper("evil", "1"))
	schema2.Schema = 2
	// This agent's clock is trusted: a document past its expiry, however
	// new its generation and good its signature, is refused.
	expired := f.doc(50, sleeper("evil", "1"))
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	cases := []struct {
		name, reason string
		payload      []byte
	}{
		{"unsigned", "unsigned", encode(wire.Envelope{Payload: env.Payload})},
		{"bad signature", "bad-signature", encode(tampered)},
		{"wrong key", "wrong-key", encode(wrongKey)},
		{"replayed generation", "stale-generation", f.signed(f.doc(1, sleeper("evil", "1")))},
		{"older generation", "stale-generation", f.signed(f.doc(1, sleeper("evil", "2")))},
		{"another device", "wrong-device", f.signed(otherDevice)},
		{"malformed json", "malformed", []byte(`{"payload": {"schema":1`)},
		{"unknown fields", "unknown-field", []byte(strings.Replace(string(good), `{"payload"`, `{"extra":1,"payload"`, 1))},
		{"oversized", "oversized", []byte(`{"payload":"` + strings.Repeat("x", wire.MaxEnvelopeSize) + `"}`)},
		{"unknown schema", "unknown-schema", f.signed(schema2)},
		{"expired", "expired", f.signed(expired)},
	}
	// Within a minute, the first refusal for each reason is an event; the
	// others are counted for a summary (a flood costs no disk write each).
	reported := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before uint64
			for _, e := range f.eventsSnapshot() {
				before = max(before, e.Seq)
			}
			f.publishDesired(c.payload, false)
			if !reported[c.reason] {
				reported[c.reason] = true
				e := f.waitEvent("a rejected-desired event", func(e wire.Event) bool {
					return e.Kind == wire.EventRejectedDesired && e.Seq > before
				})
				if !strings.HasPrefix(e.Reason, c.reason+":") {
					t.Errorf("reason %q, want %s: ...", e.Reason, c.reason)
				}
				if !strings.Contains(d.log.String(), "desired state rejected") {
					t.Errorf("no log line for the rejection")
				}
			}
			now := d.running("sl.")
			if len(now) != 1 || now[0].ID != ctrs[0].ID || len(d.running("evil.")) != 0 {
				t.Fatalf("running apps changed: %+v", now)
			}
		})
	}

	t.Run("commands", func(t *testing.T) {
		cmd := func(c wire.Command) wire.CommandResult {
			t.Helper()
			b := f.signedCommand(&c)
			if err := f.send(topic.MustBuild(deviceID, topic.Command), b, false); err != nil {
				t.Fatal(err)
			}
			var res wire.CommandResult
			waitFor(t, "command result "+c.ID, 20*time.Second, func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				for _, r := range f.results {
					if r.ID == c.ID {
						res = r
						return true
					}
				}
				return false
			})
			return res
		}
		if r := cmd(wire.Command{Kind: wire.CommandLogs, App: "sl", Lines: 5}); !r.OK {
			t.Errorf("logs: %+v", r)
		}
		if r := cmd(wire.Command{Kind: wire.CommandLogs, App: "nope"}); r.OK || r.Error == "" {
			t.Errorf("logs of an unknown app: %+v", r)
		}
		if r := cmd(wire.Command{Kind: wire.CommandRestart, App: "sl", Container: "main"}); !r.OK {
			t.Fatalf("restart: %+v", r)
		}
		waitFor(t, "sl restarted", 30*time.Second, func() bool {
			now := d.running("sl.")
			return len(now) == 1 && now[0].State.Pid != ctrs[0].State.Pid
		})
	})
}

// TestFleet_Offline: the broker goes away; workloads keep running, a
// container crashes and restarts, local applies make events; after the
// broker is back every event arrives once, in order, also across a
// kill -9 of the agent while offline.
func TestFleet_Offline(t *testing.T) {
	f := newFleet(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", f.subs())
	addr := m.Addr
	f.send = m.Publish
	d := newFleetDaemon(t, fleetConfig("tcp://"+addr, f, ""))
	f.publishDesired(f.signed(f.doc(1, sleeper("sl", "1"))), true)
	f.waitReport(d, 1, "sl")
	m.Stop()
	seen := f.eventsSnapshot()
	var lastSeq uint64
	for _, e := range seen {
		lastSeq = max(lastSeq, e.Seq)
	}

	// Offline: a crash, local applies, and a kill -9 of the agent.
	ctr := d.running("sl.")[0]
	if err := syscall.Kill(ctr.State.Pid, syscall.SIGKILL); err != nil { // a crash
		t.Fatal(err)
	}
	waitFor(t, "sl restarted while offline", 30*time.Second, func() bool {
		now := d.running("sl.")
		return len(now) == 1 && now[0].State.Pid != ctr.State.Pid
	})
	d.apply("name: off1\nversion: \"1\"\ncontainers: [{name: main, image: tender.test/workload:latest, args: [sleep, \"3600\"]}]\nrollout: {healthyFor: 500ms}\n")
	d.waitPhase("off1", "running", "1", 30*time.Second)
	d.kill()
	d.start()
	d.apply("name: off2\nversion: \"1\"\ncontainers: [{name: main, image: tender.test/workload:latest, args: [sleep, \"3600\"]}]\nrollout: {healthyFor: 500ms}\n")
	d.waitPhase("off2", "running", "1", 30*time.Second)
	if n := len(d.running("sl.")); n != 1 {
		t.Fatalf("%d sl containers running while offline, want 1", n)
	}

	m2 := mqtttest.StartMochi(t, addr, f.subs())
	f.send = m2.Publish
	last := f.waitEvent("off2's running event", func(e wire.Event) bool { return e.App == "off2" && e.Kind == "running" })
	// Whatever was queued before it has arrived (one session, in order).
	got := map[uint64]int{}
	var order []uint64
	for _, e := range f.eventsSnapshot() {
		if e.Seq > lastSeq && e.Seq <= last.Seq {
			got[e.Seq]++
			order = append(order, e.Seq)
		}
	}
	for s := lastSeq + 1; s <= last.Seq; s++ {
		if got[s] != 1 {
			t.Errorf("event %d arrived %d times", s, got[s])
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Errorf("events out of order: %v", order)
			break
		}
	}
	var apps []string
	for _, e := range f.eventsSnapshot() {
		if e.Seq > lastSeq {
			apps = append(apps, e.App+":"+string(e.Kind))
		}
	}
	t.Logf("%d events queued offline arrived: %v", last.Seq-lastSeq, apps)
	all := strings.Join(apps, " ")
	if !strings.Contains(all, "off1:running") {
		t.Errorf("off1's events (queued before the kill -9) missing: %v", apps)
	}
	// The crash while offline: how it ended and the restart.
	if !strings.Contains(all, "sl:exited") || !strings.Contains(all, "sl:restarted") {
		t.Errorf("the crash of sl while offline is missing from the events: %v", apps)
	}
}

// TestFleet_Mosquitto: the same over TLS, a password file and the ACL of
// configs/mosquitto; with clock1970 the agent's clock says 1970.
func TestFleet_Mosquitto(t *testing.T) {
	for _, clock1970 := range []bool{false, true} {
		t.Run(fmt.Sprintf("clock1970=%v", clock1970), func(t *testing.T) {
			f := newFleet(t)
			ms := mqtttest.StartMosquitto(t, "../..", map[string]string{"tender-controller": "ctl-secret", deviceID: "dev-secret"})
			f.mqttController(ms.PwAddr, "tender-controller", "ctl-secret", &tls.Config{RootCAs: ms.Roots})
			if clock1970 {
				t.Setenv("TENDER_TEST_CLOCK_OFFSET", fmt.Sprintf("-%dh", int(time.Since(time.Unix(0, 0)).Hours())))
			}
			extra := fmt.Sprintf("  username: %s\n  password: dev-secret\n  caFile: %s\n", deviceID, ms.CAFile)
			d := newFleetDaemon(t, fleetConfig(ms.PwAddr, f, extra))
			f.publishDesired(f.signed(f.doc(7, sleeper("sl", "1"))), true)
			r := f.waitReport(d, 7, "sl")
			if r.ClockUntrusted != clock1970 {
				t.Errorf("report says clockUntrusted=%v", r.ClockUntrusted)
			}
			if clock1970 {
				f.waitEvent("a clock-untrusted event", func(e wire.Event) bool { return e.Kind == wire.EventClockUntrusted })
			}
		})
	}
}

// TestBench_Propagation is test/bench/propagation.sh: the time from
// publishing a signed desired document to the matching report (container
// running), image present, over TENDER_BENCH_PROPAGATION updates (each
// changes an env var, so a new container starts). Skipped unless set.
func TestBench_Propagation(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TENDER_BENCH_PROPAGATION"))
	if n <= 0 {
		t.Skip("set TENDER_BENCH_PROPAGATION=N to run")
	}
	f := newFleet(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", f.subs())
	f.send = m.Publish
	d := newFleetDaemon(t, fleetConfig("tcp://"+m.Addr, f, ""))
	f.publishDesired(f.signed(f.doc(1, sleeper("sl", "0"))), true)
	f.waitReport(d, 1, "sl")
	var ds []time.Duration
	for i := 1; i <= n; i++ {
		gen := uint64(i + 1)
		p := f.signed(f.doc(gen, sleeper("sl", strconv.Itoa(i))))
		start := time.Now()
		f.publishDesired(p, true)
		f.waitReport(d, gen, "sl")
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p99 := ds[min(len(ds)-1, (len(ds)*99+99)/100-1)]
	fmt.Printf("propagation over %d updates: median %v p99 %v max %v\n", n, ds[len(ds)/2].Round(time.Millisecond), p99.Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// TestFleet_ReportsHealth: the container's health check result reaches the
// fleet in the report.
func TestFleet_ReportsHealth(t *testing.T) {
	f := newFleet(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", f.subs())
	f.send = m.Publish
	newFleetDaemon(t, fleetConfig("tcp://"+m.Addr, f, ""))
	app := wire.App{Name: "hw", Version: "1", Containers: []wire.Container{{
		Name: "main", Image: image, Args: []string{"serve", "127.0.0.1:8080"}, Restart: "always",
		Health: &wire.Health{HTTP: "http://127.0.0.1:8080/healthz", Interval: wire.Duration{Duration: 300 * time.Millisecond}},
	}}, Rollout: &wire.Rollout{HealthyFor: wire.Duration{Duration: 500 * time.Millisecond}}}
	f.publishDesired(f.signed(f.doc(1, app)), true)
	waitFor(t, "a report with the container healthy", 60*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.reports {
			for _, a := range r.Apps {
				if a.Name == "hw" && len(a.Containers) == 1 && a.Containers[0].Health == wire.HealthHealthy {
					return true
				}
			}
		}
		return false
	})
}
