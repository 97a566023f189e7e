package etcdstore

import (
	"strconv"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

const benchDevices = 10_000

// benchStore is a store of benchDevices enrolled devices (written by
// Import: setup, not measured).
func benchStore(b *testing.B) (*DB, []string) {
	b.Helper()
	if one == nil {
		b.Skip("etcd missing")
	}
	db, err := Open(ctx, Config{Endpoints: one.Endpoints(), Prefix: newPrefix()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	d := &store.Dump{}
	ids := make([]string, benchDevices)
	for i := range ids {
		ids[i] = "gw-" + strconv.Itoa(i)
		d.Devices = append(d.Devices, store.Device{ID: ids[i], Labels: map[string]string{"site": "s" + strconv.Itoa(i%50), "role": "gateway"},
			Facts: wire.DeviceFacts{Arch: "arm64", MemoryBytes: 1 << 30, CPUs: 4}, CertSerial: "0123456789abcdef"})
	}
	if err := db.Import(ctx, d, false); err != nil {
		b.Fatal(err)
	}
	return db, ids
}

// benchReport is about 1.2 KiB of JSON, as in boltdb's benchmark.
func benchReport(id string, at time.Time) wire.Reported {
	c := func(n string) wire.ContainerStatus {
		return wire.ContainerStatus{Name: n, Image: "registry.example.com/acme/thermo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			State: wire.ContainerRunning, Health: wire.HealthHealthy, Restarts: 1, StartedAt: at, CPUNanos: 123456789, MemoryBytes: 12 << 20, MemoryLimit: 64 << 20}
	}
	app := func(n string) wire.AppStatus {
		return wire.AppStatus{Name: n, Version: "1.4.2", State: "running", Containers: []wire.ContainerStatus{c("reader"), c("uploader")}}
	}
	return wire.Reported{Schema: wire.ReportedSchema, DeviceID: id, ObservedGeneration: 1_780_000_000_000, Time: at,
		Apps: []wire.AppStatus{app("thermo"), app("metrics")}, Device: wire.DeviceFacts{Arch: "arm64", Kernel: "6.1.0", CgroupVersion: 2, MemoryBytes: 1 << 30, CPUs: 4, AgentVersion: "0.3.0"}}
}

// BenchmarkIngest_Batched: reports in the controller's batches, one
// store. b.N counts reports.
func BenchmarkIngest_Batched(b *testing.B) {
	db, ids := benchStore(b)
	s := db.Store()
	at := storetest.T0
	for _, batch := range []int{100, 500} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			for done := 0; done < b.N; done += batch {
				var bt store.Batch
				for i := done; i < min(done+batch, b.N); i++ {
					at = at.Add(time.Millisecond)
					id := ids[(i*7919)%len(ids)]
					bt.Reports = append(bt.Reports, store.Report{Device: id, Received: at, Report: benchReport(id, at)})
				}
				if res, err := s.Ingest.Ingest(ctx, bt); err != nil || res.Reports != len(bt.Reports) {
					b.Fatalf("%+v %v", res, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}

// BenchmarkIngest_Events: batches of 500 events of 500 devices (every
// transaction also writes meta/feed).
func BenchmarkIngest_Events(b *testing.B) {
	db, ids := benchStore(b)
	s := db.Store()
	seq := map[string]uint64{}
	for done := 0; done < b.N; done += 500 {
		var bt store.Batch
		for i := done; i < min(done+500, b.N); i++ {
			id := ids[(i*7919)%len(ids)]
			seq[id]++
			bt.Events = append(bt.Events, store.Event{Device: id, Received: storetest.T0, Event: wire.Event{Schema: wire.EventSchema, DeviceID: id, Seq: seq[id], Kind: wire.EventStarted, App: "thermo"}})
		}
		if res, err := s.Ingest.Ingest(ctx, bt); err != nil || res.Events != len(bt.Events) {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkIngest_TwoControllers: two stores (controllers) ingest
// report batches of 500 of disjoint devices at once, then of the same
// devices (shared subscriptions): what the compares cost.
func BenchmarkIngest_TwoControllers(b *testing.B) {
	db, ids := benchStore(b)
	db2, err := Open(ctx, Config{Endpoints: one.Endpoints(), Prefix: db.Prefix()})
	if err != nil {
		b.Fatal(err)
	}
	defer db2.Close()
	for _, shared := range []bool{false, true} {
		b.Run("shared="+strconv.FormatBool(shared), func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(1)
			stores := []store.Store{db.Store(), db2.Store()}
			var which atomic.Int32
			b.RunParallel(func(pb *testing.PB) {
				w := int(which.Add(1)-1) % 2
				s := stores[w]
				for pb.Next() {
					var bt store.Batch
					for range 500 {
						i := int(n.Add(1))
						id := ids[(i*7919)%(len(ids)/2)]
						if !shared {
							id = ids[w*len(ids)/2+(i*7919)%(len(ids)/2)]
						}
						at := storetest.T0.Add(time.Duration(i) * time.Millisecond)
						bt.Reports = append(bt.Reports, store.Report{Device: id, Received: at, Report: benchReport(id, at)})
					}
					if _, err := s.Ingest.Ingest(ctx, bt); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}

// BenchmarkGenerations_Concurrent: 64 publishers asking for generations
// of different devices.
func BenchmarkGenerations_Concurrent(b *testing.B) {
	db, _ := benchStore(b)
	s := db.Store()
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Generations.Next(ctx, "gw-"+strconv.Itoa(int(n.Add(1)%benchDevices))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "generations/s")
}

// BenchmarkIngest_EventsEveryController: what ingesting every event at
// every controller costs (events are not shared, so that a device's
// events stay one ordered stream: fleet/controller/doc.go). One op is a
// round of one event from each of benchDevices devices, in batches of
// 500, ingested by one store (controllers=1) or by two at once, each
// getting every event (controllers=2). Reported: events stored per
// second of the round, and etcd revisions (write transactions) per event
// stored.
func BenchmarkIngest_EventsEveryController(b *testing.B) {
	db, ids := benchStore(b)
	db2, err := Open(ctx, Config{Endpoints: one.Endpoints(), Prefix: db.Prefix()})
	if err != nil {
		b.Fatal(err)
	}
	defer db2.Close()
	seq := uint64(0)
	for _, n := range []int{1, 2} {
		b.Run("controllers="+strconv.Itoa(n), func(b *testing.B) {
			stores := []store.Store{db.Store(), db2.Store()}[:n]
			rev0 := clusterRev(b, db)
			var stored, dups atomic.Int64
			for range b.N {
				seq++
				var wg gosync.WaitGroup
				for _, s := range stores {
					wg.Go(func() {
						for done := 0; done < len(ids); done += 500 {
							var bt store.Batch
							for _, id := range ids[done:min(done+500, len(ids))] {
								bt.Events = append(bt.Events, store.Event{Device: id, Received: storetest.T0,
									Event: wire.Event{Schema: wire.EventSchema, DeviceID: id, Seq: seq, Kind: wire.EventStarted, App: "thermo"}})
							}
							res, err := s.Ingest.Ingest(ctx, bt)
							if err != nil {
								b.Error(err)
								return
							}
							stored.Add(int64(res.Events))
							dups.Add(int64(res.DuplicateEvents))
						}
					})
				}
				wg.Wait()
			}
			if got := stored.Load(); got != int64(b.N*len(ids)) {
				b.Fatalf("%d events stored, want %d (%d duplicates)", got, b.N*len(ids), dups.Load())
			}
			b.ReportMetric(float64(stored.Load())/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(clusterRev(b, db)-rev0)/float64(stored.Load()), "revs/event")
			b.ReportMetric(float64(dups.Load())/float64(stored.Load()), "dups/event")
		})
	}
}

// clusterRev is the cluster's current revision.
func clusterRev(b *testing.B, db *DB) int64 {
	resp, err := db.Client().Get(ctx, "/no-such-key")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}
