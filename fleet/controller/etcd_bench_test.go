package controller_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/etcdtest"
	"github.com/tender-edge/tender/test/mqtttest"
)

// etcdMetrics sums, from an etcd member's /metrics, the Range requests
// served, the Txn requests and its CPU seconds.
func etcdMetrics(b *testing.B, url string) (ranges, txns, cpu float64) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_method="Range"`):
			ranges += v
		case strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_method="Txn"`):
			txns += v
		case f[0] == "process_cpu_seconds_total":
			cpu = v
		}
	}
	return ranges, txns, cpu
}

// BenchmarkEtcd_Enroll (issue 13): two controllers, leader and follower,
// on a 1-member etcd holding N devices; b.N devices are recorded as
// enrollment records them (the device's record read and written, its
// certificate document and an audit entry, then a kick of that
// controller's loop), 8 at a time, half through each controller's store.
// It reports enrollments per second, etcd Range requests and etcd CPU
// seconds per enrollment, and how often the controllers listed every
// device. watch=off is the controllers without the store's watch (as
// before the fix). Run with -benchtime=1000x.
func BenchmarkEtcd_Enroll(b *testing.B) {
	for _, n := range []int{5000, 20000} {
		for _, watch := range []bool{false, true} {
			b.Run(fmt.Sprintf("devices=%d/watch=%v", n, watch), func(b *testing.B) { benchEnroll(b, n, watch) })
		}
	}
}

func benchEnroll(b *testing.B, n int, watch bool) {
	cl := etcdtest.Start(b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() *etcdstore.DB {
		db, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: cl.Endpoints()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		return db
	}
	facts := wire.DeviceFacts{Arch: "amd64", MemoryBytes: 1 << 30, CPUs: 2}
	fill := open().Store()
	var wg sync.WaitGroup
	ids := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				if _, err := fill.Devices.Put(ctx, store.Device{ID: fmt.Sprintf("gw-%06d", i), Facts: facts}, 0); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()

	broker := mqtttest.StartMochi(b, "127.0.0.1:0", nil).Addr
	var (
		stores []store.Store
		ctls   []*controller.Controller
		counts []*countedDevices
		run    sync.WaitGroup
	)
	for i := range 2 {
		db := open()
		st := db.Store()
		cd := &countedDevices{Devices: st.Devices, gets: map[string]int{}}
		st.Devices = cd
		el, err := db.Elect(etcdstore.ElectionConfig{ID: fmt.Sprintf("c%d", i), Log: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(b.TempDir(), "data")
		if err := controller.PrepareDir(dir); err != nil {
			b.Fatal(err)
		}
		key, err := controller.LoadOrCreateKey(dir)
		if err != nil {
			b.Fatal(err)
		}
		mc, err := mqttc.New(mqttc.Config{Broker: "tcp://" + broker, ClientID: fmt.Sprintf("tender-controller-%d", i), Log: zerolog.Nop(), CleanSession: true})
		if err != nil {
			b.Fatal(err)
		}
		deps := controller.Deps{Store: st, Key: key, Transport: controller.MQTT{Client: mc}, Leadership: el}
		if watch {
			deps.DeviceWatch = db
		}
		c, err := controller.New(ctx, controller.Config{Dir: dir, ID: fmt.Sprintf("c%d", i), Log: zerolog.Nop()}, deps)
		if err != nil {
			b.Fatal(err)
		}
		stores, ctls, counts = append(stores, st), append(ctls, c), append(counts, cd)
		run.Add(3)
		go func() { defer run.Done(); _ = mc.Run(ctx) }()
		go func() { defer run.Done(); _ = el.Run(ctx) }()
		go func() {
			defer run.Done()
			if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("controller %d: %v", i, err)
			}
		}()
	}
	defer func() { cancel(); run.Wait() }()
	time.Sleep(3 * time.Second) // the first passes and the election: not measured

	url := cl.Members[0].ClientURL
	r0, t0, cpu0 := etcdMetrics(b, url)
	l0 := counts[0].lists.Load() + counts[1].lists.Load()
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var ew sync.WaitGroup
	for w := range 8 {
		ew.Add(1)
		go func() {
			defer ew.Done()
			st, c := stores[w%2], ctls[w%2]
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				id := fmt.Sprintf("new-%06d", i)
				if _, err := st.Devices.Get(ctx, id); err == nil {
					b.Errorf("%s exists", id)
					return
				}
				if _, err := st.Devices.Put(ctx, store.Device{ID: id, Facts: facts, EnrolledAt: time.Now()}, 0); err != nil {
					b.Error(err)
					return
				}
				if _, err := st.Docs.Put(ctx, "cert/"+id, []byte(`{"serial":"`+id+`"}`), 0); err != nil {
					b.Error(err)
					return
				}
				if _, err := st.Audit.Append(ctx, store.AuditEntry{Who: "device " + id, Action: "enroll", Target: "device " + id}); err != nil {
					b.Error(err)
					return
				}
				c.Kick()
			}
		}()
	}
	ew.Wait()
	el := time.Since(start)
	b.StopTimer()
	r1, t1, cpu1 := etcdMetrics(b, url)
	l1 := counts[0].lists.Load() + counts[1].lists.Load()
	b.ReportMetric(float64(b.N)/el.Seconds(), "enroll/s")
	b.ReportMetric((r1-r0)/float64(b.N), "ranges/enroll")
	b.ReportMetric((t1-t0)/float64(b.N), "txns/enroll")
	b.ReportMetric((cpu1-cpu0)/float64(b.N)*1000, "etcd-cpu-ms/enroll")
	b.ReportMetric(float64(l1-l0)/el.Seconds(), "lists/s")
}
