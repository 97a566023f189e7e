package mqttc

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/clock"
	"github.com/tender-edge/tender/sync/topic"
)

const mosquittoBin = "/usr/sbin/mosquitto"

// mosq is a running mosquitto with the configs/mosquitto files and a test PKI.
type mosq struct {
	certAddr string // mTLS listener
	pwAddr   string // TLS + password listener
	roots    *x509.CertPool
	certs    map[string]tls.Certificate // device certificates by CN
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

func newPKI(t *testing.T, cn string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, n: 1}
}

// issue signs a leaf valid for the next day; server leaves get 127.0.0.1.
func (p *pki) issue(t *testing.T, cn string, server bool) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.n++
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// startMosquitto runs Debian's mosquitto with configs/mosquitto, its paths
// and ports rewritten into a temporary directory.
func startMosquitto(t *testing.T) *mosq {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Skipf("%s missing (apt-get install mosquitto): %v", mosquittoBin, err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// PKI: a device CA that also signs the server certificate (the test
	// trusts it for the server), device certificates for gw-a and gw-b.
	ca := newPKI(t, "tender test device ca")
	write("device-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	_, crt, key := ca.issue(t, "broker", true)
	write("server.crt", crt)
	write("server.key", key)
	m := &mosq{roots: x509.NewCertPool(), certs: map[string]tls.Certificate{}}
	m.roots.AddCert(ca.cert)
	for _, cn := range []string{"gw-a", "gw-b", "gw-x"} {
		c, _, _ := ca.issue(t, cn, false)
		m.certs[cn] = c
	}
	// Passwords, made by mosquitto_passwd as an operator would.
	pw := filepath.Join(dir, "passwd")
	for i, up := range [][2]string{{"controller", "ctl-secret"}, {"gw-c", "c-secret"}} {
		args := []string{"-b", pw, up[0], up[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	acl, err := os.ReadFile("../../configs/mosquitto/acl")
	if err != nil {
		t.Fatal(err)
	}
	write("acl", acl)
	conf, err := os.ReadFile("../../configs/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	certPort, pwPort := freePort(t), freePort(t)
	s := string(conf)
	for _, r := range [][2]string{
		{"/etc/mosquitto/tender/", dir + "/"},
		{"persistence_location /var/lib/mosquitto/", "persistence_location " + dir + "/"},
		{"user mosquitto", "user root"},
		{"listener 8883", "listener " + certPort + " 127.0.0.1"},
		{"listener 8884", "listener " + pwPort + " 127.0.0.1"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("configs/mosquitto/mosquitto.conf has no %q to rewrite", r[0])
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	write("mosquitto.conf", []byte(s))

	cmd := exec.Command(mosquittoBin, "-c", filepath.Join(dir, "mosquitto.conf"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logLines []string
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			logLines = append(logLines, sc.Text())
			logMu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(running) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			logMu.Lock()
			t.Logf("mosquitto log:\n%s", strings.Join(logLines, "\n"))
			logMu.Unlock()
		}
	})
	select {
	case <-running:
	case err := <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("mosquitto exited: %v\n%s", err, strings.Join(logLines, "\n"))
	case <-time.After(10 * time.Second):
		t.Fatal("mosquitto did not say it is running within 10s")
	}
	m.certAddr, m.pwAddr = "ssl://127.0.0.1:"+certPort, "ssl://127.0.0.1:"+pwPort
	return m
}

// device connects as cn with its certificate, client id id.
func (m *mosq) device(t *testing.T, cn, id string, now func() time.Time) *Client {
	t.Helper()
	c := startClient(t, Config{
		Broker:        m.certAddr,
		ClientID:      id,
		TLS:           &tls.Config{RootCAs: m.roots, Certificates: []tls.Certificate{m.certs[cn]}},
		Time:          now,
		PresenceTopic: topic.MustBuild(cn, topic.Presence),
	})
	connected(t, c)
	return c
}

func (m *mosq) controller(t *testing.T) *Client {
	t.Helper()
	c := startClient(t, Config{
		Broker: m.pwAddr, ClientID: "controller", Username: "controller", Password: "ctl-secret",
		TLS: &tls.Config{RootCAs: m.roots},
	})
	connected(t, c)
	return c
}

// expectFirst fails unless the next message on in is want: anything the
// ACL should have stopped would have arrived before it.
func expectFirst(t *testing.T, in inbox, what, want string) {
	t.Helper()
	if m := in.next(t); string(m.Payload) != want {
		t.Fatalf("%s: got %q on %s before the sentinel %q: the ACL let it through", what, m.Payload, m.Topic, want)
	}
}

func TestMosquitto_ACL(t *testing.T) {
	m := startMosquitto(t)
	ctl := m.controller(t)
	a := m.device(t, "gw-a", "gw-a", nil)
	b := m.device(t, "gw-b", "gw-b", nil)
	tp := func(id string, k topic.Kind) string { return topic.MustBuild(id, k) }

	t.Run("own reported reaches the controller", func(t *testing.T) {
		in := subscribe(t, ctl, "tender/v1/devices/+/reported")
		publish(t, a, tp("gw-a", topic.Reported), "a-report", true)
		expectFirst(t, in, "controller", "a-report")
	})

	t.Run("cannot read another device's topics", func(t *testing.T) {
		ain := make(inbox, 10)
		for _, k := range []topic.Kind{topic.Desired, topic.Command, topic.Reported} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := a.Subscribe(ctx, tp("gw-b", k), ain.handler)
			cancel()
			t.Logf("subscribe %s: %v", tp("gw-b", k), err)
			if err != nil && !errors.Is(err, ErrSubscribeRefused) {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"tender/v1/devices/#", "#", "$SYS/#"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := a.Subscribe(ctx, f, ain.handler)
			cancel()
			t.Logf("subscribe %s: %v", f, err)
			if err != nil && !errors.Is(err, ErrSubscribeRefused) {
				t.Fatal(err)
			}
		}
		if err := a.Subscribe(context.Background(), tp("gw-a", topic.Command), ain.handler); err != nil {
			t.Fatal(err)
		}
		publish(t, ctl, tp("gw-b", topic.Desired), "b-desired", false)
		publish(t, ctl, tp("gw-b", topic.Command), "b-cmd", false)
		publish(t, b, tp("gw-b", topic.Reported), "b-report", false)
		publish(t, ctl, tp("gw-a", topic.Command), "a-sentinel", false)
		expectFirst(t, ain, "device a", "a-sentinel")
	})

	t.Run("cannot publish under another device's topics", func(t *testing.T) {
		bin := subscribe(t, b, tp("gw-b", topic.Command))
		cin := subscribe(t, ctl, "tender/v1/devices/+/events")
		for _, k := range []topic.Kind{topic.Reported, topic.Events, topic.Presence, topic.Command, topic.CommandResult} {
			publish(t, a, tp("gw-b", k), "forged-"+string(k), false)
		}
		publish(t, a, tp("gw-a", topic.Events), "a-sentinel", false)
		expectFirst(t, cin, "controller", "a-sentinel")
		publish(t, ctl, tp("gw-b", topic.Command), "b-sentinel", false)
		expectFirst(t, bin, "device b", "b-sentinel")
	})

	t.Run("no device writes any desired topic", func(t *testing.T) {
		publish(t, a, tp("gw-a", topic.Desired), "planted-own", true)
		publish(t, a, tp("gw-b", topic.Desired), "planted-other", true)
		publish(t, b, tp("gw-b", topic.Desired), "planted-b", true)
		// A retained document would be delivered on subscribe, before the
		// controller's sentinel.
		ain := subscribe(t, a, tp("gw-a", topic.Desired))
		bin := subscribe(t, b, tp("gw-b", topic.Desired))
		publish(t, ctl, tp("gw-a", topic.Desired), "ctl-a", false)
		publish(t, ctl, tp("gw-b", topic.Desired), "ctl-b", false)
		expectFirst(t, ain, "device a", "ctl-a")
		expectFirst(t, bin, "device b", "ctl-b")
	})

	t.Run("another identity cannot take over a client id", func(t *testing.T) {
		// x's certificate, a's client id: the broker renames it gw-x.
		intruder := m.device(t, "gw-x", "gw-a", nil)
		publish(t, intruder, tp("gw-x", topic.Events), "intruder", false)
		publish(t, a, tp("gw-a", topic.Events), "a-still-here", false)
		if n := a.Connects(); n != 1 {
			t.Errorf("device a connected %d times: it was kicked off", n)
		}
	})

	t.Run("password device is confined too", func(t *testing.T) {
		c := startClient(t, Config{
			Broker: m.pwAddr, ClientID: "gw-a", Username: "gw-c", Password: "c-secret",
			TLS: &tls.Config{RootCAs: m.roots},
		})
		connected(t, c)
		cin := subscribe(t, ctl, "tender/v1/devices/+/events")
		publish(t, c, tp("gw-a", topic.Events), "c-as-a", false)
		publish(t, c, tp("gw-c", topic.Events), "c-sentinel", false)
		expectFirst(t, cin, "controller", "c-sentinel")
		publish(t, a, tp("gw-a", topic.Events), "a-after-c", false)
		if n := a.Connects(); n != 1 {
			t.Errorf("device a connected %d times: a password user with its client id kicked it off", n)
		}
	})
}

func TestMosquitto_WrongPasswordRefused(t *testing.T) {
	m := startMosquitto(t)
	c, err := New(Config{Broker: m.pwAddr, ClientID: "controller", Username: "controller", Password: "wrong",
		TLS: &tls.Config{RootCAs: m.roots}})
	if err != nil {
		t.Fatal(err)
	}
	cn, err := c.connect(context.Background())
	if err == nil {
		cn.cl.Disconnect(0)
		t.Fatal("connected with a wrong password")
	}
}

// TestMosquitto_TLSWith1970Clock: a device whose clock says 1970 connects
// over mutual TLS with the time floor, and not without it.
func TestMosquitto_TLSWith1970Clock(t *testing.T) {
	m := startMosquitto(t)
	epoch := func() time.Time { return time.Unix(0, 0) }
	raw, err := New(Config{Broker: m.certAddr, ClientID: "gw-a",
		TLS: &tls.Config{RootCAs: m.roots, Certificates: []tls.Certificate{m.certs["gw-a"]}}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if cn, err := raw.connect(context.Background()); err == nil {
		cn.cl.Disconnect(0)
		t.Fatal("connected while checking the certificate against 1970")
	} else {
		var inv x509.CertificateInvalidError
		if !errors.As(err, &inv) && !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("connect with a 1970 clock = %v, want a certificate error", err)
		}
	}
	floor, err := clock.New(clock.Options{System: epoch, BuildTime: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !floor.Untrusted() {
		t.Fatal("floor trusts a 1970 clock")
	}
	a := m.device(t, "gw-a", "gw-a", floor.Now)
	publish(t, a, topic.MustBuild("gw-a", topic.Reported), fmt.Sprintf(`{"clockUntrusted":%v}`, floor.Untrusted()), true)
}
