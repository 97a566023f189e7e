package api

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
)

// DefaultTokenCacheTTL is how long a token the store confirmed is still
// taken while the store does not answer.
const DefaultTokenCacheTTL = 30 * time.Second

// tokenDownFor is how long, after the store failed to answer, lookups go
// to the cache without asking the store again (each failed ask costs the
// store's timeout). It does not stretch TTL: an entry is taken only within
// TTL of the store's last answer for it.
const tokenDownFor = 10 * time.Second

// TokenCache is store.APITokens with a memory of the last answers, for an
// etcd store that lost its quorum: every Get asks the store first and
// takes its answer (a revocation or deletion is thus seen at once while
// the store answers); only when the store is unavailable does Get answer
// from the record the store last returned for that hash, and only if that
// answer is younger than TTL. A token revoked through another controller
// just before the store became unavailable is thus still taken here for
// at most TTL; a token never seen is refused as unavailable.
type TokenCache struct {
	tokens store.APITokens
	ttl    time.Duration
	now    func() time.Time

	mu        sync.Mutex
	seen      map[string]cachedToken
	downUntil time.Time
}

type cachedToken struct {
	t  store.APIToken
	at time.Time // when the store returned t
}

// NewTokenCache wraps tokens; ttl 0 is DefaultTokenCacheTTL, now nil is
// time.Now.
func NewTokenCache(tokens store.APITokens, ttl time.Duration, now func() time.Time) *TokenCache {
	if ttl <= 0 {
		ttl = DefaultTokenCacheTTL
	}
	if now == nil {
		now = time.Now
	}
	return &TokenCache{tokens: tokens, ttl: ttl, now: now, seen: map[string]cachedToken{}}
}

var _ store.APITokens = (*TokenCache)(nil)

// Get implements store.APITokens.
func (c *TokenCache) Get(ctx context.Context, hash string) (store.APIToken, error) {
	now := c.now()
	c.mu.Lock()
	down := now.Before(c.downUntil)
	c.mu.Unlock()
	var t store.APIToken
	var err error = errdefs.ErrUnavailable
	if !down {
		t, err = c.tokens.Get(ctx, hash)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.seen[hash] = cachedToken{t: t, at: now}
		c.downUntil = time.Time{}
		return t, nil
	case !errdefs.IsUnavailable(err):
		delete(c.seen, hash) // not found, or the store's answer is an error of its own
		return t, err
	}
	if !down {
		c.downUntil = now.Add(min(tokenDownFor, c.ttl))
	}
	ct, ok := c.seen[hash]
	if ok && now.Sub(ct.at) < c.ttl && !now.Before(ct.at) {
		return ct.t, nil
	}
	if ok {
		delete(c.seen, hash)
	}
	if down {
		return store.APIToken{}, store.ErrStoreDown
	}
	return store.APIToken{}, err
}

// Create implements store.APITokens.
func (c *TokenCache) Create(ctx context.Context, t store.APIToken) (store.APIToken, error) {
	return c.tokens.Create(ctx, t)
}

// List implements store.APITokens.
func (c *TokenCache) List(ctx context.Context) ([]store.APIToken, error) {
	return c.tokens.List(ctx)
}

// Revoke implements store.APITokens; the revocation is remembered at once.
func (c *TokenCache) Revoke(ctx context.Context, hash string, at time.Time) (store.APIToken, error) {
	t, err := c.tokens.Revoke(ctx, hash, at)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.seen[hash] = cachedToken{t: t, at: c.now()}
	} else {
		delete(c.seen, hash)
	}
	return t, err
}
