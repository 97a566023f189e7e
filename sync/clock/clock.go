// Package clock keeps a monotonic floor under the wall clock for devices
// without a real-time clock.
//
// Gateways often boot in 1970 until NTP answers. Checking a certificate or a
// signature's expiry against that time locks the device out, so Floor
// answers with the newest of: the system clock, the last time persisted by a
// previous run, and the build time of the binary, advanced by the time that
// has elapsed since (measured on the monotonic clock). When the system clock
// is behind that floor, the time is untrusted: callers use the floor for
// certificate validity (tls.Config.Time = f.Now) and judge the freshness of
// signed documents by their generation only, and the device reports it.
package clock

import (
	"fmt"
	"sync"
	"time"
)

// Store persists the floor between runs (the agent keeps it in bbolt).
type Store interface {
	// LoadTime returns the last saved time, or the zero time if none.
	LoadTime() (time.Time, error)
	SaveTime(time.Time) error
}

// DefaultSlack is how far the system clock may be behind the floor before
// the time is called untrusted; it absorbs small NTP steps backwards.
const DefaultSlack = 5 * time.Minute

// Options configure a Floor.
type Options struct {
	// System is the system (wall) clock; nil means time.Now. Tests set it.
	System func() time.Time
	// Monotonic returns the time elapsed since an arbitrary fixed point and
	// never jumps with the wall clock; nil means the runtime's monotonic
	// clock. Tests set it together with System.
	Monotonic func() time.Duration
	// Store persists the floor; nil keeps it in memory only.
	Store Store
	// BuildTime is a time the device's clock can never truly be before
	// (the binary's build time); zero if unknown.
	BuildTime time.Time
	// Slack is the tolerance of Untrusted; 0 means DefaultSlack.
	Slack time.Duration
}

// Floor is a monotonic lower bound for the time. It is safe for concurrent use.
type Floor struct {
	system func() time.Time
	mono   func() time.Duration
	store  Store
	slack  time.Duration

	mu     sync.Mutex
	floor  time.Time     // newest known time
	monoAt time.Duration // monotonic reading when floor was last moved
	saved  time.Time     // last value written to store
}

// New returns a Floor that starts at the newest of the system clock, the
// stored time and the build time.
func New(o Options) (*Floor, error) {
	f := &Floor{system: o.System, mono: o.Monotonic, store: o.Store, slack: o.Slack}
	if f.system == nil {
		f.system = time.Now
	}
	if f.mono == nil {
		start := time.Now()
		f.mono = func() time.Duration { return time.Since(start) }
	}
	if f.slack <= 0 {
		f.slack = DefaultSlack
	}
	f.floor = o.BuildTime
	if o.Store != nil {
		t, err := o.Store.LoadTime()
		if err != nil {
			return nil, fmt.Errorf("load time floor: %w", err)
		}
		f.saved = t
		if t.After(f.floor) {
			f.floor = t
		}
	}
	f.monoAt = f.mono()
	if s := f.system(); s.After(f.floor) {
		f.floor = s.Round(0)
	}
	return f, nil
}

// Now returns max(system clock, floor advanced by the elapsed time). It
// never goes backwards.
func (f *Floor) Now() time.Time {
	s := f.system()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.advanceLocked(s)
}

func (f *Floor) advanceLocked(s time.Time) time.Time {
	m := f.mono()
	next := f.floor
	if d := m - f.monoAt; d > 0 {
		next = next.Add(d)
	}
	if s.After(next) {
		next = s
	}
	f.floor, f.monoAt = next.Round(0), m
	return f.floor
}

// Untrusted reports whether the system clock is behind the floor by more
// than the slack: the device's wall clock is wrong (no RTC, no NTP yet).
func (f *Floor) Untrusted() bool {
	s := f.system()
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.advanceLocked(s)
	return s.Add(f.slack).Before(now)
}

// Persist writes the current floor to the store, if it moved since the
// last write. The agent calls it periodically and on shutdown.
func (f *Floor) Persist() error {
	if f.store == nil {
		return nil
	}
	now := f.Now()
	f.mu.Lock()
	if !now.After(f.saved) {
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	if err := f.store.SaveTime(now); err != nil {
		return fmt.Errorf("save time floor: %w", err)
	}
	f.mu.Lock()
	if now.After(f.saved) {
		f.saved = now
	}
	f.mu.Unlock()
	return nil
}
