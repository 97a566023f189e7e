package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// Cookie names. The __Host- prefix makes the browser insist on Secure,
// Path=/ and no Domain, so no other host can set them.
const (
	sessionCookie = "__Host-tender-session"
	loginCookie   = "__Host-tender-login"
)

// session is one signed-in browser.
type session struct {
	// id is the cookie's value; the store keeps only its hash.
	id        string
	tokenHash string
	// csrf is derived from id, so every controller that knows the
	// session knows it without storing it.
	csrf    string
	expires time.Time
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("console: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// sessionHash is what a session is stored under: the hex sha256 of its id.
func sessionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// csrfOf is a session's CSRF token: a hash of its id apart from the one
// stored, so the store's records do not give it away.
func csrfOf(id string) string {
	sum := sha256.Sum256([]byte("tender console csrf\x00" + id))
	return hex.EncodeToString(sum[:])
}

// maxCached bounds the memory of sessions the store confirmed.
const maxCached = 10000

// sessions keeps the console's sessions in the store, so that a session
// begun at one controller is taken by every controller on the same store
// (etcd), and a sign-out at one ends it at all. Like api.TokenCache, it
// remembers the store's last answer for each session: every lookup asks
// the store first and takes its answer (a sign-out elsewhere is seen at
// the next request); only while the store is unavailable (no quorum) is a
// session the store confirmed within ttl taken from that memory. Sign-in
// and sign-out need the store.
type sessions struct {
	st  store.Sessions
	ttl time.Duration

	mu        sync.Mutex
	seen      map[string]cachedSession // by hash
	downUntil time.Time
}

type cachedSession struct {
	s  store.Session
	at time.Time // when the store returned it
}

// sessionDownFor is how long, after the store did not answer, lookups go
// to the memory without asking the store again (as api's tokenDownFor).
const sessionDownFor = 10 * time.Second

func (s *sessions) create(ctx context.Context, tokenHash string, now time.Time, life time.Duration) (*session, error) {
	id := randomHex(32)
	rec := store.Session{Hash: sessionHash(id), TokenHash: tokenHash, Created: now, Expires: now.Add(life)}
	if _, err := s.st.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("store the session: %w", err)
	}
	s.remember(rec, now)
	return &session{id: id, tokenHash: tokenHash, csrf: csrfOf(id), expires: rec.Expires}, nil
}

func (s *sessions) remember(rec store.Session, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) >= maxCached {
		for h, c := range s.seen {
			if now.Sub(c.at) >= s.ttl || !now.Before(c.s.Expires) {
				delete(s.seen, h)
			}
		}
		if len(s.seen) >= maxCached {
			clear(s.seen)
		}
	}
	s.seen[rec.Hash] = cachedSession{s: rec, at: now}
}

// get returns the session with cookie value id: nil if there is none
// (unknown, signed out, expired), an error if the store does not answer
// and the memory cannot stand in.
func (s *sessions) get(ctx context.Context, id string, now time.Time) (*session, error) {
	hash := sessionHash(id)
	s.mu.Lock()
	down := now.Before(s.downUntil)
	s.mu.Unlock()
	var rec store.Session
	var err error = errdefs.ErrUnavailable
	if !down {
		rec, err = s.st.Get(ctx, hash, now)
	}
	switch {
	case err == nil:
		s.remember(rec, now)
		s.mu.Lock()
		s.downUntil = time.Time{}
		s.mu.Unlock()
		return &session{id: id, tokenHash: rec.TokenHash, csrf: csrfOf(id), expires: rec.Expires}, nil
	case errdefs.IsNotFound(err):
		s.forget(hash)
		return nil, nil
	case !errdefs.IsUnavailable(err):
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !down {
		s.downUntil = now.Add(min(sessionDownFor, s.ttl))
	}
	c, ok := s.seen[hash]
	switch {
	case ok && now.Sub(c.at) < s.ttl && !now.Before(c.at) && now.Before(c.s.Expires):
		return &session{id: id, tokenHash: c.s.TokenHash, csrf: csrfOf(id), expires: c.s.Expires}, nil
	case ok:
		delete(s.seen, hash)
	}
	if down {
		return nil, fmt.Errorf("console session: %w", store.ErrStoreDown)
	}
	return nil, fmt.Errorf("console session: %w", err)
}

func (s *sessions) forget(hash string) {
	s.mu.Lock()
	delete(s.seen, hash)
	s.mu.Unlock()
}

// drop ends the session at every controller: it is deleted from the store.
func (s *sessions) drop(ctx context.Context, id string) error {
	hash := sessionHash(id)
	s.forget(hash)
	if err := s.st.Delete(ctx, hash); err != nil {
		return fmt.Errorf("delete the session: %w", err)
	}
	return nil
}

// viewer is who is looking: the session and its token as of this request.
type viewer struct {
	s      *session
	token  store.APIToken
	caller api.Caller
	// stale says whether this request's reads were answered without the
	// store's quorum (pages only: store.WithStaleReads).
	stale *store.StaleReads
}

// Stale is the text of the page's stale mark ("" if it is fresh).
func (v *viewer) Stale() string {
	if st, ok := v.stale.Stale(); ok {
		return st.String()
	}
	return ""
}

// Admin says whether the viewer may change the fleet.
func (v *viewer) Admin() bool { return v.token.Role == store.RoleAdmin }

// Name is the viewer's token's name; Role its role.
func (v *viewer) Name() string { return v.token.Name }
func (v *viewer) Role() string { return string(v.token.Role) }

// errSignIn is what a browser without a valid session gets.
var errSignIn = errors.New("sign in with an API token")

// authenticate finds the request's session and checks its token again.
func (c *Console) authenticate(r *http.Request) (*viewer, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		c.authFailed(r, "missing")
		return nil, errSignIn
	}
	ss, err := c.sessions.get(r.Context(), ck.Value, c.cfg.Now())
	if err != nil {
		return nil, err
	}
	if ss == nil {
		c.authFailed(r, "unknown")
		return nil, errSignIn
	}
	t, err := api.LookupToken(r.Context(), c.cfg.Tokens, ss.tokenHash)
	switch {
	case errors.Is(err, errdefs.ErrUnauthenticated):
		// Revoked since sign-in: the session ends here.
		if err := c.sessions.drop(r.Context(), ss.id); err != nil {
			c.cfg.Log.Warn().Err(err).Msg("console session of a revoked token")
		}
		c.authFailed(r, "revoked")
		return nil, errSignIn
	case err != nil:
		return nil, err
	}
	return &viewer{s: ss, token: t, caller: api.Caller{Name: t.Name, Role: t.Role, From: r.RemoteAddr}}, nil
}

func (c *Console) authFailed(r *http.Request, reason string) {
	if c.cfg.AuthFailed != nil {
		c.cfg.AuthFailed(reason)
	}
	c.cfg.Log.Debug().Str("reason", reason).Str("from", r.RemoteAddr).Str("path", r.URL.Path).Msg("console request without a session")
}

// sameOrigin refuses a state-changing request that a browser says comes
// from another site.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// checkCSRF is the guard of every POST that needs a session.
func (c *Console) checkCSRF(r *http.Request, v *viewer) error {
	if !sameOrigin(r) {
		return errCrossSite
	}
	if !equal(r.PostFormValue("csrf"), v.s.csrf) {
		return errCSRF
	}
	return nil
}

var (
	errCSRF      = errors.New("the form's CSRF token is missing or wrong: reload the page and try again")
	errCrossSite = errors.New("a request from another site is refused")
)

// setCookie sets a __Host- cookie.
func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// loginPage answers with the sign-in form (status code), with a fresh
// login CSRF value in its cookie and the form.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	nonce := randomHex(16)
	setCookie(w, loginCookie, nonce, 10*time.Minute)
	next := r.URL.RequestURI()
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/ui/") || r.URL.Path == "/ui/login" || isFragment(r) {
		next = "/ui/"
	}
	if r.Method == http.MethodPost {
		if n := r.PostFormValue("next"); safeNext(n) {
			next = n
		}
	}
	c.render(w, code, "login", nil, map[string]any{"Title": "Sign in", "CSRF": nonce, "Next": next, "Error": msg})
}

// safeNext accepts only a path of the console as where to go after
// sign-in (no other host, no scheme).
func safeNext(n string) bool {
	return strings.HasPrefix(n, "/ui/") && !strings.ContainsAny(n, "\\\r\n") && !strings.HasPrefix(n, "//")
}

// signIn checks the posted token and starts a session.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ck, err := r.Cookie(loginCookie)
	why := ""
	switch {
	case !sameOrigin(r):
		why = "from another site"
	case err != nil:
		why = "no sign-in cookie"
	case !equal(r.PostFormValue("csrf"), ck.Value):
		why = "csrf value does not match"
	}
	if why != "" {
		c.authFailed(r, "csrf")
		c.cfg.Log.Warn().Str("from", r.RemoteAddr).Str("why", why).Str("origin", r.Header.Get("Origin")).
			Str("fetchSite", r.Header.Get("Sec-Fetch-Site")).Msg("console sign-in form refused")
		c.loginPage(w, r, http.StatusForbidden, "The sign-in form expired or came from elsewhere: try again.")
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	hash := api.TokenHash(tok)
	t, err := api.LookupToken(r.Context(), c.cfg.Tokens, hash)
	switch {
	case tok == "" || errors.Is(err, errdefs.ErrUnauthenticated):
		c.authFailed(r, "sign-in")
		c.cfg.Log.Warn().Str("from", r.RemoteAddr).Msg("console sign-in refused")
		c.loginPage(w, r, http.StatusUnauthorized, "That token is not valid: it is unknown, mistyped or revoked.")
		return
	case err != nil:
		c.fail(w, r, nil, err)
		return
	}
	ss, err := c.sessions.create(r.Context(), hash, c.cfg.Now(), c.cfg.SessionTTL)
	if err != nil {
		c.fail(w, r, nil, fmt.Errorf("sign-in: %w", err))
		return
	}
	setCookie(w, sessionCookie, ss.id, c.cfg.SessionTTL)
	clearCookie(w, loginCookie)
	c.cfg.Log.Info().Str("who", t.Name).Str("role", string(t.Role)).Str("from", r.RemoteAddr).Msg("console sign-in")
	next := r.PostFormValue("next")
	if !safeNext(next) {
		next = "/ui/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signOut ends the session.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request, v *viewer) {
	if err := c.sessions.drop(r.Context(), v.s.id); err != nil {
		// The cookie goes all the same, and this controller forgot the
		// session; the store's record lasts until it expires.
		c.cfg.Log.Warn().Err(err).Str("who", v.token.Name).Msg("console sign-out: the session stays in the store until it expires")
	}
	clearCookie(w, sessionCookie)
	c.cfg.Log.Info().Str("who", v.token.Name).Str("from", r.RemoteAddr).Msg("console sign-out")
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
