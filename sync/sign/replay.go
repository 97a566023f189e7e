package sign

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Errors of ReplayGuard.Admit, besides ErrExpired.
var (
	// ErrReplayed refuses a command whose id was already used.
	ErrReplayed = reason("replayed", errdefs.ErrAlreadyExists)
	// ErrBusy refuses a command while the guard is full of ids that have
	// not expired yet: forgetting one would let its command be replayed.
	ErrBusy = reason("too many recent commands", errdefs.ErrResourceExhausted)
)

// DefaultReplayGuardSize is the number of ids a guard remembers when
// NewReplayGuard is given 0: at most that many commands per
// wire.MaxCommandLifetime.
const DefaultReplayGuardSize = 1024

// ReplayGuard remembers the ids of accepted commands until they expire, so
// that each command runs at most once. It is bounded: when it holds max
// unexpired ids it refuses new commands (ErrBusy) rather than forget one.
// Its time never goes backwards: it is the latest time it was given (its
// high-water mark), and a command that expires at or before it is refused
// as expired, since its id may already be forgotten. It does no I/O; the
// agent persists it with MarshalBinary after each accepted command and
// restores it with UnmarshalBinary. It is safe for concurrent use.
type ReplayGuard struct {
	mu   sync.Mutex
	max  int
	high time.Time            // latest time given
	ids  map[string]time.Time // id → expiry
}

// NewReplayGuard returns an empty guard for at most max ids (0:
// DefaultReplayGuardSize).
func NewReplayGuard(max int) *ReplayGuard {
	if max <= 0 {
		max = DefaultReplayGuardSize
	}
	return &ReplayGuard{max: max, ids: make(map[string]time.Time)}
}

// Len is the number of ids remembered.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.ids)
}

// Admit records id as used until expiresAt, judged at now (zero: the
// guard's own time), or refuses it: *ExpiredError (ErrExpired) if it
// expires at or before the guard's time, ErrReplayed if it was seen,
// ErrBusy if the guard is full of unexpired ids.
func (g *ReplayGuard) Admit(id string, expiresAt, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.After(g.high) {
		g.high = now.Round(0)
		g.pruneLocked()
	}
	if !g.high.IsZero() && !g.high.Before(expiresAt) {
		return &ExpiredError{What: "command " + id, ExpiresAt: expiresAt, Now: g.high}
	}
	if _, seen := g.ids[id]; seen {
		return fmt.Errorf("command %s: %w", id, ErrReplayed)
	}
	if len(g.ids) >= g.max {
		return fmt.Errorf("command %s: %d commands not expired yet: %w", id, len(g.ids), ErrBusy)
	}
	g.ids[id] = expiresAt.Round(0)
	return nil
}

// pruneLocked forgets the ids that expired at or before the guard's time.
func (g *ReplayGuard) pruneLocked() {
	for id, exp := range g.ids {
		if !g.high.Before(exp) {
			delete(g.ids, id)
		}
	}
}

// replayState is the persisted form of a guard.
type replayState struct {
	Version int                  `json:"v"`
	High    time.Time            `json:"high"`
	IDs     map[string]time.Time `json:"ids"`
}

// MarshalBinary returns the guard's state (JSON), expired ids left out.
func (g *ReplayGuard) MarshalBinary() ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked()
	return json.Marshal(replayState{Version: 1, High: g.high, IDs: g.ids})
}

// UnmarshalBinary replaces the guard's state with one MarshalBinary wrote.
// Every id it holds is kept, even beyond the guard's size (they expire
// within wire.MaxCommandLifetime; until then the guard is busy).
func (g *ReplayGuard) UnmarshalBinary(b []byte) error {
	var st replayState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read replay guard: %v: %w", err, errdefs.ErrDataLoss)
	}
	if st.Version != 1 {
		return fmt.Errorf("read replay guard: version %d, want 1: %w", st.Version, errdefs.ErrDataLoss)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.max <= 0 {
		g.max = DefaultReplayGuardSize
	}
	g.high = st.High
	g.ids = make(map[string]time.Time, len(st.IDs))
	for id, exp := range st.IDs {
		g.ids[id] = exp
	}
	g.pruneLocked()
	return nil
}
