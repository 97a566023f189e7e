// Package mqtttest starts real MQTT brokers for tests: mochi embedded in the
// test process, and Debian's mosquitto with configs/mosquitto, TLS, a
// password file and the ACL, with a throwaway PKI.
package mqtttest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Mochi is an embedded broker.
type Mochi struct {
	Addr string // host:port
	srv  *mqtt.Server
	once sync.Once
}

// Handler receives what an inline subscription of the test matched.
type Handler func(topic string, payload []byte)

// StartMochi starts mochi on addr ("127.0.0.1:0": any port) allowing every
// client; it stops when the test ends. subs are inline subscriptions of
// the test (filter → handler), made before the listener opens, so they
// miss nothing any client publishes.
func StartMochi(t testing.TB, addr string, subs map[string]Handler) *Mochi {
	t.Helper()
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	id := 0
	for f, h := range subs {
		id++
		if err := s.Subscribe(f, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			h(pk.TopicName, append([]byte(nil), pk.Payload...))
		}); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	if err := s.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	m := &Mochi{Addr: tcp.Address(), srv: s}
	t.Cleanup(m.Stop)
	return m
}

// Publish publishes as the broker's inline client with QoS 1.
func (m *Mochi) Publish(topic string, payload []byte, retained bool) error {
	return m.srv.Publish(topic, payload, retained, 1)
}

// Stop closes the broker (idempotent).
func (m *Mochi) Stop() { m.once.Do(func() { _ = m.srv.Close() }) }

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// PKI is a test CA.
type PKI struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

// NewPKI makes a CA valid from an hour ago for a day.
func NewPKI(t testing.TB, cn string) *PKI {
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
	return &PKI{Cert: cert, key: key, n: 1}
}

// CertPEM is the CA certificate in PEM.
func (p *PKI) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})
}

// Issue signs a leaf valid for the next day (server leaves get 127.0.0.1)
// and returns it and its certificate and key in PEM.
func (p *PKI) Issue(t testing.TB, cn string, server bool) (tls.Certificate, []byte, []byte) {
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Cert, &key.PublicKey, p.key)
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

// MosquittoBin is Debian's mosquitto.
const MosquittoBin = "/usr/sbin/mosquitto"

// Mosquitto is a running mosquitto with configs/mosquitto.
type Mosquitto struct {
	*Process
	Dir      string         // its directory: passwd, acl, mosquitto.conf, ...
	CertAddr string         // ssl://127.0.0.1:PORT, mutual TLS listener
	PwAddr   string         // ssl://127.0.0.1:PORT, TLS + password listener
	CA       *PKI           // StartMosquitto: the device CA, which also signed the server's certificate
	CAFile   string         // CA in PEM, to trust the server
	Roots    *x509.CertPool // the same, as a pool
}

// CRL returns a CRL of the PKI, valid for a day, revoking serials.
func (p *PKI) CRL(t testing.TB, serials ...*big.Int) []byte {
	t.Helper()
	now := time.Now()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.Cert, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// StartMosquitto runs mosquitto with repoRoot/configs/mosquitto, paths and
// ports rewritten into a temporary directory, a throwaway device CA (with
// an empty CRL) and users (name → password) in its password file. It
// skips the test if mosquitto is not installed.
func StartMosquitto(t testing.TB, repoRoot string, users map[string]string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoBin); err != nil {
		t.Skipf("%s missing (apt-get install mosquitto): %v", MosquittoBin, err)
	}
	dir := t.TempDir()
	ca := NewPKI(t, "tender test device ca")
	_, crt, key := ca.Issue(t, "broker", true)
	for name, data := range map[string][]byte{"device-ca.crt": ca.CertPEM(), "server.crt": crt, "server.key": key, "crl.pem": ca.CRL(t)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := startConfigured(t, repoRoot, dir, nil, "", users)
	m.CA = ca
	return m
}

// StartFleetMosquitto runs mosquitto with repoRoot/configs/mosquitto as a
// fleet's broker for tender serve --broker: its CA, server certificate and
// key, and CRL are the controller's files in dataDir (ca.crt, server.crt,
// server.key, crl.pem), used in place, so a revocation reaches mosquitto
// with Reload alone. certPort is the mutual-TLS listener's port ("": any
// free one), for a controller started before the broker; users (name →
// password) go to its password file.
func StartFleetMosquitto(t testing.TB, repoRoot, dataDir, certPort string, users map[string]string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoBin); err != nil {
		t.Skipf("%s missing (apt-get install mosquitto): %v", MosquittoBin, err)
	}
	return startConfigured(t, repoRoot, t.TempDir(), map[string]string{
		"device-ca.crt": filepath.Join(dataDir, "ca.crt"),
		"server.crt":    filepath.Join(dataDir, "server.crt"),
		"server.key":    filepath.Join(dataDir, "server.key"),
		"crl.pem":       filepath.Join(dataDir, "crl.pem"),
	}, certPort, users)
}

// startConfigured writes configs/mosquitto's config and ACL into dir, with
// files (a name under /etc/mosquitto/tender/ → its path) rewritten, the
// rest of those paths into dir, and ports of its own (certPort for the
// mutual-TLS listener unless ""); fills the password
// file with users; and runs it.
func startConfigured(t testing.TB, repoRoot, dir string, files map[string]string, certPort string, users map[string]string) *Mosquitto {
	t.Helper()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pw := filepath.Join(dir, "passwd")
	first := true
	for u, p := range users {
		args := []string{"-b", pw, u, p}
		if first {
			args = append([]string{"-c"}, args...)
			first = false
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	if first {
		write("passwd", nil)
	}
	acl, err := os.ReadFile(filepath.Join(repoRoot, "configs/mosquitto/acl"))
	if err != nil {
		t.Fatal(err)
	}
	write("acl", acl)
	conf, err := os.ReadFile(filepath.Join(repoRoot, "configs/mosquitto/mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "device-ca.crt")
	if p, ok := files["device-ca.crt"]; ok {
		caFile = p
	}
	if certPort == "" {
		certPort = FreePort(t)
	}
	pwPort := FreePort(t)
	s := string(conf)
	var rewrites [][2]string
	for name, path := range files {
		rewrites = append(rewrites, [2]string{" /etc/mosquitto/tender/" + name + "\n", " " + path + "\n"})
	}
	for _, r := range append(rewrites, [][2]string{
		{"/etc/mosquitto/tender/", dir + "/"},
		{"persistence_location /var/lib/mosquitto/", "persistence_location " + dir + "/"},
		{"user mosquitto", "user root"},
		{"listener 8883", "listener " + certPort + " 127.0.0.1"},
		{"listener 8884", "listener " + pwPort + " 127.0.0.1"},
	}...) {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("configs/mosquitto/mosquitto.conf has no %q to rewrite", r[0])
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	write("mosquitto.conf", []byte(s))
	m := &Mosquitto{Dir: dir, CAFile: caFile, Roots: x509.NewCertPool()}
	pemCA, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Roots.AppendCertsFromPEM(pemCA) {
		t.Fatalf("%s: no certificate", caFile)
	}
	m.Process = runMosquitto(t, filepath.Join(dir, "mosquitto.conf"))
	m.CertAddr, m.PwAddr = "ssl://127.0.0.1:"+certPort, "ssl://127.0.0.1:"+pwPort
	return m
}

// Process is a running mosquitto and what it logged.
type Process struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
}

// Reload sends mosquitto SIGHUP (systemctl reload mosquitto): it reads
// its config again, the CRL included.
func (p *Process) Reload() error { return p.cmd.Process.Signal(syscall.SIGHUP) }

// Log returns the lines mosquitto logged so far.
func (p *Process) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// runMosquitto starts mosquitto with conf, waits until it says it is
// running, and kills it when the test ends (showing its log if the test
// failed).
func runMosquitto(t testing.TB, conf string) *Process {
	t.Helper()
	cmd := exec.Command(MosquittoBin, "-c", conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{cmd: cmd}
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(running) })
			}
		}
	}()
	// exited is closed once mosquitto is reaped (waitErr set): the start
	// below and the cleanup may both wait on it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", strings.Join(p.Log(), "\n"))
		}
	})
	select {
	case <-running:
	case <-exited:
		t.Fatalf("mosquitto exited: %v\n%s", waitErr, strings.Join(p.Log(), "\n"))
	case <-time.After(10 * time.Second):
		t.Fatal("mosquitto did not say it is running within 10s")
	}
	return p
}

// StartPlainMosquitto runs mosquitto on a plain TCP listener on 127.0.0.1
// that lets anyone in, with no limit on message sizes: a broker as an
// attacker who controls it would run it. extra is appended to its config.
// It returns the broker URL (tcp://127.0.0.1:PORT) and skips the test if
// mosquitto is not installed.
func StartPlainMosquitto(t testing.TB, extra string) string {
	t.Helper()
	if _, err := os.Stat(MosquittoBin); err != nil {
		t.Skipf("%s missing (apt-get install mosquitto): %v", MosquittoBin, err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	conf := strings.Join([]string{
		"per_listener_settings false",
		"allow_anonymous true",
		"persistence false",
		"message_size_limit 0",
		"max_queued_messages 1000",
		"user root",
		"log_dest stderr",
		"log_type error", "log_type warning", "log_type notice", "log_type information",
		"listener " + port + " 127.0.0.1",
		extra,
	}, "\n") + "\n"
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	runMosquitto(t, path)
	return "tcp://127.0.0.1:" + port
}

// PublishStream publishes one message of size bytes (all fill) to topic on
// the broker at addr (host:port, plain TCP) with QoS 0 or 1, as a client of
// its own. It streams the payload from a small buffer, so a publish of
// hundreds of megabytes costs the test process no memory, and returns once
// the broker acknowledged it (QoS 1) or it was written (QoS 0).
func PublishStream(addr, topic string, qos byte, size int, fill byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 64<<10)
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	// CONNECT, MQTT 3.1.1, clean session, keepalive 60 s, a client id of its own.
	var id [8]byte
	_, _ = rand.Read(id[:])
	body := str(nil, "MQTT")
	body = append(body, 4, 0x02, 0, 60)
	body = str(body, "streamer-"+strconv.FormatUint(uint64(id[0])<<8|uint64(id[1]), 16))
	writePacket(w, 0x10, body, 0)
	if err := w.Flush(); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, b, err := readPacket(r); err != nil || typ != 0x20 || len(b) != 2 || b[1] != 0 {
		return fmt.Errorf("connect to %s: CONNACK %#x %v: %v", addr, typ, b, err)
	}
	head := str(nil, topic)
	if qos > 0 {
		head = append(head, 0, 1) // packet id 1
	}
	writePacket(w, 0x30|qos<<1, head, size)
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = fill
	}
	for left := size; left > 0; left -= min(left, len(chunk)) {
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			return fmt.Errorf("publish to %s: %w", addr, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("publish to %s: %w", addr, err)
	}
	if qos > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		if typ, _, err := readPacket(r); err != nil || typ != 0x40 {
			return fmt.Errorf("publish to %s: PUBACK %#x: %v", addr, typ, err)
		}
	}
	writePacket(w, 0xe0, nil, 0) // DISCONNECT
	return w.Flush()
}

// writePacket writes a fixed header for head plus extra more bytes, then head.
func writePacket(w *bufio.Writer, typ byte, head []byte, extra int) {
	_ = w.WriteByte(typ)
	n := len(head) + extra
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		_ = w.WriteByte(b)
		if n == 0 {
			break
		}
	}
	_, _ = w.Write(head)
}

// readPacket reads one small packet: its type (high nibble, flags dropped) and body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	if n > 1<<16 {
		return 0, nil, fmt.Errorf("packet of %d bytes: not expected here", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return typ & 0xf0, b, err
}
