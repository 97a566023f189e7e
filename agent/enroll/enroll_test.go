package enroll_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/enroll"
	fleet "github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// controller is a real fleet/enroll behind real TLS on loopback; it keeps
// every request body it received.
type controller struct {
	e      *fleet.Enroller
	srv    *httptest.Server
	clk    *clock
	signer string

	mu     sync.Mutex
	bodies [][]byte
}

func newController(t *testing.T, limiter *fleet.Limiter) *controller {
	t.Helper()
	pub, _, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &controller{clk: &clock{t: time.Now()}, signer: sign.EncodePublicKey(pub)}
	c.e, err = fleet.New(context.Background(), fleet.Config{
		Dir: filepath.Join(t.TempDir(), "pki"), Store: fleet.NewMemStore(),
		Brokers: []string{"tls://127.0.0.1:8883", "tls://fleet.example.com:8883"}, SigningKey: pub, Now: c.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.e.CA().ServerCertificate(nil, c.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := c.e.Handler(fleet.HandlerOptions{Limiter: limiter})
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.bodies = append(c.bodies, b)
		c.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	}))
	c.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	c.srv.Config.ErrorLog = nil
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	return c
}

func (c *controller) token(t *testing.T, opt fleet.TokenOptions) string {
	t.Helper()
	s, _, err := c.e.CreateToken(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (c *controller) requests() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.bodies)
}

// existing is an agent config with fields enrollment must keep.
const existing = `# operator's config
stateDir: /var/lib/tender-test
reconcileInterval: 3s
reserve:
  memory: 128Mi
fleet:
  heartbeat: 15s
  broker: tcp://old:1883
`

func configDir(t *testing.T, content string) (dir, cfg string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "etc-tender")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "agent.yaml")
	if content != "" {
		if err := os.WriteFile(cfg, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dir, cfg
}

// snapshot is every file of dir with its bytes and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fi, _ := e.Info()
		out[e.Name()] = fi.Mode().String() + " " + string(b)
	}
	return out
}

func opts(srv, token, id, cfg string) enroll.Options {
	return enroll.Options{
		Server: srv, Token: token, DeviceID: id, ConfigPath: cfg, Facts: wire.DeviceFacts{Arch: "arm64", CPUs: 4},
		CheckConfig: func(p string) error { _, err := agent.LoadConfig(p); return err },
	}
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// A good enrollment writes a config the agent accepts, keeping every
// other field, and the key, certificate and CA with the right modes; the
// private key never left the device (F-06).
func TestEnrollWritesConfig(t *testing.T) {
	c := newController(t, nil)
	dir, cfgPath := configDir(t, existing)
	res, err := enroll.Enroll(context.Background(), opts(c.srv.URL, c.token(t, fleet.TokenOptions{Labels: map[string]string{"site": "berlin"}}), "gw-1", cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatalf("agent.LoadConfig refuses the written config: %v", err)
	}
	want := agent.FleetConfig{
		Broker: "tls://127.0.0.1:8883", PublicKey: c.signer,
		CAFile: filepath.Join(dir, enroll.CAFile), CertFile: filepath.Join(dir, enroll.CertFile), KeyFile: filepath.Join(dir, enroll.KeyFile),
		Heartbeat: cfg.Fleet.Heartbeat,
	}
	if cfg.DeviceID != "gw-1" || cfg.Fleet != want {
		t.Errorf("config: device %q, fleet %+v\nwant fleet %+v", cfg.DeviceID, cfg.Fleet, want)
	}
	if cfg.StateDir != "/var/lib/tender-test" || cfg.ReconcileInterval.Duration != 3*time.Second ||
		cfg.Reserve.Memory != "128Mi" || cfg.Fleet.Heartbeat.Duration != 15*time.Second {
		t.Errorf("other fields not kept: %+v", cfg)
	}
	if res.Labels["site"] != "berlin" || res.DeviceID != "gw-1" {
		t.Errorf("result %+v", res)
	}
	for p, m := range map[string]os.FileMode{cfgPath: 0o640, res.KeyFile: 0o600, res.CertFile: 0o644, res.CAFile: 0o644} {
		if got := mode(t, p); got != m {
			t.Errorf("%s: mode %o, want %o", p, got, m)
		}
	}
	// The files fit together: the key is the certificate's, the CA
	// signed it and is the controller's.
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(res.CAFile)
	if !bytes.Equal(caPEM, c.e.CA().PEM) {
		t.Error("CA file is not the fleet CA")
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.Subject.CommonName != "gw-1" || leaf.CheckSignatureFrom(c.e.CA().Cert) != nil {
		t.Errorf("certificate CN %q, not signed by the fleet CA", leaf.Subject.CommonName)
	}
	// F-06: what reached the controller holds no key material.
	keyPEM, _ := os.ReadFile(res.KeyFile)
	blk, _ := pem.Decode(keyPEM)
	key := pair.PrivateKey.(*ecdsa.PrivateKey)
	reqs := c.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	body := reqs[0]
	for _, secret := range [][]byte{keyPEM, blk.Bytes, key.D.Bytes(), []byte("PRIVATE KEY")} {
		if bytes.Contains(body, secret) {
			t.Fatalf("the request carried the private key: %s", body)
		}
	}
	req, err := wire.DecodeEnrollRequest(body)
	if err != nil || req.Facts.Arch != "arm64" || !strings.Contains(req.CSR, "CERTIFICATE REQUEST") {
		t.Fatalf("request %+v: %v", req, err)
	}
}

// A config that does not exist yet is created 0600, its directory too.
func TestEnrollNewConfig(t *testing.T) {
	c := newController(t, nil)
	dir := filepath.Join(t.TempDir(), "tender")
	cfgPath := filepath.Join(dir, "agent.yaml")
	if _, err := enroll.Enroll(context.Background(), opts(c.srv.URL, c.token(t, fleet.TokenOptions{}), "gw-2", cfgPath)); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, cfgPath); m != 0o600 {
		t.Errorf("config mode %o", m)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("dir mode %o", m)
	}
	if cfg, err := agent.LoadConfig(cfgPath); err != nil || cfg.DeviceID != "gw-2" {
		t.Fatalf("%+v %v", cfg, err)
	}
}

// A reused, expired, unknown or wrong-secret token is refused with its
// reason and nothing is written (F-04).
func TestEnrollRefusedWritesNothing(t *testing.T) {
	c := newController(t, nil)
	ctx := context.Background()
	dir, cfgPath := configDir(t, existing)
	before := snapshot(t, dir)

	used := c.token(t, fleet.TokenOptions{Uses: 1})
	_, other := configDir(t, "")
	if _, err := enroll.Enroll(ctx, opts(c.srv.URL, used, "gw-0", other)); err != nil {
		t.Fatal(err)
	}
	tok, _ := wire.ParseJoinToken(c.token(t, fleet.TokenOptions{}))
	unknown, wrong := tok, tok
	unknown.ID = "00000000000000ff"
	wrong.Secret = strings.Repeat("0", wire.JoinTokenSecretLen)
	expired := c.token(t, fleet.TokenOptions{TTL: time.Minute, Uses: 5})
	c.clk.Add(time.Minute)

	for _, tc := range []struct {
		name, token, msg string
		is               func(error) bool
	}{
		{"reused", used, "used up", errdefs.IsPermissionDenied},
		{"expired", expired, "expired", errdefs.IsPermissionDenied},
		{"unknown", unknown.String(), "unknown token", errdefs.IsUnauthorized},
		{"wrong secret", wrong.String(), "wrong secret", errdefs.IsUnauthorized},
		{"malformed", "tdr1.abc", "join token", errdefs.IsInvalidArgument},
	} {
		_, err := enroll.Enroll(ctx, opts(c.srv.URL, tc.token, "gw-1", cfgPath))
		if err == nil || !tc.is(err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.msg)
		}
		if after := snapshot(t, dir); !mapsEqual(before, after) {
			t.Fatalf("%s: files changed: %v", tc.name, keys(after))
		}
	}
}

// A config the agent would refuse once updated: nothing is written.
func TestEnrollCheckConfigRefusal(t *testing.T) {
	c := newController(t, nil)
	dir, cfgPath := configDir(t, existing+"reconcileInterval: 1ms\n")
	before := snapshot(t, dir)
	_, err := enroll.Enroll(context.Background(), opts(c.srv.URL, c.token(t, fleet.TokenOptions{}), "gw-1", cfgPath))
	if err == nil || !strings.Contains(err.Error(), "reconcileInterval") {
		t.Fatalf("got %v, want the agent's refusal of reconcileInterval", err)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Fatalf("files changed: %v", keys(after))
	}
}

// F-05: a controller whose CA is not the token's gets nothing, not even
// the token: the handler never sees a request.
func TestEnrollImpostorGetsNothing(t *testing.T) {
	real := newController(t, nil)
	impostor := newController(t, nil)
	dir, cfgPath := configDir(t, existing)
	before := snapshot(t, dir)
	token := real.token(t, fleet.TokenOptions{})
	_, err := enroll.Enroll(context.Background(), opts(impostor.srv.URL, token, "gw-1", cfgPath))
	if !errors.Is(err, enroll.ErrCAMismatch) || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("got %v, want ErrCAMismatch", err)
	}
	if n := len(impostor.requests()); n != 0 {
		t.Fatalf("the impostor received %d requests", n)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Fatalf("files changed: %v", keys(after))
	}
	// An impostor serving a device certificate of the real fleet (signed
	// by the pinned CA, but for client auth) is refused too.
	devToken := real.token(t, fleet.TokenOptions{})
	_, devCfg := configDir(t, "")
	res, err := enroll.Enroll(context.Background(), opts(real.srv.URL, devToken, "gw-9", devCfg))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pair.Certificate = append(pair.Certificate, real.e.CA().Cert.Raw)
	var hits int
	var mu sync.Mutex
	dev := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { mu.Lock(); hits++; mu.Unlock() }))
	dev.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	dev.StartTLS()
	defer dev.Close()
	_, err = enroll.Enroll(context.Background(), opts(dev.URL, real.token(t, fleet.TokenOptions{}), "gw-1", cfgPath))
	if !errors.Is(err, enroll.ErrCAMismatch) {
		t.Fatalf("device certificate as server: got %v, want ErrCAMismatch", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Fatalf("the impostor with a device certificate received %d requests", hits)
	}
}

// F-07: a revoked device's certificate serial is in the CRL.
func TestEnrollRevokedInCRL(t *testing.T) {
	c := newController(t, nil)
	_, cfgPath := configDir(t, "")
	res, err := enroll.Enroll(context.Background(), opts(c.srv.URL, c.token(t, fleet.TokenOptions{}), "gw-1", cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(res.CertFile)
	blk, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(blk.Bytes)
	if _, err := c.e.Revoke(context.Background(), "gw-1"); err != nil {
		t.Fatal(err)
	}
	crlPEM, err := os.ReadFile(c.e.CRLPath())
	if err != nil {
		t.Fatal(err)
	}
	cblk, _ := pem.Decode(crlPEM)
	crl, err := x509.ParseRevocationList(cblk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(c.e.CA().Cert); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(crl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Cmp(cert.SerialNumber) == 0 }) {
		t.Fatal("the device's serial is not in the CRL")
	}
	if !c.e.Revoked(cert.SerialNumber) {
		t.Fatal("Revoked says no")
	}
}

// F-04: guesses from one address are rate-limited.
func TestEnrollRateLimited(t *testing.T) {
	c := newController(t, fleet.NewLimiter(time.Hour, 2))
	_, cfgPath := configDir(t, "")
	tok, _ := wire.ParseJoinToken(c.token(t, fleet.TokenOptions{}))
	tok.Secret = strings.Repeat("1", wire.JoinTokenSecretLen)
	for i := range 2 {
		if _, err := enroll.Enroll(context.Background(), opts(c.srv.URL, tok.String(), "gw-1", cfgPath)); !errdefs.IsUnauthorized(err) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	_, err := enroll.Enroll(context.Background(), opts(c.srv.URL, c.token(t, fleet.TokenOptions{}), "gw-1", cfgPath))
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "too many enrollment attempts") {
		t.Fatalf("third attempt: got %v, want rate-limited", err)
	}
	if _, err := os.Stat(cfgPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused enrollment wrote the config")
	}
}

func TestEnrollBadInput(t *testing.T) {
	c := newController(t, nil)
	_, cfgPath := configDir(t, "")
	token := c.token(t, fleet.TokenOptions{})
	for name, o := range map[string]enroll.Options{
		"http server": opts(strings.Replace(c.srv.URL, "https", "http", 1), token, "gw-1", cfgPath),
		"bad id":      opts(c.srv.URL, token, "GW 1", cfgPath),
		"no config":   opts(c.srv.URL, token, "gw-1", ""),
	} {
		if _, err := enroll.Enroll(context.Background(), o); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: got %v, want invalid argument", name, err)
		}
	}
	if n := len(c.requests()); n != 0 {
		t.Fatalf("bad input reached the controller %d times", n)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// A controller that passes the pin but answers with another CA (or a
// certificate that CA signed) is refused, and nothing is written.
func TestEnrollRefusesAnswerFromAnotherCA(t *testing.T) {
	real := newController(t, nil)
	other := newController(t, nil)
	cert, err := real.e.CA().ServerCertificate(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The server speaks TLS with the real CA, but answers with other's.
	srv := httptest.NewUnstartedServer(other.e.Handler(fleet.HandlerOptions{}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	tok, _ := wire.ParseJoinToken(real.token(t, fleet.TokenOptions{}))
	otherTok, _ := wire.ParseJoinToken(other.token(t, fleet.TokenOptions{}))
	tok.ID, tok.Secret = otherTok.ID, otherTok.Secret // valid at other, pinned to real
	dir, cfgPath := configDir(t, existing)
	before := snapshot(t, dir)
	_, err = enroll.Enroll(context.Background(), opts(srv.URL, tok.String(), "gw-1", cfgPath))
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "is not the CA of the join token") {
		t.Fatalf("got %v, want the answer's CA refused", err)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Fatalf("files changed: %v", keys(after))
	}
}

// --password-auth: the device makes its MQTT password, sends only its
// sha256, and its config logs in with it instead of the certificate, in a
// file only root reads.
func TestEnrollPasswordAuth(t *testing.T) {
	c := newController(t, nil)
	_, cfgPath := configDir(t, existing)
	o := opts(c.srv.URL, c.token(t, fleet.TokenOptions{}), "gw-1", cfgPath)
	o.Password = true
	if _, err := enroll.Enroll(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Fleet
	if f.Username != "gw-1" || len(f.Password) < 32 || f.CertFile != "" || f.KeyFile != "" || f.CAFile == "" {
		t.Fatalf("fleet config %+v: want username gw-1, a password, the CA, no certificate", f)
	}
	if m := mode(t, cfgPath); m != 0o600 {
		t.Fatalf("config mode %o with a password in it, want 600", m)
	}
	reqs := c.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	var req wire.EnrollRequest
	if err := json.Unmarshal(reqs[0], &req); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(f.Password))
	if req.PasswordHash != hex.EncodeToString(sum[:]) {
		t.Fatalf("request carried passwordHash %q, want the sha256 of the config's password", req.PasswordHash)
	}
	if bytes.Contains(reqs[0], []byte(f.Password)) {
		t.Fatal("the password itself left the device")
	}
}
