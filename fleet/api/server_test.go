package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
)

// The tokens of the test fleet, stored hashed in a real bbolt store.
const (
	adminToken   = "admin-0123456789abcdef"
	readToken    = "reader-0123456789abcdef"
	revokedToken = "revoked-0123456789abcdef"
)

func hash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// testTokens opens a real bbolt store in t.TempDir with the three tokens.
func testTokens(t testing.TB) store.APITokens {
	t.Helper()
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Store()
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for _, tk := range []store.APIToken{
		{Hash: hash(adminToken), Name: "admin", Role: store.RoleAdmin, Created: apitest.T0},
		{Hash: hash(readToken), Name: "grafana", Role: store.RoleReadOnly, Created: apitest.T0},
		{Hash: hash(revokedToken), Name: "old", Role: store.RoleAdmin, Created: apitest.T0},
	} {
		if _, err := st.APITokens.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.APITokens.Revoke(ctx, hash(revokedToken), apitest.T0); err != nil {
		t.Fatal(err)
	}
	return st.APITokens
}

type fixture struct {
	fake *apitest.Fake
	srv  *api.Server
	url  string
	logs *bytes.Buffer
}

// newFixture serves the API over the fake controller (a stand-in: the
// real controller is fleet/controller's) on loopback.
func newFixture(t *testing.T, mod ...func(*api.Config)) *fixture {
	t.Helper()
	f := &fixture{fake: apitest.New(), logs: &bytes.Buffer{}}
	cfg := api.Config{
		Controller: f.fake, Tokens: testTokens(t),
		Log:    zerolog.New(f.logs).Level(zerolog.DebugLevel),
		Enroll: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"enrolled":true}`) }),
	}
	for _, m := range mod {
		m(&cfg)
	}
	f.fake.Tokens = cfg.Tokens // the tokens it makes work at once
	srv, err := api.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	f.srv, f.url = srv, hs.URL
	return f
}

// call sends a request and returns the status and the body.
func (f *fixture) call(t *testing.T, method, path, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// endpoint is one route with a request that succeeds with an admin token.
type endpoint struct {
	method, path string
	write        bool
	body         string
}

// endpoints covers every route of the API that takes a token.
var endpoints = []endpoint{
	{"GET", "/metrics", false, ""},
	{"GET", "/v1/devices?selector=site=berlin", false, ""},
	{"GET", "/v1/devices/gw-1", false, ""},
	{"PATCH", "/v1/devices/gw-1", true, `{"set":{"floor":"2"}}`},
	{"DELETE", "/v1/devices/gw-2", true, ""},
	{"POST", "/v1/devices/gw-1/logs", false, `{"app":"thermo","lines":2}`},
	{"POST", "/v1/devices/gw-1/restart", true, `{"app":"thermo"}`},
	{"POST", "/v1/tokens", true, `{"labels":{"site":"berlin"}}`},
	{"POST", "/v1/api-tokens", true, `{"name":"ci","role":"read-only"}`},
	{"GET", "/v1/api-tokens", false, ""},
	{"DELETE", "/v1/api-tokens/ci", true, ""}, // the one made just before
	{"POST", "/v1/apps", true, "name: web\nversion: \"1\"\ncontainers:\n- name: main\n  image: nginx\n"},
	{"GET", "/v1/apps", false, ""},
	{"GET", "/v1/apps/thermo", false, ""},
	{"DELETE", "/v1/apps/thermo", true, ""},
	{"GET", "/v1/apps/thermo/history", false, ""},
	{"GET", "/v1/apps/thermo/explain?device=gw-3", false, ""},
	{"GET", "/v1/apps/thermo/rollout", false, ""},
	{"POST", "/v1/apps/thermo/rollout/pause", true, ""},
	{"GET", "/v1/events?after=1&limit=5", false, ""},
	{"GET", "/v1/audit", false, ""},
	{"GET", "/v1/status", false, ""},
}

// F-01: no token, a wrong one, a revoked one, another scheme: 401 with
// the same body that says nothing of the fleet, each attempt counted.
func TestAuth_UnauthenticatedRefused(t *testing.T) {
	f := newFixture(t)
	const want = `{"kind":"unauthenticated","error":"missing, unknown or revoked bearer token: unauthorized"}`
	attempts := 0
	for _, e := range endpoints {
		for name, tok := range map[string]string{"none": "", "wrong": "admin-0123456789abcdeX", "revoked": revokedToken} {
			code, body := f.call(t, e.method, e.path, tok, []byte(e.body))
			attempts++
			if code != http.StatusUnauthorized || compact(t, body) != want {
				t.Errorf("%s %s with %s token: %d %s, want 401 %s", e.method, e.path, name, code, body, want)
			}
		}
	}
	// Another scheme with the right value is no bearer token.
	req, _ := http.NewRequest("GET", f.url+"/v1/devices", nil)
	req.Header.Set("Authorization", "Basic "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	attempts++
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("basic scheme: %d %v", resp.StatusCode, resp.Header)
	}
	if n := len(f.fake.Calls); n != 0 {
		t.Errorf("%d changes made without a valid token", n)
	}
	_, metrics := f.call(t, "GET", "/metrics", readToken, nil)
	total := 0
	for _, reason := range []string{"missing", "unknown", "revoked"} {
		var n int
		line := fmt.Sprintf(`tender_api_auth_failures_total{reason=%q} `, reason)
		i := strings.Index(metrics, line)
		if i < 0 {
			t.Fatalf("metrics lack %s:\n%s", line, metrics)
		}
		fmt.Sscan(metrics[i+len(line):], &n)
		total += n
	}
	if total != attempts {
		t.Errorf("auth failures counted %d, want %d", total, attempts)
	}
}

func compact(t *testing.T, s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

// F-02: a read-only token on every write route: 403, nothing changes; on
// every read route it is served.
func TestAuth_ReadOnlyRefusedOnWrites(t *testing.T) {
	f := newFixture(t)
	writes := 0
	for _, e := range endpoints {
		code, body := f.call(t, e.method, e.path, readToken, []byte(e.body))
		if e.write {
			writes++
			if code != http.StatusForbidden || !strings.Contains(body, `"kind": "permission"`) {
				t.Errorf("%s %s with a read-only token: %d %s, want 403", e.method, e.path, code, body)
			}
		} else if code >= 300 {
			t.Errorf("%s %s with a read-only token: %d %s", e.method, e.path, code, body)
		}
	}
	if writes < 7 {
		t.Fatalf("only %d write routes tried", writes)
	}
	for _, c := range f.fake.Calls {
		if c.Role != store.RoleReadOnly || c.Name != "grafana" {
			t.Errorf("unexpected change by %+v", c)
		}
	}
	// The one change a read-only token makes is asking for logs (audited).
	if len(f.fake.Calls) != 1 {
		t.Errorf("calls %+v, want only the logs request", f.fake.Calls)
	}
	// And the admin token may do all of it, the caller passed along.
	for _, e := range endpoints {
		if code, body := f.call(t, e.method, e.path, adminToken, []byte(e.body)); code >= 300 {
			t.Errorf("%s %s as admin: %d %s", e.method, e.path, code, body)
		}
	}
	for _, c := range f.fake.Calls[1:] {
		if c.Name != "admin" || c.Role != store.RoleAdmin || c.From == "" {
			t.Errorf("caller %+v, want admin with its address", c)
		}
	}
}

// F-03: tokens appear in no log line, whatever happens to the request.
func TestAuth_TokensNeverLogged(t *testing.T) {
	f := newFixture(t)
	for _, tok := range []string{adminToken, readToken, revokedToken, "guess-0123456789"} {
		for _, e := range endpoints {
			f.call(t, e.method, e.path, tok, []byte(e.body))
		}
	}
	if f.logs.Len() == 0 {
		t.Fatal("nothing logged: the test proves nothing")
	}
	made := apitest.FakeTokenValue("ci", 1) // by POST /v1/api-tokens
	if !strings.Contains(f.logs.String(), "POST /v1/api-tokens") {
		t.Fatal("POST /v1/api-tokens not logged: the test proves nothing of its answer")
	}
	for _, tok := range []string{adminToken, readToken, revokedToken, "guess-0123456789", hash(adminToken), made, hash(made)} {
		if strings.Contains(f.logs.String(), tok) {
			t.Errorf("token %q in the log", tok)
		}
	}
}

// Public routes answer without a token; /metrics does only when opened.
func TestAuth_PublicRoutes(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/healthz", "/v1/openapi.json"} {
		if code, body := f.call(t, "GET", p, "", nil); code != 200 {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	if code, body := f.call(t, "POST", "/v1/enroll", "", []byte(`{}`)); code != 200 || !strings.Contains(body, "enrolled") {
		t.Errorf("POST /v1/enroll: %d %s", code, body)
	}
	if code, _ := f.call(t, "GET", "/metrics", "", nil); code != 401 {
		t.Errorf("GET /metrics without a token: %d", code)
	}
	open := newFixture(t, func(c *api.Config) { c.MetricsOpen = true; c.Enroll = nil })
	if code, body := open.call(t, "GET", "/metrics", "", nil); code != 200 || !strings.Contains(body, "tender_devices_online") {
		t.Errorf("GET /metrics open: %d %s", code, body)
	}
	if code, _ := open.call(t, "POST", "/v1/enroll", "", nil); code != 404 {
		t.Errorf("POST /v1/enroll with no enroll handler: %d", code)
	}
}

// Every category comes back as its status and kind, and the client turns
// it back into the category.
func TestErrors_CategoryToStatus(t *testing.T) {
	f := newFixture(t)
	c, err := api.NewClient(api.ClientConfig{Server: f.url, Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err    error
		status int
		is     func(error) bool
	}{
		{errdefs.ErrInvalidArgument, 400, errdefs.IsInvalidArgument},
		{errdefs.ErrNotFound, 404, errdefs.IsNotFound},
		{errdefs.ErrAlreadyExists, 409, errdefs.IsAlreadyExists},
		{errdefs.ErrConflict, 409, errdefs.IsConflict},
		{errdefs.ErrFailedPrecondition, 412, errdefs.IsFailedPrecondition},
		{errdefs.ErrPermissionDenied, 403, errdefs.IsPermissionDenied},
		{errdefs.ErrResourceExhausted, 429, errdefs.IsResourceExhausted},
		{errdefs.ErrUnavailable, 503, errdefs.IsUnavailable},
		{errdefs.ErrNotImplemented, 501, errdefs.IsNotImplemented},
		{errors.New("disk on fire"), 500, func(err error) bool { return errdefs.IsUnknown(err) }},
	} {
		f.fake.Err = fmt.Errorf("status of gw-1: %w", tc.err)
		code, body := f.call(t, "GET", "/v1/status", adminToken, nil)
		if code != tc.status {
			t.Errorf("%v: status %d, want %d (%s)", tc.err, code, tc.status, body)
		}
		_, err := c.Status(context.Background())
		if !tc.is(err) || !strings.Contains(err.Error(), "status of gw-1") {
			t.Errorf("%v: client error %v, wrong category or message", tc.err, err)
		}
	}
}

// Bad input is refused at the edge with invalid argument, before the
// controller is asked.
func TestErrors_BadInput(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/v1/devices?selector=site", "", 400},
		{"GET", "/v1/events?after=-1", "", 400},
		{"GET", "/v1/audit?limit=100000", "", 400},
		{"PATCH", "/v1/devices/gw-1", `{"set":{"a":"b"},"unknown":1}`, 400},
		{"PATCH", "/v1/devices/gw-1", `{}`, 400},
		{"PATCH", "/v1/devices/gw-1", `{"set":`, 400},
		{"POST", "/v1/devices/gw-1/logs", `{"lines":3}`, 400},
		{"POST", "/v1/devices/gw-1/logs", `{"app":"thermo","lines":100001}`, 400},
		{"POST", "/v1/devices/gw-1/restart", `{}`, 400},
		{"POST", "/v1/tokens", `{"uses":-1}`, 400},
		{"POST", "/v1/apps", "  \n", 400},
		{"POST", "/v1/apps/thermo/rollout/explode", "", 400},
		{"GET", "/v1/nothing", "", 404},
		{"GET", "/v1/devices/nope", "", 404},
		{"POST", "/v1/devices/gw-2/logs", `{"app":"thermo"}`, 503},
	} {
		code, body := f.call(t, tc.method, tc.path, adminToken, []byte(tc.body))
		var e api.Error
		if code != tc.status || json.Unmarshal([]byte(body), &e) != nil || e.Msg == "" {
			t.Errorf("%s %s %s: %d %s, want %d with an error", tc.method, tc.path, tc.body, code, body, tc.status)
		}
	}
	if len(f.fake.Calls) != 0 {
		t.Errorf("changes made from bad input: %+v", f.fake.Calls)
	}
}

// Bodies over the cap are refused with 413 and reach no controller.
func TestBodyCaps(t *testing.T) {
	f := newFixture(t)
	big := bytes.Repeat([]byte("#"), api.MaxSpecBytes+1)
	code, body := f.call(t, "POST", "/v1/apps", adminToken, big)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "toolarge") {
		t.Errorf("apply %d bytes: %d %s", len(big), code, body)
	}
	label := []byte(`{"set":{"k":"` + strings.Repeat("v", api.MaxBodyBytes) + `"}}`)
	code, body = f.call(t, "PATCH", "/v1/devices/gw-1", adminToken, label)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("label %d bytes: %d %s", len(label), code, body)
	}
	// Just under the cap is read (and judged by the controller).
	ok := append([]byte("name: web\nversion: \"1\"\n"), bytes.Repeat([]byte("#"), api.MaxSpecBytes-40)...)
	if code, body := f.call(t, "POST", "/v1/apps", adminToken, ok); code != 200 {
		t.Errorf("apply %d bytes: %d %s", len(ok), code, body)
	}
	c, _ := api.NewClient(api.ClientConfig{Server: f.url, Token: adminToken})
	if _, err := c.Apply(context.Background(), big); !errors.Is(err, api.ErrBodyTooLarge) || !errdefs.IsInvalidArgument(err) {
		t.Errorf("client apply too large: %v", err)
	}
}

// Metrics count requests by route pattern and code.
func TestMetrics_Requests(t *testing.T) {
	f := newFixture(t)
	f.call(t, "GET", "/v1/devices/gw-1", adminToken, nil)
	f.call(t, "GET", "/v1/devices/nope", adminToken, nil)
	f.srv.Metrics().DevicesOnline.Set(2)
	f.srv.Metrics().Rollouts.WithLabelValues("progressing").Set(1)
	_, m := f.call(t, "GET", "/metrics", adminToken, nil)
	for _, want := range []string{
		`tender_api_requests_total{code="200",route="GET /v1/devices/{id}"} 1`,
		`tender_api_requests_total{code="404",route="GET /v1/devices/{id}"} 1`,
		`tender_devices_online 2`,
		`tender_rollouts{phase="progressing"} 1`,
		`tender_publish_latency_seconds_count 0`,
		`tender_reports_ingested_total 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestNewServer_RefusesMissingParts(t *testing.T) {
	if _, err := api.NewServer(api.Config{Tokens: testTokens(t)}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no controller: %v", err)
	}
	if _, err := api.NewServer(api.Config{Controller: apitest.New()}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no tokens: %v", err)
	}
}
