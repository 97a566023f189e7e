package fleetsim_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/fleetsim"
	"github.com/tender-edge/tender/test/mqtttest"
)

// runMosquitto runs mosquitto -c conf until the test ends, once it says
// it is running.
func runMosquitto(t *testing.T, conf string) {
	t.Helper()
	cmd := exec.Command(mqtttest.MosquittoBin, "-c", conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	running := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(running) })
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(exited) }()
	log := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(lines, "\n") }
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s:\n%s", conf, log())
		}
	})
	select {
	case <-running:
	case <-exited:
		t.Fatalf("mosquitto -c %s exited:\n%s", conf, log())
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto -c %s did not say it is running within 10s", conf)
	}
}

// runSim runs a simulation until stop or the test's end.
func runSim(t *testing.T, cfg fleetsim.Config) (*fleetsim.Sim, func()) {
	t.Helper()
	cfg.Logf = t.Logf
	s, err := fleetsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// The shipped bridge configs (configs/mosquitto/bridge) with one edge and
// the core, real mosquittos: desired documents published retained at the
// core reach devices at the edge, and stay retained there (a fresh device
// state gets them on connect); reports come back to the core with QoS 1;
// and F-08 holds through the bridge: a device writing another device's
// report or desired topic at its edge is refused by the edge's ACL, so
// nothing of it reaches the controller at the core or the other device.
func TestBridgeEdgeCore(t *testing.T) {
	if _, err := os.Stat(mqtttest.MosquittoBin); err != nil {
		t.Skipf("%s missing (apt-get install mosquitto): %v", mqtttest.MosquittoBin, err)
	}
	pub, priv := keys(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, err := fleetsim.NewCA("bridge test fleet ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("broker", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	scrt, skey, err := fleetsim.PairPEM(srv)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "server.crt": scrt, "server.key": skey, "crl.pem": crl}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	core, edge := "127.0.0.1:"+mqtttest.FreePort(t), "127.0.0.1:"+mqtttest.FreePort(t)
	b, err := fleetsim.WriteBridge(fleetsim.BridgeConfig{
		Repo: root, Dir: dir, CA: ca, Core: core, Edges: []string{edge},
		CAFile: filepath.Join(dir, "ca.crt"), ServerCert: filepath.Join(dir, "server.crt"),
		ServerKey: filepath.Join(dir, "server.key"), CRL: filepath.Join(dir, "crl.pem"),
	})
	if err != nil {
		t.Fatal(err)
	}
	runMosquitto(t, b.Core)
	runMosquitto(t, b.Edges[0])

	var mu sync.Mutex
	issue := func(id string) (tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		return ca.Issue(id)
	}
	ctl, _ := issue("tender-controller")
	p, err := fleetsim.DialPublisher(waitCtx(t), fleetsim.PublisherConfig{Broker: "ssl://" + core, Key: priv,
		TLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ctl}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// Published at the core before any device connects: the documents
	// cross the bridge retained.
	ids := []string{"dev-a", "dev-b"}
	for _, id := range ids {
		if err := p.Publish(fleetsim.Doc(id, 1, app("1"))); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fleetsim.Config{Broker: "ssl://" + edge, IDs: ids, FleetKey: pub, Certificate: issue, RootCAs: ca.Pool(), ConnectRate: 1000}
	s, stop := runSim(t, cfg)
	if err := p.WaitObserved(waitCtx(t), ids, 1); err != nil {
		t.Fatal(err)
	}

	// dev-x, connected at the same edge with its own certificate, writes
	// dev-b's report and desired topics, then its own report.
	xc, err := issue("dev-x")
	if err != nil {
		t.Fatal(err)
	}
	x, err := fleetsim.Dialer{TLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{xc}}}.Dial(waitCtx(t), "ssl://"+edge,
		fleetsim.ConnectOptions{ClientID: "dev-x", KeepAlive: time.Minute, CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = x.Serve(func(string, []byte) {}) }()
	defer x.Close()
	report := func(id string, gen uint64) []byte {
		b, err := wire.Encode(&wire.Reported{DeviceID: id, ObservedGeneration: gen, Apps: []wire.AppStatus{}, Time: time.Now(),
			Device: wire.DeviceFacts{Arch: "amd64", CPUs: 4, MemoryBytes: 1 << 30, CgroupVersion: 2, AgentVersion: "fleetsim"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mustTopic := func(id string, k topic.Kind) string {
		s, err := topic.Build(id, k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := x.Publish(mustTopic("dev-b", topic.Reported), report("dev-b", 99), true); err != nil {
		t.Fatal(err)
	}
	if err := x.Publish(mustTopic("dev-b", topic.Desired), []byte(`{"forged":true}`), true); err != nil {
		t.Fatal(err)
	}
	// mosquitto acknowledges a publish its ACL refuses (3.1.1) and routes
	// what it accepts before acknowledging it: once both are acknowledged
	// and dev-x's own report (sent after them, through the same bridge,
	// in order) is at the core, a forgery that got through would be too.
	eventually(t, func() string { return "PUBACKs for dev-x's forgeries" }, func() bool { return x.Acks() >= 2 })
	if err := x.Publish(mustTopic("dev-x", topic.Reported), report("dev-x", 77), true); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() string { return "dev-x's own report at the core" }, func() bool { return p.ObservedOf("dev-x") == 77 })
	if g := p.ObservedOf("dev-b"); g != 1 {
		t.Errorf("the controller at the core sees dev-b at generation %d, want 1: dev-x's forged report crossed the bridge", g)
	}
	if _, _, invalid := p.Counts(); invalid != 0 {
		t.Errorf("%d invalid reports at the core", invalid)
	}

	// A newer document for dev-b, published at the core after the forged
	// one: dev-b takes it, and never saw the forgery.
	if err := p.Publish(fleetsim.Doc("dev-b", 2, app("2"))); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitObserved(waitCtx(t), []string{"dev-b"}, 2); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Refused != 0 || st.Verified != 3 {
		t.Errorf("devices verified %d documents and refused %d (%v), want 3 and 0: the forged desired document reached dev-b", st.Verified, st.Refused, st.RefusedBy)
	}
	stop()

	// Fresh device state (generation 0) on the same sessions: the edge
	// hands each device its retained document, which came over the bridge.
	s2, _ := runSim(t, cfg)
	eventually(t, func() string {
		return "documents verified after reconnecting: " + strings.TrimSpace(s2.Stats().Latency.String())
	},
		func() bool { return s2.Observed(1) == 2 && s2.Stats().Verified == 2 })
	if o, _ := s2.ObservedOf("dev-b"); o != 2 {
		t.Errorf("dev-b got generation %d from the edge's retained document, want 2", o)
	}
	if st := s2.Stats(); st.Refused != 0 {
		t.Errorf("after reconnecting, %d documents refused (%v)", st.Refused, st.RefusedBy)
	}
}
