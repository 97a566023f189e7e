package clock

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable system clock with its own monotonic clock:
// Add moves both, Set moves only the wall clock (an NTP step).
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
}

func (c *fakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *fakeClock) opts(o Options) Options {
	o.System, o.Monotonic = c.Now, c.Mono
	return o
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Add lets d pass: both clocks move.
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mono += d
	c.mu.Unlock()
}

type memStore struct {
	t     time.Time
	saves int
	err   error
}

func (m *memStore) LoadTime() (time.Time, error) { return m.t, m.err }
func (m *memStore) SaveTime(t time.Time) error {
	m.t = t
	m.saves++
	return nil
}

var (
	epoch = time.Unix(0, 0).UTC()
	build = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
)

func TestFloor_TrustedClockPassesThrough(t *testing.T) {
	sys := &fakeClock{t: build.Add(48 * time.Hour)}
	f, err := New(sys.opts(Options{BuildTime: build}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Now(); !got.Equal(sys.Now()) {
		t.Errorf("Now = %s, want the system time %s", got, sys.Now())
	}
	sys.Add(time.Minute)
	if got := f.Now(); !got.Equal(sys.Now()) {
		t.Errorf("Now after a minute = %s, want %s", got, sys.Now())
	}
	if f.Untrusted() {
		t.Error("Untrusted with a clock after the build time")
	}
}

func TestFloor_1970BootUsesBuildTimeAndAdvances(t *testing.T) {
	sys := &fakeClock{t: epoch}
	f, err := New(sys.opts(Options{BuildTime: build}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Now(); !got.Equal(build) {
		t.Errorf("Now = %s, want the build time %s", got, build)
	}
	if !f.Untrusted() {
		t.Error("not Untrusted with the clock in 1970")
	}
	sys.Add(90 * time.Second)
	if got, want := f.Now(), build.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("Now after 90s = %s, want %s (floor advances with elapsed time)", got, want)
	}
	// NTP answers: the clock jumps to the real time.
	real := build.Add(30 * 24 * time.Hour)
	sys.Set(real)
	if got := f.Now(); !got.Equal(real) {
		t.Errorf("Now after NTP = %s, want %s", got, real)
	}
	if f.Untrusted() {
		t.Error("Untrusted after the clock caught up")
	}
}

func TestFloor_PersistedTimeBeatsBuildTime(t *testing.T) {
	last := build.Add(100 * 24 * time.Hour)
	st := &memStore{t: last}
	sys := &fakeClock{t: epoch}
	f, err := New(sys.opts(Options{BuildTime: build, Store: st}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Now(); !got.Equal(last) {
		t.Errorf("Now = %s, want the persisted %s", got, last)
	}
	sys.Add(time.Hour)
	if err := f.Persist(); err != nil {
		t.Fatal(err)
	}
	if want := last.Add(time.Hour); !st.t.Equal(want) || st.saves != 1 {
		t.Errorf("persisted %s after %d saves, want %s after 1", st.t, st.saves, want)
	}
	if err := f.Persist(); err != nil {
		t.Fatal(err)
	}
	if st.saves != 1 {
		t.Errorf("Persist wrote an unchanged floor: %d saves", st.saves)
	}
	// A new run starts from what was persisted.
	sys.Set(epoch)
	f2, err := New(sys.opts(Options{Store: st}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f2.Now(); !got.Equal(st.t) {
		t.Errorf("reopened Now = %s, want %s", got, st.t)
	}
}

func TestFloor_LoadError(t *testing.T) {
	boom := errors.New("boom")
	if _, err := New(Options{Store: &memStore{err: boom}}); !errors.Is(err, boom) {
		t.Errorf("New = %v, want the store's error", err)
	}
}

func TestFloor_NeverGoesBackwards(t *testing.T) {
	sys := &fakeClock{t: build.Add(time.Hour)}
	f, err := New(sys.opts(Options{BuildTime: build}))
	if err != nil {
		t.Fatal(err)
	}
	before := f.Now()
	sys.Set(sys.Now().Add(-2 * time.Second)) // small NTP step back
	if got := f.Now(); got.Before(before) {
		t.Errorf("Now went back from %s to %s", before, got)
	}
	if f.Untrusted() {
		t.Error("Untrusted after a 2s step back, within the slack")
	}
	sys.Set(sys.Now().Add(-time.Hour)) // large step back
	if !f.Untrusted() {
		t.Error("not Untrusted after the clock stepped back an hour")
	}
	if got := f.Now(); got.Before(before) {
		t.Errorf("Now went back from %s to %s", before, got)
	}
}

// TestFloor_TLSWith1970Clock: a device whose clock says 1970 still
// validates a certificate that is valid now, through tls.Config.Time.
func TestFloor_TLSWith1970Clock(t *testing.T) {
	real := time.Now()
	caCert, caKey := newCA(t, real)
	srvCert := newLeaf(t, caCert, caKey, real)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()

	sys := &fakeClock{t: epoch}
	dial := func(now func() time.Time) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "broker.test", Time: now})
		if err != nil {
			return err
		}
		return c.Close()
	}
	var invalid x509.CertificateInvalidError
	if err := dial(sys.Now); !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("dial with the raw 1970 clock = %v, want a certificate validity error", err)
	}
	f, err := New(sys.opts(Options{BuildTime: real.Add(-10 * time.Minute)}))
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(f.Now); err != nil {
		t.Fatalf("dial with the floor: %v", err)
	}
}

func newCA(t *testing.T, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "broker.test"},
		DNSNames:     []string{"broker.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
