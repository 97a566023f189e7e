package agent

// Unit tests of the shell's own decisions through its narrow interfaces.
// The container runtime is a FAKE here (fakeRuntime: containers are plain
// records, nothing runs): what these tests check is what the shell decides
// to ask of it. The real runtime is exercised end to end by test/e2e; the
// store is a real bbolt file.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tender-edge/tender/agent/policy"
	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

type fakeRuntime struct {
	mu    sync.Mutex
	now   func() time.Time
	ctrs  map[string]*container.Container // by ID
	seq   int
	calls []string // "create NAME", "start NAME", "stop NAME", "delete NAME"
}

func newFakeRuntime(now func() time.Time) *fakeRuntime {
	return &fakeRuntime{now: now, ctrs: map[string]*container.Container{}}
}

func (f *fakeRuntime) add(c *container.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if c.ID == "" {
		c.ID = fmt.Sprintf("%064x", f.seq)
	}
	c.Created = f.now().Add(time.Duration(f.seq) * time.Millisecond)
	f.ctrs[c.ID] = c
}

func (f *fakeRuntime) List() ([]*container.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*container.Container
	for _, c := range f.ctrs {
		cc := *c
		out = append(out, &cc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

func (f *fakeRuntime) getLocked(ref string) (*container.Container, error) {
	for _, c := range f.ctrs {
		if c.ID == ref || c.Name == ref {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no such container %q: %w", ref, errdefs.ErrNotFound)
}

func (f *fakeRuntime) Get(ref string) (*container.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.getLocked(ref)
	if err != nil {
		return nil, err
	}
	cc := *c
	return &cc, nil
}

func (f *fakeRuntime) Create(_ context.Context, o container.CreateOptions) (*container.Container, error) {
	c := &container.Container{Config: container.Config{Name: o.Name, Image: o.Image, Labels: o.Labels}, State: container.State{Status: container.Created}}
	f.add(c)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "create "+o.Name)
	cc := *c
	return &cc, nil
}

func (f *fakeRuntime) StartDetached(ref string) (*container.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.getLocked(ref)
	if err != nil {
		return nil, err
	}
	c.State = container.State{Status: container.Running, StartedAt: f.now()}
	f.calls = append(f.calls, "start "+c.Name)
	cc := *c
	return &cc, nil
}

func (f *fakeRuntime) Stop(ref string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.getLocked(ref)
	if err != nil {
		return err
	}
	if c.State.Status == container.Running {
		c.State.Status, c.State.FinishedAt, c.State.ExitCode = container.Exited, f.now(), 143
	}
	f.calls = append(f.calls, "stop "+c.Name)
	return nil
}

func (f *fakeRuntime) Delete(ref string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.getLocked(ref)
	if err != nil {
		return err
	}
	delete(f.ctrs, c.ID)
	f.calls = append(f.calls, "delete "+c.Name)
	return nil
}

func (f *fakeRuntime) Stats(*container.Container) (cgroups.Stats, error) {
	return cgroups.Stats{MemoryUsage: 1 << 20, MemoryLimit: 32 << 20, CPUUsageNanos: 5}, nil
}

func (f *fakeRuntime) LogDir(c *container.Container) string {
	return filepath.Join("/nonexistent", c.ID)
}

func (f *fakeRuntime) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// fakeImages has every image (the image store is real in test/e2e).
type fakeImages struct{ root string }

func (f fakeImages) Get(ref string) (image.Image, error) {
	return image.Image{ID: digest.FromString(ref)}, nil
}
func (f fakeImages) List() ([]image.Image, error) { return nil, nil }
func (f fakeImages) Pull(context.Context, string, image.PullOptions) (image.Image, error) {
	return image.Image{}, errors.New("no pulls in this test")
}
func (f fakeImages) Remove(string) error { return nil }
func (f fakeImages) Prune(map[digest.Digest]bool) ([]image.Image, int64, error) {
	return nil, 0, nil
}
func (f fakeImages) Root() string { return f.root }

type shell struct {
	a   *Agent
	rt  *fakeRuntime
	db  *store.DB
	now time.Time
}

func newShell(t *testing.T, pol *policy.Policy) *shell {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "agent.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := &shell{db: db, now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return s.now }
	s.rt = newFakeRuntime(clock)
	cfg := Config{StateDir: dir, Socket: filepath.Join(dir, "sock")}
	cfg.Default()
	s.a, err = New(cfg, Deps{Log: zerolog.New(zerolog.NewTestWriter(t)), Now: clock, Store: db,
		Containers: s.rt, Images: fakeImages{root: filepath.Join(dir, "images")}, Policy: pol,
		Capacity: &reconcile.Capacity{}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// round runs one reconcile round and advances the clock a second.
func (s *shell) round(t *testing.T) {
	t.Helper()
	if _, err := s.a.reconcileOnce(context.Background()); err != nil {
		t.Fatalf("round: %v", err)
	}
	s.now = s.now.Add(time.Second)
}

func webApp(version string) wire.App {
	return wire.App{Name: "mine", Version: version, Containers: []wire.Container{{Name: "web", Image: "tender.test/workload:latest", Restart: wire.RestartAlways}}}
}

// A user's own container whose name looks like one of the daemon's
// (`run -d --name mine.web.12345678`) is not the daemon's: it is neither
// stopped nor removed, even when an app of that name is desired.
func TestShell_ContainersRunByHandAreNotTheDaemons(t *testing.T) {
	s := newShell(t, nil)
	mine := &container.Container{Config: container.Config{Name: "mine.web.12345678", Image: "x"},
		State: container.State{Status: container.Running, StartedAt: s.now}}
	s.rt.add(mine)
	if err := s.a.Apply(webApp("1")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s.round(t)
	}
	for _, c := range s.rt.callLog() {
		if strings.HasSuffix(c, "mine.web.12345678") {
			t.Fatalf("the daemon acted on a container it does not own: %v", s.rt.callLog())
		}
	}
	st := s.a.Apps()
	if len(st) != 1 || st[0].Containers[0].State != reconcile.StateRunning {
		t.Fatalf("the app did not start next to the user's container: %+v", st)
	}
	// What the daemon made carries its app spec, and only that is "owned".
	ctrs, _ := s.rt.List()
	n := 0
	for _, c := range ctrs {
		if owned(c) {
			n++
			var app wire.App
			if err := json.Unmarshal([]byte(c.Labels[labelApp]), &app); err != nil || app.Name != "mine" {
				t.Fatalf("label %q: %v", c.Labels[labelApp], err)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d owned containers, want 1", n)
	}
}

// A lost state file is rebuilt from the daemon's containers only, a
// running version before an exited one.
func TestShell_RebuildFromOwnedContainers(t *testing.T) {
	s := newShell(t, nil)
	v1, v2 := webApp("1"), webApp("2")
	label := func(a wire.App) map[string]string {
		b, _ := json.Marshal(a)
		return map[string]string{labelApp: string(b)}
	}
	s.rt.add(&container.Container{Config: container.Config{Name: reconcile.ContainerName("mine", "web", v1.Revision()), Labels: label(v1)},
		State: container.State{Status: container.Running}})
	s.rt.add(&container.Container{Config: container.Config{Name: reconcile.ContainerName("mine", "web", v2.Revision()), Labels: label(v2)},
		State: container.State{Status: container.Exited}})
	s.rt.add(&container.Container{Config: container.Config{Name: "other.web.0123abcd"}, State: container.State{Status: container.Running}})
	if err := s.a.rebuild(); err != nil {
		t.Fatal(err)
	}
	d, err := s.db.Desired()
	if err != nil || d.Source != store.SourceRecovered || len(d.Apps) != 1 || d.Apps[0].Version != "1" {
		t.Fatalf("rebuilt %+v, %v", d, err)
	}
}

// An operator's restart restarts the container at once, and repeated
// restarts never look like a crash loop.
func TestShell_RestartRequests(t *testing.T) {
	s := newShell(t, nil)
	if err := s.a.Apply(webApp("1")); err != nil {
		t.Fatal(err)
	}
	s.round(t)
	if err := s.a.Restart("mine", "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("restart of an unknown container: %v", err)
	}
	if err := s.a.Restart("other", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("restart of an unknown app: %v", err)
	}
	for i := range 8 {
		starts := strings.Count(strings.Join(s.rt.callLog(), "\n"), "start ")
		if err := s.a.Restart("mine", "web"); err != nil {
			t.Fatal(err)
		}
		s.round(t)
		if got := strings.Count(strings.Join(s.rt.callLog(), "\n"), "start "); got != starts+1 {
			t.Fatalf("restart %d: %d starts, want %d (%v)", i, got, starts+1, s.rt.callLog())
		}
		st := s.a.Apps()[0]
		if st.Phase == reconcile.PhaseDegraded || st.Containers[0].Restarts != 0 {
			t.Fatalf("restart %d counted as a failure: %+v", i, st)
		}
	}
	// Once done, a request is forgotten: the next rounds restart nothing.
	n := len(s.rt.callLog())
	s.round(t)
	s.round(t)
	if len(s.rt.callLog()) != n {
		t.Fatalf("restarted again without a request: %v", s.rt.callLog()[n:])
	}
}

// The device-local policy refuses an app at apply, and a fleet document
// holding such an app runs the others and reports the rule.
func TestShell_PolicyAdmission(t *testing.T) {
	s := newShell(t, policy.Default())
	bad := webApp("1")
	bad.Name = "disk"
	bad.Containers[0].Devices = []string{"/dev/sda"}
	err := s.a.Apply(bad)
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "/dev/sda") {
		t.Fatalf("apply beyond the policy: %v", err)
	}
	if _, err := s.db.AcceptFleetDesired(5, "sha256:x", []wire.App{bad, webApp("1")}); err != nil {
		t.Fatal(err)
	}
	s.round(t)
	s.round(t)
	byName := map[string]reconcile.AppStatus{}
	for _, st := range s.a.Apps() {
		byName[st.Name] = st
	}
	if st := byName["disk"]; st.Phase != reconcile.PhaseRefused || !strings.Contains(st.Message, "/dev/sda") || !strings.Contains(st.Message, "policy") {
		t.Fatalf("refused app status %+v", st)
	}
	if st := byName["mine"]; st.Containers[0].State != reconcile.StateRunning {
		t.Fatalf("the other app did not run: %+v", st)
	}
	for _, c := range s.rt.callLog() {
		if strings.Contains(c, "disk.") {
			t.Fatalf("a refused app's container was made: %v", s.rt.callLog())
		}
	}
}

// Containers reports only the daemon's containers, with stats on request.
func TestShell_ContainersForReports(t *testing.T) {
	s := newShell(t, nil)
	s.rt.add(&container.Container{Config: container.Config{Name: "mine.web.12345678"}, State: container.State{Status: container.Running}})
	if err := s.a.Apply(webApp("1")); err != nil {
		t.Fatal(err)
	}
	s.round(t)
	name := reconcile.ContainerName("mine", "web", webApp("1").Revision())
	got := s.a.Containers(true)
	if len(got) != 1 || !got[name].Running || got[name].MemoryBytes != 1<<20 {
		t.Fatalf("containers %+v", got)
	}
	if c := s.a.Containers(false)[name]; c.MemoryBytes != 0 {
		t.Fatalf("stats read without being asked: %+v", c)
	}
}

// Run's goroutines all end when it returns.
func TestShell_RunLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newShell(t, nil)
	if err := s.a.Apply(webApp("1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.a.Run(ctx) }()
	<-s.a.Ready()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
