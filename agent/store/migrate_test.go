package store

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tender-edge/tender/sync/outbox"
)

// testdata/state-m1.db.gz was written by the first release's code (the
// commit before the fleet link's state moved into this package): a fleet
// document of generation 7, progress and two events in v1, the fleet link's
// keys in "fleet/state" and a report and two events in "fleet/outbox".
func openM1(t *testing.T) string {
	t.Helper()
	f, err := os.Open("testdata/state-m1.db.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.db")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStore_OpensFirstReleaseFile(t *testing.T) {
	path := openM1(t)
	db := MustOpen(t, path, nil)
	if db.Recovered != nil {
		t.Fatalf("the first release's file was set aside: %v", db.Recovered)
	}
	d, err := db.Desired()
	if err != nil || d.Generation != 7 || d.Source != SourceFleet || len(d.Apps) != 1 || d.Apps[0].Name != "web" {
		t.Fatalf("desired = %+v, %v", d, err)
	}
	prog, err := db.Progress()
	if err != nil || prog["web"].Confirmed == nil {
		t.Fatalf("progress = %+v, %v", prog, err)
	}
	var evs []Event
	if err := db.View(func(tx *Tx) error { evs, err = tx.Events(0, 0); return err }); err != nil || len(evs) != 2 || evs[1].Kind != "confirmed" {
		t.Fatalf("events = %+v, %v", evs, err)
	}
	fs, err := db.FleetState()
	if err != nil {
		t.Fatal(err)
	}
	want := FleetState{Generation: 7, StoredGeneration: 7, EventCursor: 1,
		Digest: "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}
	if fs != want {
		t.Fatalf("fleet state = %+v, want %+v", fs, want)
	}
	if tm, err := db.LoadTime(); err != nil || !tm.Equal(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("time floor = %v, %v", tm, err)
	}
	ob, err := db.Outbox(outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	items, err := ob.Pending()
	if err != nil || len(items) != 3 || items[0].Kind != outbox.Report || items[1].Seq != 1 || items[2].Seq != 2 {
		t.Fatalf("outbox after the move = %+v, %v", items, err)
	}
	// The next event continues the sequence: the fleet sees no duplicate.
	seq, err := ob.AddEventFunc(func(seq uint64) ([]byte, error) { return []byte(`{}`), nil })
	if err != nil || seq != 3 {
		t.Fatalf("next event seq = %d, %v", seq, err)
	}
	// Nothing is left outside the schema.
	if err := db.Bolt().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n := string(name); n != "v1" && n != OutboxBucket {
				t.Errorf("bucket %q outside the schema", n)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	var schema string
	db.Bolt().View(func(tx *bolt.Tx) error {
		schema = string(tx.Bucket(bucketV1).Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	if schema != schemaVersion {
		t.Fatalf("schema %q after migration, want %q", schema, schemaVersion)
	}
}

func TestStore_RefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).Bucket(bucketMeta).Put(keySchema, []byte("3"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, nil); err == nil || !errors.Is(err, ErrSchema) {
		t.Fatalf("schema 3: %v, want ErrSchema", err)
	}
}

func TestStore_FleetDesiredGenerationsIndependent(t *testing.T) {
	db := MustOpen(t, "", nil)
	if err := db.Update(func(tx *Tx) error {
		return tx.PutDesired(Desired{Generation: 1, Source: SourceLocal, Apps: nil})
	}); err != nil {
		t.Fatal(err)
	}
	// The largest generation a fleet could send does not move the local
	// counter: a local apply afterwards still works.
	stored, err := db.AcceptFleetDesired(1<<53, "sha256:x", nil)
	if err != nil || stored != 2 {
		t.Fatalf("stored = %d, %v", stored, err)
	}
	if err := db.Update(func(tx *Tx) error {
		cur, _ := tx.Desired()
		return tx.PutDesired(Desired{Generation: cur.Generation + 1, Source: SourceLocal})
	}); err != nil {
		t.Fatal(err)
	}
	fs, _ := db.FleetState()
	if fs.Generation != 1<<53 || fs.StoredGeneration != 2 {
		t.Fatalf("fleet state %+v", fs)
	}
}
