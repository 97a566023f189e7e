package sim

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tender-edge/tender/fleet/placement"
	"github.com/tender-edge/tender/sync/wire"
)

// PlacementOptions describe one simulated fleet under churn, placed by the
// real fleet/placement at every virtual minute.
type PlacementOptions struct {
	Seed    uint64
	Devices int
	Apps    int
	// Steps is how many virtual minutes run (default 120).
	Steps int
	// Grace is the failover grace (default placement.DefaultGrace).
	Grace time.Duration
	// Per device and per virtual minute.
	OfflineRate float64 // goes offline for 1 to 30 minutes
	DieRate     float64 // goes offline for good
	MoveRate    float64 // its site label changes
	// Per virtual minute: an app's spec changes (requests, count, arch).
	ChangeRate float64
	// EnrollRate is the share of Devices enrolling anew per minute.
	EnrollRate float64
}

// PlacementSummary is what a run did.
type PlacementSummary struct {
	Steps, Devices, Apps int
	// Placed is the sum over steps of (app, device) assignments; Moved the
	// assignments dropped while their device stayed valid and unchanged
	// (none expected); FailedOver the shares moved off devices offline past
	// the grace.
	Placed, FailedOver int
	// Digest is a hash of every decision: a seed replays to the same.
	Digest string
}

func (s PlacementSummary) String() string {
	return fmt.Sprintf("placement: %d devices, %d apps, %d steps: %d assignments, %d shares failed over, digest %s",
		s.Devices, s.Apps, s.Steps, s.Placed, s.FailedOver, s.Digest[:16])
}

type pdev struct {
	placement.Device
	offlineTill time.Time
	dead        bool
	changedAt   int // step of the last change to its labels or facts
}

// RunPlacement runs a churning fleet through placement.Place minute by
// minute and checks at every step: capacity is never exceeded; every
// assignment matches the app's selector and arch; an N-device app has at
// most N devices, and fewer only with a warning; no N-device app stays on
// a device offline past the grace; an assignment whose app and device did
// not change and whose device is still within the grace is kept; the same
// request in another order gives the same decision.
func RunPlacement(o PlacementOptions) (PlacementSummary, error) {
	if o.Steps == 0 {
		o.Steps = 120
	}
	grace := o.Grace
	if grace == 0 {
		grace = placement.DefaultGrace
	}
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	sites := []string{"berlin", "paris", "rome", "oslo", "lima", "pune", "kobe", "cork"}
	archs := []string{"amd64", "arm64", "arm", "arm64"}
	reserve := placement.Resources{MemoryBytes: 64 << 20, MilliCPU: 100}
	now := Start
	var devs []*pdev
	nextID := 0
	newDevice := func(step int) *pdev {
		d := &pdev{Device: placement.Device{
			ID:          fmt.Sprintf("dev-%06d", nextID),
			Labels:      map[string]string{"site": sites[r.IntN(len(sites))], "role": []string{"gw", "sensor"}[r.IntN(2)]},
			Arch:        archs[r.IntN(len(archs))],
			MemoryBytes: int64(256<<r.IntN(5)) << 20, // 256Mi .. 4Gi
			MilliCPU:    int64(1+r.IntN(4)) * 1000,
			Online:      true, LastSeen: now,
		}, changedAt: step}
		nextID++
		return d
	}
	for range o.Devices {
		devs = append(devs, newDevice(0))
	}
	apps := make([]wire.App, o.Apps)
	appChanged := make([]int, o.Apps)
	newApp := func(i int) wire.App {
		a := wire.App{Name: fmt.Sprintf("app-%02d", i), Version: "1",
			Containers: []wire.Container{{Name: "main", Image: "registry.example/app:1", Resources: wire.Resources{
				Memory: fmt.Sprintf("%dMi", 16<<r.IntN(5)), // 16Mi .. 256Mi
				CPU:    fmt.Sprintf("%dm", 50*(1+r.IntN(10))),
			}}},
			Placement: &wire.Placement{},
		}
		switch r.IntN(4) {
		case 0:
			a.Placement.Selector = map[string]string{"site": sites[r.IntN(len(sites))]}
		case 1:
			a.Placement.Selector = map[string]string{"role": "gw"}
		}
		if r.IntN(3) == 0 {
			a.Placement.Arch = []string{"arm64", "arm"}
		}
		if r.IntN(3) == 0 {
			a.Placement.Devices = wire.DeviceCount{All: true}
		} else {
			a.Placement.Devices = wire.DeviceCount{N: 1 + r.IntN(max(o.Devices/8, 1))}
			if r.IntN(2) == 0 {
				a.Placement.Spread = "site"
			}
		}
		return a
	}
	for i := range apps {
		apps[i] = newApp(i)
	}

	var cur placement.Assignments
	sum := PlacementSummary{Steps: o.Steps, Apps: o.Apps}
	h := sha256.New()
	for step := 1; step <= o.Steps; step++ {
		now = now.Add(tick)
		// Churn.
		for _, d := range devs {
			switch {
			case d.dead:
			case !d.Online && !d.offlineTill.IsZero() && !now.Before(d.offlineTill):
				d.Online, d.LastSeen, d.offlineTill = true, now, time.Time{}
			case d.Online && r.Float64() < o.DieRate:
				d.Online, d.dead = false, true
			case d.Online && r.Float64() < o.OfflineRate:
				d.Online, d.offlineTill = false, now.Add(time.Duration(1+r.IntN(30))*time.Minute)
			}
			if d.Online {
				d.LastSeen = now
			}
			if !d.dead && r.Float64() < o.MoveRate {
				labels := map[string]string{"site": sites[r.IntN(len(sites))], "role": d.Labels["role"]}
				d.Labels, d.changedAt = labels, step
			}
		}
		for n := int(float64(o.Devices) * o.EnrollRate); n > 0; n-- {
			devs = append(devs, newDevice(step))
		}
		if r.Float64() < o.ChangeRate && len(apps) > 0 {
			i := r.IntN(len(apps))
			apps[i], appChanged[i] = newApp(i), step
		}

		req := placement.Request{Apps: slices.Clone(apps), Current: cur, Reserve: reserve, Grace: grace, Now: now}
		for _, d := range devs {
			req.Devices = append(req.Devices, d.Device)
		}
		dec, err := placement.Place(req)
		if err != nil {
			return sum, fmt.Errorf("seed %d step %d: place: %w", o.Seed, step, err)
		}
		if step%10 == 0 {
			// The same request in another order: the same decision.
			shuffled := req
			shuffled.Devices = slices.Clone(req.Devices)
			r.Shuffle(len(shuffled.Devices), func(i, j int) {
				shuffled.Devices[i], shuffled.Devices[j] = shuffled.Devices[j], shuffled.Devices[i]
			})
			shuffled.Apps = slices.Clone(req.Apps)
			slices.Reverse(shuffled.Apps)
			again, err := placement.Place(shuffled)
			if err != nil {
				return sum, fmt.Errorf("seed %d step %d: place again: %w", o.Seed, step, err)
			}
			for _, a := range apps {
				if !slices.Equal(dec.Assignments[a.Name], again.Assignments[a.Name]) {
					return sum, fmt.Errorf("seed %d step %d: app %s: the same request in another order placed it on %d devices, then %d",
						o.Seed, step, a.Name, len(dec.Assignments[a.Name]), len(again.Assignments[a.Name]))
				}
			}
		}
		moved, err := checkPlacement(o, step, grace, now, devs, apps, appChanged, reserve, cur, dec)
		if err != nil {
			return sum, err
		}
		sum.FailedOver += moved
		for _, a := range apps {
			ids := dec.Assignments[a.Name]
			sum.Placed += len(ids)
			fmt.Fprintf(h, "%d %s %s\n", step, a.Name, strings.Join(ids, ","))
		}
		cur = dec.Assignments
	}
	sum.Devices = len(devs)
	sum.Digest = fmt.Sprintf("%x", h.Sum(nil))
	return sum, nil
}

// checkPlacement checks one decision (see RunPlacement) and returns the
// number of shares failed over.
func checkPlacement(o PlacementOptions, step int, grace time.Duration, now time.Time, devs []*pdev, apps []wire.App, appChanged []int,
	reserve placement.Resources, prev placement.Assignments, dec placement.Decision) (int, error) {
	fail := func(format string, args ...any) (int, error) {
		return 0, fmt.Errorf("seed %d step %d: %s", o.Seed, step, fmt.Sprintf(format, args...))
	}
	byID := make(map[string]*pdev, len(devs))
	for _, d := range devs {
		byID[d.ID] = d
	}
	mem := map[string]int64{}
	cpu := map[string]int64{}
	failedOver := 0
	// An app that changed is placed anew and may take capacity other apps
	// held on the same devices: stability is owed only across steps where
	// no app changed.
	anyChanged := slices.Contains(appChanged, step)
	for _, a := range apps {
		ids := dec.Assignments[a.Name]
		m, c := a.Requests()
		all := a.Placement.Devices.All
		if !all && len(ids) > a.Placement.Devices.N {
			return fail("app %s: %d devices, more than its %d", a.Name, len(ids), a.Placement.Devices.N)
		}
		if !all && len(ids) < a.Placement.Devices.N && !slices.ContainsFunc(dec.Warnings, func(w placement.Warning) bool {
			return w.App == a.Name && (w.Code == placement.WarnShort || w.Code == placement.WarnNoMatch)
		}) {
			return fail("app %s: %d devices of %d, and no warning says so", a.Name, len(ids), a.Placement.Devices.N)
		}
		in := make(map[string]bool, len(ids))
		for _, id := range ids {
			in[id] = true
			d := byID[id]
			if d == nil {
				return fail("app %s placed on unknown device %s", a.Name, id)
			}
			if !placementMatches(&a, d) {
				return fail("app %s placed on %s (labels %v, arch %s), which its selector %v / arch %v excludes",
					a.Name, id, d.Labels, d.Arch, a.Placement.Selector, a.Placement.Arch)
			}
			if !all && !d.Online && now.Sub(d.LastSeen) > grace {
				return fail("app %s (%d devices) kept on %s, offline since %s, past the grace of %s", a.Name, a.Placement.Devices.N, id, d.LastSeen.Format(time.TimeOnly), grace)
			}
			mem[id] += m
			cpu[id] += c
		}
		// Kept: an assignment whose app and device did not change this
		// step, the device within the grace and still matching.
		for _, id := range prev[a.Name] {
			d := byID[id]
			if in[id] || d == nil {
				continue
			}
			if !all && !d.Online && now.Sub(d.LastSeen) > grace {
				failedOver++
				continue
			}
			if !anyChanged && d.changedAt != step && placementMatches(&a, d) {
				return fail("app %s dropped from %s, which did not change and is within the grace", a.Name, id)
			}
		}
	}
	for id, m := range mem {
		d := byID[id]
		if m > max(d.MemoryBytes-reserve.MemoryBytes, 0) || cpu[id] > max(d.MilliCPU-reserve.MilliCPU, 0) {
			return fail("device %s: apps need %d bytes and %dm CPU; it has %d and %dm less the reserve", id, m, cpu[id], d.MemoryBytes, d.MilliCPU)
		}
	}
	return failedOver, nil
}

// placementMatches is the selector and arch rule, written again from the
// app spec.
func placementMatches(a *wire.App, d *pdev) bool {
	for k, v := range a.Placement.Selector {
		if d.Labels[k] != v {
			return false
		}
	}
	return len(a.Placement.Arch) == 0 || slices.Contains(a.Placement.Arch, d.Arch)
}
