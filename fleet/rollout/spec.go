package rollout

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/tender-edge/tender/sync/wire"
)

// Defaults applied by New to a Spec's zero fields.
const (
	DefaultWave             = "100%"
	DefaultMaxUnavailable   = "10%"
	DefaultFailureThreshold = "0"
	DefaultProgressDeadline = 30 * time.Minute
)

// Spec is what a rollout is asked to do: move Devices of app App from
// revision From to revision To.
type Spec struct {
	App  string `json:"app"`
	From string `json:"from"` // revision the devices run now ("" if the app is new)
	To   string `json:"to"`   // "" removes the app: a removal goes through waves like any change
	// Devices are the devices assigned to the app, in the order waves take
	// them: wave 1 is the first devices of the list.
	Devices []Device `json:"devices"`

	// Waves are cumulative device counts ("1") or percentages of
	// len(Devices) ("10%", rounded up); the last wave is always every
	// device. Default: one wave, "100%".
	Waves []string `json:"waves,omitempty"`
	// MaxUnavailable bounds the online devices being changed and not yet
	// healthy at any time: a count or a percentage of len(Devices)
	// (rounded down, at least 1). Default 10%.
	MaxUnavailable string `json:"maxUnavailable,omitempty"`
	// FailureThreshold: more failed devices than this in one wave (a count
	// or a percentage of the wave's size, rounded down) stops the rollout
	// and rolls every device back. Default 0: the first failure does.
	FailureThreshold string `json:"failureThreshold,omitempty"`
	// HealthyFor is the soak after each wave: every device of the wave
	// settled, for this long, before the next wave starts.
	HealthyFor time.Duration `json:"healthyFor,omitempty"`
	// Pace is the most devices started per minute; 0 is no limit.
	Pace int `json:"pace,omitempty"`
	// ProgressDeadline is how long an online device may take from being
	// asked to reporting the revision running before it counts as failed.
	// Default DefaultProgressDeadline.
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
	// Windows are maintenance windows by label (see Window).
	Windows []Window `json:"windows,omitempty"`
}

// Device is one device of a rollout.
type Device struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
	// Zone is the device's time zone for maintenance windows: "" for UTC, a
	// fixed offset "+02:00" / "-05:30", or an IANA name ("Europe/Berlin")
	// whose *time.Location the shell passes in Input.Locations.
	Zone string `json:"zone,omitempty"`
}

// FromWire copies an app spec's rollout policy into s (fields left empty
// in r keep their defaults).
func (s *Spec) FromWire(r *wire.Rollout) {
	if r == nil {
		return
	}
	s.Waves = r.Waves
	s.MaxUnavailable = r.MaxUnavailable
	s.FailureThreshold = r.FailureThreshold
	s.HealthyFor = r.HealthyFor.Duration
	s.Pace = r.Pace
	s.ProgressDeadline = r.ProgressDeadline.Duration
	s.Windows = r.Windows
}

// parseAmount reads a count ("3") or a percentage ("10%") of total; up
// rounds a percentage up instead of down.
func parseAmount(s string, total int, up bool) (int, error) {
	t, pct := strings.CutSuffix(s, "%")
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 || pct && n > 100 {
		return 0, fmt.Errorf("%q: want a count (\"3\") or a percentage (\"10%%\")", s)
	}
	if !pct {
		return n, nil
	}
	if up {
		return (n*total + 99) / 100, nil
	}
	return n * total / 100, nil
}

// plan is what New derives from a Spec.
type plan struct {
	waveEnds       []int // cumulative device counts, last = len(Devices)
	maxUnavailable int
	thresholds     []int // per wave
}

func (s *Spec) validate() (plan, error) {
	var p plan
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("rollout of app %q: %s: %s: %w", s.App, field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument))
	}
	if s.To == "" && s.From == "" {
		bad("to", "missing target revision (a removal, to \"\", needs the revision it removes in from)")
	} else if s.To == s.From {
		bad("to", "target revision %q is the one the devices run already", s.To)
	}
	n := len(s.Devices)
	seen := make(map[string]bool, n)
	for i, d := range s.Devices {
		if d.ID == "" {
			bad(fmt.Sprintf("devices[%d].id", i), "missing")
		} else if seen[d.ID] {
			bad(fmt.Sprintf("devices[%d].id", i), "device %q listed twice", d.ID)
		}
		seen[d.ID] = true
		if _, ok := fixedZone(d.Zone); !ok && (strings.HasPrefix(d.Zone, "+") || strings.HasPrefix(d.Zone, "-")) {
			bad(fmt.Sprintf("devices[%d].zone", i), "%q: want \"\", an offset like +02:00, or an IANA name", d.Zone)
		}
	}
	waves := s.Waves
	if len(waves) == 0 {
		waves = []string{DefaultWave}
	}
	prev := 0
	for i, w := range waves {
		c, err := parseAmount(w, n, true)
		if err != nil {
			bad(fmt.Sprintf("waves[%d]", i), "%v", err)
			continue
		}
		c = max(prev, min(c, n))
		if i == len(waves)-1 {
			c = n
		}
		p.waveEnds = append(p.waveEnds, c)
		prev = c
	}
	mu := s.MaxUnavailable
	if mu == "" {
		mu = DefaultMaxUnavailable
	}
	if v, err := parseAmount(mu, n, false); err != nil {
		bad("maxUnavailable", "%v", err)
	} else {
		p.maxUnavailable = max(v, 1)
	}
	ft := s.FailureThreshold
	if ft == "" {
		ft = DefaultFailureThreshold
	}
	start := 0
	for _, end := range p.waveEnds {
		v, err := parseAmount(ft, end-start, false)
		if err != nil {
			bad("failureThreshold", "%v", err)
			break
		}
		p.thresholds = append(p.thresholds, v)
		start = end
	}
	if s.HealthyFor < 0 {
		bad("healthyFor", "negative duration %s", s.HealthyFor)
	}
	if s.Pace < 0 {
		bad("pace", "negative: %d devices per minute", s.Pace)
	}
	if s.ProgressDeadline < 0 {
		bad("progressDeadline", "negative duration %s", s.ProgressDeadline)
	}
	for i, w := range s.Windows {
		if _, err := ParseSchedule(w.Schedule); err != nil {
			errs = append(errs, fmt.Errorf("rollout of app %q: windows[%d]: %w", s.App, i, err))
		}
		if len(w.Selector) == 0 {
			bad(fmt.Sprintf("windows[%d].selector", i), "empty: a window applies to the devices with these labels")
		}
	}
	return p, errors.Join(errs...)
}

// fixedZone parses "+hh:mm" / "-hh:mm" (and "" as UTC) without any I/O.
func fixedZone(z string) (*time.Location, bool) {
	if z == "" || z == "UTC" {
		return time.UTC, true
	}
	if len(z) != 6 || z[0] != '+' && z[0] != '-' || z[3] != ':' {
		return nil, false
	}
	h, err1 := strconv.Atoi(z[1:3])
	m, err2 := strconv.Atoi(z[4:6])
	if err1 != nil || err2 != nil || h > 14 || m > 59 {
		return nil, false
	}
	off := h*3600 + m*60
	if z[0] == '-' {
		off = -off
	}
	return time.FixedZone(z, off), true
}
