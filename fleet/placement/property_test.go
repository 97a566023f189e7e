package placement

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// Property tests over random fleets, seeded: a failure names its seed,
// and the same seed gives the same fleet.

const seeds = 400

var (
	archs   = []string{"amd64", "arm64", "arm", "armv7", "riscv64", ""}
	sites   = []string{"berlin", "paris", "rome", ""}
	memSpec = []string{"", "16Mi", "64Mi", "200Mi", "700Mi"}
	cpuSpec = []string{"", "100m", "500m", "1", "1500m"}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// randomRequest builds a fleet of up to 60 devices and 8 apps, with
// current assignments that are partly valid, partly stale.
func randomRequest(r *rand.Rand) Request {
	req := Request{Now: now, Grace: time.Duration(1+r.IntN(10)) * time.Minute}
	if r.IntN(2) == 0 {
		req.Reserve = Resources{MemoryBytes: int64(r.IntN(128)) << 20, MilliCPU: int64(r.IntN(500))}
	}
	for i := range r.IntN(61) {
		d := Device{
			ID:          fmt.Sprintf("d%02d", i),
			Arch:        pick(r, archs),
			MemoryBytes: int64(r.IntN(1025)) << 20,
			MilliCPU:    int64(r.IntN(4001)),
			Online:      r.IntN(5) != 0,
			LastSeen:    now.Add(-time.Duration(r.IntN(20*60)) * time.Second),
			Labels:      map[string]string{},
		}
		if r.IntN(20) == 0 {
			d.MemoryBytes, d.MilliCPU = 0, 0
		}
		if d.Online {
			d.LastSeen = now
		} else if r.IntN(10) == 0 {
			d.LastSeen = time.Time{}
		}
		if s := pick(r, sites); s != "" {
			d.Labels["site"] = s
		}
		d.Labels["role"] = pick(r, []string{"gw", "sensor"})
		req.Devices = append(req.Devices, d)
	}
	for i := range r.IntN(9) {
		a := wire.App{Name: fmt.Sprintf("app%d", i), Version: "1"}
		for c := range 1 + r.IntN(2) {
			a.Containers = append(a.Containers, wire.Container{Name: fmt.Sprintf("c%d", c), Image: "x:1",
				Resources: wire.Resources{Memory: pick(r, memSpec), CPU: pick(r, cpuSpec)}})
		}
		if r.IntN(4) != 0 {
			p := &wire.Placement{}
			if r.IntN(2) == 0 {
				p.Selector = map[string]string{"role": pick(r, []string{"gw", "sensor"})}
				if r.IntN(3) == 0 {
					p.Selector["site"] = pick(r, sites[:3])
				}
			}
			if r.IntN(2) == 0 {
				for _, ar := range archs[:5] {
					if r.IntN(2) == 0 {
						p.Arch = append(p.Arch, ar)
					}
				}
			}
			if r.IntN(3) != 0 {
				p.Devices = wire.DeviceCount{N: 1 + r.IntN(12)}
			} else if r.IntN(2) == 0 {
				p.Devices = wire.DeviceCount{All: true}
			}
			if r.IntN(2) == 0 {
				p.Spread = pick(r, []string{"site", "site", "zone"})
			}
			a.Placement = p
		}
		req.Apps = append(req.Apps, a)
	}
	if r.IntN(2) == 0 {
		req.Current = Assignments{}
		for _, a := range req.Apps {
			for _, d := range req.Devices {
				if r.IntN(4) == 0 {
					req.Current[a.Name] = append(req.Current[a.Name], d.ID)
				}
			}
			if r.IntN(10) == 0 {
				req.Current[a.Name] = append(req.Current[a.Name], "gone")
			}
		}
	}
	return req
}

// forEachSeed runs check over random requests.
func forEachSeed(t *testing.T, check func(t *testing.T, r *rand.Rand, req Request, d Decision)) {
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		req := randomRequest(r)
		d, err := Place(req)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { check(t, r, req, d) })
	}
}

func appsByName(req Request) map[string]*wire.App {
	m := map[string]*wire.App{}
	for i := range req.Apps {
		m[req.Apps[i].Name] = &req.Apps[i]
	}
	return m
}

func count(a *wire.App) (all bool, n int) {
	if a.Placement == nil || a.Placement.Devices.IsZero() || a.Placement.Devices.All {
		return true, 0
	}
	return false, a.Placement.Devices.N
}

// matches is the selector and arch rule, written again from the spec.
func matches(a *wire.App, d *Device) bool {
	if a.Placement == nil {
		return true
	}
	for k, v := range a.Placement.Selector {
		if got, ok := d.Labels[k]; !ok || got != v {
			return false
		}
	}
	if len(a.Placement.Arch) == 0 {
		return true
	}
	for _, ar := range a.Placement.Arch {
		if ar == d.Arch || ar == "armv7" && d.Arch == "arm" || ar == "arm" && d.Arch == "armv7" {
			return true
		}
	}
	return false
}

func TestProperty_CapacityNeverExceeded(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, d Decision) {
		apps := appsByName(req)
		for _, dv := range req.Devices {
			var mem, cpu int64
			for name, ids := range d.Assignments {
				if slices.Contains(ids, dv.ID) {
					m, c := apps[name].Requests()
					mem, cpu = mem+m, cpu+c
				}
			}
			if mem > max(dv.MemoryBytes-req.Reserve.MemoryBytes, 0) || cpu > max(dv.MilliCPU-req.Reserve.MilliCPU, 0) {
				t.Errorf("device %s: apps need %d bytes, %dm; it has %d, %dm, reserve %+v", dv.ID, mem, cpu, dv.MemoryBytes, dv.MilliCPU, req.Reserve)
			}
		}
	})
}

func TestProperty_SelectorAndArchRespected(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, d Decision) {
		apps := appsByName(req)
		for _, dv := range req.Devices {
			for name, ids := range d.Assignments {
				if slices.Contains(ids, dv.ID) && !matches(apps[name], &dv) {
					t.Errorf("%s placed on %s (labels %v, arch %q), placement %+v", name, dv.ID, dv.Labels, dv.Arch, apps[name].Placement)
				}
			}
		}
	})
}

// Every pair has a reason; chosen is exactly assigned; an N-device app
// has exactly N devices unless every matching device left out is offline
// or full; a devices: all app leaves out only full devices.
func TestProperty_CountsAndReasons(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, d Decision) {
		apps := appsByName(req)
		if len(d.Assignments) != len(req.Apps) {
			t.Errorf("%d apps assigned, %d in the request", len(d.Assignments), len(req.Apps))
		}
		for name, ids := range d.Assignments {
			a := apps[name]
			all, n := count(a)
			rs, err := d.Explain(name)
			if err != nil {
				t.Fatal(err)
			}
			if !all && len(ids) > n {
				t.Errorf("%s: %d devices, want at most %d", name, len(ids), n)
			}
			for _, rsn := range rs {
				if rsn.Chosen != slices.Contains(ids, rsn.Device) {
					t.Errorf("%s on %s: chosen %v, assigned %v", name, rsn.Device, rsn.Chosen, ids)
				}
				if rsn.Message == "" || rsn.Message == "undecided" {
					t.Errorf("%s on %s: no reason: %+v", name, rsn.Device, rsn)
				}
				dv := &req.Devices[slices.IndexFunc(req.Devices, func(x Device) bool { return x.ID == rsn.Device })]
				if (rsn.Code == CodeLabel || rsn.Code == CodeArch) == matches(a, dv) {
					t.Errorf("%s on %s: %+v, but matches=%v", name, rsn.Device, rsn, matches(a, dv))
				}
				switch {
				case rsn.Chosen, rsn.Code == CodeLabel, rsn.Code == CodeArch, rsn.Code == CodeMemory, rsn.Code == CodeCPU:
				case all:
					t.Errorf("%s (all) on %s: %+v", name, rsn.Device, rsn)
				case rsn.Code == CodeOffline:
					if dv.Online {
						t.Errorf("%s on %s: %+v, but it is online", name, rsn.Device, rsn)
					}
				case rsn.Code == CodeNotNeeded:
					if len(ids) != n {
						t.Errorf("%s on %s: %+v with %d of %d placed", name, rsn.Device, rsn, len(ids), n)
					}
				default:
					t.Errorf("%s on %s: unexpected %+v", name, rsn.Device, rsn)
				}
			}
		}
	})
}

// With no resource requests and no current assignments, an N-device app
// gets exactly min(N, online matching devices).
func TestProperty_CountExactlyMet(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, _ Decision) {
		req.Current = nil
		for i := range req.Apps {
			for j := range req.Apps[i].Containers {
				req.Apps[i].Containers[j].Resources = wire.Resources{}
			}
		}
		d, err := Place(req)
		if err != nil {
			t.Fatal(err)
		}
		apps := appsByName(req)
		for name, ids := range d.Assignments {
			all, n := count(apps[name])
			online, matching := 0, 0
			for _, dv := range req.Devices {
				if matches(apps[name], &dv) {
					matching++
					if dv.Online {
						online++
					}
				}
			}
			if want := min(n, online); !all && len(ids) != want {
				t.Errorf("%s: %d devices, want %d (N %d, %d online matching)", name, len(ids), want, n, online)
			}
			if all && len(ids) != matching {
				t.Errorf("%s: %d devices, want all %d matching", name, len(ids), matching)
			}
		}
	})
}

// A fresh placement spreads within one: a value with two more devices
// than another means that other has no device left to give.
func TestProperty_SpreadBalanced(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, _ Decision) {
		req.Current = nil
		d, err := Place(req)
		if err != nil {
			t.Fatal(err)
		}
		apps := appsByName(req)
		for name, ids := range d.Assignments {
			a := apps[name]
			if all, _ := count(a); all || a.Placement.Spread == "" {
				continue
			}
			placed, spare := map[string]int{}, map[string]bool{}
			rs, _ := d.Explain(name)
			for _, rsn := range rs {
				dv := req.Devices[slices.IndexFunc(req.Devices, func(x Device) bool { return x.ID == rsn.Device })]
				v := dv.Labels[a.Placement.Spread]
				if rsn.Chosen {
					placed[v]++
				} else if rsn.Code == CodeNotNeeded {
					spare[v] = true
				}
				if rsn.Chosen || rsn.Code == CodeNotNeeded {
					placed[v] += 0
				}
			}
			for g, cg := range placed {
				for h, ch := range placed {
					if cg > ch+1 && spare[h] {
						t.Errorf("%s: %s=%s has %d, %s has %d and devices to spare (%v)", name, a.Placement.Spread, g, cg, h, ch, ids)
					}
				}
			}
		}
	})
}

// The same request gives the same decision, whatever the order of its
// devices, apps and current lists.
func TestProperty_Deterministic(t *testing.T) {
	forEachSeed(t, func(t *testing.T, r *rand.Rand, req Request, d Decision) {
		shuffled := req
		shuffled.Devices = slices.Clone(req.Devices)
		shuffled.Apps = slices.Clone(req.Apps)
		r.Shuffle(len(shuffled.Devices), func(i, j int) { shuffled.Devices[i], shuffled.Devices[j] = shuffled.Devices[j], shuffled.Devices[i] })
		r.Shuffle(len(shuffled.Apps), func(i, j int) { shuffled.Apps[i], shuffled.Apps[j] = shuffled.Apps[j], shuffled.Apps[i] })
		shuffled.Current = Assignments{}
		for k, ids := range req.Current {
			ids = slices.Clone(ids)
			r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			shuffled.Current[k] = ids
		}
		d2, err := Place(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		sameDecision(t, d, d2, false)
	})
}

// sameDecision compares assignments, warnings and every reason; with
// rerun, "kept" and "placed" count as the same (a rerun keeps what the
// first run placed) and so does a warning of a device gone (a rerun no
// longer has it).
func sameDecision(t *testing.T, d1, d2 Decision, rerun bool) {
	t.Helper()
	if !reflect.DeepEqual(d1.Assignments, d2.Assignments) {
		t.Errorf("assignments differ:\n%v\n%v", d1.Assignments, d2.Assignments)
	}
	w1, w2 := d1.Warnings, d2.Warnings
	if rerun {
		gone := func(w Warning) bool { return w.Code == WarnDeviceGone }
		w1, w2 = slices.DeleteFunc(slices.Clone(w1), gone), slices.DeleteFunc(slices.Clone(w2), gone)
	}
	if (len(w1) > 0 || len(w2) > 0) && !reflect.DeepEqual(w1, w2) {
		t.Errorf("warnings differ:\n%v\n%v", w1, w2)
	}
	for _, name := range slices.Sorted(maps.Keys(d1.Assignments)) {
		r1, _ := d1.Explain(name)
		r2, _ := d2.Explain(name)
		if rerun {
			for _, rs := range [][]Reason{r1, r2} {
				for i := range rs {
					if rs[i].Code == CodeKept {
						rs[i].Code, rs[i].Message = CodePlaced, ""
					} else if rs[i].Code == CodePlaced {
						rs[i].Message = ""
					}
				}
			}
		}
		if !reflect.DeepEqual(r1, r2) {
			t.Errorf("%s: reasons differ:\n%v\n%v", name, r1, r2)
		}
	}
}

// Feeding a decision back as the current assignments changes nothing.
func TestProperty_Stable(t *testing.T) {
	forEachSeed(t, func(t *testing.T, _ *rand.Rand, req Request, d Decision) {
		again := req
		again.Current = d.Assignments
		d2, err := Place(again)
		if err != nil {
			t.Fatal(err)
		}
		sameDecision(t, d, d2, true)
	})
}

// Devices going offline past the grace lose their share of N-device apps
// and nothing else moves: every other device keeps what it had, and each
// app gets at most as many new devices as it lost. devices: all apps keep
// their offline devices.
func TestProperty_FailoverMovesOnlyTheLostShare(t *testing.T) {
	forEachSeed(t, func(t *testing.T, r *rand.Rand, req Request, d Decision) {
		later := req
		later.Current = d.Assignments
		later.Devices = slices.Clone(req.Devices)
		lostIDs := map[string]bool{}
		for i := range later.Devices {
			if r.IntN(5) == 0 {
				later.Devices[i].Online = false
				later.Devices[i].LastSeen = now.Add(-req.Grace - time.Second)
				lostIDs[later.Devices[i].ID] = true
			}
		}
		d2, err := Place(later)
		if err != nil {
			t.Fatal(err)
		}
		apps := appsByName(req)
		for name, before := range d.Assignments {
			all, _ := count(apps[name])
			after := d2.Assignments[name]
			var lostShare, added int
			for _, id := range before {
				if lostIDs[id] && !all {
					lostShare++
					if slices.Contains(after, id) {
						t.Errorf("%s: still on %s, offline past the grace", name, id)
					}
				} else if !slices.Contains(after, id) {
					t.Errorf("%s: moved off %s, which did not go offline (before %v, after %v)", name, id, before, after)
				}
			}
			for _, id := range after {
				if !slices.Contains(before, id) {
					added++
					if all && !lostIDs[id] {
						t.Errorf("%s (all): new device %s that did not go offline", name, id)
					}
				}
			}
			if !all && added > lostShare {
				t.Errorf("%s: %d devices added for %d lost (before %v, after %v)", name, added, lostShare, before, after)
			}
		}
	})
}
