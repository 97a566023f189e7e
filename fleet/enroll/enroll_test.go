package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
)

// clock is a settable test clock.
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

type fixture struct {
	e     *Enroller
	store *MemStore
	clk   *clock
	dir   string
	pub   ed25519.PublicKey
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pub, _, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: NewMemStore(), clk: &clock{t: time.Now()}, dir: filepath.Join(t.TempDir(), "pki"), pub: pub}
	f.e, err = New(context.Background(), Config{Dir: f.dir, Store: f.store, Brokers: []string{"tls://127.0.0.1:8883"}, SigningKey: pub, Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) token(t *testing.T, opt TokenOptions) wire.JoinToken {
	t.Helper()
	s, _, err := f.e.CreateToken(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := wire.ParseJoinToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func csrPEM(t *testing.T, key crypto.Signer, cn string, dns ...string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func request(t *testing.T, tok wire.JoinToken, id string) wire.EnrollRequest {
	return wire.EnrollRequest{Schema: wire.EnrollSchema, TokenID: tok.ID, Secret: tok.Secret, DeviceID: id, CSR: csrPEM(t, p256(t), id)}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// F-10: the CA's files are private, and the CA is the same across starts.
func TestCAFilesPrivateAndReloaded(t *testing.T) {
	f := newFixture(t)
	if m := mode(t, f.dir); m != 0o700 {
		t.Errorf("dir mode %o, want 700", m)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, CRLFile: 0o644} {
		if m := mode(t, filepath.Join(f.dir, name)); m != want {
			t.Errorf("%s mode %o, want %o", name, m, want)
		}
	}
	hash := f.e.CA().Hash()
	if !strings.HasPrefix(hash, "sha256:") || len(hash) != 7+64 {
		t.Fatalf("hash %q", hash)
	}
	sum := sha256.Sum256(f.e.CA().Cert.RawSubjectPublicKeyInfo)
	if hash != "sha256:"+string(hexOf(sum[:])) {
		t.Fatalf("hash %q is not the SPKI's sha256", hash)
	}
	again, err := New(context.Background(), Config{Dir: f.dir, Store: f.store, Brokers: []string{"x"}, SigningKey: f.pub})
	if err != nil {
		t.Fatal(err)
	}
	if again.CA().Hash() != hash {
		t.Fatal("a second start made a new CA")
	}
	// A key readable by others is refused.
	if err := os.Chmod(filepath.Join(f.dir, CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Config{Dir: f.dir, Store: f.store, Brokers: []string{"x"}, SigningKey: f.pub})
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("open key file: got %v, want permission denied naming chmod 600", err)
	}
	// So is a directory others may enter.
	os.Chmod(filepath.Join(f.dir, CAKeyFile), 0o600)
	os.Chmod(f.dir, 0o755)
	if _, err := LoadOrCreateCA(f.dir, time.Now()); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("open dir: got %v, want permission denied", err)
	}
	// A key without its certificate is not silently replaced by a new CA.
	os.Chmod(f.dir, 0o700)
	os.Remove(filepath.Join(f.dir, CACertFile))
	if _, err := LoadOrCreateCA(f.dir, time.Now()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("key without certificate: got %v, want failed precondition", err)
	}
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

func TestServerCertificate(t *testing.T) {
	f := newFixture(t)
	now := f.clk.Now()
	c1, err := f.e.CA().ServerCertificate([]string{"fleet.example.com", "10.0.0.5"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(c1.Certificate) != 2 || !bytes.Equal(c1.Certificate[1], f.e.CA().Cert.Raw) {
		t.Fatal("the served chain does not carry the CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.e.CA().Cert)
	for _, h := range []string{"fleet.example.com", "10.0.0.5", "127.0.0.1", "::1", "localhost"} {
		if _, err := c1.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if m := mode(t, filepath.Join(f.dir, ServerKeyFile)); m != 0o600 {
		t.Errorf("server key mode %o", m)
	}
	c2, _ := f.e.CA().ServerCertificate([]string{"10.0.0.5"}, now)
	if !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("a certificate that covers the hosts was reissued")
	}
	c3, _ := f.e.CA().ServerCertificate([]string{"other.example.com"}, now)
	if bytes.Equal(c1.Certificate[0], c3.Certificate[0]) {
		t.Error("a new host did not reissue the certificate")
	}
	c4, _ := f.e.CA().ServerCertificate([]string{"other.example.com"}, now.Add(ServerValidity-serverRenewBefore/2))
	if bytes.Equal(c3.Certificate[0], c4.Certificate[0]) {
		t.Error("a certificate about to end was not reissued")
	}
}

// F-03: the secret is never stored, only its hash.
func TestTokenStoredHashed(t *testing.T) {
	f := newFixture(t)
	s, rec, err := f.e.CreateToken(context.Background(), TokenOptions{Labels: map[string]string{"site": "berlin"}, TTL: time.Hour, Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := wire.ParseJoinToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != f.e.CA().Hash() {
		t.Errorf("token carries %s, CA is %s", tok.CAHash, f.e.CA().Hash())
	}
	stored, _ := f.store.Token(context.Background(), tok.ID)
	b, _ := json.Marshal(stored)
	if bytes.Contains(b, []byte(tok.Secret)) || bytes.Contains(b, []byte(hexOf([]byte(tok.Secret)))) {
		t.Fatalf("record holds the secret: %s", b)
	}
	if sum := sha256.Sum256([]byte(tok.Secret)); !bytes.Equal(stored.SecretHash, sum[:]) {
		t.Fatal("record does not hold the secret's sha256")
	}
	if rec.UsesLeft != 3 || rec.Labels["site"] != "berlin" || !rec.ExpiresAt.Equal(f.clk.Now().Add(time.Hour)) {
		t.Fatalf("record %+v", rec)
	}
	for _, opt := range []TokenOptions{
		{TTL: -time.Second}, {TTL: 2 * MaxTokenTTL}, {Uses: -1},
		{Labels: map[string]string{"a b": "c"}}, {Labels: map[string]string{"a": "c\n"}}, {Labels: map[string]string{"": "x"}},
	} {
		if _, _, err := f.e.CreateToken(context.Background(), opt); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: got %v, want invalid argument", opt, err)
		}
	}
}

func TestEnrollIssuesClientCertificate(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, TokenOptions{Labels: map[string]string{"site": "berlin"}})
	key := p256(t)
	req := wire.EnrollRequest{TokenID: tok.ID, Secret: tok.Secret, DeviceID: "gw-1", CSR: csrPEM(t, key, "gw-1", "evil.example.com"), Facts: wire.DeviceFacts{Arch: "arm64"}}
	resp, err := f.e.Enroll(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "gw-1" || len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 {
		t.Errorf("subject %v, SANs %v %v: want CN gw-1 and no SANs", cert.Subject, cert.DNSNames, cert.IPAddresses)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Errorf("EKU %v, CA %v: want client auth only", cert.ExtKeyUsage, cert.IsCA)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate is not for the CSR's key")
	}
	if err := cert.CheckSignatureFrom(f.e.CA().Cert); err != nil {
		t.Error(err)
	}
	if d := cert.NotAfter.Sub(f.clk.Now()); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("validity %s, want a year", d)
	}
	if resp.CA != string(f.e.CA().PEM) || resp.Brokers[0] != "tls://127.0.0.1:8883" || resp.PublicKey != sign.EncodePublicKey(f.pub) || resp.Labels["site"] != "berlin" || resp.DeviceID != "gw-1" {
		t.Errorf("response %+v", resp)
	}
	if _, err := wire.EncodeEnrollResponse(resp); err != nil {
		t.Error(err)
	}
}

// F-04: every bad token is refused with its reason and consumes nothing.
func TestEnrollRefusesTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	good := f.token(t, TokenOptions{Uses: 1, TTL: time.Hour})

	unknown := good
	unknown.ID = "00000000000000ff"
	_, err := f.e.Enroll(ctx, request(t, unknown, "gw-1"))
	if !errors.Is(err, ErrTokenRefused) || !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "unknown token") {
		t.Errorf("unknown: %v", err)
	}
	wrong := good
	wrong.Secret = strings.Repeat("0", wire.JoinTokenSecretLen)
	_, err = f.e.Enroll(ctx, request(t, wrong, "gw-1"))
	if !errors.Is(err, ErrTokenRefused) || !strings.Contains(err.Error(), "wrong secret") {
		t.Errorf("wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), good.Secret) || strings.Contains(err.Error(), wrong.Secret) {
		t.Errorf("error repeats a secret: %v", err)
	}
	if _, err := f.e.Enroll(ctx, request(t, good, "gw-1")); err != nil {
		t.Fatalf("good token after refusals: %v", err)
	}
	_, err = f.e.Enroll(ctx, request(t, good, "gw-2"))
	if !errors.Is(err, ErrTokenSpent) || !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "used up") {
		t.Errorf("reused: %v", err)
	}
	expiring := f.token(t, TokenOptions{Uses: 5, TTL: time.Minute})
	f.clk.Add(time.Minute)
	_, err = f.e.Enroll(ctx, request(t, expiring, "gw-3"))
	if !errors.Is(err, ErrTokenSpent) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	certs, _ := f.store.Certs(ctx)
	if len(certs) != 1 {
		t.Errorf("%d certificates issued, want 1", len(certs))
	}
}

func TestEnrollRefusesCSRs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok := f.token(t, TokenOptions{Uses: 10})
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tampered := func() string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}}, p256(t))
		der[len(der)-3] ^= 0xff // inside the signature
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()
	for name, csr := range map[string]string{
		"other CN":    csrPEM(t, p256(t), "gw-2"),
		"empty CN":    csrPEM(t, p256(t), ""),
		"P-224 key":   csrPEM(t, p224, "gw-1"),
		"bad sig":     tampered,
		"not PEM":     "hello",
		"private key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"two blocks":  csrPEM(t, p256(t), "gw-1") + csrPEM(t, p256(t), "gw-1"),
	} {
		req := request(t, tok, "gw-1")
		req.CSR = csr
		if _, err := f.e.Enroll(ctx, req); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "csr") {
			t.Errorf("%s: got %v, want invalid argument about the csr", name, err)
		}
	}
	rec, _ := f.store.Token(ctx, tok.ID)
	if rec.UsesLeft != 10 {
		t.Errorf("refused CSRs consumed uses: %d left", rec.UsesLeft)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	req := request(t, tok, "gw-ed")
	req.CSR = csrPEM(t, ed, "gw-ed")
	if _, err := f.e.Enroll(ctx, req); err != nil {
		t.Errorf("ed25519 CSR: %v", err)
	}
}

// A token must not let its holder take over an enrolled device's name.
func TestEnrollRefusesEnrolledDevice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok := f.token(t, TokenOptions{Uses: 3})
	if _, err := f.e.Enroll(ctx, request(t, tok, "gw-1")); err != nil {
		t.Fatal(err)
	}
	_, err := f.e.Enroll(ctx, request(t, tok, "gw-1"))
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "tender device rm gw-1") {
		t.Fatalf("second enrollment as gw-1: got %v, want already exists", err)
	}
	if _, err := f.e.Revoke(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.Enroll(ctx, request(t, tok, "gw-1")); err != nil {
		t.Fatalf("enrollment after revocation: %v", err)
	}
}

// Two devices racing for a token's last use: exactly one wins.
func TestEnrollLastUseOnce(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, TokenOptions{Uses: 3})
	const n = 16
	reqs := make([]wire.EnrollRequest, n)
	for i := range reqs {
		reqs[i] = request(t, tok, "gw-"+string(rune('a'+i)))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range reqs {
		wg.Go(func() { _, errs[i] = f.e.Enroll(context.Background(), reqs[i]) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrTokenSpent):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 3 {
		t.Fatalf("%d enrollments with a 3-use token", ok)
	}
}

// F-07: a revoked device's serial is in the signed CRL and Revoked at once,
// and stays so after a restart.
func TestRevokeWritesCRL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok := f.token(t, TokenOptions{Uses: 2})
	r1, err := f.e.Enroll(ctx, request(t, tok, "gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.e.Enroll(ctx, request(t, tok, "gw-2"))
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := parseCert(t, r1.Certificate), parseCert(t, r2.Certificate)
	if f.e.Revoked(c1.SerialNumber) {
		t.Fatal("revoked before Revoke")
	}
	serials, err := f.e.Revoke(ctx, "gw-1")
	if err != nil || len(serials) != 1 || serials[0] != c1.SerialNumber.Text(16) {
		t.Fatalf("Revoke = %v, %v", serials, err)
	}
	if !f.e.Revoked(c1.SerialNumber) || f.e.Revoked(c2.SerialNumber) {
		t.Fatal("Revoked does not say gw-1 only")
	}
	crl := readCRL(t, f.e.CRLPath())
	if err := crl.CheckSignatureFrom(f.e.CA().Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(c1.SerialNumber) != 0 {
		t.Fatalf("CRL entries %+v, want gw-1's serial", crl.RevokedCertificateEntries)
	}
	// By serial, in openssl's colon form too.
	colon := strings.ToUpper(c2.SerialNumber.Text(16))
	colon = colon[:2] + ":" + colon[2:]
	if _, err := f.e.Revoke(ctx, colon); err != nil {
		t.Fatal(err)
	}
	if n := len(readCRL(t, f.e.CRLPath()).RevokedCertificateEntries); n != 2 {
		t.Fatalf("%d CRL entries, want 2", n)
	}
	if _, err := f.e.Revoke(ctx, "gw-9"); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke unknown: %v", err)
	}
	again, err := New(ctx, Config{Dir: f.dir, Store: f.store, Brokers: []string{"x"}, SigningKey: f.pub})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Revoked(c1.SerialNumber) || !again.Revoked(c2.SerialNumber) {
		t.Fatal("revocations lost across a restart")
	}
}

func parseCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readCRL(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("%s: no X509 CRL block", path)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(time.Second, 3)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if !l.Allow("a", t0) {
			t.Fatalf("attempt %d refused within the burst", i)
		}
	}
	if l.Allow("a", t0) {
		t.Fatal("attempt past the burst allowed")
	}
	if !l.Allow("b", t0) {
		t.Fatal("another address was limited")
	}
	if l.Allow("a", t0.Add(999*time.Millisecond)) {
		t.Fatal("allowed before a refill")
	}
	if !l.Allow("a", t0.Add(time.Second)) {
		t.Fatal("refused after a refill")
	}
	// Bounded keys: when full of busy buckets, new keys are refused;
	// once buckets refill they are dropped to make room.
	l = NewLimiter(time.Second, 1)
	l.MaxKeys = 2
	l.Allow("a", t0)
	l.Allow("b", t0)
	if l.Allow("c", t0) {
		t.Fatal("a third key allowed with two busy buckets")
	}
	if !l.Allow("c", t0.Add(time.Second)) {
		t.Fatal("refilled buckets were not dropped")
	}
}

func TestHandler(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, TokenOptions{Uses: 1, Labels: map[string]string{"role": "gateway"}})
	var seen []string
	h := f.e.Handler(HandlerOptions{
		Limiter: NewLimiter(time.Hour, 3), // too large, good, reused; the fourth is refused
		Enrolled: func(_ context.Context, req wire.EnrollRequest, resp wire.EnrollResponse) error {
			seen = append(seen, req.DeviceID+" "+resp.Labels["role"]+" "+req.Facts.Arch+req.Secret)
			return nil
		},
	})
	do := func(method string, body []byte) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, EnrollPath, bytes.NewReader(body))
		r.RemoteAddr = net.JoinHostPort("192.0.2.7", "40000")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	req := request(t, tok, "gw-1")
	req.Facts.Arch = "arm64"
	good, _ := wire.EncodeEnrollRequest(req)
	if w := do(http.MethodGet, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}
	if w := do(http.MethodPost, bytes.Repeat([]byte("a"), wire.MaxEnrollRequestSize+1)); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("too large: %d %s", w.Code, w.Body)
	}
	w := do(http.MethodPost, good)
	if w.Code != http.StatusOK {
		t.Fatalf("good: %d %s", w.Code, w.Body)
	}
	if _, err := wire.DecodeEnrollResponse(w.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "gw-1 gateway arm64" {
		t.Fatalf("Enrolled saw %q", seen)
	}
	w = do(http.MethodPost, good)
	var eb ErrorBody
	if w.Code != http.StatusForbidden || json.Unmarshal(w.Body.Bytes(), &eb) != nil || !strings.Contains(eb.Error, "used up") {
		t.Errorf("reused: %d %s", w.Code, w.Body)
	}
	if w := do(http.MethodPost, good); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("fourth attempt: %d, want 429 with Retry-After", w.Code)
	}
}

// The controller's name at mosquitto holds the fleet's rights there
// (configs/mosquitto/acl): no device may enroll under it, and trying
// spends no use of the token.
func TestEnrollRefusesControllerID(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok := f.token(t, TokenOptions{Uses: 1})
	_, err := f.e.Enroll(ctx, request(t, tok, ControllerID))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "controller's identity") {
		t.Fatalf("enroll as %s: got %v, want invalid argument naming the controller's identity", ControllerID, err)
	}
	if rec, _ := f.store.Token(ctx, tok.ID); rec.UsesLeft != 1 {
		t.Fatalf("the refused enrollment spent a use: %d left", rec.UsesLeft)
	}
}

// ControllerCertificate: CN tender-controller, client auth, from the
// fleet CA, key 0600, the same one at the next start, a new one near its
// end.
func TestControllerCertificate(t *testing.T) {
	f := newFixture(t)
	now := f.clk.Now()
	c1, err := f.e.CA().ControllerCertificate(now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c1.Leaf
	if leaf.Subject.CommonName != ControllerID || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("controller certificate: CN %q, EKU %v", leaf.Subject.CommonName, leaf.ExtKeyUsage)
	}
	if err := leaf.CheckSignatureFrom(f.e.CA().Cert); err != nil {
		t.Fatalf("not from the fleet CA: %v", err)
	}
	if m := mode(t, filepath.Join(f.dir, ControllerKeyFile)); m != 0o600 {
		t.Fatalf("%s mode %o, want 600", ControllerKeyFile, m)
	}
	c2, err := f.e.CA().ControllerCertificate(now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Leaf.Equal(leaf) {
		t.Fatal("a second start issued a new controller certificate")
	}
	c3, err := f.e.CA().ControllerCertificate(leaf.NotAfter.Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c3.Leaf.Equal(leaf) {
		t.Fatal("a controller certificate ending within a day was not renewed")
	}
}

// countingStore counts the listings of every certificate.
type countingStore struct {
	*MemStore
	lists atomic.Int64
}

func (s *countingStore) Certs(ctx context.Context) ([]CertRecord, error) {
	s.lists.Add(1)
	return s.MemStore.Certs(ctx)
}

// Enrolling a device does not list every certificate (which made a fleet
// of n devices cost O(n²) to enroll); the check that a device id holds no
// valid certificate survives a restart (the index is rebuilt from the
// store) and a revocation frees the id.
func TestEnrollIndexesCertificates(t *testing.T) {
	ctx := context.Background()
	pub, _, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{MemStore: NewMemStore()}
	dir := filepath.Join(t.TempDir(), "pki")
	cfg := Config{Dir: dir, Store: st, Brokers: []string{"tls://127.0.0.1:8883"}, SigningKey: pub}
	e, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := e.CreateToken(ctx, TokenOptions{Uses: 40})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := wire.ParseJoinToken(s)
	before := st.lists.Load()
	for i := range 30 {
		if _, err := e.Enroll(ctx, request(t, tok, fmt.Sprintf("gw-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.lists.Load() - before; n != 0 {
		t.Fatalf("30 enrollments listed every certificate %d times, want 0", n)
	}

	e2, err := New(ctx, cfg) // a restart
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.Enroll(ctx, request(t, tok, "gw-7")); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("gw-7 enrolled again after a restart: %v, want already exists", err)
	}
	if _, err := e2.Revoke(ctx, "gw-7"); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.Enroll(ctx, request(t, tok, "gw-7")); err != nil {
		t.Fatalf("gw-7 after its revocation: %v", err)
	}
	if _, err := e2.Enroll(ctx, request(t, tok, "gw-7")); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("gw-7 enrolled twice after its revocation: %v, want already exists", err)
	}
}

// Requests enrolling one device id at once: exactly one gets a
// certificate, the others are refused as already enrolled.
func TestEnrollSameIDOnce(t *testing.T) {
	f := newFixture(t)
	const n = 8
	tok := f.token(t, TokenOptions{Uses: n})
	reqs := make([]wire.EnrollRequest, n)
	for i := range reqs {
		reqs[i] = request(t, tok, "gw-same")
	}
	var wg sync.WaitGroup
	var won, refused atomic.Int64
	start := make(chan struct{})
	for _, r := range reqs {
		wg.Go(func() {
			<-start
			_, err := f.e.Enroll(context.Background(), r)
			switch {
			case err == nil:
				won.Add(1)
			case errdefs.IsAlreadyExists(err):
				refused.Add(1)
			default:
				t.Errorf("enroll: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	certs, _ := f.store.Certs(context.Background())
	if won.Load() != 1 || refused.Load() != n-1 || len(certs) != 1 {
		t.Fatalf("%d enrollments of one id won, %d refused, %d certificates; want 1, %d, 1", won.Load(), refused.Load(), len(certs), n-1)
	}
}
