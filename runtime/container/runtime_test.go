package container

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/runtime/spec"
)

// images is an image store of one image, at the boundary Create needs.
type images struct{ dir string }

func (i images) Get(ref string) (image.Image, error) {
	if ref != "test:latest" {
		return image.Image{}, fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
	}
	var img image.Image
	img.ID = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	img.Config.Config = ocispec.ImageConfig{Entrypoint: []string{"/workload"}, Cmd: []string{"sleep", "1"}}
	return img, nil
}

func (i images) LayerDirs(image.Image) ([]string, error) { return []string{i.dir}, nil }

// newRuntime is a Runtime in a temporary root whose log goes to buf.
func newRuntime(t *testing.T, buf *bytes.Buffer) *Runtime {
	t.Helper()
	var w io.Writer = zerolog.NewTestWriter(t)
	if buf != nil {
		w = io.MultiWriter(w, &syncWriter{w: buf})
	}
	r, err := New(t.TempDir(), images{dir: t.TempDir()}, zerolog.New(w))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func create(t *testing.T, r *Runtime, name string) *Container {
	t.Helper()
	c, err := r.Create(context.Background(), CreateOptions{Name: name, Image: "test:latest"})
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return c
}

func TestCreate_Defaults(t *testing.T) {
	r := newRuntime(t, nil)
	c := create(t, r, "")
	if c.Name != ShortID(c.ID) || len(c.ID) != 64 {
		t.Errorf("unnamed container: name %q, id %q; want the short ID as its name", c.Name, c.ID)
	}
	if c.StopGrace != 10*time.Second || c.State.Status != Created || c.Cgroup != "/tender/"+c.ID {
		t.Errorf("defaults: grace %v, status %q, cgroup %q", c.StopGrace, c.State.Status, c.Cgroup)
	}
	d := create(t, r, "my_web.1")
	if d.Spec.Hostname != "my-web.1" {
		t.Errorf("hostname of my_web.1 = %q, want my-web.1", d.Spec.Hostname)
	}
	got, err := r.Get(d.ID)
	if err != nil || got.Name != "my_web.1" || got.State.Status != Created {
		t.Errorf("Get by ID = %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(d), "upper")); err != nil {
		t.Errorf("upper dir: %v", err)
	}
}

func TestCreate_RefusesBadNamesAndConflicts(t *testing.T) {
	r := newRuntime(t, nil)
	for _, name := range []string{"-web", "we b", "web/1", strings.Repeat("a", 64), "é"} {
		if _, err := r.Create(context.Background(), CreateOptions{Name: name, Image: "test:latest"}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("name %q: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	create(t, r, "web")
	if _, err := r.Create(context.Background(), CreateOptions{Name: "web", Image: "test:latest"}); !errdefs.IsConflict(err) {
		t.Errorf("second web: err = %v, want ErrConflict", err)
	}
	if _, err := r.Create(context.Background(), CreateOptions{Image: "nope:latest"}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown image: err = %v, want ErrNotFound", err)
	}
	_, err := r.Create(context.Background(), CreateOptions{Image: "test:latest", Options: spec.Options{Volumes: []spec.Volume{{Source: "", Target: "/x"}}}})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("empty volume source: err = %v, want ErrInvalidArgument", err)
	}
	_, err = r.Create(context.Background(), CreateOptions{Image: "test:latest", Options: spec.Options{Volumes: []spec.Volume{{Source: "/srv", Target: "/sys/fs/cgroup"}}}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "/sys/fs/cgroup is managed by the runtime") {
		t.Errorf("volume on /sys/fs/cgroup: err = %v, want ErrInvalidArgument naming the path", err)
	}
	_, err = r.Create(context.Background(), CreateOptions{Image: "test:latest", Options: spec.Options{Args: []string{"env"}, Env: []string{"BIG=" + strings.Repeat("x", 200<<10)}}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "environment variable BIG") {
		t.Errorf("a 200 KiB environment value: err = %v, want ErrInvalidArgument naming it", err)
	}
	all, err := r.List()
	if err != nil || len(all) != 1 {
		t.Errorf("after refusals: %d containers, %v; want only web", len(all), err)
	}
}

func TestGet_Lookup(t *testing.T) {
	r := newRuntime(t, nil)
	a, b := create(t, r, "alpha"), create(t, r, "beta")
	for ref, want := range map[string]string{
		"alpha": a.ID, "beta": b.ID, a.ID: a.ID, b.ID[:12]: b.ID, a.ID[:4]: a.ID,
	} {
		if a.ID[:4] == b.ID[:4] && ref == a.ID[:4] {
			continue // the random IDs share a prefix: covered below
		}
		c, err := r.Get(ref)
		if err != nil || c.ID != want {
			t.Errorf("Get(%q) = %v, %v; want %s", ref, c, err, want)
		}
	}
	for _, ref := range []string{"", "gamma", a.ID[:3], a.ID + "0"} {
		if _, err := r.Get(ref); !errdefs.IsNotFound(err) {
			t.Errorf("Get(%q): err = %v, want ErrNotFound", ref, err)
		}
	}
	// A prefix of two IDs is ambiguous: say so rather than pick one.
	c := &Container{Config: Config{ID: a.ID[:8] + strings.Repeat("f", 56), Name: "gamma", Created: time.Now()}, State: State{Status: Created}}
	if err := r.makeDir(filepath.Join(r.dir, c.ID), c, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(a.ID[:8]); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "matches 2 containers") {
		t.Errorf("ambiguous prefix: err = %v, want ErrInvalidArgument naming 2 matches", err)
	}
}

// A container whose process and monitor are both gone shows as exited with
// an exit time, never the zero time ("Exited (-1) 106751 days ago").
func TestList_LostContainerHasExitTime(t *testing.T) {
	r := newRuntime(t, nil)
	c := create(t, r, "lost")
	started := time.Now().Add(-time.Hour).UTC()
	c.State = State{Status: Running, Pid: 1 << 30, PidStart: 1, MonitorPid: 1<<30 - 1, StartedAt: started}
	if err := r.saveState(c); err != nil {
		t.Fatal(err)
	}
	got, err := r.Get("lost")
	if err != nil {
		t.Fatal(err)
	}
	st := got.State
	if st.Status != Exited || st.ExitCode != -1 || st.FinishedAt.IsZero() || st.FinishedAt.Before(started) {
		t.Errorf("lost container state = %+v; want exited, -1, a finish time after its start", st)
	}
}

func TestList_RefusesUnknownStatus(t *testing.T) {
	var logs bytes.Buffer
	r := newRuntime(t, &logs)
	c := create(t, r, "odd")
	c.State.Status = "paused"
	if err := r.saveState(c); err != nil {
		t.Fatal(err)
	}
	all, err := r.List()
	if err != nil || len(all) != 0 || !strings.Contains(logs.String(), `unknown status \"paused\"`) {
		t.Errorf("List = %d containers, %v, log %q; want none and a warning naming the status", len(all), err, logs.String())
	}
}

func TestStatus_Valid(t *testing.T) {
	for _, s := range Statuses {
		if !s.Valid() {
			t.Errorf("%q not valid", s)
		}
	}
	for _, s := range []Status{"", "Running", "removing"} {
		if s.Valid() {
			t.Errorf("%q valid", s)
		}
	}
}

// ps racing create must see whole containers or none, and never warn about
// a half-written one.
func TestList_DuringCreate(t *testing.T) {
	var logs bytes.Buffer
	r := newRuntime(t, &logs)
	const n = 40
	done := make(chan struct{})
	var lists int
	go func() {
		defer close(done)
		for {
			all, err := r.List()
			if err != nil {
				t.Error(err)
				return
			}
			lists++
			for _, c := range all {
				if c.Spec == nil || c.State.Status != Created {
					t.Errorf("listed a partial container: %+v", c)
				}
			}
			if len(all) == n {
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		create(t, r, fmt.Sprintf("c%d", i))
	}
	<-done
	if strings.Contains(logs.String(), "skipping unreadable container") {
		t.Errorf("List warned about a container being created:\n%s", logs.String())
	}
	if lists < 2 {
		t.Errorf("List ran %d times: no overlap with the creates", lists)
	}
}

// The shim's copy to the CLI stops at the first failed write (the reader
// went away) and never fails the log's copy.
func TestTolerantWriter(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	tw := &tolerant{w: w}
	for i := 0; i < 3; i++ {
		if n, err := tw.Write([]byte("tick\n")); n != 5 || err != nil {
			t.Fatalf("write %d to a closed pipe: %d, %v", i, n, err)
		}
	}
	if !tw.broken {
		t.Error("not marked broken after EPIPE")
	}
	w.Close()
}

// A start failure travels from the shim to its starter with its category.
func TestReportedError(t *testing.T) {
	if err := (&reportedError{Msg: "bad", Invalid: true}); !errdefs.IsInvalidArgument(err) || err.Error() != "bad" {
		t.Errorf("invalid: %v", err)
	}
	if err := (&reportedError{Msg: "broke"}); errdefs.IsInvalidArgument(err) {
		t.Errorf("runtime failure classified as invalid input: %v", err)
	}
}

// A create that died half way leaves a hidden directory that List never
// shows and the next create removes.
func TestCreate_RemovesAbandonedCreates(t *testing.T) {
	r := newRuntime(t, nil)
	left := filepath.Join(r.dir, creatingPrefix+strings.Repeat("a", 64))
	if err := os.MkdirAll(filepath.Join(left, "upper"), 0o700); err != nil {
		t.Fatal(err)
	}
	if all, err := r.List(); err != nil || len(all) != 0 {
		t.Errorf("List = %d containers, %v; want none", len(all), err)
	}
	create(t, r, "next")
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("abandoned create still there: %v", err)
	}
}
