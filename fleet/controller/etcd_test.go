package controller_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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

// countedDevices is the store's devices, counting the loop's reads: every
// device (List) and one device (Get, by id).
type countedDevices struct {
	store.Devices
	lists atomic.Int64
	mu    sync.Mutex
	gets  map[string]int
}

func (d *countedDevices) List(ctx context.Context) ([]store.Device, error) {
	d.lists.Add(1)
	return d.Devices.List(ctx)
}

func (d *countedDevices) Get(ctx context.Context, id string) (store.Device, error) {
	d.mu.Lock()
	d.gets[id]++
	d.mu.Unlock()
	return d.Devices.Get(ctx, id)
}

func (d *countedDevices) got(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gets[id]
}

// TestEtcd_PassesReadOnlyWhatChanged (issue 13): two controllers on one
// etcd store, leader and follower, read each device another wrote once,
// by id (the store's watch marks it), and not every device at every
// pass: at 50,000 devices that took most of etcd and slowed enrollment
// from ~75 to ~35 devices/s.
func TestEtcd_PassesReadOnlyWhatChanged(t *testing.T) {
	cl := etcdtest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() *etcdstore.DB {
		db, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: cl.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	writer := open().Store()
	put := func(id string) store.Device {
		t.Helper()
		d, err := writer.Devices.Put(ctx, store.Device{ID: id, Facts: wire.DeviceFacts{Arch: "amd64", MemoryBytes: 1 << 30, CPUs: 2}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Enough devices that 50 written at once are read one by one (a
	// pass reads every device when more than a quarter changed).
	for i := range 400 {
		put(fmt.Sprintf("gw-%03d", i))
	}

	broker := mqtttest.StartMochi(t, "127.0.0.1:0", nil).Addr
	var counts []*countedDevices
	var els []*etcdstore.Election
	var wg sync.WaitGroup
	for i := range 2 {
		db := open()
		st := db.Store()
		cd := &countedDevices{Devices: st.Devices, gets: map[string]int{}}
		st.Devices = cd
		counts = append(counts, cd)
		el, err := db.Elect(etcdstore.ElectionConfig{ID: fmt.Sprintf("c%d", i), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		els = append(els, el)
		dir := filepath.Join(t.TempDir(), "data")
		if err := controller.PrepareDir(dir); err != nil {
			t.Fatal(err)
		}
		key, err := controller.LoadOrCreateKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		mc, err := mqttc.New(mqttc.Config{Broker: "tcp://" + broker, ClientID: fmt.Sprintf("tender-controller-%d", i), Log: zerolog.Nop(), CleanSession: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := controller.New(ctx, controller.Config{Dir: dir, ID: fmt.Sprintf("c%d", i), Tick: 20 * time.Millisecond, Log: testLog(t)},
			controller.Deps{Store: st, Key: key, Transport: controller.MQTT{Client: mc}, Leadership: el, DeviceWatch: db})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(3)
		go func() { defer wg.Done(); _ = mc.Run(ctx) }()
		go func() { defer wg.Done(); _ = el.Run(ctx) }()
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("controller %d: %v", i, err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	// A leader (its term's first pass reads every device), then both
	// reading a new device by id: their watches are up (before, a pass
	// reads every device).
	eventually(t, "a leader", func() bool {
		_, a := els[0].Leading()
		_, b := els[1].Leading()
		return a != b
	})
	probes := 0
	eventually(t, "both controllers reading a new device by id", func() bool {
		for p := range probes {
			if id := fmt.Sprintf("probe-%d", p); counts[0].got(id) > 0 && counts[1].got(id) > 0 {
				return true
			}
		}
		put(fmt.Sprintf("probe-%d", probes))
		probes++
		return false
	})

	lists := []int64{counts[0].lists.Load(), counts[1].lists.Load()}
	var added []store.Device
	for i := range 50 {
		added = append(added, put(fmt.Sprintf("new-%02d", i)))
	}
	if err := writer.Devices.Delete(ctx, added[0].ID, added[0].Rev); err != nil {
		t.Fatal(err)
	}
	for i, cd := range counts {
		eventually(t, fmt.Sprintf("controller %d reading the 50 devices written by another", i), func() bool {
			for _, d := range added {
				if cd.got(d.ID) == 0 {
					return false
				}
			}
			return true
		})
	}
	for i, cd := range counts {
		if n := cd.lists.Load() - lists[i]; n != 0 {
			t.Errorf("controller %d read every device %d times meanwhile, want 0", i, n)
		}
	}
	t.Logf("passes read every device %d and %d times before the watches were up (%d probes)", lists[0], lists[1], probes)
}
