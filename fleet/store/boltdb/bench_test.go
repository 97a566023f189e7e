package boltdb

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

const benchDevices = 100_000

// enrollMany writes n devices in one transaction (setup, not measured).
func enrollMany(b *testing.B, db *DB, n int) []string {
	b.Helper()
	ids := make([]string, n)
	if err := db.update(ctx, func(t *tx) error {
		for i := range n {
			ids[i] = "gw-" + strconv.Itoa(i)
			d := store.Device{ID: ids[i], Labels: map[string]string{"site": "s" + strconv.Itoa(i%50), "role": "gateway"},
				Facts: wire.DeviceFacts{Arch: "arm64", MemoryBytes: 1 << 30, CPUs: 4}, CertSerial: "0123456789abcdef", Rev: 1}
			if err := t.putJSON(bucketDevices, []byte(d.ID), "device", d); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return ids
}

// benchReport is a report of a device with two apps of two containers:
// about 1.2 KiB of JSON, a typical report.
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

// BenchmarkIngest_Batched is the controller's ingest queue: reports of
// 100,000 devices committed in batches (500: what arrives in 50ms at
// 10,000 reports/s). b.N counts reports.
func BenchmarkIngest_Batched(b *testing.B) {
	db := MustOpen(b, "", nil)
	ids := enrollMany(b, db, benchDevices)
	s := db.Store()
	at := storetest.T0
	for _, batch := range []int{100, 500, 2000} {
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

// BenchmarkIngest_Concurrent is one report per Ingest call from 64
// goroutines at once: bbolt's Batch coalesces them into shared commits.
func BenchmarkIngest_Concurrent(b *testing.B) {
	db := MustOpen(b, "", nil)
	ids := enrollMany(b, db, benchDevices)
	s := db.Store()
	var n atomic.Int64
	b.SetParallelism(32) // 2 cores × 32
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := ids[(int(i)*7919)%len(ids)]
			at := storetest.T0.Add(time.Duration(i) * time.Millisecond)
			if _, err := s.Ingest.Ingest(ctx, store.Batch{Reports: []store.Report{{Device: id, Received: at, Report: benchReport(id, at)}}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
}

// BenchmarkGenerations_Concurrent: a wave publishing to many devices at
// once, each publisher goroutine asking for the next generation.
func BenchmarkGenerations_Concurrent(b *testing.B) {
	db := MustOpen(b, "", nil)
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
