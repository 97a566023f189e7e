package controller_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/console"
	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/store"
)

// tokenEnv is the real controller behind the real API server and web
// console, on TLS, with the admin token of a first start.
type tokenEnv struct {
	t     *testing.T
	h     *harness
	url   string
	ca    []byte
	admin string // the first start's admin token
	logs  *syncBuf
}

func newTokenEnv(t *testing.T) *tokenEnv {
	e := &tokenEnv{t: t, logs: &syncBuf{}}
	e.h = &harness{t: t, logs: e.logs}
	e.h.init()
	var err error
	if e.admin, err = controller.EnsureAdminToken(context.Background(), e.h.st.APITokens, time.Now()); err != nil || e.admin == "" {
		t.Fatalf("admin token: %q %v", e.admin, err)
	}
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	ui, err := console.New(console.Config{Controller: e.h.c, Tokens: e.h.st.APITokens, Sessions: e.h.st.Sessions, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.NewServer(api.Config{Controller: e.h.c, Tokens: e.h.st.APITokens, Console: ui, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	return e
}

func (e *tokenEnv) client(token string) *api.Client {
	c, err := api.NewClient(api.ClientConfig{Server: e.url, Token: token, CA: e.ca})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// signIn signs a browser (cookie jar, no redirects followed) in to the
// console with token and returns a function that GETs a console page.
func (e *tokenEnv) signIn(token string) func(path string) int {
	t := e.t
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(e.url + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no csrf in the sign-in page:\n%s", b)
	}
	resp, err = hc.PostForm(e.url+"/ui/login", url.Values{"token": {token}, "csrf": {string(m[1])}, "next": {"/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	return func(path string) int {
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

// API tokens made over the API work with their role at once; revoked,
// they are refused at once by the API and by a console session signed in
// with them; the last admin token stays; names are unique among unrevoked
// tokens; values are in no store record, audit entry or log line (F-03),
// and every change is in the audit log (F-12).
func TestAPITokens_CreateUseRevoke(t *testing.T) {
	e := newTokenEnv(t)
	ctx := context.Background()
	admin := e.client(e.admin)
	var values []string
	create := func(cl *api.Client, name string, role store.Role) (string, *api.Client) {
		t.Helper()
		c, err := cl.CreateAPIToken(ctx, api.APITokenRequest{Name: name, Role: role})
		if err != nil || c.Name != name || c.Role != role || c.Created.IsZero() {
			t.Fatalf("create %s: %+v %v", name, c, err)
		}
		// The format of the first start's admin token.
		if !strings.HasPrefix(c.Token, "tdra_") || len(c.Token) != len(e.admin) {
			t.Fatalf("token %s: value %q unlike the admin token's", name, c.Token)
		}
		values = append(values, c.Token)
		return c.Token, e.client(c.Token)
	}

	_, ci := create(admin, "ci", store.RoleReadOnly)
	if _, err := ci.Devices(ctx, nil); err != nil {
		t.Fatalf("read-only token reads: %v", err)
	}
	if _, err := ci.APITokens(ctx); err != nil {
		t.Fatalf("read-only token lists tokens: %v", err)
	}
	for what, err := range map[string]error{
		"create a token": func() error {
			_, err := ci.CreateAPIToken(ctx, api.APITokenRequest{Name: "x", Role: store.RoleAdmin})
			return err
		}(),
		"revoke a token": func() error { _, err := ci.RevokeAPIToken(ctx, "admin"); return err }(),
		"label a device": func() error { _, err := ci.LabelDevice(ctx, "gw-1", map[string]string{"a": "b"}, nil); return err }(),
	} {
		if !errdefs.IsPermissionDenied(err) {
			t.Errorf("read-only token may %s: %v, want 403", what, err)
		}
	}
	if _, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "ci", Role: store.RoleAdmin}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a second unrevoked token named ci: %v, want 409", err)
	}
	if _, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "nobody"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a token without a role: %v, want 400", err)
	}

	opsValue, ops := create(admin, "ops", store.RoleAdmin)
	page := e.signIn(opsValue)
	roPage := e.signIn(values[0])
	if code := page("/ui/"); code != http.StatusOK {
		t.Fatalf("console as ops: %d", code)
	}
	if code := roPage("/ui/"); code != http.StatusOK {
		t.Fatalf("console as ci: %d", code)
	}

	// ops revokes the first admin token, then is the last admin token.
	if r, err := ops.RevokeAPIToken(ctx, controller.AdminTokenName); err != nil || r.Self || !r.Revoked {
		t.Fatalf("revoke admin: %+v %v", r, err)
	}
	if _, err := admin.Devices(ctx, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("revoked admin token still reads: %v", err)
	}
	if _, err := ops.RevokeAPIToken(ctx, "ops"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "would leave no admin token") {
		t.Fatalf("revoke the last admin token: %v", err)
	}
	if _, err := ops.RevokeAPIToken(ctx, controller.AdminTokenName); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "revoked already") {
		t.Errorf("revoke a revoked token: %v", err)
	}
	_, ops2 := create(ops, "ops2", store.RoleAdmin)
	r, err := ops.RevokeAPIToken(ctx, "ops")
	if err != nil || !r.Self || r.Note == "" {
		t.Fatalf("revoke one's own token: %+v %v", r, err)
	}
	if _, err := ops.Devices(ctx, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("self-revoked token still reads: %v", err)
	}
	if code := page("/ui/"); code != http.StatusUnauthorized {
		t.Errorf("console session of a revoked token: %d, want 401", code)
	}
	if _, err := ops2.RevokeAPIToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.Devices(ctx, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("revoked read-only token still reads: %v", err)
	}
	if code := roPage("/ui/"); code != http.StatusUnauthorized {
		t.Errorf("console session of a revoked read-only token: %d, want 401", code)
	}
	// A revoked token's name is free again.
	_, ci2 := create(ops2, "ci", store.RoleReadOnly)
	if _, err := ci2.Devices(ctx, nil); err != nil {
		t.Errorf("new ci token: %v", err)
	}

	list, err := ops2.APITokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range list {
		got = append(got, v.Name+"/"+string(v.Role)+"/"+map[bool]string{true: "revoked", false: "valid"}[v.Revoked])
	}
	if want := "admin/admin/revoked ci/read-only/revoked ci/read-only/valid ops/admin/revoked ops2/admin/valid"; strings.Join(got, " ") != want {
		t.Errorf("list: %s, want %s", strings.Join(got, " "), want)
	}

	// F-12: every change audited, by whom, with the role.
	entries, err := e.h.st.Audit.List(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var audit []string
	for _, a := range entries {
		if strings.HasPrefix(a.Action, "api-token") {
			audit = append(audit, a.Who+" "+a.Action+" "+a.Target+" ("+a.Detail+")")
		}
	}
	want := []string{
		"admin api-token create api-token ci (role read-only)",
		"admin api-token create api-token ops (role admin)",
		"ops api-token rm api-token admin (role admin)",
		"ops api-token create api-token ops2 (role admin)",
		"ops api-token rm api-token ops (role admin, the caller's own token)",
		"ops2 api-token rm api-token ci (role read-only)",
		"ops2 api-token create api-token ci (role read-only)",
	}
	if strings.Join(audit, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(audit, "\n"), strings.Join(want, "\n"))
	}
	if err := e.h.st.Audit.Verify(ctx); err != nil {
		t.Fatal(err)
	}

	// F-03: the values are nowhere but in the answers; their hashes are
	// in the store, which the search can so find.
	auditJSON, _ := json.Marshal(entries)
	db, err := os.ReadFile(filepath.Join(e.h.dir, controller.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(db, []byte(controller.HashAPIToken(values[1]))) {
		t.Fatal("ops's hash is not in the store file: the search below proves nothing")
	}
	e.logs.mu.Lock()
	logs := e.logs.b.String()
	e.logs.mu.Unlock()
	if !strings.Contains(logs, "POST /v1/api-tokens") || !strings.Contains(logs, `"who":"ops2"`) {
		t.Fatalf("the requests are not in the log: the search below proves nothing:\n%s", logs)
	}
	for _, v := range append(values, e.admin) {
		for where, text := range map[string][]byte{"store file": db, "audit log": auditJSON, "log": []byte(logs)} {
			if bytes.Contains(text, []byte(v)) {
				t.Errorf("token value %s... in the %s", v[:12], where)
			}
		}
	}
}
