package api

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/store"
)

// Body caps.
const (
	// MaxSpecBytes caps an app spec (POST /v1/apps).
	MaxSpecBytes = 1 << 20
	// MaxBodyBytes caps every other request body.
	MaxBodyBytes = 64 << 10
)

// shutdownTimeout bounds the graceful shutdown of Serve.
const shutdownTimeout = 10 * time.Second

//go:embed openapi.json
var openAPI []byte

// Config configures a Server.
type Config struct {
	// Addr is the address Serve listens on (host:port).
	Addr string
	// TLS is the server's TLS configuration; nil serves plain HTTP, which
	// the controller does only when the operator asks for it.
	TLS *tls.Config
	// Controller answers the requests.
	Controller Controller
	// Tokens authenticates the bearer tokens.
	Tokens store.APITokens
	// Enroll, if set, is mounted at POST /v1/enroll without bearer
	// authentication: the join token in the request authenticates it.
	Enroll http.Handler
	// MetricsOpen serves /metrics without a token, for a scraper on a
	// trusted network; by default /metrics takes any valid token, a
	// read-only one included.
	MetricsOpen bool
	// Console, if set, is the web console, mounted at /ui/ as is (it
	// authenticates its own requests, with the same tokens); GET / sends
	// a browser there. It is no route of the API (nor of openapi.json).
	Console http.Handler
	Log     zerolog.Logger
	// Registry holds the metrics; nil: a new one, with the Go and
	// process collectors.
	Registry *prometheus.Registry
}

// Server is the fleet controller's HTTP API.
type Server struct {
	cfg     Config
	handler http.Handler
	routes  []route
	metrics *Metrics
	reg     *prometheus.Registry
}

// access is what a route asks of the caller.
type access int

const (
	public access = iota // no token (healthz, openapi, enroll)
	read                 // any valid token
	write                // an admin token
)

// route is one row of the API: the mux serves it, the OpenAPI document
// describes it (TestOpenAPI_MatchesRoutes compares them).
type route struct {
	method, path string
	access       access
	status       int // on success; 0: 200, or 204 when the handler returns nil
	handle       func(r *http.Request, who Caller) (any, error)
	raw          http.Handler // instead of handle: served as is
}

// NewServer builds the API. It starts nothing: Serve does.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Controller == nil {
		return nil, fmt.Errorf("api server: no controller: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Tokens == nil {
		return nil, fmt.Errorf("api server: no token store: %w", errdefs.ErrInvalidArgument)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{cfg: cfg, reg: reg, metrics: newMetrics(reg)}
	s.routes = s.routeTable()
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		mux.Handle(rt.method+" "+rt.path, s.wrap(rt))
	}
	unmatched := s.wrap(route{path: "unmatched", access: public, handle: func(r *http.Request, _ Caller) (any, error) {
		return nil, fmt.Errorf("no route %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound)
	}})
	if cfg.Console != nil {
		mux.Handle("/ui/", cfg.Console)
		unmatched = toConsole(unmatched)
	}
	mux.Handle("/", unmatched)
	s.handler = mux
	return s, nil
}

// Metrics are the server's metrics, for the controller to update.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler is the API's handler (tests, or a server of the caller's own).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve listens on Config.Addr and serves until ctx ends, then shuts down
// gracefully.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", s.cfg.Addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln (TLS on top when Config.TLS is set) until
// ctx ends; it closes ln.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	} else {
		s.cfg.Log.Warn().Str("addr", ln.Addr().String()).Msg("api serving plain http")
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(debugWriter{s.cfg.Log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.cfg.Log.Info().Str("addr", ln.Addr().String()).Bool("tls", s.cfg.TLS != nil).Msg("api serving")
	select {
	case err := <-errc:
		return fmt.Errorf("api serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("api shutdown: %w", err)
	}
	<-errc
	return nil
}

// toConsole sends a browser's GET / to the console; everything else,
// and a client that does not ask for HTML, gets next (the API's 404).
func toConsole(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status code for the metrics and the log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// wrap authenticates, runs the route and answers in JSON.
func (s *Server) wrap(rt route) http.Handler {
	label := rt.path
	if rt.method != "" {
		label = rt.method + " " + rt.path
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		who, err := s.authenticate(r, rt.access)
		switch {
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="tender"`)
			writeError(w, err)
		case rt.raw != nil:
			rt.raw.ServeHTTP(w, r)
		default:
			var stale *store.StaleReads
			if rt.method == http.MethodGet {
				// A read may be answered without the store's quorum,
				// and says so (stale.go).
				var ctx context.Context
				ctx, stale = store.WithStaleReads(r.Context())
				r = r.WithContext(ctx)
			}
			out, err := rt.handle(r, who)
			if st, ok := stale.Stale(); ok && err == nil {
				out = markStale(w, out, st)
			}
			switch {
			case err != nil:
				writeError(w, err)
				if code, _ := classify(err); code >= 500 {
					s.cfg.Log.Error().Err(err).Str("route", label).Str("who", who.Name).Msg("api request failed")
				}
			case out == nil:
				w.WriteHeader(http.StatusNoContent)
			default:
				writeJSON(w, cmp(rt.status, http.StatusOK), out)
			}
		}
		code := cmp(sw.code, http.StatusOK)
		s.metrics.Requests.WithLabelValues(label, strconv.Itoa(code)).Inc()
		s.cfg.Log.Debug().Str("route", label).Int("code", code).Str("who", who.Name).
			Str("from", r.RemoteAddr).Dur("took", time.Since(start)).Msg("api request")
	})
}

func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// errUnauthenticated is the one answer to a missing, unknown or revoked
// token: it says nothing of the fleet, nor which of the three it was.
var errUnauthenticated = fmt.Errorf("missing, unknown or revoked bearer token: %w", errdefs.ErrUnauthenticated)

// authenticate checks the bearer token against the route's access.
// Tokens are looked up by the hex sha256 of their value and never logged.
func (s *Server) authenticate(r *http.Request, need access) (Caller, error) {
	who := Caller{From: r.RemoteAddr}
	if need == public {
		return who, nil
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "bearer") || token == "" {
		return who, s.refuse(r, "missing", errUnauthenticated)
	}
	t, err := LookupToken(r.Context(), s.cfg.Tokens, TokenHash(token))
	switch {
	case errors.Is(err, errUnauthenticated) && t.Revoked:
		return who, s.refuse(r, "revoked", err)
	case errors.Is(err, errUnauthenticated):
		return who, s.refuse(r, "unknown", err)
	case err != nil:
		s.cfg.Log.Error().Err(err).Msg("api token lookup failed")
		return who, fmt.Errorf("token store: %w", errdefs.ErrUnavailable) // its details stay in the log
	}
	who.Name, who.Role = t.Name, t.Role
	switch {
	case t.Role == store.RoleAdmin:
	case t.Role == store.RoleReadOnly && need == read:
	default:
		return who, s.refuse(r, "forbidden", fmt.Errorf("token %q (role %s) may not %s %s: an admin token is needed: %w",
			t.Name, t.Role, r.Method, r.URL.Path, errdefs.ErrPermissionDenied))
	}
	return who, nil
}

// TokenHash is the key an API token's value is stored under: its hex
// sha256. The value itself is never stored nor logged.
func TokenHash(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:])
}

// LookupToken returns the valid token stored under hash. An unknown or a
// revoked token is one error, errdefs.ErrUnauthenticated, that says
// nothing of the fleet (a revoked one is returned with it, Revoked set,
// for the caller's metrics); a store that does not answer is
// errdefs.ErrUnavailable. The API and the console's sessions both check
// tokens through it.
func LookupToken(ctx context.Context, tokens store.APITokens, hash string) (store.APIToken, error) {
	t, err := tokens.Get(ctx, hash)
	switch {
	case errdefs.IsNotFound(err):
		return store.APIToken{}, errUnauthenticated
	case err != nil:
		return store.APIToken{}, fmt.Errorf("token store: %v: %w", err, errdefs.ErrUnavailable)
	case t.Revoked:
		return t, errUnauthenticated
	}
	return t, nil
}

func (s *Server) refuse(r *http.Request, reason string, err error) error {
	s.metrics.AuthFailures.WithLabelValues(reason).Inc()
	s.cfg.Log.Warn().Str("reason", reason).Str("from", r.RemoteAddr).Str("method", r.Method).
		Str("path", r.URL.Path).Msg("api request refused")
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code, kind := classify(err)
	writeJSON(w, code, Error{Kind: kind, Msg: err.Error()})
}

// body reads the request body, at most limit bytes.
func body(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fmt.Errorf("%w: the limit is %d bytes", ErrBodyTooLarge, mbe.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

// decode reads a JSON body into v, strictly (unknown fields refused). An
// empty body leaves v as it is.
func decode(r *http.Request, v any) error {
	b, err := body(r, MaxBodyBytes)
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return fmt.Errorf("request body: more than one JSON value: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// queryInt parses an optional non-negative integer query parameter.
func queryUint(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("query parameter %s=%q: not a non-negative integer: %w", name, v, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// queryBool parses an optional boolean query parameter (true/false, 1/0).
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("query parameter %s=%q: want true or false: %w", name, v, errdefs.ErrInvalidArgument)
	}
	return b, nil
}

// page is the limit query parameter: DefaultPage if absent, at most
// MaxPage.
func page(r *http.Request) (int, error) {
	n, err := queryUint(r, "limit")
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return DefaultPage, nil
	case n > MaxPage:
		return 0, fmt.Errorf("query parameter limit=%d: at most %d: %w", n, MaxPage, errdefs.ErrInvalidArgument)
	}
	return int(n), nil
}

// routeTable is the API. Keep openapi.json in step (the test says when
// not).
func (s *Server) routeTable() []route {
	c := s.cfg.Controller
	rts := []route{
		{method: "GET", path: "/healthz", access: public, handle: func(*http.Request, Caller) (any, error) {
			return Health{Status: "ok"}, nil
		}},
		{method: "GET", path: "/metrics", access: read, raw: promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})},
		{method: "GET", path: "/v1/openapi.json", access: public, raw: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openAPI)
		})},

		{method: "GET", path: "/v1/devices", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			sel, err := ParseSelector(r.URL.Query().Get("selector"))
			if err != nil {
				return nil, err
			}
			return nonNil(c.Devices(r.Context(), sel))
		}},
		{method: "GET", path: "/v1/devices/{id}", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return c.Device(r.Context(), r.PathValue("id"))
		}},
		{method: "PATCH", path: "/v1/devices/{id}", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			var req LabelRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if len(req.Set) == 0 && len(req.Remove) == 0 {
				return nil, fmt.Errorf("label device %s: no label to set or remove: %w", r.PathValue("id"), errdefs.ErrInvalidArgument)
			}
			return c.LabelDevice(r.Context(), who, r.PathValue("id"), req.Set, req.Remove)
		}},
		{method: "DELETE", path: "/v1/devices/{id}", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			return nil, c.RemoveDevice(r.Context(), who, r.PathValue("id"))
		}},
		// Logs only reads (a read-only token may), though it sends the
		// device a command: the caller still goes to the audit.
		{method: "POST", path: "/v1/devices/{id}/logs", access: read, handle: func(r *http.Request, who Caller) (any, error) {
			req := LogsRequest{Lines: DefaultLogLines}
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if req.App == "" {
				return nil, fmt.Errorf("logs of device %s: no app given: %w", r.PathValue("id"), errdefs.ErrInvalidArgument)
			}
			if req.Lines <= 0 || req.Lines > MaxLogLines {
				return nil, fmt.Errorf("logs: lines %d: between 1 and %d: %w", req.Lines, MaxLogLines, errdefs.ErrInvalidArgument)
			}
			return c.Logs(r.Context(), who, r.PathValue("id"), req.App, req.Container, req.Lines)
		}},
		{method: "POST", path: "/v1/devices/{id}/restart", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			var req RestartRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if req.App == "" {
				return nil, fmt.Errorf("restart on device %s: no app given: %w", r.PathValue("id"), errdefs.ErrInvalidArgument)
			}
			return c.Restart(r.Context(), who, r.PathValue("id"), req.App, req.Container)
		}},

		{method: "POST", path: "/v1/tokens", access: write, status: http.StatusCreated, handle: func(r *http.Request, who Caller) (any, error) {
			var req JoinTokenRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if req.TTL < 0 || req.Uses < 0 {
				return nil, fmt.Errorf("join token: ttl %s and uses %d must not be negative: %w", req.TTL, req.Uses, errdefs.ErrInvalidArgument)
			}
			return c.CreateJoinToken(r.Context(), who, req)
		}},

		{method: "POST", path: "/v1/api-tokens", access: write, status: http.StatusCreated, handle: func(r *http.Request, who Caller) (any, error) {
			var req APITokenRequest
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			return c.CreateAPIToken(r.Context(), who, req)
		}},
		// Any valid token may list them: the list holds names, roles and
		// dates, never a value or a hash, and the audit log, which a
		// read-only token reads too, names every token that changed
		// something already. A read-only token (a dashboard's) can so
		// see that it is still valid and who else is.
		{method: "GET", path: "/v1/api-tokens", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return nonNil(c.APITokens(r.Context()))
		}},
		{method: "DELETE", path: "/v1/api-tokens/{name}", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			return c.RevokeAPIToken(r.Context(), who, r.PathValue("name"))
		}},

		{method: "POST", path: "/v1/apps", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			spec, err := body(r, MaxSpecBytes)
			if err != nil {
				return nil, err
			}
			if len(strings.TrimSpace(string(spec))) == 0 {
				return nil, fmt.Errorf("apply: empty spec: %w", errdefs.ErrInvalidArgument)
			}
			return c.Apply(r.Context(), who, spec)
		}},
		{method: "GET", path: "/v1/apps", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return nonNil(c.Apps(r.Context()))
		}},
		{method: "GET", path: "/v1/apps/{app}", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return c.App(r.Context(), r.PathValue("app"))
		}},
		{method: "DELETE", path: "/v1/apps/{app}", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			now, err := queryBool(r, "now")
			if err != nil {
				return nil, err
			}
			return c.RemoveApp(r.Context(), who, r.PathValue("app"), now)
		}},
		{method: "GET", path: "/v1/apps/{app}/history", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return nonNil(c.AppHistory(r.Context(), r.PathValue("app")))
		}},
		{method: "GET", path: "/v1/apps/{app}/explain", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return c.Explain(r.Context(), r.PathValue("app"), r.URL.Query().Get("device"))
		}},
		{method: "GET", path: "/v1/apps/{app}/rollout", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return c.Rollout(r.Context(), r.PathValue("app"))
		}},
		{method: "POST", path: "/v1/apps/{app}/rollout/{command}", access: write, handle: func(r *http.Request, who Caller) (any, error) {
			cmd := r.PathValue("command")
			if !slices.Contains(RolloutCommands, cmd) {
				return nil, fmt.Errorf("rollout command %q: not one of %s: %w", cmd, strings.Join(RolloutCommands, ", "), errdefs.ErrInvalidArgument)
			}
			return c.RolloutCommand(r.Context(), who, r.PathValue("app"), cmd)
		}},

		{method: "GET", path: "/v1/events", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			q := r.URL.Query()
			f := EventFilter{Device: q.Get("device"), App: q.Get("app"), Kind: q.Get("kind")}
			var err error
			if f.After, err = queryUint(r, "after"); err != nil {
				return nil, err
			}
			if f.Limit, err = page(r); err != nil {
				return nil, err
			}
			return nonNil(c.Events(r.Context(), f))
		}},
		{method: "GET", path: "/v1/audit", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			after, err := queryUint(r, "after")
			if err != nil {
				return nil, err
			}
			limit, err := page(r)
			if err != nil {
				return nil, err
			}
			return nonNil(c.Audit(r.Context(), after, limit))
		}},
		{method: "GET", path: "/v1/status", access: read, handle: func(r *http.Request, _ Caller) (any, error) {
			return c.Status(r.Context())
		}},
	}
	if s.cfg.MetricsOpen {
		rts[1].access = public
	}
	if s.cfg.Enroll != nil {
		rts = append(rts, route{method: "POST", path: "/v1/enroll", access: public, raw: s.cfg.Enroll})
	}
	return rts
}

// nonNil turns a nil list into an empty one, so that JSON says [] and
// not null.
func nonNil[T any](v []T, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []T{}
	}
	return v, nil
}

// debugWriter takes net/http's own messages (TLS handshake errors from
// clients that do not trust the CA, ...) into the log at debug level.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Str("error", strings.TrimSpace(string(p))).Msg("api http server")
	return len(p), nil
}
