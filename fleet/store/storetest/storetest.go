// Package storetest is the conformance suite of fleet/store: every
// implementation of store.Store (bbolt now, etcd next) runs it from its
// own tests with a Harness that opens it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// Harness opens the implementation under test.
type Harness struct {
	// NewLocation returns a fresh, empty place for a store: a directory
	// for bbolt, a key prefix for etcd.
	NewLocation func(t *testing.T) string
	// Open opens (creating if new) the store at loc with clock now. The
	// suite closes it with Store.Close; opening loc again is a restart.
	Open func(t *testing.T, loc string, now func() time.Time) (store.Store, error)
	// Backup copies the closed store at loc; Restore puts such a copy
	// back in place at loc (closed). Both nil skips the restore test.
	Backup  func(t *testing.T, loc string) []byte
	Restore func(t *testing.T, loc string, backup []byte)
	// Corrupt damages the closed store at loc so that Open must refuse it
	// with store.ErrCorrupt. Nil skips the test.
	Corrupt func(t *testing.T, loc string)
	// Fence returns a leader's fence valid for the store at loc and a
	// function that ends its term (its lease, as a partition or a kill
	// would). Nil: the store ignores fences (one writer, bbolt), and the
	// suite checks only that fenced writes go through.
	Fence func(t *testing.T, loc string) (f store.Fence, depose func())
}

// Clock is a settable clock for the stores under test.
type Clock struct {
	mu  gosync.Mutex
	now time.Time
}

// NewClock starts a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// T0 is when the suite's clocks start.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"devices", testDevices},
		{"device CAS race", testDeviceRace},
		{"update helper loses no update", testUpdateHelper},
		{"apps and revisions", testApps},
		{"app apply race", testAppRace},
		{"rollouts", testRollouts},
		{"documents apart from rollouts", testDocs},
		{"join tokens", testJoinTokens},
		{"join token race", testJoinTokenRace},
		{"api tokens", testAPITokens},
		{"console sessions", testSessions},
		{"reports and presence", testReports},
		{"events dedup and gaps", testEvents},
		{"events of unknown, revoked and lying devices", testEventsRefused},
		{"generations", testGenerations},
		{"generations concurrent", testGenerationsConcurrent},
		{"audit", testAudit},
		{"persistence across reopen", testReopen},
		{"restore from backup", testRestore},
		{"corrupt store", testCorrupt},
		{"writes fenced by a leader's term", testFence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{h: h, clock: NewClock(T0), ctx: context.Background()}
			e.loc = h.NewLocation(t)
			tc.fn(t, e)
		})
	}
}

type env struct {
	h     Harness
	loc   string
	clock *Clock
	ctx   context.Context
	s     store.Store
	open  bool
}

// open opens the store at the env's location and closes it at the end.
func (e *env) start(t *testing.T) store.Store {
	t.Helper()
	s, err := e.h.Open(t, e.loc, e.clock.Now)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	e.s, e.open = s, true
	t.Cleanup(func() { e.stop(t) })
	return s
}

func (e *env) stop(t *testing.T) {
	t.Helper()
	if !e.open {
		return
	}
	e.open = false
	if err := e.s.Close(); err != nil {
		t.Errorf("close store: %v", err)
	}
}

func (e *env) restart(t *testing.T) store.Store {
	t.Helper()
	e.stop(t)
	return e.start(t)
}

// must(f())(t) is f's value, the test failed if f failed.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, err error, is func(error) bool, what string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("%s: got error %v", what, err)
	}
}

func enroll(t *testing.T, e *env, id string, labels map[string]string) store.Device {
	t.Helper()
	return must(e.s.Devices.Put(e.ctx, store.Device{ID: id, Labels: labels, EnrolledAt: e.clock.Now(),
		Facts: wire.DeviceFacts{Arch: "arm64"}, CertSerial: "0a1b", PasswordHash: []byte("h")}, 0))(t)
}

func testDevices(t *testing.T, e *env) {
	s := e.start(t)
	if _, err := s.Devices.Get(e.ctx, "gw-1"); !errdefs.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	d := enroll(t, e, "gw-1", map[string]string{"site": "berlin"})
	if d.Rev == 0 {
		t.Fatal("no revision on create")
	}
	_, err := s.Devices.Put(e.ctx, store.Device{ID: "gw-1"}, 0)
	wantErr(t, err, errdefs.IsAlreadyExists, "create twice")
	_, err = s.Devices.Put(e.ctx, store.Device{ID: "GW/1"}, 0)
	wantErr(t, err, errdefs.IsInvalidArgument, "bad id")

	d.Labels["role"] = "gateway"
	d2 := must(s.Devices.Put(e.ctx, d, d.Rev))(t)
	if d2.Rev <= d.Rev {
		t.Fatalf("revision %d after %d", d2.Rev, d.Rev)
	}
	// The first read is stale now.
	d.Labels["role"] = "sensor"
	_, err = s.Devices.Put(e.ctx, d, d.Rev)
	wantErr(t, err, errdefs.IsConflict, "put at a stale revision")
	wantErr(t, s.Devices.Delete(e.ctx, "gw-1", d.Rev), errdefs.IsConflict, "delete at a stale revision")
	got := must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if got.Labels["role"] != "gateway" || got.CertSerial != "0a1b" || got.Facts.Arch != "arm64" || got.Rev != d2.Rev {
		t.Fatalf("stored %+v", got)
	}
	enroll(t, e, "gw-0", nil)
	list := must(s.Devices.List(e.ctx))(t)
	if len(list) != 2 || list[0].ID != "gw-0" || list[1].ID != "gw-1" {
		t.Fatalf("list %+v", list)
	}
	if err := s.Devices.Delete(e.ctx, "gw-1", d2.Rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Devices.Get(e.ctx, "gw-1"); !errdefs.IsNotFound(err) {
		t.Fatalf("get deleted: %v", err)
	}
	_, err = s.Devices.Put(e.ctx, d2, d2.Rev)
	wantErr(t, err, errdefs.IsConflict, "put of a deleted device")
}

// race runs n writers at once and returns how many won; the others must
// have lost with a conflict.
func race(t *testing.T, n int, write func(i int) error) int {
	t.Helper()
	var wins atomic.Int32
	var wg gosync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			if errs[i] = write(i); errs[i] == nil {
				wins.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errdefs.IsConflict(err) && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("loser's error is not a conflict: %v", err)
		}
	}
	return int(wins.Load())
}

func testDeviceRace(t *testing.T, e *env) {
	s := e.start(t)
	d := enroll(t, e, "gw-1", map[string]string{})
	for round := range 20 {
		d = must(s.Devices.Get(e.ctx, "gw-1"))(t)
		if w := race(t, 4, func(i int) error {
			c := d
			c.Labels = map[string]string{"winner": strconv.Itoa(i)}
			_, err := s.Devices.Put(e.ctx, c, d.Rev)
			return err
		}); w != 1 {
			t.Fatalf("round %d: %d writers won", round, w)
		}
	}
	// Creating one id at once: one wins.
	if w := race(t, 4, func(i int) error {
		_, err := s.Devices.Put(e.ctx, store.Device{ID: "gw-new", Labels: map[string]string{"n": strconv.Itoa(i)}}, 0)
		return err
	}); w != 1 {
		t.Fatalf("%d creators won", w)
	}
}

func testUpdateHelper(t *testing.T, e *env) {
	s := e.start(t)
	enroll(t, e, "gw-1", map[string]string{"n": "0"})
	const writers, each = 4, 10
	var wg gosync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if _, err := store.UpdateDevice(e.ctx, s.Devices, "gw-1", func(d *store.Device) error {
					n, _ := strconv.Atoi(d.Labels["n"])
					d.Labels["n"] = strconv.Itoa(n + 1)
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if d := must(s.Devices.Get(e.ctx, "gw-1"))(t); d.Labels["n"] != strconv.Itoa(writers*each) {
		t.Fatalf("counter %s after %d increments", d.Labels["n"], writers*each)
	}
	boom := errors.New("refused")
	if _, err := store.UpdateDevice(e.ctx, s.Devices, "gw-1", func(*store.Device) error { return boom }); err != boom {
		t.Fatalf("fn's error: %v", err)
	}
}

func spec(name, version string) wire.App {
	return wire.App{Name: name, Version: version, Containers: []wire.Container{{Name: "srv", Image: "registry.example/srv@sha256:" + fmt.Sprintf("%064d", 1)}}}
}

func testApps(t *testing.T, e *env) {
	s := e.start(t)
	if _, err := s.Apps.Get(e.ctx, "thermo"); !errdefs.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	a := must(s.Apps.Apply(e.ctx, spec("thermo", "1"), "admin", 0))(t)
	if a.Current != 1 || a.Latest != 1 || a.Rev == 0 {
		t.Fatalf("first apply %+v", a)
	}
	_, err := s.Apps.Apply(e.ctx, spec("thermo", "x"), "admin", 0)
	wantErr(t, err, errdefs.IsAlreadyExists, "apply as new over an existing app")
	_, err = s.Apps.Apply(e.ctx, spec("Bad Name", "1"), "admin", 0)
	wantErr(t, err, errdefs.IsInvalidArgument, "bad name")
	e.clock.Advance(time.Minute)
	a = must(s.Apps.Apply(e.ctx, spec("thermo", "2"), "alice", a.Rev))(t)
	a = must(s.Apps.Apply(e.ctx, spec("thermo", "3"), "bob", a.Rev))(t)
	if a.Current != 3 || a.Latest != 3 {
		t.Fatalf("after three %+v", a)
	}
	revs := must(s.Apps.Revisions(e.ctx, "thermo"))(t)
	if len(revs) != 3 || revs[0].Spec.Version != "1" || revs[2].Spec.Version != "3" || revs[1].By != "alice" ||
		!revs[1].Created.Equal(T0.Add(time.Minute)) || revs[2].Revision != 3 {
		t.Fatalf("revisions %+v", revs)
	}
	// Undo: back to revision 1.
	a.Current = 1
	a = must(s.Apps.Put(e.ctx, a, a.Rev))(t)
	if got := must(s.Apps.Get(e.ctx, "thermo"))(t); got.Current != 1 || got.Latest != 3 {
		t.Fatalf("after undo %+v", got)
	}
	bad := a
	bad.Current = 9
	_, err = s.Apps.Put(e.ctx, bad, a.Rev)
	wantErr(t, err, errdefs.IsInvalidArgument, "current names no revision")
	r := must(s.Apps.Revision(e.ctx, "thermo", 2))(t)
	if r.Spec.Version != "2" {
		t.Fatalf("revision 2: %+v", r)
	}
	if _, err := s.Apps.Revision(e.ctx, "thermo", 4); !errdefs.IsNotFound(err) {
		t.Fatalf("revision 4: %v", err)
	}
	must(s.Apps.Apply(e.ctx, spec("alpha", "1"), "admin", 0))(t)
	if l := must(s.Apps.List(e.ctx))(t); len(l) != 2 || l[0].Name != "alpha" || l[1].Name != "thermo" {
		t.Fatalf("list %+v", l)
	}
	// Removed and applied again: revision numbers go on.
	wantErr(t, s.Apps.Delete(e.ctx, "thermo", a.Rev-1), errdefs.IsConflict, "delete at a stale revision")
	if err := s.Apps.Delete(e.ctx, "thermo", a.Rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apps.Revisions(e.ctx, "thermo"); !errdefs.IsNotFound(err) {
		t.Fatalf("revisions of a deleted app: %v", err)
	}
	a = must(s.Apps.Apply(e.ctx, spec("thermo", "4"), "admin", 0))(t)
	if a.Current != 4 {
		t.Fatalf("revision reused after delete: %+v", a)
	}
	if revs := must(s.Apps.Revisions(e.ctx, "thermo"))(t); len(revs) != 1 || revs[0].Revision != 4 {
		t.Fatalf("revisions after re-create %+v", revs)
	}
	// Deleting mark, by the helper.
	a = must(store.UpdateApp(e.ctx, s.Apps, "thermo", func(a *store.App) error { a.Deleting = true; return nil }))(t)
	if !must(s.Apps.Get(e.ctx, "thermo"))(t).Deleting {
		t.Fatal("deleting mark lost")
	}
}

// Two operators apply the same app at once (through two controllers):
// one wins, the other gets a conflict, and no revision is lost or doubled.
func testAppRace(t *testing.T, e *env) {
	s := e.start(t)
	a := must(s.Apps.Apply(e.ctx, spec("thermo", "0"), "admin", 0))(t)
	for round := range 20 {
		if w := race(t, 3, func(i int) error {
			_, err := s.Apps.Apply(e.ctx, spec("thermo", fmt.Sprintf("%d.%d", round, i)), "op"+strconv.Itoa(i), a.Rev)
			return err
		}); w != 1 {
			t.Fatalf("round %d: %d appliers won", round, w)
		}
		a = must(s.Apps.Get(e.ctx, "thermo"))(t)
	}
	revs := must(s.Apps.Revisions(e.ctx, "thermo"))(t)
	if len(revs) != 21 || a.Latest != 21 {
		t.Fatalf("%d revisions, latest %d, want 21", len(revs), a.Latest)
	}
	for i, r := range revs {
		if r.Revision != uint64(i+1) {
			t.Fatalf("revision %d at %d", r.Revision, i)
		}
	}
}

func testRollouts(t *testing.T, e *env) {
	s := e.start(t)
	if _, err := s.Rollouts.Get(e.ctx, "thermo-2"); !errdefs.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	b := must(s.Rollouts.Put(e.ctx, "thermo-2", []byte(`{"wave":0}`), 0))(t)
	_, err := s.Rollouts.Put(e.ctx, "thermo-2", []byte(`{}`), 0)
	wantErr(t, err, func(err error) bool { return errdefs.IsAlreadyExists(err) || errdefs.IsConflict(err) }, "create twice")
	b2 := must(s.Rollouts.Put(e.ctx, "thermo-2", []byte(`{"wave":1}`), b.Rev))(t)
	_, err = s.Rollouts.Put(e.ctx, "thermo-2", []byte(`{"wave":9}`), b.Rev)
	wantErr(t, err, errdefs.IsConflict, "put at a stale revision")
	if w := race(t, 4, func(i int) error {
		_, err := s.Rollouts.Put(e.ctx, "thermo-2", []byte(strconv.Itoa(i)), b2.Rev)
		return err
	}); w != 1 {
		t.Fatalf("%d writers won", w)
	}
	// Writers of different documents at once all land, also when one
	// among them fails its revision check (they may share a commit).
	var wg gosync.WaitGroup
	errs := make([]error, 9)
	start := make(chan struct{})
	for i := range 9 {
		wg.Go(func() {
			<-start
			if i == 8 {
				_, errs[i] = s.Rollouts.Put(e.ctx, "thermo-2", []byte("stale"), b.Rev)
				return
			}
			_, errs[i] = s.Rollouts.Put(e.ctx, "doc-"+strconv.Itoa(i), []byte(strconv.Itoa(i)), 0)
		})
	}
	close(start)
	wg.Wait()
	wantErr(t, errs[8], errdefs.IsConflict, "put at a stale revision among others")
	for i := range 8 {
		if errs[i] != nil {
			t.Fatalf("writer %d beside a failing one: %v", i, errs[i])
		}
		id := "doc-" + strconv.Itoa(i)
		if got := must(s.Rollouts.Get(e.ctx, id))(t); string(got.Data) != strconv.Itoa(i) {
			t.Fatalf("%s holds %q", id, got.Data)
		}
		if err := s.Rollouts.Delete(e.ctx, id, must(s.Rollouts.Get(e.ctx, id))(t).Rev); err != nil {
			t.Fatal(err)
		}
	}
	b3 := must(store.UpdateRollout(e.ctx, s.Rollouts, "thermo-2", func(old []byte) ([]byte, error) {
		return append(old, '!'), nil
	}))(t)
	if got := must(s.Rollouts.Get(e.ctx, "thermo-2"))(t); string(got.Data) != string(b3.Data) || got.Rev != b3.Rev || got.Data[len(got.Data)-1] != '!' {
		t.Fatalf("stored %q rev %d, wrote %q rev %d", got.Data, got.Rev, b3.Data, b3.Rev)
	}
	must(s.Rollouts.Put(e.ctx, "alpha-1", nil, 0))(t)
	if l := must(s.Rollouts.List(e.ctx))(t); len(l) != 2 || l[0].ID != "alpha-1" {
		t.Fatalf("list %+v", l)
	}
	wantErr(t, s.Rollouts.Delete(e.ctx, "thermo-2", b2.Rev), errdefs.IsConflict, "delete at a stale revision")
	if err := s.Rollouts.Delete(e.ctx, "thermo-2", b3.Rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rollouts.Get(e.ctx, "thermo-2"); !errdefs.IsNotFound(err) {
		t.Fatalf("get deleted: %v", err)
	}
}

func testJoinTokens(t *testing.T, e *env) {
	s := e.start(t)
	now := e.clock.Now()
	tok := store.JoinToken{ID: "abc123", SecretHash: []byte("hash"), Labels: map[string]string{"site": "berlin"},
		Created: now, Expires: now.Add(time.Hour), UsesLeft: 2}
	must(s.JoinTokens.Create(e.ctx, tok))(t)
	_, err := s.JoinTokens.Create(e.ctx, tok)
	wantErr(t, err, errdefs.IsAlreadyExists, "create twice")
	_, err = s.JoinTokens.Consume(e.ctx, "nope", now, nil)
	wantErr(t, err, errdefs.IsNotFound, "unknown token")
	// A check that refuses (wrong secret) spends nothing.
	wrong := fmt.Errorf("secret does not match: %w", errdefs.ErrPermissionDenied)
	_, err = s.JoinTokens.Consume(e.ctx, "abc123", now, func(store.JoinToken) error { return wrong })
	if !errors.Is(err, wrong) {
		t.Fatalf("check's error: %v", err)
	}
	for i := range 2 {
		got := must(s.JoinTokens.Consume(e.ctx, "abc123", now, func(jt store.JoinToken) error {
			if string(jt.SecretHash) != "hash" || jt.Labels["site"] != "berlin" {
				return errors.New("check saw the wrong token")
			}
			return nil
		}))(t)
		if got.UsesLeft != 1-i {
			t.Fatalf("use %d: %d left", i, got.UsesLeft)
		}
	}
	_, err = s.JoinTokens.Consume(e.ctx, "abc123", now, nil)
	wantErr(t, err, errdefs.IsFailedPrecondition, "used up")
	must(s.JoinTokens.Create(e.ctx, store.JoinToken{ID: "old", SecretHash: []byte("h"), Created: now, Expires: now.Add(time.Minute), UsesLeft: 5}))(t)
	_, err = s.JoinTokens.Consume(e.ctx, "old", now.Add(time.Minute), nil)
	wantErr(t, err, errdefs.IsFailedPrecondition, "expired")
	if l := must(s.JoinTokens.List(e.ctx))(t); len(l) != 2 || l[0].ID != "abc123" || l[1].UsesLeft != 5 {
		t.Fatalf("list %+v", l)
	}
	if err := s.JoinTokens.Delete(e.ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JoinTokens.Get(e.ctx, "old"); !errdefs.IsNotFound(err) {
		t.Fatalf("get deleted: %v", err)
	}
	_, err = s.JoinTokens.Create(e.ctx, store.JoinToken{ID: "x"})
	wantErr(t, err, errdefs.IsInvalidArgument, "token without a secret hash")
}

// A one-use token presented by many devices at once enrolls exactly one.
func testJoinTokenRace(t *testing.T, e *env) {
	s := e.start(t)
	now := e.clock.Now()
	for round := range 10 {
		id := "once" + strconv.Itoa(round)
		must(s.JoinTokens.Create(e.ctx, store.JoinToken{ID: id, SecretHash: []byte("h"), Created: now, Expires: now.Add(time.Hour), UsesLeft: 1}))(t)
		var wins atomic.Int32
		var wg gosync.WaitGroup
		for range 6 {
			wg.Go(func() {
				_, err := s.JoinTokens.Consume(e.ctx, id, now, nil)
				switch {
				case err == nil:
					wins.Add(1)
				case !errdefs.IsFailedPrecondition(err) && !errdefs.IsConflict(err):
					t.Errorf("loser: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d devices enrolled with a one-use token", round, wins.Load())
		}
	}
}

func testAPITokens(t *testing.T, e *env) {
	s := e.start(t)
	at := store.APIToken{Hash: "h1", Name: "admin", Role: store.RoleAdmin, Created: e.clock.Now()}
	must(s.APITokens.Create(e.ctx, at))(t)
	_, err := s.APITokens.Create(e.ctx, at)
	wantErr(t, err, errdefs.IsAlreadyExists, "create twice")
	_, err = s.APITokens.Create(e.ctx, store.APIToken{Hash: "h2", Name: "x", Role: "root"})
	wantErr(t, err, errdefs.IsInvalidArgument, "unknown role")
	must(s.APITokens.Create(e.ctx, store.APIToken{Hash: "h0", Name: "viewer", Role: store.RoleReadOnly, Created: e.clock.Now()}))(t)
	if _, err := s.APITokens.Get(e.ctx, "h9"); !errdefs.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	got := must(s.APITokens.Get(e.ctx, "h1"))(t)
	if got.Role != store.RoleAdmin || got.Revoked {
		t.Fatalf("got %+v", got)
	}
	at1 := e.clock.Now().Add(time.Hour)
	must(s.APITokens.Revoke(e.ctx, "h1", at1))(t)
	again := must(s.APITokens.Revoke(e.ctx, "h1", at1.Add(time.Hour)))(t)
	if !again.Revoked || !again.RevokedAt.Equal(at1) {
		t.Fatalf("revoked twice: %+v", again)
	}
	if g := must(s.APITokens.Get(e.ctx, "h1"))(t); !g.Revoked {
		t.Fatal("revocation not stored")
	}
	if l := must(s.APITokens.List(e.ctx))(t); len(l) != 2 {
		t.Fatalf("list %+v", l)
	}
	if _, err := s.APITokens.Revoke(e.ctx, "h9", at1); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke unknown: %v", err)
	}
}

func testSessions(t *testing.T, e *env) {
	s := e.start(t)
	now := e.clock.Now()
	ss := store.Session{Hash: "s1", TokenHash: "h1", Created: now, Expires: now.Add(time.Hour)}
	must(s.Sessions.Create(e.ctx, ss))(t)
	_, err := s.Sessions.Create(e.ctx, ss)
	wantErr(t, err, errdefs.IsAlreadyExists, "create twice")
	_, err = s.Sessions.Create(e.ctx, store.Session{Hash: "s2", TokenHash: "h1", Created: now, Expires: now})
	wantErr(t, err, errdefs.IsInvalidArgument, "expires when created")
	got := must(s.Sessions.Get(e.ctx, "s1", now))(t)
	if got.TokenHash != "h1" || !got.Expires.Equal(ss.Expires) {
		t.Fatalf("got %+v, want %+v", got, ss)
	}
	if _, err := s.Sessions.Get(e.ctx, "s9", now); !errdefs.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	if _, err := s.Sessions.Get(e.ctx, "s1", ss.Expires); !errdefs.IsNotFound(err) {
		t.Fatalf("get expired: %v", err)
	}
	// Kept across a reopen (another controller on the store sees it).
	s = e.restart(t)
	must(s.Sessions.Get(e.ctx, "s1", now.Add(time.Minute)))(t)
	must(s.Sessions.Create(e.ctx, store.Session{Hash: "s3", TokenHash: "h2", Created: now, Expires: now.Add(2 * time.Hour)}))(t)
	if err := s.Sessions.Delete(e.ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sessions.Get(e.ctx, "s1", now); !errdefs.IsNotFound(err) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := s.Sessions.Delete(e.ctx, "s1"); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
	must(s.Sessions.Get(e.ctx, "s3", now))(t)
}

func report(id string, gen uint64, at time.Time) wire.Reported {
	return wire.Reported{Schema: wire.ReportedSchema, DeviceID: id, ObservedGeneration: gen, Time: at,
		Device: wire.DeviceFacts{Arch: "arm64", MemoryBytes: 1 << 30},
		Apps:   []wire.AppStatus{{Name: "thermo", Version: "1", State: "running"}}}
}

func testReports(t *testing.T, e *env) {
	s := e.start(t)
	enroll(t, e, "gw-1", nil)
	rec := e.clock.Now()
	res := must(s.Ingest.Ingest(e.ctx, store.Batch{
		Reports:  []store.Report{{Device: "gw-1", Received: rec, Report: report("gw-1", 7, rec)}},
		Presence: []store.Presence{{Device: "gw-1", Received: rec, Presence: wire.Online}},
	}))(t)
	if res.Reports != 1 || res.Presence != 1 || len(res.Unknown) != 0 {
		t.Fatalf("result %+v", res)
	}
	d := must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if d.Status.Report == nil || d.Status.Report.ObservedGeneration != 7 || d.Status.Presence != wire.Online ||
		!d.Status.LastSeen.Equal(rec) || !d.Status.ReportedAt.Equal(rec) || d.Status.Report.Apps[0].Name != "thermo" {
		t.Fatalf("status %+v", d.Status)
	}
	// Writing the record keeps the status.
	d.Labels = map[string]string{"a": "b"}
	if d2 := must(s.Devices.Put(e.ctx, d, d.Rev))(t); d2.Status.Report == nil {
		t.Fatal("status lost on record write")
	}
	// A report is no record write: the record's revision stays.
	d = must(s.Devices.Get(e.ctx, "gw-1"))(t)
	rec2 := rec.Add(time.Minute)
	must(s.Ingest.Ingest(e.ctx, store.Batch{Reports: []store.Report{{Device: "gw-1", Received: rec2, Report: report("gw-1", 8, rec2)}}}))(t)
	if d2 := must(s.Devices.Get(e.ctx, "gw-1"))(t); d2.Rev != d.Rev || d2.Status.Report.ObservedGeneration != 8 {
		t.Fatalf("after report: rev %d (was %d), status %+v", d2.Rev, d.Rev, d2.Status)
	}
	// An older report (a retained one delivered late) does not win.
	res = must(s.Ingest.Ingest(e.ctx, store.Batch{Reports: []store.Report{{Device: "gw-1", Received: rec2.Add(time.Second), Report: report("gw-1", 7, rec)}}}))(t)
	if res.StaleReports != 1 || res.Reports != 0 {
		t.Fatalf("stale report: %+v", res)
	}
	d = must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if d.Status.Report.ObservedGeneration != 8 || d.Status.StaleReports != 1 || !d.Status.LastSeen.Equal(rec2.Add(time.Second)) {
		t.Fatalf("after stale report: %+v", d.Status)
	}
	// The Last Will says offline, and is no sign of life.
	must(s.Ingest.Ingest(e.ctx, store.Batch{Presence: []store.Presence{{Device: "gw-1", Received: rec2.Add(time.Hour), Presence: wire.Offline}}}))(t)
	d = must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if d.Status.Presence != wire.Offline || !d.Status.LastSeen.Equal(rec2.Add(time.Second)) {
		t.Fatalf("after offline: %+v", d.Status)
	}
	// The reported generation is one the device has seen: never issued again.
	if g := must(s.Generations.Last(e.ctx, "gw-1"))(t); g != 8 {
		t.Fatalf("last generation %d after a report of 8", g)
	}
	// A generation past the wire's largest was never issued: ignored.
	must(s.Ingest.Ingest(e.ctx, store.Batch{Reports: []store.Report{{Device: "gw-1", Received: rec2, Report: report("gw-1", wire.MaxGeneration+1, rec2.Add(time.Minute))}}}))(t)
	if g := must(s.Generations.Last(e.ctx, "gw-1"))(t); g != 8 {
		t.Fatalf("last generation %d after a report past the largest", g)
	}
	must(s.Ingest.Ingest(e.ctx, store.Batch{Reports: []store.Report{{Device: "gw-1", Received: rec2, Report: report("gw-1", 1<<50, rec2.Add(time.Hour))}}}))(t)
	if g := must(s.Generations.Next(e.ctx, "gw-1"))(t); g != 1<<50+1 {
		t.Fatalf("next generation %d after a report of 2^50", g)
	}
}

func event(id string, seq uint64) store.Event {
	return store.Event{Device: id, Received: T0, Event: wire.Event{Schema: wire.EventSchema, DeviceID: id, Seq: seq, Time: T0, Kind: wire.EventStarted, App: "thermo", Reason: "seq " + strconv.FormatUint(seq, 10)}}
}

func seqs(evs []store.FeedEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Event.Seq)
	}
	return out
}

func testEvents(t *testing.T, e *env) {
	s := e.start(t)
	enroll(t, e, "gw-1", nil)
	enroll(t, e, "gw-2", nil)
	// The first event seen may have any sequence number: no gap before it.
	res := must(s.Ingest.Ingest(e.ctx, store.Batch{Events: []store.Event{event("gw-1", 41), event("gw-1", 42), event("gw-2", 1)}}))(t)
	if res.Events != 3 || res.Gaps != 0 || res.DuplicateEvents != 0 {
		t.Fatalf("first batch %+v", res)
	}
	// Out of order within a batch, a redelivery, and a gap of two (45, 46).
	res = must(s.Ingest.Ingest(e.ctx, store.Batch{Events: []store.Event{event("gw-1", 44), event("gw-1", 43), event("gw-1", 42), event("gw-1", 47), event("gw-1", 47)}}))(t)
	if res.Events != 3 || res.DuplicateEvents != 2 || res.Gaps != 2 {
		t.Fatalf("second batch %+v", res)
	}
	// A late copy of an old one.
	res = must(s.Ingest.Ingest(e.ctx, store.Batch{Events: []store.Event{event("gw-1", 41), event("gw-2", 2)}}))(t)
	if res.Events != 1 || res.DuplicateEvents != 1 {
		t.Fatalf("third batch %+v", res)
	}
	d := must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if d.Status.EventSeq != 47 || d.Status.EventGaps != 2 || d.Status.EventDuplicates != 3 || d.Status.EventsKept != 5 {
		t.Fatalf("status %+v", d.Status)
	}
	if got := seqs(must(s.Events.Device(e.ctx, "gw-1", 0))(t)); !slices.Equal(got, []uint64{41, 42, 43, 44, 47}) {
		t.Fatalf("device events %v", got)
	}
	if got := seqs(must(s.Events.Device(e.ctx, "gw-1", 2))(t)); !slices.Equal(got, []uint64{44, 47}) {
		t.Fatalf("newest two %v", got)
	}
	if got := must(s.Events.Device(e.ctx, "gw-2", 0))(t); len(got) != 2 || got[1].Event.Reason != "seq 2" {
		t.Fatalf("gw-2 events %+v", got)
	}
	// The feed: every stored event once, by cursor, in pages.
	var all []store.FeedEvent
	var after uint64
	for {
		page := must(s.Events.Feed(e.ctx, after, 3))(t)
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor
	}
	if len(all) != 7 {
		t.Fatalf("feed has %d events, want 7", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Cursor <= all[i-1].Cursor {
			t.Fatalf("feed cursors not increasing: %d after %d", all[i].Cursor, all[i-1].Cursor)
		}
	}
	if all[len(all)-1].Device != "gw-2" || all[len(all)-1].Event.Seq != 2 {
		t.Fatalf("last of the feed %+v", all[len(all)-1])
	}
	// A device deleted takes its events with it; enrolled again, it starts over.
	if err := s.Devices.Delete(e.ctx, "gw-1", d.Rev); err != nil {
		t.Fatal(err)
	}
	if got := must(s.Events.Feed(e.ctx, 0, 0))(t); len(got) != 2 {
		t.Fatalf("feed after delete: %d events", len(got))
	}
	enroll(t, e, "gw-1", nil)
	if res := must(s.Ingest.Ingest(e.ctx, store.Batch{Events: []store.Event{event("gw-1", 1)}}))(t); res.Events != 1 {
		t.Fatalf("re-enrolled device's first event: %+v", res)
	}
}

func testEventsRefused(t *testing.T, e *env) {
	s := e.start(t)
	d := enroll(t, e, "gw-1", nil)
	enroll(t, e, "gw-2", nil)
	lie := event("gw-2", 5) // gw-1 publishes as gw-2
	lie.Device = "gw-1"
	lieReport := store.Report{Device: "gw-1", Received: T0, Report: report("gw-2", 3, T0)}
	res := must(s.Ingest.Ingest(e.ctx, store.Batch{
		Events:  []store.Event{event("ghost", 1), lie, event("ghost", 2)},
		Reports: []store.Report{lieReport, {Device: "ghost", Received: T0, Report: report("ghost", 1, T0)}},
	}))(t)
	if res.Events != 0 || res.Reports != 0 || res.Refused != 2 || !slices.Equal(res.Unknown, []string{"ghost"}) {
		t.Fatalf("result %+v", res)
	}
	if got := must(s.Events.Feed(e.ctx, 0, 0))(t); len(got) != 0 {
		t.Fatalf("feed %+v", got)
	}
	if g := must(s.Devices.Get(e.ctx, "gw-2"))(t); g.Status.Report != nil || g.Status.EventSeq != 0 || g.Status.Impersonations != 0 {
		t.Fatalf("gw-2 changed by gw-1's lies: %+v", g.Status)
	}
	// The liar is flagged (F-08).
	if g := must(s.Devices.Get(e.ctx, "gw-1"))(t); g.Status.Impersonations != 2 || g.Status.ImpersonatedAs != "gw-2" || g.Status.Report != nil {
		t.Fatalf("gw-1 after two messages as gw-2: %+v", g.Status)
	}
	// Revoked: its messages are not stored.
	d.Revoked, d.RevokedAt = true, T0
	must(s.Devices.Put(e.ctx, d, d.Rev))(t)
	res = must(s.Ingest.Ingest(e.ctx, store.Batch{Events: []store.Event{event("gw-1", 1)},
		Presence: []store.Presence{{Device: "gw-1", Received: T0, Presence: wire.Online}}}))(t)
	if res.Events != 0 || res.Presence != 0 || !slices.Equal(res.Unknown, []string{"gw-1"}) {
		t.Fatalf("revoked: %+v", res)
	}
}

func testGenerations(t *testing.T, e *env) {
	s := e.start(t)
	if g := must(s.Generations.Last(e.ctx, "gw-1"))(t); g != 0 {
		t.Fatalf("last of a new device: %d", g)
	}
	floor := uint64(T0.UnixMilli())
	g1 := must(s.Generations.Next(e.ctx, "gw-1"))(t)
	if g1 < floor {
		t.Fatalf("first generation %d below the clock floor %d", g1, floor)
	}
	var prev = g1
	for range 50 {
		g := must(s.Generations.Next(e.ctx, "gw-1"))(t)
		if g <= prev {
			t.Fatalf("generation %d after %d", g, prev)
		}
		prev = g
	}
	if g := must(s.Generations.Last(e.ctx, "gw-1"))(t); g != prev {
		t.Fatalf("last %d, issued %d", g, prev)
	}
	// Per device: another device starts at the floor.
	if g := must(s.Generations.Next(e.ctx, "gw-2"))(t); g != floor {
		t.Fatalf("gw-2's first %d, want %d", g, floor)
	}
	// The clock going back does not take generations back.
	e.clock.Advance(-time.Hour)
	if g := must(s.Generations.Next(e.ctx, "gw-1"))(t); g != prev+1 {
		t.Fatalf("after the clock went back: %d, want %d", g, prev+1)
	}
	prev++
	// Deleting the device keeps its high-water mark.
	d := enroll(t, e, "gw-1", nil)
	if err := s.Devices.Delete(e.ctx, "gw-1", d.Rev); err != nil {
		t.Fatal(err)
	}
	s = e.restart(t)
	if g := must(s.Generations.Next(e.ctx, "gw-1"))(t); g != prev+1 {
		t.Fatalf("after delete and restart: %d, want %d", g, prev+1)
	}
	_, err := s.Generations.Next(e.ctx, "")
	wantErr(t, err, errdefs.IsInvalidArgument, "empty device id")
}

func testGenerationsConcurrent(t *testing.T, e *env) {
	s := e.start(t)
	const workers, each = 8, 40
	got := make([][]uint64, workers)
	var wg gosync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				dev := "gw-" + strconv.Itoa(w%2) // two devices, four writers each
				g, err := s.Generations.Next(e.ctx, dev)
				if err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], g)
			}
		})
	}
	wg.Wait()
	seen := map[string]map[uint64]bool{"gw-0": {}, "gw-1": {}}
	for w, gs := range got {
		dev := "gw-" + strconv.Itoa(w%2)
		for i, g := range gs {
			if i > 0 && g <= gs[i-1] {
				t.Fatalf("worker %d: %d after %d", w, g, gs[i-1])
			}
			if seen[dev][g] {
				t.Fatalf("%s: generation %d issued twice", dev, g)
			}
			seen[dev][g] = true
		}
	}
	for dev, m := range seen {
		if len(m) != workers/2*each {
			t.Fatalf("%s: %d generations", dev, len(m))
		}
	}
}

func testAudit(t *testing.T, e *env) {
	s := e.start(t)
	if err := s.Audit.Verify(e.ctx); err != nil {
		t.Fatalf("empty log: %v", err)
	}
	_, err := s.Audit.Append(e.ctx, store.AuditEntry{Action: "apply"})
	wantErr(t, err, errdefs.IsInvalidArgument, "entry without who")
	var wg gosync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				if _, err := s.Audit.Append(e.ctx, store.AuditEntry{Who: "op" + strconv.Itoa(w), Action: "apply",
					Target: "app thermo", From: "10.0.0.1:5000", Detail: strconv.Itoa(i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	e1 := must(s.Audit.Append(e.ctx, store.AuditEntry{Time: T0.Add(time.Hour), Who: "admin", Action: "device rm", Target: "device gw-1"}))(t)
	if e1.Seq != 41 || len(e1.Hash) == 0 || !e1.Time.Equal(T0.Add(time.Hour)) {
		t.Fatalf("41st entry %+v", e1)
	}
	all := must(s.Audit.List(e.ctx, 0, 0))(t)
	if len(all) != 41 {
		t.Fatalf("%d entries", len(all))
	}
	for i, a := range all {
		if a.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, a.Seq)
		}
	}
	if !all[0].Time.Equal(T0) {
		t.Fatalf("entry without a time stamped %v, want the store clock's %v", all[0].Time, T0)
	}
	if page := must(s.Audit.List(e.ctx, 39, 5))(t); len(page) != 2 || page[1].Action != "device rm" {
		t.Fatalf("page %+v", page)
	}
	if err := s.Audit.Verify(e.ctx); err != nil {
		t.Fatal(err)
	}
	s = e.restart(t)
	e2 := must(s.Audit.Append(e.ctx, store.AuditEntry{Who: "admin", Action: "token create"}))(t)
	if e2.Seq != 42 {
		t.Fatalf("after restart: seq %d", e2.Seq)
	}
	if err := s.Audit.Verify(e.ctx); err != nil {
		t.Fatal(err)
	}
	again := must(s.Audit.List(e.ctx, 0, 0))(t)
	for i := range all {
		if !slices.Equal(all[i].Hash, again[i].Hash) || all[i].Detail != again[i].Detail {
			t.Fatalf("entry %d changed", i+1)
		}
	}
}

// testReopen writes one of everything, restarts and reads it all back.
func testReopen(t *testing.T, e *env) {
	s := e.start(t)
	d := enroll(t, e, "gw-1", map[string]string{"site": "berlin"})
	must(s.Ingest.Ingest(e.ctx, store.Batch{Reports: []store.Report{{Device: "gw-1", Received: T0, Report: report("gw-1", 3, T0)}},
		Events: []store.Event{event("gw-1", 1), event("gw-1", 3)}}))(t)
	a := must(s.Apps.Apply(e.ctx, spec("thermo", "1"), "admin", 0))(t)
	b := must(s.Rollouts.Put(e.ctx, "r1", []byte("state"), 0))(t)
	must(s.JoinTokens.Create(e.ctx, store.JoinToken{ID: "j", SecretHash: []byte("h"), Expires: T0.Add(time.Hour), UsesLeft: 1}))(t)
	must(s.APITokens.Create(e.ctx, store.APIToken{Hash: "h", Name: "admin", Role: store.RoleAdmin}))(t)
	g := must(s.Generations.Next(e.ctx, "gw-1"))(t)
	must(s.Audit.Append(e.ctx, store.AuditEntry{Who: "admin", Action: "apply"}))(t)

	s = e.restart(t)
	d2 := must(s.Devices.Get(e.ctx, "gw-1"))(t)
	if d2.Rev != d.Rev || d2.Labels["site"] != "berlin" || d2.Status.Report == nil || d2.Status.EventGaps != 1 || d2.Status.EventSeq != 3 {
		t.Fatalf("device %+v %+v", d2, d2.Status)
	}
	if a2 := must(s.Apps.Get(e.ctx, "thermo"))(t); a2 != a {
		t.Fatalf("app %+v, stored %+v", a2, a)
	}
	if b2 := must(s.Rollouts.Get(e.ctx, "r1"))(t); b2.Rev != b.Rev || string(b2.Data) != "state" {
		t.Fatalf("rollout %+v", b2)
	}
	if j := must(s.JoinTokens.Get(e.ctx, "j"))(t); j.UsesLeft != 1 {
		t.Fatalf("join token %+v", j)
	}
	if at := must(s.APITokens.Get(e.ctx, "h"))(t); at.Role != store.RoleAdmin {
		t.Fatalf("api token %+v", at)
	}
	if g2 := must(s.Generations.Next(e.ctx, "gw-1"))(t); g2 <= g {
		t.Fatalf("generation %d after restart, issued %d before", g2, g)
	}
	if l := must(s.Audit.List(e.ctx, 0, 0))(t); len(l) != 1 {
		t.Fatalf("audit %+v", l)
	}
	if evs := must(s.Events.Device(e.ctx, "gw-1", 0))(t); len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	// Revisions go on from where they were: a write after the restart
	// gets a higher one, so a CAS against a pre-restart read still works.
	d3 := must(s.Devices.Put(e.ctx, d2, d2.Rev))(t)
	if d3.Rev <= b.Rev {
		t.Fatalf("revision %d after restart, %d before", d3.Rev, b.Rev)
	}
}

// testRestore: a store restored from an older backup must not issue a
// generation that a device already saw from the newer store.
func testRestore(t *testing.T, e *env) {
	if e.h.Backup == nil || e.h.Restore == nil {
		t.Skip("the implementation has no backup")
	}
	s := e.start(t)
	enroll(t, e, "gw-1", nil)
	must(s.Generations.Next(e.ctx, "gw-1"))(t)
	e.stop(t)
	backup := e.h.Backup(t, e.loc)

	s = e.start(t)
	var issued uint64
	for range 20 { // the devices saw these
		issued = must(s.Generations.Next(e.ctx, "gw-1"))(t)
		e.clock.Advance(time.Millisecond)
	}
	e.stop(t)
	e.clock.Advance(time.Second) // the restore happens later
	e.h.Restore(t, e.loc, backup)

	s = e.start(t)
	if g := must(s.Generations.Next(e.ctx, "gw-1"))(t); g <= issued {
		t.Fatalf("restored store issued %d, the device has seen %d", g, issued)
	}
}

func testCorrupt(t *testing.T, e *env) {
	if e.h.Corrupt == nil {
		t.Skip("the implementation cannot be corrupted by the test")
	}
	s := e.start(t)
	enroll(t, e, "gw-1", nil)
	must(s.Generations.Next(e.ctx, "gw-1"))(t)
	e.stop(t)
	e.h.Corrupt(t, e.loc)
	s2, err := e.h.Open(t, e.loc, e.clock.Now)
	if err == nil {
		_ = s2.Close()
		t.Fatal("a damaged store was opened")
	}
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("damaged store: %v, want store.ErrCorrupt", err)
	}
}

func testDocs(t *testing.T, e *env) {
	s := e.start(t)
	must(s.Rollouts.Put(e.ctx, "same", []byte("rollout"), 0))(t)
	d := must(s.Docs.Put(e.ctx, "same", []byte("doc"), 0))(t)
	if got := must(s.Docs.Get(e.ctx, "same"))(t); string(got.Data) != "doc" || got.Rev != d.Rev {
		t.Fatalf("doc %q rev %d", got.Data, got.Rev)
	}
	if got := must(s.Rollouts.Get(e.ctx, "same"))(t); string(got.Data) != "rollout" {
		t.Fatalf("rollout %q: documents and rollouts share a key space", got.Data)
	}
	_, err := s.Docs.Put(e.ctx, "same", []byte("x"), d.Rev+100)
	wantErr(t, err, errdefs.IsConflict, "put a document at a stale revision")
	if err := s.Docs.Delete(e.ctx, "same", d.Rev); err != nil {
		t.Fatal(err)
	}
	if l := must(s.Docs.List(e.ctx))(t); len(l) != 0 {
		t.Fatalf("documents after delete: %+v", l)
	}
	if l := must(s.Rollouts.List(e.ctx))(t); len(l) != 1 {
		t.Fatalf("rollouts after deleting a document: %+v", l)
	}
}

func testFence(t *testing.T, e *env) {
	s := e.start(t)
	f, depose := store.Fence{Key: "leader", Rev: 1}, func() {}
	if e.h.Fence != nil {
		f, depose = e.h.Fence(t, e.loc)
	}
	fctx := store.WithFence(e.ctx, f)
	if got := store.FenceOf(fctx); got != f {
		t.Fatalf("fence carried: %v, want %v", got, f)
	}
	// While the term holds, fenced writes are ordinary writes.
	g1 := must(s.Generations.Next(fctx, "gw-1"))(t)
	doc := must(s.Docs.Put(fctx, "desired/gw-1", []byte("g1"), 0))(t)
	ro := must(s.Rollouts.Put(fctx, "thermo", []byte("wave 1"), 0))(t)
	ro = must(s.Rollouts.Put(fctx, "thermo", []byte("wave 2"), ro.Rev))(t)
	_, err := s.Docs.Put(fctx, "desired/gw-1", []byte("x"), doc.Rev+100)
	wantErr(t, err, errdefs.IsConflict, "fenced put at a stale revision")
	if e.h.Fence == nil {
		return
	}
	depose()
	_, err = s.Generations.Next(fctx, "gw-1")
	wantErr(t, err, store.IsDeposed, "generation drawn after the term ended")
	wantErr(t, err, errdefs.IsFailedPrecondition, "generation drawn after the term ended (category)")
	if g := must(s.Generations.Last(e.ctx, "gw-1"))(t); g != g1 {
		t.Fatalf("last generation %d after a refused draw, want %d", g, g1)
	}
	_, err = s.Docs.Put(fctx, "desired/gw-1", []byte("g2"), doc.Rev)
	wantErr(t, err, store.IsDeposed, "document written after the term ended")
	_, err = s.Rollouts.Put(fctx, "thermo", []byte("wave 3"), ro.Rev)
	wantErr(t, err, store.IsDeposed, "rollout written after the term ended")
	err = s.Rollouts.Delete(fctx, "thermo", ro.Rev)
	wantErr(t, err, store.IsDeposed, "rollout deleted after the term ended")
	if got := must(s.Docs.Get(e.ctx, "desired/gw-1"))(t); string(got.Data) != "g1" || got.Rev != doc.Rev {
		t.Fatalf("document %q rev %d after refused writes, want g1 rev %d", got.Data, got.Rev, doc.Rev)
	}
	if got := must(s.Rollouts.Get(e.ctx, "thermo"))(t); string(got.Data) != "wave 2" {
		t.Fatalf("rollout %q after refused writes", got.Data)
	}
	// Reads with the stale fence, and writes without one, still work.
	must(s.Docs.Get(fctx, "desired/gw-1"))(t)
	if g := must(s.Generations.Next(e.ctx, "gw-1"))(t); g <= g1 {
		t.Fatalf("unfenced generation %d after %d", g, g1)
	}
}
