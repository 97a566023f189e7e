// Command fleetsim runs simulated Tender devices against an MQTT broker:
// enrolled at `tender serve` (-enroll), or, against a bare broker, with the
// pieces a benchmark needs around them: a throwaway PKI, an embedded
// broker and a test publisher.
//
//	fleetsim pki     -dir D                       CA, broker and controller certificates, fleet key
//	fleetsim broker  -dir D -listen 127.0.0.1:8883  embedded mochi, mutual TLS with D's CA
//	fleetsim devices -broker ssl://H:P -n N -ca-cert F -ca-key F -fleet-pub F [-rate R] ...
//	fleetsim devices -enroll https://H:P -token T -n N [-broker ssl://H:P] ...  devices of `tender serve`
//	fleetsim publish -broker ssl://H:P -n N -fleet-key F -cert F -key F -ca F -gen G ...
//	fleetsim bridge  -dir D -ca-cert F -ca-key F -server-cert F -server-key F -crl F -core H:P -edges H:P,H:P,...
//	                 configs/mosquitto/bridge written for a core and edges; prints "core FILE", "edge K FILE"
//
// devices prints one JSON line of statistics every -every and at the end
// (SIGINT/SIGTERM), "enrolled N devices in D" after -enroll, and
// "connected N devices in D" once they all are. SIGUSR1 makes every
// connected device report at once ("burst: N reports sent in D").
// publish prints how long publishing and convergence took.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/fleetsim"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleetsim pki|broker|devices|publish|bridge [flags] (-h for each)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "pki":
		err = pki(args)
	case "broker":
		err = broker(ctx, args)
	case "devices":
		err = devices(ctx, args)
	case "publish":
		err = publish(ctx, args)
	case "bridge":
		err = bridge(args)
	default:
		err = fmt.Errorf("unknown command %q: want pki, broker, devices, publish or bridge", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

// pki writes a CA, a server certificate for the broker, a client
// certificate for the publisher (CN controller) and the fleet signing key.
func pki(args []string) error {
	fs := flag.NewFlagSet("pki", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to write ca.crt, ca.key, server.*, controller.*, fleet.key, fleet.pub into")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("pki: -dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	ca, err := fleetsim.NewCA("fleetsim ca")
	if err != nil {
		return err
	}
	kp, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "ca.key": kp}
	for name, hosts := range map[string][]string{"server": {"127.0.0.1", "localhost"}, "controller": nil} {
		c, err := ca.Issue(name, hosts...)
		if err != nil {
			return err
		}
		cp, kp, err := fleetsim.PairPEM(c)
		if err != nil {
			return err
		}
		files[name+".crt"], files[name+".key"] = cp, kp
	}
	pub, priv, err := sign.GenerateKey(nil)
	if err != nil {
		return err
	}
	if files["fleet.key"], err = sign.MarshalPrivateKeyPEM(priv); err != nil {
		return err
	}
	if files["fleet.pub"], err = sign.MarshalPublicKeyPEM(pub); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// broker runs mochi with mutual TLS: clients need a certificate from the
// CA; anything else is allowed.
func broker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("broker", flag.ExitOnError)
	dir := fs.String("dir", "", "directory written by fleetsim pki")
	listen := fs.String("listen", "127.0.0.1:8883", "address to listen on")
	pending := fs.Int("writes-pending", 65536, "messages queued per client before mochi drops one (a 10,000-device burst of reports to one subscriber needs more than the default 8192)")
	_ = fs.Parse(args)
	cert, err := tls.LoadX509KeyPair(filepath.Join(*dir, "server.crt"), filepath.Join(*dir, "server.key"))
	if err != nil {
		return err
	}
	pool, err := loadPool(filepath.Join(*dir, "ca.crt"))
	if err != nil {
		return err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(*pending)
	caps.MaximumInflight = 65535 // QoS 1 messages unacknowledged per client before mochi drops one
	s := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: *listen, TLSConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	}})
	if err := s.AddListener(l); err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		return err
	}
	fmt.Println("broker listening on", l.Address())
	<-ctx.Done()
	return s.Close()
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return p, nil
}

// devices runs the simulation.
func devices(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices", flag.ExitOnError)
	brokerURL := fs.String("broker", "", "broker: ssl://HOST:PORT (mutual TLS) or tcp://HOST:PORT (passwords)")
	n := fs.Int("n", 1000, "number of devices")
	prefix := fs.String("prefix", "sim-", "device id prefix")
	caCert := fs.String("ca-cert", "", "CA certificate (PEM) issuing the device certificates; also trusted for the broker")
	caKey := fs.String("ca-key", "", "its key (PEM)")
	rootCA := fs.String("root-ca", "", "CA to trust for the broker's certificate, if not -ca-cert")
	fleetPub := fs.String("fleet-pub", "", "fleet public key (PEM or base64) verifying desired documents")
	password := fs.String("password", "", "tcp://: the password of every device (username: its id)")
	rate := fs.Int("rate", 500, "connects per second, reconnects included")
	applyDelay := fs.Duration("apply-delay", 0, "time to apply an accepted document")
	applyJitter := fs.Duration("apply-jitter", 0, "plus up to this, at random")
	heartbeat := fs.Duration("heartbeat", 60*time.Second, "interval of unprompted reports (negative: none)")
	keepAlive := fs.Duration("keepalive", 60*time.Second, "MQTT keepalive")
	bad := fs.String("bad", "", "comma-separated app versions that run unhealthy")
	every := fs.Duration("every", 5*time.Second, "interval of the statistics lines")
	enrollServer := fs.String("enroll", "", "enroll every device first at this controller (https://HOST:PORT, POST /v1/enroll); its answers give the certificates, the fleet key, the CA and (without -broker) the broker")
	token := fs.String("token", "", "-enroll: join token with a use per device (tender token create --uses N)")
	workers := fs.Int("enroll-workers", 8, "-enroll: enrollments in flight")
	_ = fs.Parse(args)

	cfg := fleetsim.Config{
		Broker: *brokerURL, Devices: *n, Prefix: *prefix, ConnectRate: *rate,
		ApplyDelay: *applyDelay, ApplyJitter: *applyJitter, Heartbeat: *heartbeat, KeepAlive: *keepAlive,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}
	if *enrollServer != "" {
		start := time.Now()
		e, err := fleetsim.Enroll(ctx, fleetsim.EnrollConfig{Server: *enrollServer, Token: *token, IDs: fleetsim.DeviceIDs(*prefix, *n), Workers: *workers})
		if err != nil {
			return err
		}
		fmt.Printf("enrolled %d devices in %s (%d attempts rate-limited and retried)\n", len(e.Certificates), time.Since(start).Round(time.Millisecond), e.Retries)
		cfg.FleetKey, cfg.RootCAs, cfg.Certificate = e.FleetKey, e.Pool(), e.Certificate
		if cfg.Broker == "" && len(e.Brokers) > 0 {
			cfg.Broker = e.Brokers[0]
		}
	} else {
		pb, err := os.ReadFile(*fleetPub)
		if err != nil {
			return fmt.Errorf("-fleet-pub: %w", err)
		}
		if cfg.FleetKey, err = sign.ParsePublicKey(pb); err != nil {
			return fmt.Errorf("-fleet-pub: %w", err)
		}
	}
	var err error
	if *caCert != "" {
		cb, err := os.ReadFile(*caCert)
		if err != nil {
			return err
		}
		kb, err := os.ReadFile(*caKey)
		if err != nil {
			return err
		}
		if cfg.CA, err = fleetsim.LoadCA(cb, kb); err != nil {
			return err
		}
	}
	if *rootCA != "" {
		if cfg.RootCAs, err = loadPool(*rootCA); err != nil {
			return err
		}
	}
	if *password != "" {
		pw := *password
		cfg.Password = func(string) string { return pw }
	}
	if *bad != "" {
		set := map[string]bool{}
		for _, v := range strings.Split(*bad, ",") {
			set[v] = true
		}
		cfg.Bad = func(_, version string) bool { return set[version] }
	}
	s, err := fleetsim.New(cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t := time.NewTicker(*every)
	defer t.Stop()
	burst := make(chan os.Signal, 1)
	signal.Notify(burst, syscall.SIGUSR1)
	defer signal.Stop(burst)
	said := false
	for {
		select {
		case err := <-done:
			printStats(s)
			return err
		case <-burst:
			start := time.Now()
			n := s.ReportAll()
			fmt.Printf("burst: %d reports sent in %s\n", n, time.Since(start).Round(time.Millisecond))
		case <-t.C:
			st := s.Stats()
			if !said && st.AllConnected > 0 {
				said = true
				fmt.Printf("connected %d devices in %s\n", st.Devices, st.AllConnected.Round(time.Millisecond))
			}
			printStats(s)
		}
	}
}

// line is one statistics line: the simulation's figures and the
// process's memory.
type line struct {
	fleetsim.Stats
	RSS int64 `json:"rssBytes"`
	// GoLive is the heap live at the last collection plus the goroutine
	// stacks: what the devices hold, garbage not counted.
	GoLive     int64 `json:"goLiveBytes"`
	PerDevice  int64 `json:"rssPerDeviceBytes"`
	Goroutines int   `json:"goroutines"`
}

func printStats(s *fleetsim.Sim) {
	m := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(m)
	var live int64
	for _, v := range m {
		if v.Value.Kind() == metrics.KindUint64 {
			live += int64(v.Value.Uint64())
		}
	}
	l := line{Stats: s.Stats(), RSS: rss(), GoLive: live, Goroutines: runtime.NumGoroutine()}
	if l.Devices > 0 {
		l.PerDevice = l.RSS / int64(l.Devices)
	}
	b, _ := json.Marshal(l)
	fmt.Println(string(b))
}

// rss is the resident set of this process, from /proc (0 if unknown).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// publish plays the controller: one signed desired document per device
// at generation -gen, retained; then it waits for every device to report
// it.
func publish(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ExitOnError)
	brokerURL := fs.String("broker", "", "broker URL")
	n := fs.Int("n", 1000, "number of devices")
	prefix := fs.String("prefix", "sim-", "device id prefix")
	fleetKey := fs.String("fleet-key", "", "fleet signing key (PEM)")
	certFile := fs.String("cert", "", "client certificate (CN controller) for mutual TLS")
	keyFile := fs.String("key", "", "its key")
	caFile := fs.String("ca", "", "CA to trust for the broker's certificate")
	user := fs.String("user", "", "username (tcp://)")
	password := fs.String("password", "", "password (tcp://)")
	gen := fs.Uint64("gen", 1, "generation to publish")
	version := fs.String("version", "1", "version of the demo app")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the fleet to converge")
	_ = fs.Parse(args)

	kb, err := os.ReadFile(*fleetKey)
	if err != nil {
		return fmt.Errorf("-fleet-key: %w", err)
	}
	priv, err := sign.ParsePrivateKey(kb)
	if err != nil {
		return fmt.Errorf("-fleet-key: %w", err)
	}
	cfg := fleetsim.PublisherConfig{Broker: *brokerURL, Key: priv, Username: *user, Password: *password}
	if *caFile != "" || *certFile != "" {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			if cfg.TLS.RootCAs, err = loadPool(*caFile); err != nil {
				return err
			}
		}
		if *certFile != "" {
			c, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				return err
			}
			cfg.TLS.Certificates = []tls.Certificate{c}
		}
	}
	p, err := fleetsim.DialPublisher(ctx, cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	ids := fleetsim.DeviceIDs(*prefix, *n)
	app := wire.App{Name: "demo", Version: *version, Containers: []wire.Container{{Name: "main", Image: "registry.example/demo:" + *version}}}
	start := time.Now()
	for _, id := range ids {
		if err := p.Publish(fleetsim.Doc(id, *gen, app)); err != nil {
			return err
		}
	}
	published := time.Since(start)
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := p.WaitObserved(wctx, ids, *gen); err != nil {
		return err
	}
	reports, events, invalid := p.Counts()
	fmt.Printf("generation %d: published to %d devices in %s; all reported it %s after the first publish (reports %d, events %d, invalid %d)\n",
		*gen, len(ids), published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), reports, events, invalid)
	return nil
}

// bridge writes the configs of a core mosquitto and its edges from the
// repository's configs/mosquitto/bridge (fleetsim.WriteBridge) and prints
// "core FILE" and "edge K FILE" lines.
func bridge(args []string) error {
	fs := flag.NewFlagSet("bridge", flag.ExitOnError)
	repo := fs.String("repo", ".", "the repository's root")
	dir := fs.String("dir", "", "directory to write core/ and edge-K/ into")
	caCert := fs.String("ca-cert", "", "the fleet CA (DATA/ca.crt): every mosquitto's cafile, issuer of the bridge certificates")
	caKey := fs.String("ca-key", "", "its key (DATA/ca.key)")
	serverCert := fs.String("server-cert", "", "server certificate of every mosquitto (DATA/server.crt)")
	serverKey := fs.String("server-key", "", "its key (DATA/server.key)")
	crl := fs.String("crl", "", "the CRL (DATA/crl.pem)")
	core := fs.String("core", "", "the core's listener, HOST:PORT")
	edges := fs.String("edges", "", "the edges' device listeners, HOST:PORT,HOST:PORT,...")
	queued := fs.Int("max-queued", 0, "max_queued_messages of every mosquitto, if not the configs'")
	quiet := fs.Bool("quiet", false, "no connection messages in the logs")
	_ = fs.Parse(args)
	if *dir == "" || *core == "" || *edges == "" {
		return errors.New("bridge: -dir, -core and -edges are required")
	}
	cb, err := os.ReadFile(*caCert)
	if err != nil {
		return err
	}
	kb, err := os.ReadFile(*caKey)
	if err != nil {
		return err
	}
	ca, err := fleetsim.LoadCA(cb, kb)
	if err != nil {
		return err
	}
	b, err := fleetsim.WriteBridge(fleetsim.BridgeConfig{
		Repo: *repo, Dir: *dir, CA: ca, CAFile: *caCert, ServerCert: *serverCert, ServerKey: *serverKey, CRL: *crl,
		Core: *core, Edges: strings.Split(*edges, ","), MaxQueued: *queued, Quiet: *quiet,
	})
	if err != nil {
		return err
	}
	fmt.Println("core", b.Core)
	for k, e := range b.Edges {
		fmt.Println("edge", k+1, e)
	}
	return nil
}
