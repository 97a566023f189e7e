package console_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/console"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
)

// The console's guards over the API's fake fleet (fleet/api/apitest) and
// a real bbolt token store, behind the real API server on TLS. The
// browser tests (test/console) run it against tender serve and devices.

const (
	adminToken = "admin-0123456789abcdef"
	readToken  = "reader-0123456789abcdef"
)

type env struct {
	t      *testing.T
	url    string
	fake   *apitest.Fake
	tokens store.APITokens
	fails  []string
}

func start(t *testing.T) *env {
	t.Helper()
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Store()
	t.Cleanup(func() { st.Close() })
	for _, tk := range []store.APIToken{
		{Hash: api.TokenHash(adminToken), Name: "admin", Role: store.RoleAdmin, Created: apitest.T0},
		{Hash: api.TokenHash(readToken), Name: "grafana", Role: store.RoleReadOnly, Created: apitest.T0},
	} {
		if _, err := st.APITokens.Create(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, fake: apitest.New(), tokens: st.APITokens}
	ui, err := console.New(console.Config{Controller: e.fake, Tokens: st.APITokens, Sessions: st.Sessions, Log: zerolog.New(zerolog.NewTestWriter(t)),
		AuthFailed: func(reason string) { e.fails = append(e.fails, reason) }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.NewServer(api.Config{Controller: e.fake, Tokens: st.APITokens, Console: ui, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func (b *browser) do(method, path string, form url.Values, hdr ...string) (int, string) {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.url+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindStringSubmatch(string(out)); m != nil {
		b.csrf = m[1]
	}
	return resp.StatusCode, string(out)
}

func (b *browser) signIn(token string) int {
	b.e.t.Helper()
	b.do("GET", "/ui/login", nil)
	code, _ := b.do("POST", "/ui/login", url.Values{"token": {token}, "csrf": {b.csrf}, "next": {"/ui/"}})
	if code == http.StatusSeeOther {
		b.do("GET", "/ui/", nil) // the session's CSRF token
	}
	return code
}

// fleetWords are strings of the fake fleet that no page may show before
// sign-in.
var fleetWords = []string{"gw-1", "gw-2", "thermo", "berlin", "munich"}

func noFleet(t *testing.T, what, body string) {
	t.Helper()
	for _, w := range fleetWords {
		// The sign-in form sends the browser back to the page it asked
		// for: its own URL is no news to it.
		if strings.Contains(body, w) && !strings.Contains(what, w) {
			t.Errorf("%s shows %q before sign-in:\n%s", what, w, body)
		}
	}
}

func TestConsole_NothingBeforeSignIn(t *testing.T) {
	e := start(t)
	b := e.browser()
	for _, p := range []string{"/ui/", "/ui/devices/gw-1", "/ui/apps", "/ui/apps/thermo", "/ui/apps/thermo/rollout?fragment=1",
		"/ui/events", "/ui/audit", "/ui/nothing-here"} {
		code, body := b.do("GET", p, nil)
		if code != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d, want 401", p, code)
		}
		noFleet(t, "GET "+p, body)
	}
	// A wrong token gets the form again, and nothing more.
	if code := b.signIn("admin-wrong"); code != http.StatusUnauthorized {
		t.Errorf("sign-in with a wrong token: %d, want 401", code)
	}
	code, body := b.do("GET", "/ui/", nil)
	if code != http.StatusUnauthorized {
		t.Errorf("after a wrong token: %d, want 401", code)
	}
	noFleet(t, "the page after a wrong token", body)
	// A forged session cookie is no session.
	u, _ := url.Parse(e.url)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "__Host-tender-session", Value: strings.Repeat("ab", 32), Path: "/"}})
	if code, body := b.do("GET", "/ui/", nil); code != http.StatusUnauthorized {
		t.Errorf("a forged session: %d, want 401", code)
	} else {
		noFleet(t, "a forged session", body)
	}
	// Sign-in without the form's CSRF value is refused.
	nb := e.browser()
	if code, _ := nb.do("POST", "/ui/login", url.Values{"token": {adminToken}}); code != http.StatusForbidden {
		t.Errorf("sign-in without the login CSRF value: %d, want 403", code)
	}
	if len(e.fails) == 0 {
		t.Error("no refused request was counted")
	}
}

func TestConsole_HeadersAndRedirect(t *testing.T) {
	e := start(t)
	b := e.browser()
	req, _ := http.NewRequest("GET", e.url+"/ui/login", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options %q, want DENY", got)
	}
	for _, c := range resp.Cookies() {
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s: HttpOnly %v Secure %v SameSite %v", c.Name, c.HttpOnly, c.Secure, c.SameSite)
		}
	}
	// A browser at / goes to the console; the API's clients still get
	// their JSON 404.
	if code, _ := b.do("GET", "/", nil, "Accept", "text/html,application/xhtml+xml"); code != http.StatusSeeOther {
		t.Errorf("browser GET /: %d, want 303", code)
	}
	if code, body := b.do("GET", "/", nil, "Accept", "application/json"); code != http.StatusNotFound || !strings.Contains(body, `"kind": "notfound"`) {
		t.Errorf("API GET /: %d %s", code, body)
	}
}

func TestConsole_AdminPages(t *testing.T) {
	e := start(t)
	b := e.browser()
	if code := b.signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", code)
	}
	code, body := b.do("GET", "/ui/", nil)
	if code != http.StatusOK || !strings.Contains(body, "gw-1") || !strings.Contains(body, `data-count="matched">3<`) {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	// gw-3 reports a version with a terminal escape: shown escaped.
	if strings.Contains(body, "\x1b") || !strings.Contains(body, `1.0\x1b]0;pwned\x07`) {
		t.Errorf("the escape in gw-3's version is not shown as text")
	}
	if _, body := b.do("GET", "/ui/?q=site%3Dmunich", nil); !strings.Contains(body, `data-count="matched">1<`) || strings.Contains(body, ">gw-1<") {
		t.Errorf("filter site=munich does not narrow to gw-2:\n%s", body)
	}
	if _, body := b.do("GET", "/ui/apps/thermo", nil); !strings.Contains(body, "confirm?do=pause") {
		t.Errorf("an admin sees no pause button:\n%s", body)
	}
	// A change without the CSRF token is refused before it reaches the
	// controller; with it, it goes through.
	if code, _ := b.do("POST", "/ui/apps/thermo/rollout", url.Values{"do": {"pause"}}); code != http.StatusForbidden {
		t.Errorf("pause without CSRF: %d, want 403", code)
	}
	if code, _ := b.do("POST", "/ui/apps/thermo/rollout", url.Values{"do": {"pause"}, "csrf": {"00" + b.csrf[2:]}}); code != http.StatusForbidden {
		t.Errorf("pause with a wrong CSRF token: %d, want 403", code)
	}
	if code, _ := b.do("POST", "/ui/apps/thermo/rollout", url.Values{"do": {"pause"}, "csrf": {b.csrf}}, "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("pause from another origin: %d, want 403", code)
	}
	func() {
		defer e.fake.Lock()()
		if len(e.fake.Calls) != 0 {
			t.Fatalf("refused requests reached the controller: %+v", e.fake.Calls)
		}
	}()
	if code, _ := b.do("POST", "/ui/apps/thermo/rollout", url.Values{"do": {"pause"}, "csrf": {b.csrf}}); code != http.StatusSeeOther {
		t.Errorf("pause with CSRF: %d, want 303", code)
	}
	func() {
		defer e.fake.Lock()()
		if len(e.fake.Calls) != 1 || e.fake.Calls[0].Name != "admin" {
			t.Errorf("calls %+v, want one by admin", e.fake.Calls)
		}
	}()
	// The diff of two revisions, the events filter, an older revision
	// rolled out again (its stored spec applied as a new revision).
	if _, body := b.do("GET", "/ui/apps/thermo?from=1&to=2", nil); !strings.Contains(body, `<span class="ddel">- version: &#34;1.0&#34;</span>`) ||
		!strings.Contains(body, `<span class="dadd">&#43; version: &#34;2.0&#34;</span>`) {
		t.Errorf("no diff of revisions 1 and 2:\n%s", body)
	}
	if _, body := b.do("GET", "/ui/events?device=gw-3", nil); !strings.Contains(body, ">gw-3<") || strings.Contains(body, ">gw-1<") {
		t.Errorf("events filtered by device gw-3:\n%s", body)
	}
	if _, body := b.do("GET", "/ui/apps/thermo/confirm?do=apply&revision=1", nil); !strings.Contains(body, "Apply revision 1 (version 1.0) of thermo") {
		t.Errorf("the confirmation of applying revision 1:\n%s", body)
	}
	if code, _ := b.do("POST", "/ui/apps/thermo/rollout", url.Values{"do": {"apply"}, "revision": {"1"}, "csrf": {b.csrf}}); code != http.StatusSeeOther {
		t.Errorf("apply revision 1: %d, want 303", code)
	}
	if _, body := b.do("GET", "/ui/apps/thermo", nil); !strings.Contains(body, `id="version">1.0<`) {
		t.Errorf("after applying revision 1 the app is not at 1.0:\n%s", body)
	}
	// The log tail shows a device's escape as text.
	_, body = b.do("POST", "/ui/devices/gw-1/logs", url.Values{"app": {"thermo"}, "lines": {"5"}, "csrf": {b.csrf}})
	if !strings.Contains(body, `evil \x1b[2J line`) || strings.Contains(body, "\x1b") {
		t.Errorf("log tail not escaped:\n%s", body)
	}
	// Offline: a clear message.
	if _, body := b.do("POST", "/ui/devices/gw-2/logs", url.Values{"app": {"thermo"}, "csrf": {b.csrf}}); !strings.Contains(body, "must be online") {
		t.Errorf("logs of an offline device:\n%s", body)
	}
	// Sign-out ends the session.
	if code, _ := b.do("POST", "/ui/logout", url.Values{"csrf": {b.csrf}}); code != http.StatusSeeOther {
		t.Errorf("sign-out: %d", code)
	}
	if code, _ := b.do("GET", "/ui/", nil); code != http.StatusUnauthorized {
		t.Errorf("after sign-out: %d, want 401", code)
	}
}

func TestConsole_ReadOnly(t *testing.T) {
	e := start(t)
	b := e.browser()
	if code := b.signIn(readToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", code)
	}
	for _, p := range []string{"/ui/apps/thermo", "/ui/apps/thermo/rollout?fragment=1", "/ui/devices/gw-1"} {
		code, body := b.do("GET", p, nil)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, code)
		}
		for _, control := range []string{"confirm?do=", "/restart", "/labels", "Save labels"} {
			if strings.Contains(body, control) {
				t.Errorf("a read-only token sees %q on %s", control, p)
			}
		}
	}
	// Forged requests with the read-only session's own valid CSRF token.
	for p, form := range map[string]url.Values{
		"/ui/apps/thermo/rollout":    {"do": {"undo"}},
		"/ui/devices/gw-1/restart":   {"app": {"thermo"}},
		"/ui/devices/gw-1/labels":    {"set": {"site=paris"}},
		"/ui/apps/thermo/rollout#ap": {"do": {"apply"}, "revision": {"1"}},
	} {
		form.Set("csrf", b.csrf)
		if code, _ := b.do("POST", strings.Split(p, "#")[0], form); code != http.StatusForbidden {
			t.Errorf("read-only POST %s: %d, want 403", p, code)
		}
	}
	defer e.fake.Lock()()
	if len(e.fake.Calls) != 0 {
		t.Errorf("read-only changes reached the controller: %+v", e.fake.Calls)
	}
}

func TestConsole_RevokedTokenEndsSession(t *testing.T) {
	e := start(t)
	b := e.browser()
	if code := b.signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", code)
	}
	if code, _ := b.do("GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}
	if _, err := e.tokens.Revoke(context.Background(), api.TokenHash(adminToken), apitest.T0); err != nil {
		t.Fatal(err)
	}
	code, body := b.do("GET", "/ui/", nil)
	if code != http.StatusUnauthorized {
		t.Errorf("after revocation: %d, want 401", code)
	}
	noFleet(t, "the page after revocation", body)
	if code := b.signIn(adminToken); code != http.StatusUnauthorized {
		t.Errorf("sign-in with a revoked token: %d, want 401", code)
	}
}

// staleFleet answers the device list as a controller whose store has no
// quorum does: marked stale, if the request allows it.
type staleFleet struct{ *apitest.Fake }

func (f staleFleet) Devices(ctx context.Context, sel map[string]string) ([]api.DeviceView, error) {
	store.StaleReadsOf(ctx).Mark(store.Staleness{Reason: store.NoQuorum, Rev: 77})
	return f.Fake.Devices(ctx, sel)
}

// TestConsole_StalePagesSaySo: a page read without the store's quorum
// says so, also when it comes from the overview's shared snapshot.
func TestConsole_StalePagesSaySo(t *testing.T) {
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Store()
	t.Cleanup(func() { st.Close() })
	if _, err := st.APITokens.Create(context.Background(), store.APIToken{Hash: api.TokenHash(adminToken), Name: "admin", Role: store.RoleAdmin, Created: apitest.T0}); err != nil {
		t.Fatal(err)
	}
	fake := staleFleet{apitest.New()}
	ui, err := console.New(console.Config{Controller: fake, Tokens: st.APITokens, Sessions: st.Sessions, SnapshotTTL: time.Hour, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.NewServer(api.Config{Controller: fake, Tokens: st.APITokens, Console: ui, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	e := &env{t: t, url: ts.URL}
	b := e.browser()
	if code := b.signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", code)
	}
	const mark = "This page may be stale: the fleet store has no quorum; as of revision 77."
	for i := range 2 { // the second from the snapshot the first read
		if code, body := b.do("GET", "/ui/", nil); code != http.StatusOK || !strings.Contains(body, mark) {
			t.Fatalf("overview %d without a quorum: %d, want the stale mark:\n%s", i, code, body)
		}
	}
	if code, body := b.do("GET", "/ui/audit", nil); code != http.StatusOK || strings.Contains(body, "may be stale") {
		t.Fatalf("a fresh page: %d, marked stale", code)
	}
}
