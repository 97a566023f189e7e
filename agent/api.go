package agent

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
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

// The local API: HTTP with JSON over a unix socket (a path, mode 0600,
// in a 0700 directory: root only). The CLI uses it while the daemon runs,
// because the daemon holds the image store open.

// maxSpecBytes caps an app spec sent to the API.
const maxSpecBytes = 1 << 20

// AppsResponse is GET /v1/apps.
type AppsResponse struct {
	Generation uint64                `json:"generation"`
	Source     string                `json:"source"`
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

type apiServer struct {
	a   *Agent
	ln  net.Listener
	srv *http.Server
}

func newAPIServer(a *Agent) (*apiServer, error) {
	sock := a.cfg.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api socket %s: another agent is running", sock)
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
	s := &apiServer{a: a, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"status": "ok", "stateDir": a.cfg.StateDir})
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

// Serve answers until ctx ends, then shuts down and removes the socket.
func (s *apiServer) Serve(ctx context.Context) error {
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
	_ = os.Remove(s.a.cfg.Socket)
	return err
}

func (s *apiServer) apps(w http.ResponseWriter, r *http.Request) {
	d, err := s.a.db.Desired()
	if err != nil && !isNotFound(err) {
		replyErr(w, err)
		return
	}
	reply(w, AppsResponse{Generation: d.Generation, Source: d.Source, Apps: s.a.Apps()})
}

func (s *apiServer) apply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxSpecBytes+1))
	if err != nil {
		replyErr(w, err)
		return
	}
	if len(b) > maxSpecBytes {
		replyErr(w, fmt.Errorf("%w: app spec larger than %d bytes", wire.ErrInvalid, maxSpecBytes))
		return
	}
	app, err := wire.ParseApp(b)
	if err != nil {
		replyErr(w, err)
		return
	}
	if err := s.a.Apply(app); err != nil {
		replyErr(w, err)
		return
	}
	reply(w, map[string]string{"app": app.Name, "version": app.Version, "revision": app.Revision()})
}

func (s *apiServer) removeApp(w http.ResponseWriter, r *http.Request) {
	if err := s.a.RemoveApp(r.PathValue("name")); err != nil {
		replyErr(w, err)
		return
	}
	reply(w, map[string]string{"removed": r.PathValue("name")})
}

func (s *apiServer) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.a.images.List()
	if err != nil {
		replyErr(w, err)
		return
	}
	reply(w, imgs)
}

func (s *apiServer) resolveImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.a.images.Get(r.URL.Query().Get("ref"))
	if err != nil {
		replyErr(w, err)
		return
	}
	dirs, err := s.a.images.LayerDirs(img)
	if err != nil {
		replyErr(w, err)
		return
	}
	reply(w, ResolvedImage{Image: img, LayerDirs: dirs})
}

func (s *apiServer) pullImage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := image.PullOptions{Registries: s.a.cfg.RegistryConfig()}
	if p := q.Get("platform"); p != "" {
		var plat ocispec.Platform
		if err := json.Unmarshal([]byte(p), &plat); err != nil {
			replyErr(w, fmt.Errorf("%w: platform: %v", errdefs.ErrInvalidArgument, err))
			return
		}
		opts.Platform = &plat
	}
	img, err := s.a.images.Pull(r.Context(), q.Get("ref"), opts)
	if err != nil {
		replyErr(w, err)
		return
	}
	s.a.wake()
	reply(w, img)
}

func (s *apiServer) loadImage(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.a.images.Load(r.Context(), r.Body)
	if err != nil {
		replyErr(w, err)
		return
	}
	s.a.wake()
	reply(w, imgs)
}

func (s *apiServer) removeImage(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	img, err := s.a.images.Get(ref)
	if err != nil {
		replyErr(w, err)
		return
	}
	ctrs, err := s.a.rt.List()
	if err != nil {
		replyErr(w, err)
		return
	}
	for _, c := range ctrs {
		if c.ImageID == img.ID.String() {
			replyErr(w, fmt.Errorf("%w: image %s is in use by container %s", errdefs.ErrConflict, ref, c.Name))
			return
		}
	}
	if err := s.a.images.Remove(ref); err != nil {
		replyErr(w, err)
		return
	}
	reply(w, img)
}

func (s *apiServer) pruneImages(w http.ResponseWriter, r *http.Request) {
	removed, freed, err := s.a.pruneImages()
	if err != nil {
		replyErr(w, err)
		return
	}
	reply(w, PruneResponse{Removed: removed, Freed: freed})
}

func (s *apiServer) saveImage(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if _, err := s.a.images.Get(ref); err != nil {
		replyErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := s.a.images.Save(r.Context(), ref, w); err != nil {
		// Headers are gone; the client sees a truncated archive, which
		// Load refuses.
		s.a.log.Warn().Err(err).Str("image", ref).Msg("save image")
	}
}

// pruneImages removes images that no container uses and that the agent
// does not keep for a rollback or an update under way.
func (a *Agent) pruneImages() ([]image.Image, int64, error) {
	keep, err := a.keptImages()
	if err != nil {
		return nil, 0, err
	}
	return a.images.Prune(keep)
}

// keptImages are the images that must stay: used by a container, or part
// of a desired, confirmed (rollback) or target version of an app.
func (a *Agent) keptImages() (map[digest.Digest]bool, error) {
	keep := map[digest.Digest]bool{}
	ctrs, err := a.rt.List()
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		keep[digest.Digest(c.ImageID)] = true
	}
	desired, err := a.db.Desired()
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	progress, err := a.db.Progress()
	if err != nil {
		return nil, err
	}
	for _, app := range knownApps(desired.Apps, progress) {
		for _, c := range app.Containers {
			if img, err := a.images.Get(c.Image); err == nil {
				keep[img.ID] = true
			}
		}
	}
	return keep, nil
}

// apiError is how errors travel over the API: a category and a message.
type apiError struct {
	Kind string `json:"kind"`
	Msg  string `json:"error"`
}

func (e *apiError) Error() string { return e.Msg }

// Is lets callers on the client side branch on the same sentinels as in
// process.
func (e *apiError) Is(target error) bool {
	switch e.Kind {
	case "invalid":
		return target == errdefs.ErrInvalidArgument || target == wire.ErrInvalid || target == image.ErrInvalid
	case "notfound":
		return target == ErrNotFound || target == image.ErrNotFound || target == errdefs.ErrNotFound
	case "conflict":
		return target == errdefs.ErrConflict
	case "unauthorized":
		return target == image.ErrUnauthorized
	case "noplatform":
		return target == image.ErrNoPlatform
	case "unreachable":
		return target == image.ErrUnreachable
	}
	return false
}

// isNotFound is an empty state file: no desired document yet.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func classify(err error) (int, string) {
	switch {
	case errors.Is(err, image.ErrNoPlatform):
		return http.StatusBadRequest, "noplatform"
	case errors.Is(err, errdefs.ErrInvalidArgument), errors.Is(err, wire.ErrInvalid), errors.Is(err, image.ErrInvalid):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, ErrNotFound), errors.Is(err, image.ErrNotFound), errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound, "notfound"
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, image.ErrUnauthorized):
		return http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, image.ErrUnreachable):
		return http.StatusBadGateway, "unreachable"
	}
	return http.StatusInternalServerError, "internal"
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, err error) {
	code, kind := classify(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{Kind: kind, Msg: err.Error()})
}
