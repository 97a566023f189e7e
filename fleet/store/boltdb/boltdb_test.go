package boltdb

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
	bolt "go.etcd.io/bbolt"
)

// MustOpen opens a DB at path (a new one in t.TempDir() if empty) and
// checks its consistency when the test ends.
func MustOpen(t testing.TB, path string, opts *Options) *DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "fleet.db")
	}
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := consistent(db.Bolt()); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		_ = db.Close()
	})
	return db
}

func consistent(b *bolt.DB) error {
	return b.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

func dbPath(loc string) string { return filepath.Join(loc, "data", "fleet.db") }

var harness = storetest.Harness{
	NewLocation: func(t *testing.T) string { return t.TempDir() },
	Open: func(t *testing.T, loc string, now func() time.Time) (store.Store, error) {
		db, err := Open(dbPath(loc), &Options{Now: now})
		if err != nil {
			return store.Store{}, err
		}
		s := db.Store()
		s.Close = func() error {
			if err := consistent(db.Bolt()); err != nil {
				t.Errorf("consistency check: %v", err)
			}
			return db.Close()
		}
		return s, nil
	},
	Backup: func(t *testing.T, loc string) []byte {
		b, err := os.ReadFile(dbPath(loc))
		if err != nil {
			t.Fatal(err)
		}
		return b
	},
	Restore: func(t *testing.T, loc string, backup []byte) {
		if err := os.WriteFile(dbPath(loc), backup, 0o600); err != nil {
			t.Fatal(err)
		}
	},
	// Both meta pages overwritten: bbolt cannot find the root.
	Corrupt: func(t *testing.T, loc string) {
		f, err := os.OpenFile(dbPath(loc), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 2*os.Getpagesize()), 0); err != nil {
			t.Fatal(err)
		}
	},
}

func TestConformance(t *testing.T) { storetest.Run(t, harness) }

var ctx = context.Background()

func TestOpen_Modes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "fleet.db")
	db := MustOpen(t, path, nil)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", p, fi.Mode().Perm(), want, err)
		}
	}
	// A second process (here: a second open) is refused, not treated as damage.
	_, err := Open(path, &Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) || !errdefs.IsUnavailable(err) {
		t.Fatalf("second open: %v", err)
	}
	_ = db
}

func TestOpen_WidenedFileModeIsNarrowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	MustOpen(t, path, nil)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

func TestOpen_NewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).Bucket(bucketMeta).Put(keySchema, []byte("9"))
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	_, err = Open(path, nil)
	if !errors.Is(err, store.ErrSchema) || errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("newer schema: %v", err)
	}
}

// fill writes devices, reports, events, apps, tokens and audit entries.
func fill(t *testing.T, db *DB) {
	t.Helper()
	s := db.Store()
	for i := range 30 {
		id := "gw-" + strconv.Itoa(i)
		if _, err := s.Devices.Put(ctx, store.Device{ID: id, Labels: map[string]string{"site": "berlin"}}, 0); err != nil {
			t.Fatal(err)
		}
		b := store.Batch{Reports: []store.Report{{Device: id, Received: storetest.T0, Report: wire.Reported{DeviceID: id, ObservedGeneration: 3, Time: storetest.T0,
			Apps: []wire.AppStatus{{Name: "thermo", State: strings.Repeat("r", 200)}}}}}}
		for seq := range uint64(20) {
			b.Events = append(b.Events, store.Event{Device: id, Received: storetest.T0, Event: wire.Event{DeviceID: id, Seq: seq + 1, Kind: wire.EventStarted}})
		}
		if _, err := s.Ingest.Ingest(ctx, b); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apps.Apply(ctx, wire.App{Name: "app" + strconv.Itoa(i), Version: "1"}, "admin", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Audit.Append(ctx, store.AuditEntry{Who: "admin", Action: "apply", Detail: strings.Repeat("d", i*10)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpen_TruncatedFile cuts a written store at many seeded random
// offsets: Open never panics, and either reads the data back whole or
// refuses the file with store.ErrCorrupt and leaves it as it was.
func TestOpen_TruncatedFile(t *testing.T) {
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
	var refused, intact int
	for _, off := range offsets {
		path := filepath.Join(dir, "cut.db")
		_ = os.Remove(path)
		if err := os.WriteFile(path, good[:off], 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(path, nil)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) || !errdefs.IsDataLoss(err) {
				t.Fatalf("offset %d: %v, want store.ErrCorrupt", off, err)
			}
			if fi, serr := os.Stat(path); serr != nil || fi.Size() != int64(off) {
				t.Fatalf("offset %d: the refused file was changed", off)
			}
			refused++
			continue
		}
		intact++
		s := db.Store()
		list, lerr := s.Devices.List(ctx)
		if lerr != nil || len(list) != 30 || list[0].Status.Report == nil {
			t.Errorf("offset %d: opened but not whole: %d devices, %v", off, len(list), lerr)
		}
		if err := s.Audit.Verify(ctx); err != nil {
			t.Errorf("offset %d: %v", off, err)
		}
		_ = db.Close()
	}
	t.Logf("%d offsets: %d refused, %d intact", len(offsets), refused, intact)
	if refused == 0 {
		t.Fatal("no truncation was detected")
	}
}

func TestOpen_GarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bolt file\n", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, nil)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "restore a backup") {
		t.Fatalf("garbage: %v", err)
	}
}

// A stored record that is not what this build wrote is damage, named.
func TestRead_UndecodableRecord(t *testing.T) {
	db := MustOpen(t, "", nil)
	if err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).Bucket(bucketDevices).Put([]byte("gw-1"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	_, err := db.Store().Devices.Get(ctx, "gw-1")
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `device "gw-1"`) {
		t.Fatalf("undecodable device: %v", err)
	}
}

// The audit log's chain catches an entry edited, removed or cut off in
// the file behind the store's back.
func TestAudit_TamperDetected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(b *bolt.Bucket) error
		want   string
	}{
		{"edited", func(b *bolt.Bucket) error {
			v := bytes.Replace(b.Get(u64(2)), []byte(`"who":"op"`), []byte(`"who":"xx"`), 1)
			return b.Put(u64(2), v)
		}, "entry 2 was altered"},
		{"removed", func(b *bolt.Bucket) error { return b.Delete(u64(2)) }, "entry 2 missing"},
		{"last removed", func(b *bolt.Bucket) error { return b.Delete(u64(3)) }, "2 entries, 3 were written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := MustOpen(t, "", nil)
			s := db.Store()
			for i := range 3 {
				if _, err := s.Audit.Append(ctx, store.AuditEntry{Who: "op", Action: "apply", Detail: strconv.Itoa(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Audit.Verify(ctx); err != nil {
				t.Fatal(err)
			}
			if err := db.Bolt().Update(func(tx *bolt.Tx) error {
				return tc.tamper(tx.Bucket(bucketV1).Bucket(bucketAudit))
			}); err != nil {
				t.Fatal(err)
			}
			err := s.Audit.Verify(ctx)
			if !errdefs.IsDataLoss(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v, want %q", err, tc.want)
			}
		})
	}
}

// Events are kept per device up to DeviceEvents, and over all devices up
// to FeedRetention; the oldest go first and the counts stay true.
func TestEvents_Retention(t *testing.T) {
	db := MustOpen(t, "", &Options{DeviceEvents: 5, FeedRetention: 12})
	s := db.Store()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.Devices.Put(ctx, store.Device{ID: id}, 0); err != nil {
			t.Fatal(err)
		}
	}
	ev := func(id string, seq uint64) store.Event {
		return store.Event{Device: id, Event: wire.Event{DeviceID: id, Seq: seq, Kind: wire.EventStarted}}
	}
	var b store.Batch
	for seq := uint64(1); seq <= 8; seq++ { // a: 8 events, 5 kept
		b.Events = append(b.Events, ev("a", seq))
	}
	if _, err := s.Ingest.Ingest(ctx, b); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.Events.Device(ctx, "a", 0)
	if len(evs) != 5 || evs[0].Event.Seq != 4 {
		t.Fatalf("a keeps %d events from %d", len(evs), evs[0].Event.Seq)
	}
	// b and c: 5 each, the feed holds 12 of the 15 (a's oldest go).
	for _, id := range []string{"b", "c"} {
		b = store.Batch{}
		for seq := uint64(1); seq <= 5; seq++ {
			b.Events = append(b.Events, ev(id, seq))
		}
		if _, err := s.Ingest.Ingest(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	feed, _ := s.Events.Feed(ctx, 0, 0)
	if len(feed) != 12 || feed[0].Device != "a" || feed[0].Event.Seq != 7 {
		t.Fatalf("feed of %d from %s/%d", len(feed), feed[0].Device, feed[0].Event.Seq)
	}
	a, _ := s.Devices.Get(ctx, "a")
	if a.Status.EventsKept != 2 || a.Status.EventSeq != 8 {
		t.Fatalf("a: %+v", a.Status)
	}
	if evs, _ := s.Events.Device(ctx, "a", 0); len(evs) != 2 {
		t.Fatalf("a lists %d events", len(evs))
	}
	// Deleting c frees its share of the feed.
	c, _ := s.Devices.Get(ctx, "c")
	if err := s.Devices.Delete(ctx, "c", c.Rev); err != nil {
		t.Fatal(err)
	}
	if feed, _ := s.Events.Feed(ctx, 0, 0); len(feed) != 7 {
		t.Fatalf("feed of %d after delete", len(feed))
	}
	if err := db.Bolt().View(func(tx *bolt.Tx) error {
		if n := getU64(tx.Bucket(bucketV1).Bucket(bucketMeta).Get(keyFeedCount)); n != 7 {
			t.Errorf("feed count %d", n)
		}
		if n := tx.Bucket(bucketV1).Bucket(bucketEventIndex).Stats().KeyN; n != 7 {
			t.Errorf("index holds %d", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestBackup_WhileOpen(t *testing.T) {
	db := MustOpen(t, "", nil)
	fill(t, db)
	var buf bytes.Buffer
	if _, err := db.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	r := MustOpen(t, path, nil)
	if l, err := r.Store().Devices.List(ctx); err != nil || len(l) != 30 {
		t.Fatalf("restored: %d devices, %v", len(l), err)
	}
}
