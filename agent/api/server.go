package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

// Agent is what the API needs of the agent.
type Agent interface {
	Apps() []reconcile.AppStatus
	Desired() (store.Desired, error)
	Apply(app wire.App) error
	RemoveApp(name string) error
	// RemoveImage removes an image no container uses (ErrConflict else).
	RemoveImage(ref string) (image.Image, error)
	// PruneImages removes what no container uses and the agent does not
	// keep for a rollback or an update under way.
	PruneImages() ([]image.Image, int64, error)
	Wake()
}

// Images is what the API needs of the image store.
type Images interface {
	Get(ref string) (image.Image, error)
	LayerDirs(img image.Image) ([]string, error)
	List() ([]image.Image, error)
	Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error)
	Load(ctx context.Context, r io.Reader) ([]image.Image, error)
	Save(ctx context.Context, ref string, w io.Writer) error
}

// Config says where the API listens and what it tells clients.
type Config struct {
	Socket     string
	StateDir   string
	Registries image.RegistryConfig
}

// maxSpecBytes caps an app spec sent to the API.
const maxSpecBytes = 1 << 20

// AppsResponse is GET /v1/apps.
type AppsResponse struct {
	Generation uint64                `json:"generation"`
	Source     store.Source          `json:"source"`
	Apps       []reconcile.AppStatus `json:"apps"`
}

// ResolvedImage is GET /v1/images/resolve: an image and its layer dirs.
type ResolvedImage struct {
	Image     image.Image `json:"image"`
	LayerDirs []string    `json:"layerDirs"`
}

// PruneResponse is POST /v1/images/prune.
type PruneResponse struct {
	Removed []image.Image `json:"removed"`
	Freed   int64         `json:"freed"`
}

// Server answers the local API.
type Server struct {
	cfg    Config
	agent  Agent
	images Images
	log    zerolog.Logger
	ln     net.Listener
	srv    *http.Server
}

// NewServer binds the socket (refusing if another agent answers on it)
// and prepares the handlers; Serve answers.
func NewServer(cfg Config, agent Agent, images Images, log zerolog.Logger) (*Server, error) {
	sock := cfg.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api socket %s: another agent is running: %w", sock, errdefs.ErrAlreadyExists)
	}
	_ = os.Remove(sock) // stale, from an agent that was killed
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	s := &Server{cfg: cfg, agent: agent, images: images, log: log, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"status": "ok", "stateDir": cfg.StateDir})
	})
	mux.HandleFunc("GET /v1/apps", s.apps)
	mux.HandleFunc("POST /v1/apps", s.apply)
	mux.HandleFunc("DELETE /v1/apps/{name}", s.removeApp)
	mux.HandleFunc("GET /v1/images", s.listImages)
	mux.HandleFunc("GET /v1/images/resolve", s.resolveImage)
	mux.HandleFunc("POST /v1/images/pull", s.pullImage)
	mux.HandleFunc("POST /v1/images/load", s.loadImage)
	mux.HandleFunc("POST /v1/images/remove", s.removeImage)
	mux.HandleFunc("POST /v1/images/prune", s.pruneImages)
	mux.HandleFunc("GET /v1/images/save", s.saveImage)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Serve answers until ctx ends, then shuts down (waiting for requests in
// flight, at most 5s) and removes the socket.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-errc // Serve has returned http.ErrServerClosed
	_ = os.Remove(s.cfg.Socket)
	return err
}

// Close releases the socket of a server that never served.
func (s *Server) Close() error {
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil // Serve has closed it
	}
	_ = os.Remove(s.cfg.Socket)
	return err
}

func (s *Server) apps(w http.ResponseWriter, r *http.Request) {
	d, err := s.agent.Desired()
	if err != nil && !errdefs.IsNotFound(err) {
		s.replyErr(w, err)
		return
	}
	reply(w, AppsResponse{Generation: d.Generation, Source: d.Source, Apps: s.agent.Apps()})
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxSpecBytes+1))
	if err != nil {
		s.replyErr(w, err)
		return
	}
	if len(b) > maxSpecBytes {
		s.replyErr(w, fmt.Errorf("app spec larger than %d bytes: %w", maxSpecBytes, errdefs.ErrInvalidArgument))
		return
	}
	app, err := wire.ParseApp(b)
	if err != nil {
		s.replyErr(w, err)
		return
	}
	if err := s.agent.Apply(app); err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, map[string]string{"app": app.Name, "version": app.Version, "revision": app.Revision()})
}

func (s *Server) removeApp(w http.ResponseWriter, r *http.Request) {
	if err := s.agent.RemoveApp(r.PathValue("name")); err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, map[string]string{"removed": r.PathValue("name")})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.images.List()
	if err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, imgs)
}

func (s *Server) resolveImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.images.Get(r.URL.Query().Get("ref"))
	if err != nil {
		s.replyErr(w, err)
		return
	}
	dirs, err := s.images.LayerDirs(img)
	if err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, ResolvedImage{Image: img, LayerDirs: dirs})
}

func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := image.PullOptions{Registries: s.cfg.Registries}
	if p := q.Get("platform"); p != "" {
		var plat ocispec.Platform
		if err := json.Unmarshal([]byte(p), &plat); err != nil {
			s.replyErr(w, fmt.Errorf("platform: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		opts.Platform = &plat
	}
	img, err := s.images.Pull(r.Context(), q.Get("ref"), opts)
	if err != nil {
		s.replyErr(w, err)
		return
	}
	s.agent.Wake()
	reply(w, img)
}

func (s *Server) loadImage(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.images.Load(r.Context(), r.Body)
	if err != nil {
		s.replyErr(w, err)
		return
	}
	s.agent.Wake()
	reply(w, imgs)
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.agent.RemoveImage(r.URL.Query().Get("ref"))
	if err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, img)
}

func (s *Server) pruneImages(w http.ResponseWriter, r *http.Request) {
	removed, freed, err := s.agent.PruneImages()
	if err != nil {
		s.replyErr(w, err)
		return
	}
	reply(w, PruneResponse{Removed: removed, Freed: freed})
}

func (s *Server) saveImage(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if _, err := s.images.Get(ref); err != nil {
		s.replyErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := s.images.Save(r.Context(), ref, w); err != nil {
		// Headers are gone; the client sees a truncated archive, which
		// Load refuses.
		s.log.Warn().Err(err).Str("image", ref).Msg("save image")
	}
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// replyErr answers with err's category and message; an error of no
// category is logged here, where it is handled.
func (s *Server) replyErr(w http.ResponseWriter, err error) {
	code, kind := classify(err)
	if kind == "internal" {
		s.log.Warn().Err(err).Msg("api request failed")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(Error{Kind: kind, Msg: err.Error()})
}
