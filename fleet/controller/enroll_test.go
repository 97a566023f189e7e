package controller_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/wire"
)

func enrollRequest(t *testing.T, token, id string) []byte {
	t.Helper()
	return enrollRequestWith(t, token, id, "")
}

// enrollRequestWith is enrollRequest with the sha256 of an MQTT password.
func enrollRequestWith(t *testing.T, token, id, passwordHash string) []byte {
	t.Helper()
	tok, err := wire.ParseJoinToken(token)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wire.EncodeEnrollRequest(wire.EnrollRequest{Schema: wire.EnrollSchema, TokenID: tok.ID, Secret: tok.Secret, DeviceID: id,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), Facts: wire.DeviceFacts{Arch: "arm64", MemoryBytes: 1 << 30, CPUs: 4}, PasswordHash: passwordHash})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A device enrolls with a join token through EnrollHandler: the store
// records it with the token's labels; the token's single use is spent.
// Removing it revokes its certificate (CRL rewritten), clears its
// retained topics and forgets it; labels change placement.
func TestEnrollLabelAndRemoveDevice(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	created, err := h.c.CreateJoinToken(ctx, admin, api.JoinTokenRequest{Labels: map[string]string{"site": "berlin"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.c.EnrollHandler())
	defer srv.Close()
	post := func(body []byte) *http.Response {
		resp, err := http.Post(srv.URL+"/v1/enroll", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post(enrollRequest(t, created.Token, "gw-7"))
	var er wire.EnrollResponse
	if err := json.NewDecoder(resp.Body).Decode(&er); err != nil || resp.StatusCode != 200 {
		t.Fatalf("enroll: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	d, err := h.c.Device(ctx, "gw-7")
	if err != nil || d.Labels["site"] != "berlin" || d.Facts.Arch != "arm64" {
		t.Fatalf("device after enrollment: %+v %v", d, err)
	}
	if resp := post(enrollRequest(t, created.Token, "gw-8")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second use of a one-use token: %d", resp.StatusCode)
	}
	if _, err := h.c.Device(ctx, "gw-8"); !errdefs.IsNotFound(err) {
		t.Fatalf("refused enrollment stored a device: %v", err)
	}

	// The device runs thermo (placed by label), then loses the label.
	f := newFakeDevice(t, "gw-7", h.broker, h.pub)
	f.Start()
	defer f.Check()
	h.apply("1.0")
	eventually(t, "gw-7 runs 1.0", func() bool { return f.Running("thermo") == "1.0" })
	if _, err := h.c.LabelDevice(ctx, admin, "gw-7", nil, []string{"site"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the app leaves gw-7 with its label", func() bool { return f.Running("thermo") == "" })
	f.mu.Lock()
	gens := len(f.gens)
	f.mu.Unlock()
	if gens < 2 {
		t.Fatalf("gw-7 accepted %d documents", gens)
	}

	b, _ := pem.Decode([]byte(er.Certificate))
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	crlBefore, _ := os.ReadFile(filepath.Join(h.dir, enroll.CRLFile))
	probe, err := mqttc.New(mqttc.Config{Broker: "tcp://" + h.broker, ClientID: "probe", CleanSession: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = probe.Run(pctx) }()
	defer func() { pcancel(); <-pdone }()
	if err := probe.WaitConnected(pctx); err != nil {
		t.Fatal(err)
	}
	cleared := make(chan struct{}, 1)
	if err := probe.Subscribe(pctx, "tender/v1/devices/gw-7/desired", func(m mqttc.Message) {
		if len(m.Payload) == 0 {
			cleared <- struct{}{}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.c.RemoveDevice(ctx, admin, "gw-7"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cleared:
	case <-time.After(10 * time.Second):
		t.Fatal("the removed device's retained desired document was not cleared")
	}
	if !h.c.Enroller().Revoked(cert.SerialNumber) {
		t.Fatal("the removed device's certificate is not revoked")
	}
	if crl, _ := os.ReadFile(filepath.Join(h.dir, enroll.CRLFile)); bytes.Equal(crl, crlBefore) {
		t.Fatal("the CRL was not rewritten")
	}
	if _, err := h.c.Device(ctx, "gw-7"); !errdefs.IsNotFound(err) {
		t.Fatalf("removed device still known: %v", err)
	}
	if !h.auditHas("device rm", "revoked") || !h.auditHas("enroll", "token "+created.ID) {
		t.Fatal("audit log lacks the enrollment or the removal")
	}
	if err := h.st.Audit.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// The enrollment rate limit per source address (F-04) holds by default:
// the 11th attempt from one address at once is refused 429 and stores no
// device. Raised for a benchmark (Config.EnrollLimiter, tender serve
// --enroll-rate), many devices enroll from one address, and the token's
// checks stay: a wrong secret is 401, a used-up token 403.
func TestEnrollRateLimit(t *testing.T) {
	ctx := context.Background()
	post := func(url string, body []byte) int {
		t.Helper()
		resp, err := http.Post(url+"/v1/enroll", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const n = 25
	for _, c := range []struct {
		name    string
		limiter *enroll.Limiter
		ok      int // enrollments answered 200
	}{
		{"default", nil, enroll.DefaultLimitBurst},
		{"raised", enroll.NewLimiter(time.Millisecond, 1000), n},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &harness{t: t, limiter: c.limiter}
			h.init()
			created, err := h.c.CreateJoinToken(ctx, admin, api.JoinTokenRequest{Labels: map[string]string{"site": "bench"}, TTL: time.Hour, Uses: n})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h.c.EnrollHandler())
			defer srv.Close()
			ok := 0
			for i := range n {
				id := fmt.Sprintf("sim-%05d", i)
				switch st := post(srv.URL, enrollRequest(t, created.Token, id)); st {
				case http.StatusOK:
					ok++
				case http.StatusTooManyRequests:
					if _, err := h.c.Device(ctx, id); !errdefs.IsNotFound(err) {
						t.Fatalf("%s refused 429 but stored: %v", id, err)
					}
				default:
					t.Fatalf("%s: status %d", id, st)
				}
			}
			if ok != c.ok {
				t.Fatalf("%d enrollments from one address answered 200, want %d", ok, c.ok)
			}
			if c.limiter == nil {
				return
			}
			tok, _ := wire.ParseJoinToken(created.Token)
			tok.Secret = strings.Repeat("0", wire.JoinTokenSecretLen)
			if st := post(srv.URL, enrollRequest(t, tok.String(), "sim-wrong")); st != http.StatusUnauthorized {
				t.Fatalf("wrong secret with the limit raised: %d, want 401", st)
			}
			if st := post(srv.URL, enrollRequest(t, created.Token, "sim-extra")); st != http.StatusForbidden {
				t.Fatalf("token used up (%d uses) with the limit raised: %d, want 403", n, st)
			}
		})
	}
}

// The password fallback: a device that enrolled with the hash of a password
// it made logs in to the embedded broker with it; a wrong password, an
// unknown device, a device enrolled without one and a removed device are
// refused.
func TestEnrollPasswordFallback(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	created, err := h.c.CreateJoinToken(ctx, admin, api.JoinTokenRequest{TTL: time.Hour, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.c.EnrollHandler())
	defer srv.Close()
	const pw = "Zm9yLXRlc3RzLW9ubHktbm90LWEtc2VjcmV0"
	sum := sha256.Sum256([]byte(pw))
	for id, hash := range map[string]string{"gw-pw": hex.EncodeToString(sum[:]), "gw-cert": ""} {
		resp, err := http.Post(srv.URL+"/v1/enroll", "application/json", bytes.NewReader(enrollRequestWith(t, created.Token, id, hash)))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("enroll %s: %v %v", id, resp, err)
		}
		resp.Body.Close()
	}
	for _, tc := range []struct {
		device, password string
		want             bool
	}{
		{"gw-pw", pw, true},
		{"gw-pw", pw + "x", false},
		{"gw-pw", "", false},
		{"gw-cert", "", false},
		{"gw-cert", pw, false},
		{"gw-none", pw, false},
	} {
		if got := h.c.CheckPassword(tc.device, tc.password); got != tc.want {
			t.Errorf("CheckPassword(%s, %q) = %v, want %v", tc.device, tc.password, got, tc.want)
		}
	}
	if err := h.c.RemoveDevice(ctx, admin, "gw-pw"); err != nil {
		t.Fatal(err)
	}
	if h.c.CheckPassword("gw-pw", pw) {
		t.Error("a removed device's password still accepted")
	}
}
