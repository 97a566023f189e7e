package placement

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// app builds an app: mem and cpu as in a spec ("" = none), placement p
// (nil = all devices).
func app(name, mem, cpu string, p *wire.Placement) wire.App {
	return wire.App{Name: name, Version: "1", Placement: p, Containers: []wire.Container{{
		Name: "main", Image: "registry.example/" + name + ":1",
		Resources: wire.Resources{Memory: mem, CPU: cpu},
	}}}
}

func n(k int) wire.DeviceCount { return wire.DeviceCount{N: k} }

// dev builds an online device with 1Gi of memory and 2 CPUs, labels as
// "k=v,k=v".
func dev(id, arch, labels string) Device {
	d := Device{ID: id, Arch: arch, MemoryBytes: 1 << 30, MilliCPU: 2000, Online: true, LastSeen: now, Labels: map[string]string{}}
	for kv := range strings.SplitSeq(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			d.Labels[k] = v
		}
	}
	return d
}

func place(t *testing.T, req Request) Decision {
	t.Helper()
	if req.Now.IsZero() {
		req.Now = now
	}
	d, err := Place(req)
	if err != nil {
		t.Fatalf("Place: %v", err)
	}
	return d
}

func reason(t *testing.T, d Decision, app, device string) Reason {
	t.Helper()
	r, err := d.ExplainDevice(app, device)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantReason(t *testing.T, d Decision, app, device string, chosen bool, code Code, msg string) {
	t.Helper()
	r := reason(t, d, app, device)
	if r.Chosen != chosen || r.Code != code || r.Message != msg {
		t.Errorf("%s on %s: got %+v, want chosen=%v code=%s %q", app, device, r, chosen, code, msg)
	}
}

func wantAssigned(t *testing.T, d Decision, app string, ids ...string) {
	t.Helper()
	if got := d.Assignments[app]; !slices.Equal(got, ids) {
		t.Errorf("%s assigned to %v, want %v", app, got, ids)
	}
}

func warnings(d Decision) []string {
	var ws []string
	for _, w := range d.Warnings {
		ws = append(ws, w.App+" "+string(w.Code)+": "+w.Message)
	}
	return ws
}

func TestPlace_Selector(t *testing.T) {
	d := place(t, Request{
		Apps: []wire.App{app("web", "", "", &wire.Placement{Selector: map[string]string{"site": "berlin", "role": "gateway"}})},
		Devices: []Device{
			dev("a", "arm64", "site=berlin,role=gateway,extra=1"),
			dev("b", "arm64", "site=paris,role=gateway"),
			dev("c", "arm64", "site=berlin"),
			dev("d", "arm64", "site=berlin,role=sensor"),
		},
	})
	wantAssigned(t, d, "web", "a")
	wantReason(t, d, "web", "a", true, CodePlaced, "chosen: new placement")
	wantReason(t, d, "web", "b", false, CodeLabel, "label site=paris, want berlin")
	wantReason(t, d, "web", "c", false, CodeLabel, "label role missing, want gateway")
	wantReason(t, d, "web", "d", false, CodeLabel, "label role=sensor, want gateway")
	if len(d.Warnings) != 0 {
		t.Errorf("warnings: %v", warnings(d))
	}
}

func TestPlace_Arch(t *testing.T) {
	d := place(t, Request{
		Apps: []wire.App{
			app("web", "", "", &wire.Placement{Arch: []string{"arm64", "amd64"}}),
			app("old", "", "", &wire.Placement{Arch: []string{"armv7"}}),
		},
		Devices: []Device{dev("a", "amd64", ""), dev("b", "armv7", ""), dev("c", "arm", ""), dev("d", "", "")},
	})
	wantAssigned(t, d, "web", "a")
	wantReason(t, d, "web", "b", false, CodeArch, "arch armv7 not in [arm64 amd64]")
	wantReason(t, d, "web", "c", false, CodeArch, "arch arm not in [arm64 amd64]")
	wantReason(t, d, "web", "d", false, CodeArch, "arch unknown (not reported) not in [arm64 amd64]")
	// armv7 in a spec is the arm the agent reports, and the reverse.
	wantAssigned(t, d, "old", "b", "c")
	wantReason(t, d, "old", "a", false, CodeArch, "arch amd64 not in [armv7]")
}

func TestPlace_Capacity(t *testing.T) {
	small := dev("small", "arm64", "")
	small.MemoryBytes = 232 << 20 // 232Mi - 128Mi reserve = 104Mi for apps
	small.MilliCPU = 1000
	unreported := dev("unreported", "arm64", "")
	unreported.MemoryBytes, unreported.MilliCPU = 0, 0
	d := place(t, Request{
		Apps: []wire.App{
			app("a", "64Mi", "", nil),     // fits small: 40Mi left
			app("b", "64Mi", "", nil),     // does not: 64Mi > 40Mi
			app("c", "", "1500m", nil),    // cpu: 1 - 0.25 reserve = 750m
			app("d", "", "", nil),         // requests nothing: fits anywhere
			app("e", "16Mi", "1", nil),    // memory fits, cpu does not
			app("f", "24Mi", "750m", nil), // all the CPU left
		},
		Devices: []Device{small, unreported},
		Reserve: Resources{MemoryBytes: 128 << 20, MilliCPU: 250},
	})
	wantAssigned(t, d, "a", "small")
	wantAssigned(t, d, "b")
	// Reasons tell what is left once every app is placed: f took 24Mi and
	// the last 750m.
	wantReason(t, d, "b", "small", false, CodeMemory, "memory: needs 64Mi, 16Mi free")
	wantReason(t, d, "b", "unreported", false, CodeMemory, "memory: needs 64Mi, the device has not reported its memory")
	wantReason(t, d, "c", "small", false, CodeCPU, "cpu: needs 1500m, 0 free")
	wantReason(t, d, "c", "unreported", false, CodeCPU, "cpu: needs 1500m, the device has not reported its CPUs")
	wantAssigned(t, d, "d", "small", "unreported")
	wantReason(t, d, "e", "small", false, CodeCPU, "cpu: needs 1, 0 free")
	wantAssigned(t, d, "f", "small")
	if got := warnings(d); !slices.Contains(got, "b short: 0 of 2 matching devices placed: 2 without room") {
		t.Errorf("warnings %q", got)
	}
}

func TestPlace_CapacityOddFreeIsRounded(t *testing.T) {
	dv := dev("a", "arm64", "")
	dv.MemoryBytes = 40<<20 + 12345
	d := place(t, Request{Apps: []wire.App{app("web", "64Mi", "", nil)}, Devices: []Device{dv}})
	wantReason(t, d, "web", "a", false, CodeMemory, "memory: needs 64Mi, 40.0MiB free")
}

// An app that already runs on a device keeps its room there even when an
// app earlier by name would want it.
func TestPlace_ExistingPlacementKeepsItsRoom(t *testing.T) {
	dv := dev("a", "arm64", "")
	dv.MemoryBytes = 104 << 20
	d := place(t, Request{
		Apps:    []wire.App{app("alpha", "64Mi", "", nil), app("beta", "64Mi", "", nil)},
		Devices: []Device{dv},
		Current: Assignments{"beta": {"a"}},
	})
	wantAssigned(t, d, "beta", "a")
	wantAssigned(t, d, "alpha")
	wantReason(t, d, "beta", "a", true, CodeKept, "chosen: already placed here")
	wantReason(t, d, "alpha", "a", false, CodeMemory, "memory: needs 64Mi, 40Mi free")
}

// A device that shrank (or a reserve that grew) keeps the apps earlier by
// name and drops the others.
func TestPlace_KeptOverCapacityDropsLaterApps(t *testing.T) {
	dv := dev("a", "arm64", "")
	dv.MemoryBytes = 100 << 20
	d := place(t, Request{
		Apps:    []wire.App{app("alpha", "64Mi", "", nil), app("beta", "64Mi", "", nil)},
		Devices: []Device{dv},
		Current: Assignments{"alpha": {"a"}, "beta": {"a"}},
	})
	wantAssigned(t, d, "alpha", "a")
	wantAssigned(t, d, "beta")
	wantReason(t, d, "beta", "a", false, CodeMemory, "memory: needs 64Mi, 36Mi free")
}

func TestPlace_CountN(t *testing.T) {
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(2)})},
		Devices: []Device{dev("a", "arm64", ""), dev("b", "arm64", ""), dev("c", "arm64", "")},
	})
	wantAssigned(t, d, "web", "a", "b")
	wantReason(t, d, "web", "c", false, CodeNotNeeded, "not needed: 2 of 2 devices placed")
	if len(d.Warnings) != 0 {
		t.Errorf("warnings: %v", warnings(d))
	}
}

// New N-device placements go to the devices with the fewest apps.
func TestPlace_CountNPrefersLeastLoaded(t *testing.T) {
	d := place(t, Request{
		Apps: []wire.App{
			app("a1", "", "", &wire.Placement{Devices: n(1)}),
			app("a2", "", "", &wire.Placement{Devices: n(1)}),
			app("a3", "", "", &wire.Placement{Devices: n(2)}),
		},
		Devices: []Device{dev("x", "arm64", ""), dev("y", "arm64", ""), dev("z", "arm64", "")},
	})
	wantAssigned(t, d, "a1", "x")
	wantAssigned(t, d, "a2", "y")
	wantAssigned(t, d, "a3", "x", "z") // z empty; x and y tie, x first by ID
}

func TestPlace_CountNShort(t *testing.T) {
	off := dev("c", "arm64", "")
	off.Online, off.LastSeen = false, now.Add(-2*time.Minute)
	full := dev("d", "arm64", "")
	full.MemoryBytes = 1 << 20
	d := place(t, Request{
		Apps:    []wire.App{app("web", "64Mi", "", &wire.Placement{Devices: n(5), Arch: []string{"arm64"}})},
		Devices: []Device{dev("a", "arm64", ""), dev("b", "amd64", ""), off, full},
	})
	wantAssigned(t, d, "web", "a")
	wantReason(t, d, "web", "c", false, CodeOffline, "offline for 2m (grace 5m): new placements go to online devices")
	wantReason(t, d, "web", "d", false, CodeMemory, "memory: needs 64Mi, 1Mi free")
	want := []string{"web short: 1 of 5 devices placed: of 3 matching devices, 1 offline, 1 without room"}
	if got := warnings(d); !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
}

func TestPlace_Spread(t *testing.T) {
	var devs []Device
	for _, s := range []struct{ id, site string }{
		{"b1", "berlin"}, {"b2", "berlin"}, {"b3", "berlin"}, {"b4", "berlin"},
		{"p1", "paris"}, {"p2", "paris"},
		{"r1", "rome"},
	} {
		devs = append(devs, dev(s.id, "arm64", "site="+s.site))
	}
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(5), Spread: "site"})},
		Devices: devs,
	})
	// Round 1: berlin, paris, rome; round 2: berlin, paris (rome has no more).
	wantAssigned(t, d, "web", "b1", "b2", "p1", "p2", "r1")
	wantReason(t, d, "web", "p1", true, CodePlaced, "chosen: new placement (site=paris)")
	wantReason(t, d, "web", "b3", false, CodeNotNeeded, "not needed: 5 of 5 devices placed")

	// Kept devices count: berlin already has two, so paris and rome come first.
	d = place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(4), Spread: "site"})},
		Devices: devs,
		Current: Assignments{"web": {"b3", "b4"}},
	})
	wantAssigned(t, d, "web", "b3", "b4", "p1", "r1")
}

func TestPlace_SpreadTiesByValueAndUnlabelled(t *testing.T) {
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(3), Spread: "zone"})},
		Devices: []Device{dev("a", "arm64", "zone=z2"), dev("b", "arm64", "zone=z1"), dev("c", "arm64", ""), dev("d", "arm64", "zone=z1")},
	})
	// Groups "" (c), z1 (b, d), z2 (a): one each, in value order.
	wantAssigned(t, d, "web", "a", "b", "c")
	wantReason(t, d, "web", "c", true, CodePlaced, "chosen: new placement (zone=(none))")
}

func TestPlace_SpreadLabelOnNoDevice(t *testing.T) {
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(1), Spread: "zone"})},
		Devices: []Device{dev("a", "arm64", "")},
	})
	wantAssigned(t, d, "web", "a")
	want := []string{"web spread-label: spread label zone: no matching device has it, so there is nothing to spread over"}
	if got := warnings(d); !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
}

// A valid assignment is kept even where a fresh placement would choose
// another device.
func TestPlace_Stable(t *testing.T) {
	devs := []Device{dev("a", "arm64", ""), dev("b", "arm64", ""), dev("c", "arm64", "")}
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(2)})},
		Devices: devs,
		Current: Assignments{"web": {"c", "b"}},
	})
	wantAssigned(t, d, "web", "b", "c")
	wantReason(t, d, "web", "a", false, CodeNotNeeded, "not needed: 2 of 2 devices placed")
	wantReason(t, d, "web", "c", true, CodeKept, "chosen: already placed here")
}

// A device that no longer matches loses the app, and another takes it.
func TestPlace_InvalidAssignmentReplaced(t *testing.T) {
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(1), Selector: map[string]string{"site": "berlin"}})},
		Devices: []Device{dev("a", "arm64", "site=berlin"), dev("b", "arm64", "site=paris")},
		Current: Assignments{"web": {"b"}},
	})
	wantAssigned(t, d, "web", "a")
	wantReason(t, d, "web", "b", false, CodeLabel, "label site=paris, want berlin")
}

func TestPlace_Failover(t *testing.T) {
	gone := dev("b", "arm64", "")
	gone.Online, gone.LastSeen = false, now.Add(-12*time.Minute)
	late := dev("c", "arm64", "")
	late.Online, late.LastSeen = false, now.Add(-3*time.Minute)
	never := dev("e", "arm64", "")
	never.Online, never.LastSeen = false, time.Time{}
	devs := []Device{dev("a", "arm64", ""), gone, late, dev("d", "arm64", ""), never, dev("f", "arm64", "")}
	d := place(t, Request{
		Apps: []wire.App{
			app("web", "", "", &wire.Placement{Devices: n(4)}),
			app("agent", "", "", nil), // devices: all
		},
		Devices: devs,
		Current: Assignments{"web": {"a", "b", "c", "e"}, "agent": {"a", "b", "c", "d", "e", "f"}},
	})
	// b (12m) and e (never seen) are past the 5m grace: their shares go to
	// d and f; c, offline for 3m, keeps its.
	wantAssigned(t, d, "web", "a", "c", "d", "f")
	wantReason(t, d, "web", "b", false, CodeOffline, "offline for 12m (grace 5m)")
	wantReason(t, d, "web", "e", false, CodeOffline, "offline, never seen (grace 5m)")
	wantReason(t, d, "web", "c", true, CodeKept, "chosen: already placed here; offline for 3m (grace 5m)")
	wantReason(t, d, "web", "d", true, CodePlaced, "chosen: new placement")
	// devices: all stays on offline devices.
	wantAssigned(t, d, "agent", "a", "b", "c", "d", "e", "f")
	wantReason(t, d, "agent", "b", true, CodeKept, "chosen: already placed here; offline for 12m, gets the app when it comes back")

	// A longer grace keeps b.
	d = place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(4)})},
		Devices: devs,
		Current: Assignments{"web": {"a", "b", "c", "e"}},
		Grace:   time.Hour,
	})
	wantAssigned(t, d, "web", "a", "b", "c", "d")
}

// A new devices: all app goes to offline devices too.
func TestPlace_AllIncludesOffline(t *testing.T) {
	off := dev("b", "arm64", "")
	off.Online, off.LastSeen = false, now.Add(-50*time.Hour)
	d := place(t, Request{Apps: []wire.App{app("agent", "", "", nil)}, Devices: []Device{dev("a", "arm64", ""), off}})
	wantAssigned(t, d, "agent", "a", "b")
	wantReason(t, d, "agent", "b", true, CodePlaced, "chosen: new placement; offline for 2d2h, gets the app when it comes back")
}

// When N is lowered, devices go from the largest spread group, offline
// before online, highest ID first.
func TestPlace_CountLowered(t *testing.T) {
	off := dev("b2", "arm64", "site=berlin")
	off.Online, off.LastSeen = false, now.Add(-time.Minute)
	devs := []Device{dev("b1", "arm64", "site=berlin"), off, dev("b3", "arm64", "site=berlin"), dev("p1", "arm64", "site=paris"), dev("p2", "arm64", "site=paris")}
	cur := Assignments{"web": {"b1", "b2", "b3", "p1", "p2"}}
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(3), Spread: "site"})},
		Devices: devs, Current: cur,
	})
	// berlin 3, paris 2: drop b2 (offline); then 2 and 2, drop p2 (highest ID).
	wantAssigned(t, d, "web", "b1", "b3", "p1")
	wantReason(t, d, "web", "p2", false, CodeNotNeeded, "not needed: 3 of 3 devices placed")
	d = place(t, Request{Apps: []wire.App{app("web", "", "", &wire.Placement{Devices: n(2)})}, Devices: devs, Current: cur})
	wantAssigned(t, d, "web", "b1", "b3")
}

func TestPlace_Warnings(t *testing.T) {
	d := place(t, Request{
		Apps: []wire.App{
			app("a", "", "", &wire.Placement{Selector: map[string]string{"site": "berlin", "role": "gw"}}),
			app("b", "", "", &wire.Placement{Arch: []string{"riscv64"}}),
			app("c", "", "", &wire.Placement{Selector: map[string]string{"site": "rome"}, Arch: []string{"arm64"}}),
			app("d", "", "", nil),
		},
		Devices: []Device{dev("x", "arm64", "site=paris")},
		Current: Assignments{"d": {"x", "gone"}, "removed-app": {"x"}},
	})
	want := []string{
		"a no-match: selector role=gw,site=berlin matches no device",
		"b no-match: arch [riscv64] matches no device",
		"c no-match: selector site=rome and arch [arm64] matches no device",
		"d device-gone: assigned device gone is no longer in the fleet: dropped",
	}
	if got := warnings(d); !slices.Equal(got, want) {
		t.Errorf("warnings\n%q\nwant\n%q", got, want)
	}
	wantAssigned(t, d, "a")
	wantAssigned(t, d, "d", "x")
	if _, ok := d.Assignments["removed-app"]; ok {
		t.Error("an app not in the request is in the assignments")
	}
}

func TestPlace_NoDevices(t *testing.T) {
	d := place(t, Request{Apps: []wire.App{app("a", "", "", nil)}})
	wantAssigned(t, d, "a")
	if got := warnings(d); !slices.Equal(got, []string{"a no-match: the app (no constraints) matches no device"}) {
		t.Errorf("warnings %q", got)
	}
}

func TestPlace_RefusesMalformedRequests(t *testing.T) {
	ok := Request{Apps: []wire.App{app("a", "", "", nil)}, Devices: []Device{dev("x", "arm64", "")}, Now: now}
	for _, tc := range []struct {
		name, want string
		mod        func(*Request)
	}{
		{"zero now", "placement: now is zero", func(r *Request) { r.Now = time.Time{} }},
		{"negative grace", "placement: negative grace -1s", func(r *Request) { r.Grace = -time.Second }},
		{"negative reserve", "placement: negative reserve (memory -1, cpu 0m)", func(r *Request) { r.Reserve.MemoryBytes = -1 }},
		{"empty device id", "placement: device 1: empty ID", func(r *Request) { r.Devices = append(r.Devices, dev("", "arm64", "")) }},
		{"duplicate device", `placement: device "x" listed twice`, func(r *Request) { r.Devices = append(r.Devices, dev("x", "arm64", "")) }},
		{"empty app name", "placement: app with an empty name", func(r *Request) { r.Apps = append(r.Apps, app("", "", "", nil)) }},
		{"duplicate app", `placement: app "a" listed twice`, func(r *Request) { r.Apps = append(r.Apps, app("a", "", "", nil)) }},
		{"negative count", "app b: placement.devices: negative count -1", func(r *Request) {
			r.Apps = append(r.Apps, app("b", "", "", &wire.Placement{Devices: n(-1)}))
		}},
		{"unknown arch", `app b: placement.arch[1]: unknown architecture "mips"`, func(r *Request) {
			r.Apps = append(r.Apps, app("b", "", "", &wire.Placement{Arch: []string{"arm64", "mips"}}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			req.Apps = slices.Clone(ok.Apps)
			req.Devices = slices.Clone(ok.Devices)
			tc.mod(&req)
			_, err := Place(req)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want invalid argument containing %q", err, tc.want)
			}
		})
	}
	if _, err := Place(ok); err != nil {
		t.Errorf("the valid request: %v", err)
	}
}

func TestExplain(t *testing.T) {
	d := place(t, Request{
		Apps:    []wire.App{app("web", "", "", &wire.Placement{Devices: n(1)})},
		Devices: []Device{dev("b", "arm64", ""), dev("a", "arm64", "")},
	})
	rs, err := d.Explain("web")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rs)
	want := "[{a true placed chosen: new placement} {b false not-needed not needed: 1 of 1 devices placed}]"
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := d.Explain("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown app: %v", err)
	}
	if _, err := d.ExplainDevice("web", "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown device: %v", err)
	}
	if _, err := d.ExplainDevice("nope", "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown app: %v", err)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                               "0s",
		45 * time.Second:                "45s",
		12 * time.Minute:                "12m",
		12*time.Minute + 30*time.Second: "12m30s",
		3*time.Hour + 5*time.Minute:     "3h5m",
		3*time.Hour + 5*time.Second:     "3h",
		50 * time.Hour:                  "2d2h",
		48*time.Hour + 5*time.Minute:    "2d",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestDevice_WithFacts(t *testing.T) {
	d := Device{ID: "a", Online: true}.WithFacts(wire.DeviceFacts{Arch: "arm", MemoryBytes: 512 << 20, CPUs: 4})
	if d.ID != "a" || !d.Online || d.Arch != "arm" || d.MemoryBytes != 512<<20 || d.MilliCPU != 4000 {
		t.Errorf("%+v", d)
	}
	if d := (Device{}).WithFacts(wire.DeviceFacts{MemoryBytes: 1 << 63}); d.MemoryBytes != math.MaxInt64 {
		t.Errorf("memory beyond int64: %d", d.MemoryBytes)
	}
}
