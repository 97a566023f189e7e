package fleetsim_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/fleetsim"
	"github.com/tender-edge/tender/test/mqtttest"
)

const devices = 200

func app(version string) wire.App {
	return wire.App{Name: "demo", Version: version, Containers: []wire.Container{
		{Name: "main", Image: "registry.example/demo:" + version},
		{Name: "side", Image: "busybox"},
	}}
}

func keys(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// start runs the simulation until the test ends.
func start(t *testing.T, cfg fleetsim.Config) *fleetsim.Sim {
	t.Helper()
	cfg.Logf = t.Logf
	s, err := fleetsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

// eventually polls cond until it holds; the deadline only keeps a broken
// test from hanging, it is not what the test measures.
func eventually(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rollOut publishes generation gen of apps to every device and waits for
// all to report it.
func rollOut(t *testing.T, p *fleetsim.Publisher, ids []string, gen uint64, apps ...wire.App) {
	t.Helper()
	for _, id := range ids {
		if err := p.Publish(fleetsim.Doc(id, gen, apps...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WaitObserved(waitCtx(t), ids, gen); err != nil {
		t.Fatal(err)
	}
}

// Over plain TCP with passwords, against embedded mochi: 200 devices
// converge on two generations, one after the other; a version marked bad
// runs unhealthy and is not reported as observed.
func TestConvergeTCP(t *testing.T) {
	pub, priv := keys(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	s := start(t, fleetsim.Config{
		Broker: "tcp://" + m.Addr, Devices: devices, FleetKey: pub,
		Password:    func(id string) string { return "pw-" + id },
		ConnectRate: 1000, ApplyDelay: 5 * time.Millisecond, ApplyJitter: 20 * time.Millisecond,
		Bad: func(_, version string) bool { return version == "3-bad" },
	})
	p, err := fleetsim.DialPublisher(waitCtx(t), fleetsim.PublisherConfig{Broker: "tcp://" + m.Addr, Key: priv})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == devices })
	ids := s.IDs()

	// A device records its latency sample just after its report is
	// published, so the publisher may see every report a moment before
	// the last sample is in: wait for the samples, then take them.
	samples := func() bool { return s.Stats().Latency.N == devices }
	rollOut(t, p, ids, 1, app("1"))
	eventually(t, func() string { return "generation 1's latency samples: " + strconv.Itoa(s.Stats().Latency.N) }, samples)
	l1 := s.TakeLatency()
	rollOut(t, p, ids, 2, app("2"))
	eventually(t, func() string { return "generation 2's latency samples: " + strconv.Itoa(s.Stats().Latency.N) }, samples)
	l2 := s.TakeLatency()
	t.Logf("issuedAt → report, generation 1: %s; generation 2: %s", l1, l2)
	if l1.N != devices || l2.N != devices {
		t.Errorf("latency samples %d, %d, want %d each", l1.N, l2.N, devices)
	}
	for _, id := range ids {
		r, _ := p.Report(id)
		if r.ObservedGeneration != 2 || len(r.Apps) != 1 || r.Apps[0].Version != "2" || r.Apps[0].State != "running" ||
			len(r.Apps[0].Containers) != 2 || r.Apps[0].Containers[0].Health != wire.HealthHealthy {
			t.Fatalf("report of %s: %+v", id, r)
		}
	}

	// Generation 3 carries a bad version: accepted, run, unhealthy, and
	// generation 2 stays the one observed.
	for _, id := range ids {
		if err := p.Publish(fleetsim.Doc(id, 3, app("3-bad"))); err != nil {
			t.Fatal(err)
		}
	}
	unhealthy := func() int {
		n := 0
		for _, id := range ids {
			r, _ := p.Report(id)
			if len(r.Apps) == 1 && r.Apps[0].Version == "3-bad" && r.Apps[0].Containers[0].Health == wire.HealthUnhealthy {
				n++
			}
		}
		return n
	}
	if err := p.Wait(waitCtx(t), func() bool { return unhealthy() == devices }, func() string {
		return strconv.Itoa(unhealthy()) + " devices report 3-bad unhealthy"
	}); err != nil {
		t.Fatal(err)
	}
	if n := p.Observed(ids, 3); n != 0 {
		t.Errorf("%d devices report the bad generation 3 as observed", n)
	}
	if n := p.Observed(ids, 2); n != devices {
		t.Errorf("%d devices report generation 2, want %d", n, devices)
	}
	st := s.Stats()
	if st.Verified != 3*devices || st.Refused != 0 {
		t.Errorf("verified %d refused %d, want %d and 0", st.Verified, st.Refused, 3*devices)
	}
	if _, _, invalid := p.Counts(); invalid != 0 {
		t.Errorf("%d reports or events did not decode", invalid)
	}
}

// tlsMochi runs mochi with a TLS listener that wants a client certificate
// from ca, and returns its address.
func tlsMochi(t *testing.T, ca *fleetsim.CA) string {
	t.Helper()
	srv, err := ca.Issue("broker", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{srv},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
	}})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return "ssl://" + l.Address()
}

// Over mutual TLS (a certificate per device, CN = its id): the devices
// converge, then refuse every forged, tampered, misaddressed, stale or
// expired document without answering it, and still take the next good
// one.
func TestForgedRefusedTLS(t *testing.T) {
	pub, priv := keys(t)
	_, other := keys(t)
	ca, err := fleetsim.NewCA("fleetsim test ca")
	if err != nil {
		t.Fatal(err)
	}
	broker := tlsMochi(t, ca)
	s := start(t, fleetsim.Config{Broker: broker, Devices: devices, FleetKey: pub, CA: ca, ConnectRate: 1000, Heartbeat: -1})
	ctl, err := ca.Issue("controller")
	if err != nil {
		t.Fatal(err)
	}
	p, err := fleetsim.DialPublisher(waitCtx(t), fleetsim.PublisherConfig{Broker: broker, Key: priv,
		TLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ctl}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == devices })
	ids := s.IDs()
	rollOut(t, p, ids, 1, app("1"))
	reports, _, _ := p.Counts()

	encode := func(env wire.Envelope) []byte {
		b, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	signed := func(key ed25519.PrivateKey, d wire.Desired) wire.Envelope {
		env, err := sign.SignDesired(key, d)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	forgeries := map[string]func(id string) []byte{
		"signed by another key": func(id string) []byte { return encode(signed(other, fleetsim.Doc(id, 5, app("evil")))) },
		"payload tampered": func(id string) []byte {
			env := signed(priv, fleetsim.Doc(id, 5, app("2")))
			env.Payload, _ = wire.Encode(&wire.Desired{DeviceID: id, Generation: 6, IssuedAt: time.Now(),
				ExpiresAt: time.Now().Add(time.Hour), Apps: []wire.App{app("evil")}})
			return encode(env)
		},
		"unsigned": func(id string) []byte {
			env := signed(priv, fleetsim.Doc(id, 5, app("2")))
			env.Signature = nil
			return encode(env)
		},
		"for another device": func(id string) []byte {
			other := ids[0]
			if id == other {
				other = ids[1]
			}
			return encode(signed(priv, fleetsim.Doc(other, 5, app("evil"))))
		},
		"stale": func(id string) []byte { return encode(signed(priv, fleetsim.Doc(id, 1, app("old")))) },
		"expired": func(id string) []byte {
			d := fleetsim.Doc(id, 5, app("evil"))
			d.IssuedAt, d.ExpiresAt = d.IssuedAt.Add(-2*time.Hour), d.IssuedAt.Add(-time.Hour)
			return encode(signed(priv, d))
		},
		"junk": func(string) []byte { return []byte("{not json") },
	}
	want := int64(0)
	for name, forge := range forgeries {
		for _, id := range ids {
			if err := p.PublishRaw(id, forge(id)); err != nil {
				t.Fatal(err)
			}
		}
		want += devices
		eventually(t, func() string { return name + ": refused " + strconv.FormatInt(s.Stats().Refused, 10) },
			func() bool { return s.Stats().Refused >= want })
	}
	st := s.Stats()
	t.Logf("refused by reason: %v", st.RefusedBy)
	if st.Refused != want || st.Verified != devices {
		t.Errorf("refused %d verified %d, want %d and %d", st.Refused, st.Verified, want, devices)
	}
	for _, reason := range []error{sign.ErrWrongKey, sign.ErrBadSignature, sign.ErrUnsigned, sign.ErrWrongDevice, sign.ErrStale, sign.ErrExpired, wire.ErrMalformed} {
		if st.RefusedBy[reason.Error()] != devices {
			t.Errorf("refused as %q: %d, want %d", reason, st.RefusedBy[reason.Error()], devices)
		}
	}
	// Nothing answered: a good document now brings exactly one more
	// report per device, its own.
	rollOut(t, p, ids, 7, app("2"))
	if n, _, _ := p.Counts(); n != reports+devices {
		t.Errorf("%d reports after the forgeries and one good document, want %d: a forgery was answered", n, reports+devices)
	}
	if n := s.Observed(7); n != devices {
		t.Errorf("%d devices observed generation 7, want %d", n, devices)
	}
}

// Against Debian's mosquitto with configs/mosquitto (mutual TLS, the
// device's certificate CN as its username, the topic ACL): the simulator
// stays inside what the ACL lets a device do, and its memory per
// connected device is measured with the broker out of process.
func TestMosquittoTLSMemory(t *testing.T) {
	pub, priv := keys(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, root, nil)
	var mu sync.Mutex
	issue := func(id string) (tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		c, _, _ := m.CA.Issue(t, id, false)
		return c, nil
	}
	ctl, _ := issue("tender-controller")
	p, err := fleetsim.DialPublisher(waitCtx(t), fleetsim.PublisherConfig{Broker: m.CertAddr, Key: priv,
		TLS: &tls.Config{RootCAs: m.Roots, Certificates: []tls.Certificate{ctl}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	before := heap()
	s := start(t, fleetsim.Config{Broker: m.CertAddr, Devices: devices, FleetKey: pub, Certificate: issue, RootCAs: m.Roots, ConnectRate: 1000})
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == devices })
	rollOut(t, p, s.IDs(), 1, app("1"))
	after := heap()
	t.Logf("memory per connected device (Go heap in use + stacks, TLS, after a document): %d bytes", (after-before)/devices)
	if st := s.Stats(); st.Disconnects != 0 || st.ConnectErrors != 0 || st.PublishErrors != 0 {
		t.Errorf("stats %+v: the broker closed connections (an ACL refusal?)", st)
	}
}

// heap is the Go heap in use plus goroutine stacks, after a collection.
func heap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// The simulator refuses a configuration it cannot run.
func TestNewRefusesBadConfig(t *testing.T) {
	pub, _ := keys(t)
	ca, err := fleetsim.NewCA("x")
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]fleetsim.Config{
		"no broker":         {Devices: 1, FleetKey: pub},
		"bad scheme":        {Broker: "http://127.0.0.1:1", Devices: 1, FleetKey: pub},
		"no key":            {Broker: "tcp://127.0.0.1:1", Devices: 1},
		"no devices":        {Broker: "tcp://127.0.0.1:1", FleetKey: pub},
		"bad id":            {Broker: "tcp://127.0.0.1:1", IDs: []string{"A/B"}, FleetKey: pub},
		"certs over tcp":    {Broker: "tcp://127.0.0.1:1", Devices: 1, FleetKey: pub, CA: ca},
		"id listed twice":   {Broker: "tcp://127.0.0.1:1", IDs: []string{"a", "a"}, FleetKey: pub},
		"wildcard in an id": {Broker: "tcp://127.0.0.1:1", IDs: []string{"a+"}, FleetKey: pub},
	} {
		if _, err := fleetsim.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
}

// A device dropped by the broker without a DISCONNECT leaves its Last
// Will, a retained "offline", and comes back through the pacer and the
// backoff: online again, with its report.
func TestWillAndReconnect(t *testing.T) {
	pub, _ := keys(t)
	var mu sync.Mutex
	offline, online := map[string]int{}, map[string]int{}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Subscribe("tender/v1/devices/+/presence", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		id := strings.Split(pk.TopicName, "/")[3]
		mu.Lock()
		defer mu.Unlock()
		switch wire.Presence(pk.Payload) {
		case wire.Online:
			online[id]++
		case wire.Offline:
			offline[id]++
		}
	}); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() }) // after the simulation's cleanup
	s := start(t, fleetsim.Config{Broker: "tcp://" + l.Address(), Devices: devices, FleetKey: pub, ConnectRate: 1000,
		BackoffBase: 10 * time.Millisecond, BackoffCap: 50 * time.Millisecond})
	count := func(m map[string]int, atLeast int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, v := range m {
				if v >= atLeast {
					n++
				}
			}
			return n == devices
		}
	}
	eventually(t, func() string { return "all online" }, count(online, 1))
	for _, id := range s.IDs() {
		cl, ok := srv.Clients.Get(id)
		if !ok {
			t.Fatalf("%s not a client of the broker", id)
		}
		cl.Stop(errors.New("dropped by the test"))
	}
	t0 := time.Now()
	eventually(t, func() string { return "all offline by their will" }, count(offline, 1))
	t.Logf("wills after %s", time.Since(t0))
	eventually(t, func() string { return "all online again" }, count(online, 2))
	t.Logf("online again after %s", time.Since(t0))
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == devices })
	if st := s.Stats(); st.Connects != 2*devices || st.Disconnects != devices {
		t.Errorf("connects %d disconnects %d, want %d and %d", st.Connects, st.Disconnects, 2*devices, devices)
	}
}

// A signed command is verified as the agent does and answered; a forged
// one and a replay are refused and get no answer.
func TestCommands(t *testing.T) {
	const n = 20
	pub, priv := keys(t)
	_, other := keys(t)
	var mu sync.Mutex
	results := map[string][]wire.CommandResult{}
	m := mqtttest.StartMochi(t, "127.0.0.1:0", map[string]mqtttest.Handler{
		"tender/v1/devices/+/cmd/result": func(topic string, payload []byte) {
			r, err := wire.DecodeCommandResult(payload)
			if err != nil {
				t.Errorf("%s: %v", topic, err)
				return
			}
			mu.Lock()
			results[strings.Split(topic, "/")[3]] = append(results[strings.Split(topic, "/")[3]], r)
			mu.Unlock()
		},
	})
	s := start(t, fleetsim.Config{Broker: "tcp://" + m.Addr, Devices: n, FleetKey: pub, ConnectRate: 1000})
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == n })
	command := func(key ed25519.PrivateKey, id string) []byte {
		cid, err := sign.NewCommandID(nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		env, err := sign.SignCommand(key, wire.Command{DeviceID: id, ID: cid, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Kind: wire.CommandRestart, App: "demo"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := wire.Encode(&env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, id := range s.IDs() {
		good := command(priv, id)
		for _, b := range [][]byte{command(other, id), good, good} { // forged, good, replayed
			if err := m.Publish("tender/v1/devices/"+id+"/cmd", b, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, func() string { return "commands handled" }, func() bool {
		st := s.Stats()
		return st.Commands+st.CommandsRefused == 3*n
	})
	if st := s.Stats(); st.Commands != n || st.CommandsRefused != 2*n {
		t.Errorf("commands accepted %d refused %d, want %d and %d", st.Commands, st.CommandsRefused, n, 2*n)
	}
	eventually(t, func() string { return "results" }, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(results) == n
	})
	// A device handles its three commands in order on one connection, so
	// its one result was sent before the replay was refused.
	mu.Lock()
	defer mu.Unlock()
	for id, rs := range results {
		if len(rs) != 1 || !rs[0].OK {
			t.Errorf("%s answered %+v, want one success", id, rs)
		}
	}
}

// ReportAll makes every connected device report once more, and only once:
// the burst test/bench/fleet.sh measures a controller's ingest with.
func TestReportAll(t *testing.T) {
	pub, priv := keys(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	// Subscribed before the devices connect: each report arrives once, none
	// both live and as the retained copy.
	p, err := fleetsim.DialPublisher(waitCtx(t), fleetsim.PublisherConfig{Broker: "tcp://" + m.Addr, Key: priv})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := start(t, fleetsim.Config{
		Broker: "tcp://" + m.Addr, Devices: devices, FleetKey: pub, Heartbeat: -1,
		Password: func(id string) string { return "pw-" + id }, ConnectRate: 1000,
	})
	eventually(t, func() string { return "connected: " + strconv.Itoa(s.Connected()) }, func() bool { return s.Connected() == devices })
	reports := func() int64 { r, _, _ := p.Counts(); return r }
	eventually(t, func() string { return "first reports: " + strconv.FormatInt(reports(), 10) }, func() bool { return reports() == devices })
	before := s.Stats().Reports
	if n := s.ReportAll(); n != devices {
		t.Fatalf("ReportAll asked %d devices, want %d", n, devices)
	}
	if got := s.Stats().Reports - before; got != devices {
		t.Errorf("ReportAll sent %d reports, want %d", got, devices)
	}
	eventually(t, func() string { return "reports after the burst: " + strconv.FormatInt(reports(), 10) }, func() bool { return reports() >= 2*devices })
	time.Sleep(200 * time.Millisecond) // a duplicate would have arrived by now
	if r := reports(); r != 2*devices {
		t.Errorf("the publisher received %d reports, want %d", r, 2*devices)
	}
	if _, _, invalid := p.Counts(); invalid != 0 {
		t.Errorf("%d reports did not decode", invalid)
	}
}
