package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/store"
)

// testCA makes a CA and a server certificate for 127.0.0.1, returning
// the server's TLS config and the CA in PEM.
func testCA(t testing.TB) (*tls.Config, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "controller"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// serveTLS runs the API over TLS on loopback with Serve's own listener
// code, returning its URL and a function that stops it and returns
// ServeListener's error.
func serveTLS(t *testing.T, fake *apitest.Fake) (url string, caPEM []byte, stop func() error) {
	t.Helper()
	tlsc, caPEM := testCA(t)
	srv, err := api.NewServer(api.Config{TLS: tlsc, Controller: fake, Tokens: testTokens(t), Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	return "https://" + ln.Addr().String(), caPEM, stop
}

// Every client method over real TLS, the fleet CA given as a file.
func TestClient_EveryRouteOverTLS(t *testing.T) {
	fake := apitest.New()
	url, caPEM, stop := serveTLS(t, fake)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(caFile, caPEM, 0o644)
	c, err := api.NewClient(api.ClientConfig{Server: url, Token: adminToken, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(what string, err error, ok bool) {
		t.Helper()
		if err != nil || !ok {
			t.Errorf("%s: %v (ok %v)", what, err, ok)
		}
	}
	h, err := c.Health(ctx)
	check("health", err, h.Status == "ok")
	ds, err := c.Devices(ctx, map[string]string{"site": "berlin"})
	check("devices", err, len(ds) == 2 && ds[0].ID == "gw-1" && ds[1].ID == "gw-3")
	d, err := c.Device(ctx, "gw-1")
	check("device", err, d.ID == "gw-1" && d.Status.EventGaps == 2 && len(d.Events) == 2)
	dv, err := c.LabelDevice(ctx, "gw-1", map[string]string{"floor": "2"}, []string{"site"})
	check("label", err, dv.Labels["floor"] == "2" && dv.Labels["site"] == "")
	lr, err := c.Logs(ctx, "gw-1", api.LogsRequest{App: "thermo", Lines: 2})
	check("logs", err, lr.OK && strings.Contains(lr.Output, "thermo/main line 2"))
	rr, err := c.Restart(ctx, "gw-1", api.RestartRequest{App: "thermo"})
	check("restart", err, rr.OK)
	tok, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{Labels: map[string]string{"site": "berlin"}, TTL: time.Hour, Uses: 3})
	check("token", err, tok.Token != "" && tok.Uses == 3 && tok.Expires.Equal(apitest.T0.Add(time.Hour)))
	av, err := c.Apply(ctx, []byte("name: web\nversion: \"1\"\n"))
	check("apply", err, av.Name == "web" && av.Revision == 1)
	as, err := c.Apps(ctx)
	check("apps", err, len(as) == 2)
	a, err := c.App(ctx, "thermo")
	check("app", err, a.Version == "2.0")
	hs, err := c.AppHistory(ctx, "thermo")
	check("history", err, len(hs) == 2)
	ex, err := c.Explain(ctx, "thermo", "gw-3")
	check("explain", err, len(ex.Devices) == 1 && !ex.Devices[0].Chosen)
	ro, err := c.Rollout(ctx, "thermo")
	check("rollout", err, len(ro.Waves) == 2)
	ro, err = c.RolloutCommand(ctx, "thermo", "pause")
	check("pause", err, ro.Phase == "paused")
	rm, err := c.RemoveApp(ctx, "thermo", false)
	check("app rm", err, rm.Deleting)
	check("device rm", c.RemoveDevice(ctx, "gw-2"), true)
	evs, err := c.Events(ctx, api.EventFilter{Device: "gw-1", After: 1})
	check("events", err, len(evs) == 1 && evs[0].Cursor == 2)
	au, err := c.Audit(ctx, 0, 0)
	check("audit", err, len(au) == 8)
	st, err := c.Status(ctx)
	check("status", err, st.Devices == 2 && st.Broker == "embedded")
	doc, err := c.OpenAPI(ctx)
	check("openapi", err, strings.Contains(string(doc), `"openapi"`))
	defer fake.Lock()()
	for _, who := range fake.Calls {
		if who != (api.Caller{Name: "admin", Role: store.RoleAdmin, From: who.From}) || !strings.HasPrefix(who.From, "127.0.0.1:") {
			t.Errorf("caller %+v", who)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("graceful stop: %v", err)
	}
}

func TestClient_Errors(t *testing.T) {
	url, caPEM, stop := serveTLS(t, apitest.New())
	ctx := context.Background()

	// Not found keeps its category and message.
	c, _ := api.NewClient(api.ClientConfig{Server: url, Token: adminToken, CA: caPEM})
	if _, err := c.Device(ctx, "gw-9"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `"gw-9"`) {
		t.Errorf("device gw-9: %v", err)
	}
	// A server whose certificate the CA did not sign is not trusted.
	_, otherCA := testCA(t)
	c, _ = api.NewClient(api.ClientConfig{Server: url, Token: adminToken, CA: otherCA})
	if _, err := c.Status(ctx); !errdefs.IsUnauthorized(err) || errors.Is(err, api.ErrUnreachable) {
		t.Errorf("untrusted server: %v", err)
	}
	// A wrong token: unauthenticated.
	c, _ = api.NewClient(api.ClientConfig{Server: url, Token: "nope", CA: caPEM})
	if _, err := c.Status(ctx); !errdefs.IsUnauthorized(err) {
		t.Errorf("wrong token: %v", err)
	}
	// Nothing listening: unreachable.
	stop()
	c, _ = api.NewClient(api.ClientConfig{Server: url, Token: adminToken, CA: caPEM})
	if _, err := c.Status(ctx); !errors.Is(err, api.ErrUnreachable) || !errdefs.IsUnavailable(err) {
		t.Errorf("stopped server: %v", err)
	}
	// Bad configuration is the caller's mistake.
	for _, cfg := range []api.ClientConfig{{}, {Server: "ftp://x"}, {Server: "https://"}, {Server: url, CA: []byte("junk")},
		{Server: url, CAFile: "/nonexistent/ca.crt"}} {
		if _, err := api.NewClient(cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NewClient(%+v): %v", cfg, err)
		}
	}
}
