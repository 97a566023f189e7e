package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// benchFleet is 10,000 devices over 100 sites and 50 apps: half on all
// devices of a role, half on N devices spread over sites, all with
// requests, some of the devices offline.
func benchFleet() Request {
	r := rand.New(rand.NewPCG(1, 2))
	req := Request{Now: now, Reserve: Resources{MemoryBytes: 64 << 20, MilliCPU: 100}}
	for i := range 10000 {
		d := Device{
			ID:          fmt.Sprintf("dev-%05d", i),
			Arch:        pick(r, []string{"amd64", "arm64", "arm"}),
			MemoryBytes: int64(256+r.IntN(4096)) << 20,
			MilliCPU:    int64(1000 * (1 + r.IntN(4))),
			Online:      r.IntN(20) != 0,
			LastSeen:    now.Add(-time.Duration(r.IntN(3600)) * time.Second),
			Labels: map[string]string{
				"site": fmt.Sprintf("site-%02d", r.IntN(100)),
				"role": pick(r, []string{"gateway", "sensor", "camera"}),
			},
		}
		req.Devices = append(req.Devices, d)
	}
	for i := range 50 {
		p := &wire.Placement{Selector: map[string]string{"role": pick(r, []string{"gateway", "sensor", "camera"})}}
		if i%2 == 1 {
			p.Devices = wire.DeviceCount{N: 10 + r.IntN(1000)}
			p.Spread = "site"
		}
		if i%5 == 0 {
			p.Arch = []string{"arm64", "amd64"}
		}
		req.Apps = append(req.Apps, wire.App{Name: fmt.Sprintf("app-%02d", i), Version: "1", Placement: p,
			Containers: []wire.Container{{Name: "main", Image: "x:1", Resources: wire.Resources{
				Memory: pick(r, []string{"16Mi", "32Mi", "64Mi", "128Mi"}), CPU: pick(r, []string{"50m", "100m", "250m"})}}}})
	}
	return req
}

// BenchmarkPlace places 50 apps over 10,000 devices: from nothing
// (fresh) and again with the result as current (steady, the controller's
// usual case).
func BenchmarkPlace(b *testing.B) {
	req := benchFleet()
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			if _, err := Place(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	d, err := Place(req)
	if err != nil {
		b.Fatal(err)
	}
	req.Current = d.Assignments
	b.Run("steady", func(b *testing.B) {
		for b.Loop() {
			if _, err := Place(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("explain-all", func(b *testing.B) {
		for b.Loop() {
			for _, a := range req.Apps {
				if _, err := d.Explain(a.Name); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
