package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the console.
type Config struct {
	// Controller answers, in-process (the console never calls the API
	// over HTTP).
	Controller api.Controller
	// Tokens is the API's token store: sign-in and every request check
	// against it.
	Tokens store.APITokens
	// Sessions keeps the sessions: the store's, so that every controller
	// on it takes them.
	Sessions store.Sessions
	// SessionTTL is how long a session lasts from sign-in (default 8h).
	SessionTTL time.Duration
	// SessionCacheTTL is how long after the store last confirmed a
	// session it is still taken while the store does not answer (default
	// api.DefaultTokenCacheTTL).
	SessionCacheTTL time.Duration
	// SnapshotTTL is how old the overview's snapshot of the fleet may be
	// (default 2s).
	SnapshotTTL time.Duration
	// PageSize is how many devices a page of the overview lists (default
	// 50).
	PageSize int
	// AuthFailed, if set, counts a request refused for want of a valid
	// session or token, by reason (SECURITY.md F-01's metric).
	AuthFailed func(reason string)
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log zerolog.Logger
}

// Console is the web console's handler, for fleet/api to mount at /ui/.
type Console struct {
	cfg      Config
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
	fleet    fleetCache
}

// New builds the console. It starts nothing.
func New(cfg Config) (*Console, error) {
	if cfg.Controller == nil || cfg.Tokens == nil || cfg.Sessions == nil {
		return nil, fmt.Errorf("console: a controller, a token store and a session store are needed: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.SessionCacheTTL <= 0 {
		cfg.SessionCacheTTL = api.DefaultTokenCacheTTL
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.SnapshotTTL <= 0 {
		cfg.SnapshotTTL = 2 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, pages: pages, sessions: &sessions{st: cfg.Sessions, ttl: cfg.SessionCacheTTL, seen: map[string]cachedSession{}}}
	c.fleet = fleetCache{ctrl: cfg.Controller, ttl: cfg.SnapshotTTL, now: cfg.Now}
	c.mux = c.routes()
	return c, nil
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Scripts, styles, images and fetches from here only, nothing inline;
	// no framing; forms post only here.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer a browser sends
	// "Origin: null" on form posts, and sameOrigin could not tell.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// handler is a page's handler, given who looks.
type handler func(w http.ResponseWriter, r *http.Request, v *viewer)

// need is what a route asks.
type need int

const (
	look   need = iota // a session (GET)
	post               // a session and the CSRF token (POST)
	change             // a session, the CSRF token and an admin token
)

func (c *Console) routes() *http.ServeMux {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticFiles(http.FileServerFS(static))))
	mux.HandleFunc("GET /ui/login", func(w http.ResponseWriter, r *http.Request) { c.loginPage(w, r, http.StatusOK, "") })
	mux.HandleFunc("POST /ui/login", c.signIn)
	mux.Handle("POST /ui/logout", c.with(post, c.signOut))

	mux.Handle("GET /ui/{$}", c.with(look, c.overview))
	mux.Handle("GET /ui/devices/{id}", c.with(look, c.device))
	mux.Handle("POST /ui/devices/{id}/labels", c.with(change, c.labelDevice))
	mux.Handle("POST /ui/devices/{id}/logs", c.with(post, c.deviceLogs))
	mux.Handle("GET /ui/devices/{id}/restart", c.with(look, c.confirmRestart))
	mux.Handle("POST /ui/devices/{id}/restart", c.with(change, c.restart))
	mux.Handle("GET /ui/apps", c.with(look, c.apps))
	mux.Handle("GET /ui/apps/{app}", c.with(look, c.app))
	mux.Handle("GET /ui/apps/{app}/rollout", c.with(look, c.rolloutFragment))
	mux.Handle("GET /ui/apps/{app}/confirm", c.with(look, c.confirmRollout))
	mux.Handle("POST /ui/apps/{app}/rollout", c.with(change, c.rolloutAction))
	mux.Handle("GET /ui/events", c.with(look, c.events))
	mux.Handle("GET /ui/audit", c.with(look, c.audit))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		// Unknown pages say nothing before sign-in either.
		if _, err := c.authenticate(r); err != nil {
			c.loginPage(w, r, http.StatusUnauthorized, "")
			return
		}
		c.fail(w, r, nil, fmt.Errorf("no page %s: %w", r.URL.Path, errdefs.ErrNotFound))
	})
	return mux
}

// staticFiles serves the embedded CSS and JS (nothing of the fleet, so no
// session is needed), cacheable for a while.
func staticFiles(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// with authenticates and guards a handler.
func (c *Console) with(n need, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := c.authenticate(r)
		if errors.Is(err, errSignIn) {
			if isFragment(r) || r.Method != http.MethodGet {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprintln(w, "sign in: /ui/login")
				return
			}
			c.loginPage(w, r, http.StatusUnauthorized, "")
			return
		}
		if err != nil {
			c.fail(w, r, nil, err)
			return
		}
		if n >= post {
			r.Body = http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
			if err := c.checkCSRF(r, v); err != nil {
				c.cfg.Log.Warn().Str("who", v.token.Name).Str("from", r.RemoteAddr).Str("path", r.URL.Path).Err(err).Msg("console request refused")
				c.fail(w, r, v, fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied))
				return
			}
		}
		if n == look {
			// A page may be read without the store's quorum, and then
			// says so (layout.html).
			var ctx context.Context
			ctx, v.stale = store.WithStaleReads(r.Context())
			r = r.WithContext(ctx)
		}
		if n == change && !v.Admin() {
			c.cfg.Log.Warn().Str("who", v.token.Name).Str("from", r.RemoteAddr).Str("path", r.URL.Path).Msg("console change refused: read-only token")
			c.fail(w, r, v, fmt.Errorf("token %q is read-only: an admin token is needed to change the fleet: %w", v.token.Name, errdefs.ErrPermissionDenied))
			return
		}
		h(w, r, v)
	})
}

// isFragment says the request is console.js asking for a part of a page.
func isFragment(r *http.Request) bool { return r.URL.Query().Get("fragment") != "" }

// status maps an error's category to an HTTP status, as the API does.
func status(err error) int {
	switch {
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsConflict(err), errdefs.IsAlreadyExists(err):
		return http.StatusConflict
	case errdefs.IsFailedPrecondition(err):
		return http.StatusPreconditionFailed
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return http.StatusUnauthorized
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsUnavailable(err):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fail shows err as a page (or a line, for a fragment).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	code := status(err)
	if code >= 500 && code != http.StatusServiceUnavailable {
		c.cfg.Log.Error().Err(err).Str("path", r.URL.Path).Msg("console request failed")
	}
	if isFragment(r) || v == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintln(w, cell(err.Error()))
		return
	}
	c.render(w, code, "error", v, map[string]any{"Title": http.StatusText(code), "Error": err.Error()})
}

// render executes a page (or, with a name "page#block", one block of it).
func (c *Console) render(w http.ResponseWriter, code int, name string, v *viewer, data map[string]any) {
	page, block, _ := strings.Cut(name, "#")
	t := c.pages[page]
	if block == "" {
		block = "layout"
	}
	if data == nil {
		data = map[string]any{}
	}
	data["Page"] = page
	data["V"] = v
	if v != nil {
		data["CSRF"] = v.s.csrf
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, block, data); err != nil {
		c.cfg.Log.Error().Err(err).Str("page", name).Msg("console template failed")
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// parsePages parses each page with the layout.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", n, err)
		}
		pages[name] = t
	}
	return pages, nil
}
