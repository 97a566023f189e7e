package store

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/sync/wire"
	bolt "go.etcd.io/bbolt"
)

// MustOpen opens a DB at path (a new one in t.TempDir() if empty) and
// checks its consistency when the test ends.
func MustOpen(t *testing.T, path string, opts *Options) *DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "agent.db")
	}
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Bolt().View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		_ = db.Close()
	})
	return db
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func sampleApp(name string) wire.App {
	return wire.App{Name: name, Version: "1", Containers: []wire.Container{{Name: "srv", Image: "busybox"}}}
}

// fill writes a desired document, progress for 20 apps and 200 events.
func fill(t *testing.T, db *DB) {
	t.Helper()
	d := Desired{Generation: 7, Source: "local"}
	prog := map[string]reconcile.Progress{}
	for i := range 20 {
		a := sampleApp("app" + strings.Repeat("x", i))
		d.Apps = append(d.Apps, a)
		prog[a.Name] = reconcile.Progress{Confirmed: &a, Phase: reconcile.PhaseRunning,
			Restarts: map[string]reconcile.RestartLog{"x": {Streak: i, Times: []time.Time{t0}}}}
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutDesired(d) }); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := db.Commit(prog, []reconcile.Event{{App: "a", Kind: reconcile.PhaseVerifying, Reason: strings.Repeat("r", i)}}, t0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStore_RoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "agent.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Desired(); !errdefs.IsNotFound(err) {
		t.Fatalf("empty store: %v", err)
	}
	fill(t, db)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", fi.Mode(), err)
	}
	err = db.Update(func(tx *Tx) error { return tx.PutDesired(Desired{Generation: 7}) })
	if !errors.Is(err, ErrStale) {
		t.Fatalf("same generation: %v", err)
	}
	_ = db.Close()

	db = MustOpen(t, path, nil)
	if db.Recovered != nil {
		t.Fatalf("recovered a good file: %v", db.Recovered)
	}
	d, err := db.Desired()
	if err != nil || d.Generation != 7 || len(d.Apps) != 20 || d.Source != "local" {
		t.Fatalf("desired %+v, %v", d, err)
	}
	p, err := db.Progress()
	if err != nil || len(p) != 20 || p["appxxx"].Restarts["x"].Streak != 3 || p["app"].Confirmed.Name != "app" {
		t.Fatalf("progress %v", err)
	}
	// Replacing progress deletes apps not in the map.
	if err := db.Commit(map[string]reconcile.Progress{"app": {}}, nil, t0); err != nil {
		t.Fatal(err)
	}
	if p, _ := db.Progress(); len(p) != 1 {
		t.Fatalf("%d apps after replace", len(p))
	}
}

func TestStore_EventCap(t *testing.T) {
	db := MustOpen(t, "", &Options{EventCap: 50})
	for i := range 120 {
		if err := db.Update(func(tx *Tx) error {
			_, err := tx.AppendEvents(Event{Time: t0, Kind: "k", Message: string(rune('a' + i%26))})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	var evs []Event
	var dropped uint64
	if err := db.View(func(tx *Tx) (err error) {
		evs, err = tx.Events(0, 0)
		dropped = tx.Dropped()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 50 || evs[0].Seq != 71 || evs[49].Seq != 120 || dropped != 70 {
		t.Fatalf("%d events from %d to %d, dropped %d", len(evs), evs[0].Seq, evs[len(evs)-1].Seq, dropped)
	}
	_ = db.View(func(tx *Tx) (err error) { evs, err = tx.Events(115, 2); return err })
	if len(evs) != 2 || evs[0].Seq != 116 {
		t.Fatalf("paging: %+v", evs)
	}
}

// TestStore_TruncatedFile cuts a written state file at many seeded random
// offsets (and at zero): Open never panics and either reads the data back
// or reports the recovery with the bad file kept aside.
func TestStore_TruncatedFile(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	db, err := Open(orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, db)
	_ = db.Close()
	good, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := []int{0, 1, 4095, 4096, 8192, 16384, len(good) - 1}
	for range 60 {
		offsets = append(offsets, rng.IntN(len(good)))
	}
	var recovered, intact int
	for i, off := range offsets {
		path := filepath.Join(dir, "cut", strings.Repeat("d", i%3), "agent.db")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(path)
		if err := os.WriteFile(path, good[:off], 0o600); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(time.Duration(i) * time.Second)
		db, err := Open(path, &Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		if db.Recovered != nil {
			recovered++
			if db.Recovered.Path != path+".corrupt-"+itoa(now.Unix()) {
				t.Errorf("offset %d: aside at %s", off, db.Recovered.Path)
			}
			if fi, err := os.Stat(db.Recovered.Path); err != nil || fi.Size() != int64(off) {
				t.Errorf("offset %d: bad file not kept: %v", off, err)
			}
			if _, err := db.Desired(); !errdefs.IsNotFound(err) {
				t.Errorf("offset %d: fresh store has desired: %v", off, err)
			}
		} else {
			intact++
			d, err := db.Desired()
			p, perr := db.Progress()
			if err != nil || perr != nil || d.Generation != 7 || len(p) != 20 {
				t.Errorf("offset %d: neither recovered nor intact: %v %v", off, err, perr)
			}
		}
		// The store works afterwards.
		if err := db.Commit(map[string]reconcile.Progress{"x": {}}, []reconcile.Event{{App: "x", Kind: "k"}}, now); err != nil {
			t.Errorf("offset %d: write after open: %v", off, err)
		}
		if err := db.Bolt().View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("offset %d: check after open: %v", off, err)
		}
		_ = db.Close()
	}
	t.Logf("%d offsets: %d recovered, %d intact", len(offsets), recovered, intact)
	if recovered == 0 {
		t.Fatal("no truncation was detected")
	}
}

func TestStore_GarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bolt file\n", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	db := MustOpen(t, path, nil)
	if db.Recovered == nil || !strings.Contains(db.Recovered.String(), "kept aside") {
		t.Fatalf("garbage not reported: %v", db.Recovered)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
