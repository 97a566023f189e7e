package etcdstore

import (
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

// TestImport_FromBoltDB copies a bbolt store filled through the interface
// into etcd and compares everything; the copy then goes on where the
// original would: revision numbers, generations, cursors, the audit
// chain.
func TestImport_FromBoltDB(t *testing.T) {
	clock := storetest.NewClock(storetest.T0)
	bdb, err := boltdb.Open(filepath.Join(t.TempDir(), "fleet.db"), &boltdb.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	bs := bdb.Store()
	storetest.Fill(t, bs, clock)
	dump, err := bdb.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prefix := newPrefix()
	edb := open(t, prefix, Config{Now: clock.Now})
	if err := edb.Import(ctx, dump, false); err != nil {
		t.Fatal(err)
	}
	es := edb.Store()
	storetest.Equal(t, bs, es)
	checkInvariants(t, edb)

	// Both go on alike.
	for _, s := range []store.Store{bs, es} {
		if a, err := s.Apps.Apply(ctx, wire.App{Name: "old", Version: "3", Containers: []wire.Container{{Name: "c", Image: "r/c@sha256:0"}}}, "admin", 0); err != nil || a.Current != 3 {
			t.Fatalf("apply of a deleted app after the copy: %+v %v (revision numbers must go on)", a, err)
		}
		last, _ := s.Generations.Last(ctx, "gw-gone")
		if g, err := s.Generations.Next(ctx, "gw-gone"); err != nil || g <= last || last == 0 {
			t.Fatalf("generation %d after %d", g, last)
		}
		if e, err := s.Audit.Append(ctx, store.AuditEntry{Who: "admin", Action: "migrate"}); err != nil || e.Seq != 6 {
			t.Fatalf("audit after the copy: %+v %v", e, err)
		}
		if _, err := s.Ingest.Ingest(ctx, store.Batch{Events: []store.Event{{Device: "gw-0", Received: clock.Now(),
			Event: wire.Event{Schema: wire.EventSchema, DeviceID: "gw-0", Seq: 4, Kind: wire.EventStarted}}}}); err != nil {
			t.Fatal(err)
		}
	}
	storetest.Equal(t, bs, es)
	checkInvariants(t, edb)

	// A second import is refused without force, and replaces with it.
	if err := edb.Import(ctx, dump, false); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("import over a store: %v", err)
	}
	if err := edb.Import(ctx, dump, true); err != nil {
		t.Fatal(err)
	}
	if n, _ := es.Audit.List(ctx, 0, 0); len(n) != 5 {
		t.Fatalf("after a forced import: %d audit entries, want the dump's 5", len(n))
	}
	// The counts are checked: a dump whose feed names one event twice
	// (as a damaged source could) does not verify.
	dump.Feed = append(dump.Feed, dump.Feed[0])
	dump.Feed[len(dump.Feed)-1].Cursor = dump.FeedSeq + 1
	if err := edb.Import(ctx, dump, true); !errdefs.IsDataLoss(err) {
		t.Fatalf("import with a doubled event: %v", err)
	}
}
