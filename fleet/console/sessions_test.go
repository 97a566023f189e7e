package console_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/console"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
	"github.com/tender-edge/tender/test/etcdtest"
)

// clock is a settable clock shared by the two controllers.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time            { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration)   { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func (c *clock) set(t time.Time) time.Time { c.mu.Lock(); defer c.mu.Unlock(); c.now = t; return t }

// TestSessions_TwoControllersOneStore: two controllers (each its own etcd
// store client, API server and console) on one real etcd, as behind a
// load balancer: a session begun at one is taken by the other, with the
// CSRF token the first gave; a sign-out at either ends it at both; the
// store holds the session's hash, never the cookie's value; a session
// expires at both.
func TestSessions_TwoControllersOneStore(t *testing.T) {
	if !etcdtest.Installed() {
		t.Skipf("%s missing (apt-get install etcd-server)", etcdtest.Bin)
	}
	cl := etcdtest.Start(t, 1)
	ctx := context.Background()
	clk := &clock{}
	clk.set(time.Now())
	var urls [2]string
	var raw *clientv3.Client
	for i := range urls {
		db, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: cl.Endpoints(), Prefix: "/console-test/", RequestTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		raw = db.Client()
		st := db.Store()
		if i == 0 {
			if _, err := st.APITokens.Create(ctx, store.APIToken{Hash: api.TokenHash(adminToken), Name: "admin", Role: store.RoleAdmin, Created: apitest.T0}); err != nil {
				t.Fatal(err)
			}
		}
		fake := apitest.New()
		log := zerolog.New(zerolog.NewTestWriter(t)).With().Int("controller", i).Logger()
		tokens := api.NewTokenCache(st.APITokens, 0, clk.Now) // as tender serve has it
		ui, err := console.New(console.Config{Controller: fake, Tokens: tokens, Sessions: st.Sessions, Now: clk.Now, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := api.NewServer(api.Config{Controller: fake, Tokens: tokens, Console: ui, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewTLSServer(srv.Handler())
		t.Cleanup(ts.Close)
		urls[i] = ts.URL
	}
	// One browser: its cookie jar sends the cookies of 127.0.0.1 to
	// either port (cookies know no ports), as to one name behind a
	// balancer.
	e := &env{t: t, url: urls[0]}
	b := e.browser()
	at := func(i int) *browser { e.url = urls[i]; return b }
	if code := at(0).signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in at controller 0: %d", code)
	}
	csrf := b.csrf
	if code, body := at(1).do("GET", "/ui/", nil); code != http.StatusOK || !strings.Contains(body, "gw-1") {
		t.Fatalf("the session begun at controller 0, at controller 1: %d", code)
	}

	// The store has the session's hash, not the cookie's value.
	u, _ := url.Parse(urls[0])
	var cookie string
	for _, ck := range b.c.Jar.(*cookiejar.Jar).Cookies(u) {
		if ck.Name == "__Host-tender-session" {
			cookie = ck.Value
		}
	}
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	resp, err := raw.Get(ctx, "/console-test/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	sessions := 0
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key)+string(kv.Value), cookie) || strings.Contains(string(kv.Value), csrf) {
			t.Fatalf("the store holds the session's cookie value or its CSRF token: %s", kv.Key)
		}
		if strings.HasPrefix(string(kv.Key), "/console-test/sessions/") {
			sessions++
		}
	}
	if sessions != 1 {
		t.Fatalf("%d sessions stored, want 1", sessions)
	}

	// Sign out at controller 1 with the CSRF token controller 0 gave:
	// the session ends at both.
	if code, _ := at(1).do("POST", "/ui/logout", url.Values{"csrf": {csrf}}); code != http.StatusSeeOther {
		t.Fatalf("sign-out at controller 1: %d", code)
	}
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "__Host-tender-session", Value: cookie, Path: "/", Secure: true}}) // a copy of the cookie kept
	for i := range urls {
		if code, body := at(i).do("GET", "/ui/", nil); code != http.StatusUnauthorized || strings.Contains(body, "gw-1") {
			t.Fatalf("signed out, the old cookie at controller %d: %d", i, code)
		}
	}

	// A session expires at both (8 hours by default).
	if code := at(1).signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in at controller 1: %d", code)
	}
	if code, _ := at(0).do("GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("the session begun at controller 1, at controller 0: %d", code)
	}
	clk.Advance(8*time.Hour + time.Second)
	for i := range urls {
		if code, _ := at(i).do("GET", "/ui/", nil); code != http.StatusUnauthorized {
			t.Fatalf("expired session at controller %d: %d", i, code)
		}
	}

	// The store gone: a session each controller saw the store confirm
	// within the cache's TTL (30 s) is still taken; past it, or to sign
	// in, the store is needed.
	if code := at(0).signIn(adminToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in at controller 0: %d", code)
	}
	if code, _ := at(1).do("GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("the session at controller 1: %d", code)
	}
	cl.Members[0].Kill()
	for i := range urls {
		if code, _ := at(i).do("GET", "/ui/", nil); code != http.StatusOK {
			t.Fatalf("store down, a session confirmed just before, at controller %d: %d", i, code)
		}
	}
	clk.Advance(31 * time.Second)
	for i := range urls {
		if code, body := at(i).do("GET", "/ui/", nil); code != http.StatusServiceUnavailable || strings.Contains(body, "gw-1") {
			t.Fatalf("store down 31 s, at controller %d: %d; want 503 and nothing of the fleet", i, code)
		}
	}
	if code := at(0).signIn(adminToken); code != http.StatusServiceUnavailable {
		t.Fatalf("sign-in with the store down: %d, want 503", code)
	}
}
