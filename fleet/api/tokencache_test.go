package api

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
	"github.com/tender-edge/tender/test/etcdtest"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestTokenCache_NoQuorum runs the cache over a real etcd member that is
// then killed: while the store answers, its answer wins (a revocation by
// another controller is refused at the next request); once it does not,
// a token it confirmed is taken until TTL after that confirmation and
// refused from then on, even one revoked elsewhere meanwhile; a token it
// never confirmed is refused as unavailable, never taken.
func TestTokenCache_NoQuorum(t *testing.T) {
	if !etcdtest.Installed() {
		t.Skipf("%s missing (apt-get install etcd-server)", etcdtest.Bin)
	}
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	db, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints(), RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := db.Store().APITokens // another controller's view of the same store
	clk := &fakeClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	const ttl = 30 * time.Second
	cache := NewTokenCache(db.Store().APITokens, ttl, clk.now)

	mk := func(name string) string {
		h := TokenHash("value-of-" + name)
		if _, err := st.Create(ctx, store.APIToken{Hash: h, Name: name, Role: store.RoleAdmin, Created: clk.now()}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	ok := func(when, hash string) {
		t.Helper()
		if _, err := LookupToken(ctx, cache, hash); err != nil {
			t.Fatalf("%s: %v, want the token taken", when, err)
		}
	}
	refused := func(when, hash string, want error) {
		t.Helper()
		_, err := LookupToken(ctx, cache, hash)
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", when, err, want)
		}
	}

	a, b, late := mk("a"), mk("b"), mk("late")
	ok("a, store up", a)
	ok("b, store up", b)
	// Revoked through the store by another controller: refused at once
	// while the store answers, cache or not.
	if _, err := st.Revoke(ctx, b, clk.now()); err != nil {
		t.Fatal(err)
	}
	refused("b revoked elsewhere, store up", b, errdefs.ErrUnauthenticated)

	// a is confirmed again at T+5s, then revoked elsewhere, then the
	// store loses its quorum before this controller asks again.
	clk.add(5 * time.Second)
	ok("a at T+5s", a)
	if _, err := st.Revoke(ctx, a, clk.now()); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Kill()

	clk.add(10 * time.Second) // T+15s: 10s after a's last confirmation
	ok("a, no quorum, 10s after the store confirmed it", a)
	refused("b, no quorum (its revocation was seen)", b, errdefs.ErrUnauthenticated)
	refused("a token the cache never saw, no quorum", late, errdefs.ErrUnavailable)
	clk.add(ttl - 10*time.Second - time.Millisecond) // just under TTL since T+5s
	ok("a, no quorum, just under TTL after the store confirmed it", a)
	clk.add(time.Millisecond) // TTL: refused from here on
	refused("a, no quorum, TTL after the store confirmed it", a, errdefs.ErrUnavailable)
	clk.add(time.Hour)
	refused("a, no quorum, an hour later", a, errdefs.ErrUnavailable)
}
