package placement

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

// DefaultGrace is how long a device may be offline before its share of an
// N-device app moves elsewhere, when Request.Grace is zero.
const DefaultGrace = 5 * time.Minute

// Device is one device of the fleet as placement sees it: what the
// controller knows from its enrollment labels, its last report's facts and
// its presence.
type Device struct {
	ID     string
	Labels map[string]string
	// Arch as the device reports it (wire.DeviceFacts.Arch, Go's GOARCH):
	// amd64, arm64, arm, riscv64, 386. "armv7" is read as "arm". Empty
	// when the device has not reported: it matches only apps that name no
	// arch.
	Arch string
	// MemoryBytes and MilliCPU are what the device reports it has
	// (wire.DeviceFacts.MemoryBytes, and CPUs*1000). Zero when not
	// reported: then only apps that request none of it fit.
	MemoryBytes int64
	MilliCPU    int64
	// Online is the device's presence; LastSeen when it was last heard
	// from (zero: never).
	Online   bool
	LastSeen time.Time
}

// WithFacts returns d with its arch, memory and CPUs taken from the facts
// of the device's last report.
func (d Device) WithFacts(f wire.DeviceFacts) Device {
	d.Arch = f.Arch
	d.MemoryBytes = int64(min(f.MemoryBytes, math.MaxInt64))
	d.MilliCPU = int64(max(f.CPUs, 0)) * 1000
	return d
}

// Resources are an amount of memory and CPU.
type Resources struct {
	MemoryBytes int64
	MilliCPU    int64
}

// Assignments are, by app name, the IDs of the devices the app is placed
// on, sorted.
type Assignments map[string][]string

// Request is everything Place looks at.
type Request struct {
	// Apps to place, validated (wire.App.Validate: Place checks only
	// what it relies on); names are unique. An app without placement, or with
	// placement.devices unset, goes to all devices matching its selector
	// and arch.
	Apps []wire.App
	// Devices of the fleet; IDs are unique.
	Devices []Device
	// Current is the previous decision's Assignments (persisted by the
	// shell). Apps and devices it names that are no longer in Apps or
	// Devices are dropped.
	Current Assignments
	// Reserve is kept free on every device for the agent and the system;
	// apps get what a device reports minus this.
	Reserve Resources
	// Grace is how long a device of an N-device app may be offline before
	// its share moves to another device (DefaultGrace when zero).
	// Devices of `devices: all` apps stay assigned however long they are
	// offline.
	Grace time.Duration
	// Now is the time against which LastSeen is measured.
	Now time.Time
}

// Decision is what Place returns: where each app goes, why each device
// was or was not chosen (Explain), and what an operator should look at.
//
// A Decision keeps references to the Request's devices and apps for its
// explanations: do not modify them while the Decision is in use.
type Decision struct {
	// Assignments holds every app of the request, with the devices it
	// goes to (none: an empty slice).
	Assignments Assignments
	// Warnings in app name order. None of them is an error: the
	// assignments are valid as they are.
	Warnings []Warning

	devices []*Device      // sorted by ID
	byID    map[string]int // index into devices
	apps    map[string]*appState
	grace   time.Duration
	now     time.Time
	// what is left on each device once every app is placed
	freeMem, freeCPU []int64
}

// WarningCode says what kind of warning a Warning is.
type WarningCode string

// Warning codes.
const (
	// WarnNoMatch: the app's selector and arch match no device.
	WarnNoMatch WarningCode = "no-match"
	// WarnShort: fewer devices than the app's N, or than all matching
	// devices, got the app (offline devices, or no capacity).
	WarnShort WarningCode = "short"
	// WarnSpreadLabel: no matching device carries the spread label.
	WarnSpreadLabel WarningCode = "spread-label"
	// WarnDeviceGone: a current assignment names a device no longer in
	// the fleet; it is dropped.
	WarnDeviceGone WarningCode = "device-gone"
)

// Warning is something about an app's placement an operator should know.
type Warning struct {
	App     string      `json:"app"`
	Code    WarningCode `json:"code"`
	Message string      `json:"message"`
}

// appState is one app being placed.
type appState struct {
	app      *wire.App
	name     string
	mem, cpu int64
	all      bool
	n        int
	selKeys  []string // sorted
	sel      map[string]string
	arch     []string // canonical, as written order
	archText string   // "[arm64 amd64]" as written
	spread   string
	entries  []entry // one per device, by device index
	count    int     // devices chosen
}

// entry is the verdict for one (app, device): small, since there are
// apps × devices of them; Explain turns it into words.
type entry struct {
	code code
	a, b int64 // code-dependent: selector key index, placed/wanted
}

type code uint8

const (
	codeUnset code = iota
	codeKept
	codePlaced
	codeLabel
	codeArch
	codeOffline
	codeMemory
	codeCPU
	codeNotNeeded
)

func (c code) chosen() bool { return c == codeKept || c == codePlaced }

// Place decides where every app goes. It is a pure function: the same
// request gives the same decision. Apps are placed in a fixed order: first
// every app keeps the devices it is on that are still valid (apps by name),
// then every app is given new devices (apps by name), so an app that grows
// never takes capacity from another's existing placement.
//
// The error, ErrInvalidArgument, is for requests that are malformed (an
// empty or duplicate device ID or app name, a negative count, reserve or
// grace, an unknown arch, a zero Now); everything else is a warning.
func Place(req Request) (Decision, error) {
	if err := validate(&req); err != nil {
		return Decision{}, err
	}
	grace := req.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	p := &placer{req: &req, grace: grace}
	p.devices = make([]*Device, len(req.Devices))
	for i := range req.Devices {
		p.devices[i] = &req.Devices[i]
	}
	slices.SortFunc(p.devices, func(a, b *Device) int { return strings.Compare(a.ID, b.ID) })
	p.byID = make(map[string]int, len(p.devices))
	p.freeMem = make([]int64, len(p.devices))
	p.freeCPU = make([]int64, len(p.devices))
	p.load = make([]int32, len(p.devices))
	for i, d := range p.devices {
		p.byID[d.ID] = i
		p.freeMem[i] = max(d.MemoryBytes-req.Reserve.MemoryBytes, 0)
		p.freeCPU[i] = max(d.MilliCPU-req.Reserve.MilliCPU, 0)
	}
	p.apps = make([]*appState, len(req.Apps))
	for i := range req.Apps {
		p.apps[i] = newAppState(&req.Apps[i], len(p.devices))
	}
	slices.SortFunc(p.apps, func(a, b *appState) int { return strings.Compare(a.name, b.name) })

	for _, a := range p.apps {
		p.keep(a)
	}
	for _, a := range p.apps {
		p.fill(a)
	}
	// Reasons are told against the end state, whichever pass decided, so
	// that a rerun (which keeps all first and tries fewer devices) tells
	// the same: for a device that did not get the app, a mismatch first,
	// then (N-device apps) being offline, then room, told against what is
	// left once all is placed (the short resource named again, memory
	// first), then not being needed.
	for _, a := range p.apps {
		for i, e := range a.entries {
			switch e.code {
			case codeMemory, codeCPU, codeNotNeeded:
				if !a.all && !p.devices[i].Online {
					a.entries[i] = entry{code: codeOffline}
				} else if c := p.room(a, i); c != codeUnset {
					a.entries[i] = entry{code: c}
				}
			}
		}
	}
	d := Decision{
		Assignments: make(Assignments, len(p.apps)),
		devices:     p.devices,
		byID:        p.byID,
		apps:        make(map[string]*appState, len(p.apps)),
		grace:       grace,
		now:         req.Now,
		freeMem:     p.freeMem,
		freeCPU:     p.freeCPU,
	}
	for _, a := range p.apps {
		ids := make([]string, 0, a.count)
		for i, e := range a.entries {
			if e.code.chosen() {
				ids = append(ids, p.devices[i].ID)
			}
		}
		d.Assignments[a.name] = ids
		d.apps[a.name] = a
		p.warnings = append(p.warnings, p.summarize(a)...)
	}
	slices.SortStableFunc(p.warnings, func(x, y Warning) int { return strings.Compare(x.App, y.App) })
	d.Warnings = p.warnings
	return d, nil
}

// validate refuses malformed requests, naming every problem.
func validate(req *Request) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...))
	}
	if req.Now.IsZero() {
		bad("placement: now is zero: pass the current time")
	}
	if req.Grace < 0 {
		bad("placement: negative grace %s", req.Grace)
	}
	if req.Reserve.MemoryBytes < 0 || req.Reserve.MilliCPU < 0 {
		bad("placement: negative reserve (memory %d, cpu %dm)", req.Reserve.MemoryBytes, req.Reserve.MilliCPU)
	}
	ids := make(map[string]bool, len(req.Devices))
	for i, d := range req.Devices {
		switch {
		case d.ID == "":
			bad("placement: device %d: empty ID", i)
		case ids[d.ID]:
			bad("placement: device %q listed twice", d.ID)
		}
		ids[d.ID] = true
	}
	names := make(map[string]bool, len(req.Apps))
	for _, a := range req.Apps {
		switch {
		case a.Name == "":
			bad("placement: app with an empty name")
		case names[a.Name]:
			bad("placement: app %q listed twice", a.Name)
		}
		names[a.Name] = true
		if p := a.Placement; p != nil {
			if !p.Devices.All && p.Devices.N < 0 {
				bad("app %s: placement.devices: negative count %d", a.Name, p.Devices.N)
			}
			for i, ar := range p.Arch {
				if !knownArch(ar) {
					bad("app %s: placement.arch[%d]: unknown architecture %q: want amd64, arm64, arm (or armv7), riscv64 or 386", a.Name, i, ar)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CanonicalArch is the name placement compares architectures by: Go's
// GOARCH, with "armv7" read as "arm" (32-bit ARM, which is what the agent
// reports on an armv7 device).
func CanonicalArch(s string) string {
	if s == "armv7" {
		return "arm"
	}
	return s
}

func knownArch(s string) bool {
	switch CanonicalArch(s) {
	case "amd64", "arm64", "arm", "riscv64", "386":
		return true
	}
	return false
}

func newAppState(app *wire.App, ndev int) *appState {
	a := &appState{app: app, name: app.Name, all: true, entries: make([]entry, ndev)}
	a.mem, a.cpu = app.Requests()
	if p := app.Placement; p != nil {
		if !p.Devices.All && p.Devices.N > 0 {
			a.all, a.n = false, p.Devices.N
		}
		a.sel = p.Selector
		a.selKeys = slices.Sorted(maps.Keys(p.Selector))
		for _, ar := range p.Arch {
			a.arch = append(a.arch, CanonicalArch(ar))
		}
		if len(p.Arch) > 0 {
			a.archText = "[" + strings.Join(p.Arch, " ") + "]"
		}
		a.spread = p.Spread
	}
	return a
}

type placer struct {
	req      *Request
	grace    time.Duration
	devices  []*Device
	byID     map[string]int
	freeMem  []int64
	freeCPU  []int64
	load     []int32 // apps placed on each device
	apps     []*appState
	warnings []Warning
}

// match checks the selector and the arch: codeUnset when the device
// matches, else the mismatch (for a label, the key's index).
func (p *placer) match(a *appState, i int) entry {
	d := p.devices[i]
	for k, key := range a.selKeys {
		if v, ok := d.Labels[key]; !ok || v != a.sel[key] {
			return entry{code: codeLabel, a: int64(k)}
		}
	}
	if len(a.arch) > 0 && !slices.Contains(a.arch, CanonicalArch(d.Arch)) {
		return entry{code: codeArch}
	}
	return entry{}
}

// lost is true when device i has been offline longer than the grace.
func (p *placer) lost(i int) bool { return lost(p.devices[i], p.req.Now, p.grace) }

func lost(d *Device, now time.Time, grace time.Duration) bool {
	return !d.Online && (d.LastSeen.IsZero() || now.Sub(d.LastSeen) > grace)
}

// room says whether a's requests fit in what is left on device i: if
// not, which resource is short (memory first). What is left only shrinks
// as apps are placed, so a device short for an app stays short; the
// explanation shows what is left in the end.
func (p *placer) room(a *appState, i int) code {
	if a.mem > 0 && a.mem > p.freeMem[i] {
		return codeMemory
	}
	if a.cpu > 0 && a.cpu > p.freeCPU[i] {
		return codeCPU
	}
	return codeUnset
}

// fit reserves a's requests on device i if they fit; else it returns why
// not.
func (p *placer) fit(a *appState, i int) entry {
	if c := p.room(a, i); c != codeUnset {
		return entry{code: c}
	}
	p.freeMem[i] -= a.mem
	p.freeCPU[i] -= a.cpu
	p.load[i]++
	return entry{}
}

// keep is the first pass: a keeps the devices it is on that still match,
// that (for an N-device app) are not offline past the grace, and that
// still have room, at most N of them.
func (p *placer) keep(a *appState) {
	var keep []int
	for _, id := range slices.Sorted(slices.Values(p.req.Current[a.name])) {
		i, ok := p.byID[id]
		if !ok {
			p.warnings = append(p.warnings, Warning{App: a.name, Code: WarnDeviceGone,
				Message: fmt.Sprintf("assigned device %s is no longer in the fleet: dropped", id)})
			continue
		}
		if a.entries[i].code != codeUnset || p.match(a, i).code != codeUnset {
			continue // listed twice, or no longer matching: fill explains it
		}
		if !a.all && p.lost(i) {
			a.entries[i] = entry{code: codeOffline} // failover: its share moves
			continue
		}
		a.entries[i] = entry{code: codeKept} // provisional, to skip duplicates
		keep = append(keep, i)
	}
	for _, i := range keep {
		a.entries[i] = entry{}
	}
	slices.Sort(keep)
	if !a.all && len(keep) > a.n {
		keep = p.trim(a, keep)
	}
	for _, i := range keep {
		if e := p.fit(a, i); e.code != codeUnset {
			a.entries[i] = e
			continue
		}
		a.entries[i] = entry{code: codeKept}
		a.count++
	}
}

// trim drops kept devices of an N-device app down to N (its count was
// lowered): from the spread group with the most devices first, offline
// devices before online ones, the highest ID first.
func (p *placer) trim(a *appState, keep []int) []int {
	for len(keep) > a.n {
		groups := map[string]int{}
		if a.spread != "" {
			for _, i := range keep {
				groups[p.devices[i].Labels[a.spread]]++
			}
		}
		drop := -1
		for j, i := range keep {
			if drop < 0 {
				drop = j
				continue
			}
			o := keep[drop]
			c := cmp.Or(
				cmp.Compare(groups[p.devices[i].Labels[a.spread]], groups[p.devices[o].Labels[a.spread]]),
				cmp.Compare(btoi(!p.devices[i].Online), btoi(!p.devices[o].Online)),
				cmp.Compare(i, o),
			)
			if c > 0 {
				drop = j
			}
		}
		keep = slices.Delete(keep, drop, drop+1)
	}
	return keep
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fill is the second pass: a `devices: all` app goes to every matching
// device with room, online or not; an N-device app gets new online
// devices until it has N, round-robin over its spread label's values.
// Every device left undecided gets its reason.
func (p *placer) fill(a *appState) {
	if a.all {
		for i := range a.entries {
			if a.entries[i].code != codeUnset {
				continue
			}
			if e := p.match(a, i); e.code != codeUnset {
				a.entries[i] = e
			} else if e := p.fit(a, i); e.code != codeUnset {
				a.entries[i] = e
			} else {
				a.entries[i] = entry{code: codePlaced}
				a.count++
			}
		}
		return
	}
	var cands []int
	for i := range a.entries {
		if a.entries[i].code != codeUnset {
			continue
		}
		if e := p.match(a, i); e.code != codeUnset {
			a.entries[i] = e
		} else if !p.devices[i].Online {
			a.entries[i] = entry{code: codeOffline}
		} else {
			cands = append(cands, i)
		}
	}
	if need := a.n - a.count; need > 0 && len(cands) > 0 {
		// Least loaded first, then by ID: stable, and spreads apps over
		// devices rather than piling them on the first IDs.
		slices.SortStableFunc(cands, func(x, y int) int { return cmp.Compare(p.load[x], p.load[y]) })
		p.pick(a, cands, need)
	}
	for _, i := range cands {
		if a.entries[i].code == codeUnset {
			a.entries[i] = entry{code: codeNotNeeded, a: int64(a.count), b: int64(a.n)}
		}
	}
}

// pick places a on up to need of cands, round-robin over the values of
// its spread label: the value with the fewest of a's devices first (those
// it kept count), ties by value. Without spread all are one group.
func (p *placer) pick(a *appState, cands []int, need int) {
	byValue := map[string]*group{}
	var h groupHeap
	for _, i := range cands {
		v := ""
		if a.spread != "" {
			v = p.devices[i].Labels[a.spread]
		}
		g := byValue[v]
		if g == nil {
			g = &group{value: v}
			byValue[v] = g
			h = append(h, g)
		}
		g.cands = append(g.cands, i)
	}
	if a.spread != "" {
		for i, e := range a.entries {
			if e.code == codeKept {
				if g := byValue[p.devices[i].Labels[a.spread]]; g != nil {
					g.count++
				}
			}
		}
	}
	heap.Init(&h)
	for need > 0 && h.Len() > 0 {
		g := h[0]
		placed := false
		for g.next < len(g.cands) && !placed {
			i := g.cands[g.next]
			g.next++
			if e := p.fit(a, i); e.code != codeUnset {
				a.entries[i] = e
				continue
			}
			a.entries[i] = entry{code: codePlaced}
			a.count++
			g.count++
			need--
			placed = true
		}
		if g.next >= len(g.cands) {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
}

type group struct {
	value string
	count int   // a's devices with this value
	cands []int // in order of preference
	next  int
}

type groupHeap []*group

func (h groupHeap) Len() int { return len(h) }
func (h groupHeap) Less(i, j int) bool {
	return h[i].count < h[j].count || h[i].count == h[j].count && h[i].value < h[j].value
}
func (h groupHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *groupHeap) Push(x any)   { *h = append(*h, x.(*group)) }
func (h *groupHeap) Pop() any {
	old := *h
	g := old[len(old)-1]
	*h = old[:len(old)-1]
	return g
}

// summarize gives a's warnings once it is placed.
func (p *placer) summarize(a *appState) []Warning {
	var matching, offline, noRoom, labelled int
	for i, e := range a.entries {
		switch e.code {
		case codeLabel, codeArch:
			continue
		case codeOffline:
			offline++
		case codeMemory, codeCPU:
			noRoom++
		}
		matching++
		if a.spread != "" {
			if _, ok := p.devices[i].Labels[a.spread]; ok {
				labelled++
			}
		}
	}
	w := func(c WarningCode, format string, args ...any) Warning {
		return Warning{App: a.name, Code: c, Message: fmt.Sprintf(format, args...)}
	}
	if matching == 0 {
		return []Warning{w(WarnNoMatch, "%s matches no device", a.constraints())}
	}
	var ws []Warning
	if !a.all && a.spread != "" && labelled == 0 {
		ws = append(ws, w(WarnSpreadLabel, "spread label %s: no matching device has it, so there is nothing to spread over", a.spread))
	}
	switch {
	case !a.all && a.count < a.n:
		ws = append(ws, w(WarnShort, "%d of %d devices placed: of %d matching devices, %d offline, %d without room", a.count, a.n, matching, offline, noRoom))
	case a.all && noRoom > 0:
		ws = append(ws, w(WarnShort, "%d of %d matching devices placed: %d without room", a.count, matching, noRoom))
	}
	return ws
}

// constraints says what a asks of a device: "selector role=gateway,
// site=berlin and arch [arm64]".
func (a *appState) constraints() string {
	var parts []string
	if len(a.selKeys) > 0 {
		kv := make([]string, len(a.selKeys))
		for i, k := range a.selKeys {
			kv[i] = k + "=" + a.sel[k]
		}
		parts = append(parts, "selector "+strings.Join(kv, ","))
	}
	if a.archText != "" {
		parts = append(parts, "arch "+a.archText)
	}
	if len(parts) == 0 {
		return "the app (no constraints)" // only with no devices at all
	}
	return strings.Join(parts, " and ")
}
