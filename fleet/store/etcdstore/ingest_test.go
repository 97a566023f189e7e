package etcdstore

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

// checkInvariants walks every key under the store's prefix and checks
// what the transactions keep true together: meta/feed counts the feed,
// every index entry names a stored event of its device and seq, a
// device's EventsKept is the number of its index entries, no purge is
// left, no status or index outlives its device.
func checkInvariants(t *testing.T, db *DB) {
	t.Helper()
	p := db.Prefix()
	feed := map[uint64]store.FeedEvent{}
	index := map[string]int{}
	status := map[string]store.DeviceStatus{}
	devs := map[string]bool{}
	var meta feedMeta
	for _, kv := range dump(t, db.Client(), p) {
		k := strings.TrimPrefix(string(kv.Key), p)
		switch {
		case k == kFeedMeta:
			if err := json.Unmarshal(kv.Value, &meta); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(k, kFeed):
			var fe store.FeedEvent
			if err := json.Unmarshal(kv.Value, &fe); err != nil {
				t.Fatal(err)
			}
			if k != kFeed+seqKey(fe.Cursor) {
				t.Errorf("feed key %s holds cursor %d", k, fe.Cursor)
			}
			feed[fe.Cursor] = fe
		case strings.HasPrefix(k, kDevices):
			devs[strings.TrimPrefix(k, kDevices)] = true
		case strings.HasPrefix(k, kStatus):
			var st store.DeviceStatus
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				t.Fatal(err)
			}
			status[strings.TrimPrefix(k, kStatus)] = st
		case strings.HasPrefix(k, kPurge):
			t.Errorf("purge left: %s", k)
		}
	}
	for _, kv := range dump(t, db.Client(), p+kEventIndex) {
		k := strings.TrimPrefix(string(kv.Key), p+kEventIndex)
		id, seq, _ := strings.Cut(k, "/")
		c, err := strconv.ParseUint(string(kv.Value), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		fe, ok := feed[c]
		if !ok || fe.Device != id || seqKey(fe.Event.Seq) != seq {
			t.Errorf("index %s → cursor %d: stored %+v (%v)", k, c, fe, ok)
		}
		index[id]++
	}
	if meta.Count != uint64(len(feed)) {
		t.Errorf("meta/feed counts %d events, the feed has %d", meta.Count, len(feed))
	}
	for c := range feed {
		if c > meta.Seq {
			t.Errorf("cursor %d above the last issued %d", c, meta.Seq)
		}
	}
	for id, st := range status {
		if !devs[id] {
			t.Errorf("status of device %s, which is not enrolled", id)
		}
		if st.EventsKept != uint64(index[id]) {
			t.Errorf("device %s: EventsKept %d, %d indexed", id, st.EventsKept, index[id])
		}
	}
	for id := range index {
		if !devs[id] {
			t.Errorf("events indexed for device %s, which is not enrolled", id)
		}
	}
}

// batches is a seeded stream of ingest batches over devices: reports,
// presence and events, out of order, duplicated, with gaps, some of
// unknown devices and some naming another device.
func batches(seed uint64, devices, n, size int) []store.Batch {
	r := rand.New(rand.NewPCG(seed, 1))
	next := map[string]uint64{}
	t := storetest.T0
	var out []store.Batch
	for range n {
		var b store.Batch
		for range size {
			t = t.Add(time.Millisecond)
			id := "gw-" + strconv.Itoa(r.IntN(devices))
			if r.IntN(50) == 0 {
				id = "ghost-" + strconv.Itoa(r.IntN(3))
			}
			claim := id
			if r.IntN(40) == 0 {
				claim = "gw-" + strconv.Itoa(r.IntN(devices))
			}
			switch k := r.IntN(10); {
			case k < 3:
				rt := t.Add(-time.Duration(r.IntN(3)) * time.Second) // some older than stored
				b.Reports = append(b.Reports, store.Report{Device: id, Received: t, Report: wire.Reported{Schema: wire.ReportedSchema,
					DeviceID: claim, ObservedGeneration: uint64(r.IntN(1000)), Time: rt}})
			case k < 4:
				pr := wire.Online
				if r.IntN(3) == 0 {
					pr = wire.Offline
				}
				b.Presence = append(b.Presence, store.Presence{Device: id, Received: t.Add(-time.Duration(r.IntN(2)) * time.Second), Presence: pr})
			default:
				next[id] += uint64(1 + r.IntN(2)) // gaps
				seq := next[id]
				if r.IntN(10) == 0 && seq > 3 {
					seq -= uint64(r.IntN(3)) // late or duplicate
				}
				b.Events = append(b.Events, store.Event{Device: id, Received: t, Event: wire.Event{Schema: wire.EventSchema,
					DeviceID: claim, Seq: seq, Time: t, Kind: wire.EventStarted, App: "thermo", Reason: "r" + strconv.Itoa(int(seq))}})
			}
		}
		out = append(out, b)
	}
	return out
}

// TestIngest_SameAsBoltDB feeds the same batches to boltdb and to etcd
// with small limits (events per device and in the feed, operations per
// transaction) so that splitting and trimming happen all the time, and
// compares results, statuses, the feed and the per-device events.
func TestIngest_SameAsBoltDB(t *testing.T) {
	const devices, deviceEvents, feedCap = 12, 7, 40
	clock := storetest.NewClock(storetest.T0)
	bdb, err := boltdb.Open(filepath.Join(t.TempDir(), "fleet.db"), &boltdb.Options{Now: clock.Now, DeviceEvents: deviceEvents, FeedRetention: feedCap})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	edb := open(t, newPrefix(), Config{Now: clock.Now, DeviceEvents: deviceEvents, FeedRetention: feedCap, MaxTxnOps: 16})
	bs, es := bdb.Store(), edb.Store()
	for i := range devices {
		for _, s := range []store.Store{bs, es} {
			d := store.Device{ID: "gw-" + strconv.Itoa(i), EnrolledAt: storetest.T0}
			if _, err := s.Devices.Put(ctx, d, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// gw-0 is revoked: its messages are skipped like an unknown device's.
	for _, s := range []store.Store{bs, es} {
		if _, err := store.UpdateDevice(ctx, s.Devices, "gw-0", func(d *store.Device) error { d.Revoked = true; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range batches(7, devices, 30, 60) {
		br, err := bs.Ingest.Ingest(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		er, err := es.Ingest.Ingest(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(br.Unknown)
		slices.Sort(er.Unknown)
		if fmt.Sprint(br) != fmt.Sprint(er) {
			t.Fatalf("batch %d: boltdb %+v, etcd %+v", i, br, er)
		}
	}
	bl, _ := bs.Devices.List(ctx)
	el, err := es.Devices.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bl) != len(el) {
		t.Fatalf("%d devices in boltdb, %d in etcd", len(bl), len(el))
	}
	for i := range bl {
		bj, _ := json.Marshal(bl[i].Status)
		ej, _ := json.Marshal(el[i].Status)
		if string(bj) != string(ej) {
			t.Errorf("device %s status:\nboltdb %s\netcd   %s", bl[i].ID, bj, ej)
		}
		bg, _ := bs.Generations.Last(ctx, bl[i].ID)
		eg, _ := es.Generations.Last(ctx, bl[i].ID)
		if bg != eg {
			t.Errorf("device %s: generation %d in boltdb, %d in etcd", bl[i].ID, bg, eg)
		}
		bev, _ := bs.Events.Device(ctx, bl[i].ID, 0)
		eev, _ := es.Events.Device(ctx, bl[i].ID, 0)
		if fmt.Sprint(names(bev)) != fmt.Sprint(names(eev)) {
			t.Errorf("device %s events:\nboltdb %v\netcd   %v", bl[i].ID, names(bev), names(eev))
		}
	}
	bf, _ := bs.Events.Feed(ctx, 0, 0)
	ef, _ := es.Events.Feed(ctx, 0, 0)
	if fmt.Sprint(names(bf)) != fmt.Sprint(names(ef)) {
		t.Errorf("feed:\nboltdb %v\netcd   %v", names(bf), names(ef))
	}
	if len(ef) != feedCap {
		t.Errorf("feed holds %d events, retention %d", len(ef), feedCap)
	}
	checkInvariants(t, edb)
}

// names names events by device and seq (cursors differ: boltdb spends
// one on an event trimmed in the batch that brought it).
func names(fes []store.FeedEvent) []string {
	var out []string
	for _, fe := range fes {
		out = append(out, fe.Device+"#"+strconv.FormatUint(fe.Event.Seq, 10))
	}
	return out
}

// TestIngest_SplitsBatches: a batch as the controller gathers it (500
// messages) over 500 devices, with etcd's default limits, is stored in a
// handful of transactions, each under the limits (etcd would refuse it
// otherwise), and all of it is stored.
func TestIngest_SplitsBatches(t *testing.T) {
	db := open(t, newPrefix(), Config{})
	s := db.Store()
	const n = 500
	var b store.Batch
	for i := range n {
		id := fmt.Sprintf("gw-%03d", i)
		if _, err := s.Devices.Put(ctx, store.Device{ID: id}, 0); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			b.Reports = append(b.Reports, store.Report{Device: id, Received: storetest.T0, Report: wire.Reported{Schema: wire.ReportedSchema, DeviceID: id, ObservedGeneration: 5, Time: storetest.T0}})
		case 1:
			b.Events = append(b.Events, store.Event{Device: id, Received: storetest.T0, Event: wire.Event{Schema: wire.EventSchema, DeviceID: id, Seq: 1, Kind: wire.EventStarted}})
		default:
			b.Presence = append(b.Presence, store.Presence{Device: id, Received: storetest.T0, Presence: wire.Online})
		}
	}
	before := revision(t, db)
	res, err := s.Ingest.Ingest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	txns := revision(t, db) - before
	if res.Reports != 167 || res.Events != 167 || res.Presence != 166 {
		t.Fatalf("result %+v", res)
	}
	// Reports write status and generation (2 operations), events status,
	// feed and index (3), presence status (1): about 1000 operations,
	// 128 a transaction.
	t.Logf("%d messages of %d devices: %d transactions", n, n, txns)
	if txns < 8 || txns > 12 {
		t.Fatalf("%d transactions for 500 messages", txns)
	}
	checkInvariants(t, db)

	// One device with 500 events: over many transactions, in order.
	var many store.Batch
	for seq := range uint64(500) {
		many.Events = append(many.Events, store.Event{Device: "gw-000", Received: storetest.T0, Event: wire.Event{Schema: wire.EventSchema, DeviceID: "gw-000", Seq: 500 - seq, Kind: wire.EventStarted}})
	}
	if res, err = s.Ingest.Ingest(ctx, many); err != nil || res.Events != 500 || res.Gaps != 0 {
		t.Fatalf("500 events of one device: %+v, %v", res, err)
	}
	evs, err := s.Events.Device(ctx, "gw-000", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, fe := range evs {
		if fe.Event.Seq != uint64(i+1) || (i > 0 && fe.Cursor <= evs[i-1].Cursor) {
			t.Fatalf("event %d: seq %d cursor %d", i, fe.Event.Seq, fe.Cursor)
		}
	}
	checkInvariants(t, db)
}

func revision(t *testing.T, db *DB) int64 {
	t.Helper()
	resp, err := db.Client().Get(ctx, "/no-such-key")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestDeviceDelete_ManyEvents: a device with more events than one
// transaction can delete goes with all of them; the feed count stays
// right, and a purge interrupted (left by a crash) is finished by Open.
func TestDeviceDelete_ManyEvents(t *testing.T) {
	prefix := newPrefix()
	db := open(t, prefix, Config{})
	s := db.Store()
	for _, id := range []string{"gw-1", "gw-2"} {
		if _, err := s.Devices.Put(ctx, store.Device{ID: id}, 0); err != nil {
			t.Fatal(err)
		}
		var b store.Batch
		for seq := range uint64(300) {
			b.Events = append(b.Events, store.Event{Device: id, Received: storetest.T0, Event: wire.Event{Schema: wire.EventSchema, DeviceID: id, Seq: seq + 1, Kind: wire.EventStarted}})
		}
		if _, err := s.Ingest.Ingest(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	d, err := s.Devices.Get(ctx, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Devices.Delete(ctx, "gw-1", d.Rev); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Events.Feed(ctx, 0, 0); len(f) != 300 || f[0].Device != "gw-2" {
		t.Fatalf("feed after delete: %d events", len(f))
	}
	checkInvariants(t, db)

	// A crash after the first transaction of a delete: the purge list
	// is left. Open finishes it.
	d2, _ := s.Devices.Get(ctx, "gw-2")
	var cursors []uint64
	f, _ := s.Events.Feed(ctx, 0, 0)
	for _, fe := range f {
		cursors = append(cursors, fe.Cursor)
	}
	list, _ := json.Marshal(cursors)
	cli := db.Client()
	if _, err := cli.Txn(ctx).Then(opDelete(prefix+kDevices+"gw-2"), opDelete(prefix+kStatus+"gw-2"), opDeletePrefix(prefix+kEventIndex+"gw-2/"),
		opPut(prefix+kPurge+"gw-2", string(list))).Commit(); err != nil {
		t.Fatal(err)
	}
	_ = d2
	db2 := open(t, prefix, Config{})
	if f, _ := db2.Store().Events.Feed(ctx, 0, 0); len(f) != 0 {
		t.Fatalf("feed after the purge was finished: %d events", len(f))
	}
	checkInvariants(t, db2)
}
