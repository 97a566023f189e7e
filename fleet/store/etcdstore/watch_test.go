package etcdstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

// TestWatchDevices: another store's writes of device records and
// statuses (not of other keys) are told by id, in order, once the watch
// says it is up; a watch that breaks says so.
func TestWatchDevices(t *testing.T) {
	p := newPrefix()
	db := open(t, p, Config{})
	other := open(t, p, Config{}).Store()

	type note struct {
		ids []string
		up  *bool
	}
	notes := make(chan note, 100)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	db.WatchDevices(wctx, func(ids []string) { notes <- note{ids: ids} }, func(up bool) { notes <- note{up: &up} })
	next := func() note {
		t.Helper()
		select {
		case n := <-notes:
			return n
		case <-time.After(10 * time.Second): // a hang, not a timing
			t.Fatal("no notice from the watch")
			return note{}
		}
	}
	if n := next(); n.up == nil || !*n.up {
		t.Fatalf("first notice %+v, want up(true)", n)
	}

	told := func(want ...string) {
		t.Helper()
		var got []string
		for len(got) < len(want) {
			n := next()
			if n.up != nil {
				t.Fatalf("watch went down: %v", *n.up)
			}
			got = append(got, n.ids...)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("told %v, want %v", got, want)
		}
	}
	d, err := other.Devices.Put(ctx, store.Device{ID: "gw-1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Devices.Put(ctx, store.Device{ID: "gw-2"}, 0); err != nil {
		t.Fatal(err)
	}
	told("gw-1", "gw-2")
	// Not a device's: nothing told. Then gw-2's status alone.
	if _, err := other.Docs.Put(ctx, "gw-1", []byte(`{}`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Ingest.Ingest(ctx, store.Batch{Presence: []store.Presence{{Device: "gw-2", Received: storetest.T0, Presence: wire.Online}}}); err != nil {
		t.Fatal(err)
	}
	told("gw-2")
	if err := other.Devices.Delete(ctx, "gw-1", d.Rev); err != nil {
		t.Fatal(err)
	}
	told("gw-1")

	// The client gone: the watch says it may miss writes.
	_ = db.Close()
	for {
		n := next()
		if n.up != nil {
			if *n.up {
				t.Fatal("up(true) after the client closed")
			}
			break
		}
	}
}
