package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
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

// maxSessions bounds the session table; the oldest go first.
const maxSessions = 10000

// session is one signed-in browser.
type session struct {
	id        string
	tokenHash string
	csrf      string
	expires   time.Time
	created   time.Time
}

// sessions is the server-side session table.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("console: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

func (s *sessions) create(tokenHash string, now time.Time, ttl time.Duration) *session {
	ss := &session{id: randomHex(32), tokenHash: tokenHash, csrf: randomHex(32), created: now, expires: now.Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.m {
		if !now.Before(o.expires) {
			delete(s.m, id)
		}
	}
	for len(s.m) >= maxSessions {
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[ss.id] = ss
	return ss
}

func (s *sessions) get(id string, now time.Time) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss != nil && !now.Before(ss.expires) {
		delete(s.m, id)
		return nil
	}
	return ss
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// viewer is who is looking: the session and its token as of this request.
type viewer struct {
	s      *session
	token  store.APIToken
	caller api.Caller
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
	ss := c.sessions.get(ck.Value, c.cfg.Now())
	if ss == nil {
		c.authFailed(r, "unknown")
		return nil, errSignIn
	}
	t, err := api.LookupToken(r.Context(), c.cfg.Tokens, ss.tokenHash)
	switch {
	case errors.Is(err, errdefs.ErrUnauthenticated):
		// Revoked since sign-in: the session ends here.
		c.sessions.drop(ss.id)
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
	ss := c.sessions.create(hash, c.cfg.Now(), c.cfg.SessionTTL)
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
	c.sessions.drop(v.s.id)
	clearCookie(w, sessionCookie)
	c.cfg.Log.Info().Str("who", v.token.Name).Str("from", r.RemoteAddr).Msg("console sign-out")
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
