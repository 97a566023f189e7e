package console

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// fleetCache holds one snapshot of every device, read at most every ttl
// and shared by the requests; a request that finds it stale reads it
// again while the others wait for that read (no stampede).
type fleetCache struct {
	ctrl api.Controller
	ttl  time.Duration
	now  func() time.Time

	mu   sync.Mutex
	snap *snapshot
	cpu  map[string]cpuSample
}

// snapshot is the fleet as read at at.
type snapshot struct {
	at      time.Time
	took    time.Duration
	devices []api.DeviceView // in id order
	cores   map[string]float64
	// stale is set if the read was answered without the store's quorum:
	// every request the snapshot serves is marked with it.
	stale   store.Staleness
	isStale bool
}

// cpuSample derives a device's CPU use from two reports of its
// cumulative CPU time.
type cpuSample struct {
	nanos uint64
	at    time.Time
	cores float64
	ok    bool
}

func (f *fleetCache) get(ctx context.Context) (*snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if f.snap != nil && now.Sub(f.snap.at) < f.ttl {
		if f.snap.isStale {
			store.StaleReadsOf(ctx).Mark(f.snap.stale)
		}
		return f.snap, nil
	}
	devs, err := f.ctrl.Devices(ctx, nil)
	if err != nil {
		return nil, err
	}
	if f.cpu == nil {
		f.cpu = map[string]cpuSample{}
	}
	s := &snapshot{at: now, took: f.now().Sub(now), devices: devs, cores: make(map[string]float64, len(devs))}
	s.stale, s.isStale = store.StaleReadsOf(ctx).Stale()
	seen := make(map[string]bool, len(devs))
	for _, d := range devs {
		seen[d.ID] = true
		p, had := f.cpu[d.ID]
		switch {
		case !had || d.CPUNanosUsed < p.nanos:
			p = cpuSample{nanos: d.CPUNanosUsed, at: d.LastSeen}
		case d.CPUNanosUsed > p.nanos && d.LastSeen.After(p.at):
			p = cpuSample{nanos: d.CPUNanosUsed, at: d.LastSeen, ok: true,
				cores: float64(d.CPUNanosUsed-p.nanos) / float64(d.LastSeen.Sub(p.at).Nanoseconds())}
		}
		f.cpu[d.ID] = p
		if p.ok {
			s.cores[d.ID] = p.cores
		}
	}
	for id := range f.cpu {
		if !seen[id] {
			delete(f.cpu, id)
		}
	}
	f.snap = s
	return s, nil
}

// filter is the overview's search: words that hold '=' are a label
// selector (every pair must match), the others parts of the device's name
// (each must appear); status narrows to online, offline or a health.
type filter struct {
	Query    string
	Status   string
	selector map[string]string
	words    []string
}

func parseFilter(q, status string) (filter, error) {
	f := filter{Query: strings.TrimSpace(q), Status: status}
	for _, w := range strings.FieldsFunc(f.Query, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		if strings.Contains(w, "=") {
			sel, err := api.ParseSelector(w)
			if err != nil {
				return f, err
			}
			if f.selector == nil {
				f.selector = map[string]string{}
			}
			maps.Copy(f.selector, sel)
			continue
		}
		f.words = append(f.words, strings.ToLower(w))
	}
	return f, nil
}

func (f filter) match(d *api.DeviceView) bool {
	for k, v := range f.selector {
		if d.Labels[k] != v {
			return false
		}
	}
	for _, w := range f.words {
		if !strings.Contains(d.ID, w) {
			return false
		}
	}
	switch f.Status {
	case "":
	case "online":
		return d.Online
	case "offline":
		return !d.Online
	default:
		return d.Health == f.Status
	}
	return true
}

// overview is what the overview page shows.
type overview struct {
	Total, Matched  int
	Online, Offline int
	Health          []count // ok, degraded, failing, flagged, unknown
	By              string  // the label the groups are by
	Keys            []string
	Groups          []group
	MoreGroups      int
	Versions        []appVersions
	Rows            []row
	Page, Pages     int
	Filter          filter
	Age             time.Duration // of the snapshot
}

type count struct {
	Name string
	N    int
}

type group struct {
	Value                          string
	Total, Online, Offline         int
	OK, Degraded, Failing, Unknown int
}

type appVersions struct {
	App      string
	Versions []versionCount
}

type versionCount struct {
	Version        string
	Devices, Fresh int // Fresh: of them running
}

// row is one device in the list.
type row struct {
	api.DeviceView
	Cores    float64
	HasCores bool
}

// maxGroups bounds the groups listed.
const maxGroups = 100

var healthOrder = []string{"ok", "degraded", "failing", "flagged", "unknown"}

// summarize aggregates the devices that match f and cuts out page (from
// 1) of them.
func summarize(s *snapshot, f filter, by string, page, size int) overview {
	o := overview{Total: len(s.devices), Filter: f, By: by}
	health := map[string]int{}
	groups := map[string]*group{}
	keys := map[string]bool{}
	versions := map[string]map[string]*versionCount{}
	var matched []*api.DeviceView
	for i := range s.devices {
		d := &s.devices[i]
		for k := range d.Labels {
			keys[k] = true
		}
		if !f.match(d) {
			continue
		}
		matched = append(matched, d)
		if d.Online {
			o.Online++
		} else {
			o.Offline++
		}
		health[d.Health]++
		if by != "" {
			v, ok := d.Labels[by]
			if !ok {
				v = "(none)"
			}
			g := groups[v]
			if g == nil {
				g = &group{Value: v}
				groups[v] = g
			}
			g.Total++
			if d.Online {
				g.Online++
			} else {
				g.Offline++
			}
			switch d.Health {
			case "ok":
				g.OK++
			case "degraded":
				g.Degraded++
			case "failing", "flagged":
				g.Failing++
			default:
				g.Unknown++
			}
		}
		for _, a := range d.Apps {
			m := versions[a.Name]
			if m == nil {
				m = map[string]*versionCount{}
				versions[a.Name] = m
			}
			vc := m[a.Version]
			if vc == nil {
				vc = &versionCount{Version: a.Version}
				m[a.Version] = vc
			}
			vc.Devices++
			if a.State == "running" {
				vc.Fresh++
			}
		}
	}
	o.Matched = len(matched)
	for _, h := range healthOrder {
		o.Health = append(o.Health, count{h, health[h]})
	}
	o.Keys = slices.Sorted(maps.Keys(keys))
	for _, v := range slices.Sorted(maps.Keys(groups)) {
		if len(o.Groups) == maxGroups {
			o.MoreGroups++
			continue
		}
		o.Groups = append(o.Groups, *groups[v])
	}
	for _, app := range slices.Sorted(maps.Keys(versions)) {
		av := appVersions{App: app}
		for _, v := range slices.Sorted(maps.Keys(versions[app])) {
			av.Versions = append(av.Versions, *versions[app][v])
		}
		o.Versions = append(o.Versions, av)
	}
	o.Pages = max(1, (len(matched)+size-1)/size)
	o.Page = min(max(page, 1), o.Pages)
	lo := (o.Page - 1) * size
	for _, d := range matched[lo:min(lo+size, len(matched))] {
		cores, ok := s.cores[d.ID]
		o.Rows = append(o.Rows, row{DeviceView: *d, Cores: cores, HasCores: ok})
	}
	return o
}

// defaultGroupBy is "site" when a device has that label, else the first
// label key, else nothing.
func defaultGroupBy(s *snapshot) string {
	first := ""
	for i := range s.devices {
		if _, ok := s.devices[i].Labels["site"]; ok {
			return "site"
		}
		for k := range s.devices[i].Labels {
			if first == "" || k < first {
				first = k
			}
		}
	}
	return first
}
