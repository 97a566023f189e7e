package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Stale reads. A store whose reads need a quorum (etcd: linearizable
// reads) cannot answer them while a majority of its members is down. A
// reader that would rather have an answer that may be stale than none
// (the API's GETs: status, events, audit, a device, a rollout) says so
// with WithStaleReads; the store may then answer from what a member that
// is still up holds (etcd: a serializable read), and marks the StaleReads
// with how stale. Writes never take this path, nor do reads made without
// the mark: the broker's password checks, the token lookups and the
// read-modify-write loops read with a quorum or fail. A store whose reads
// need no quorum (bbolt) ignores the mark.

// StaleReads collects, for one request, whether any read was answered
// without a quorum. Its zero value is ready; a nil *StaleReads allows no
// stale read and records nothing. It is safe for concurrent use.
type StaleReads struct {
	mu    sync.Mutex
	stale bool
	s     Staleness
}

// Staleness says how stale an answer may be.
type Staleness struct {
	// Reason is why it may be stale ("no quorum").
	Reason string `json:"reason"`
	// Rev is the store revision of the oldest stale read (etcd: the
	// answering member's revision), 0 if the answer came from elsewhere.
	Rev uint64 `json:"rev,omitempty"`
	// At is when the oldest stale answer was read, if it came from a
	// memory of an earlier read rather than from the store.
	At time.Time `json:"at,omitzero"`
}

// String is the one-line form the API sends (the Tender-Stale header):
// "no quorum; as of revision 1234".
func (s Staleness) String() string {
	switch {
	case s.Rev > 0:
		return fmt.Sprintf("%s; as of revision %d", s.Reason, s.Rev)
	case !s.At.IsZero():
		return fmt.Sprintf("%s; as of %s", s.Reason, s.At.UTC().Format(time.RFC3339))
	}
	return s.Reason
}

// Mark records a stale answer; of several, the oldest (lowest revision,
// earliest time) is kept, so the mark holds for the whole answer.
func (r *StaleReads) Mark(s Staleness) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.stale:
		r.s, r.stale = s, true
	case s.Rev > 0 && (r.s.Rev == 0 || s.Rev < r.s.Rev):
		r.s.Rev = s.Rev
	}
	if !s.At.IsZero() && (r.s.At.IsZero() || s.At.Before(r.s.At)) {
		r.s.At = s.At
	}
}

// Stale returns the staleness marked, and whether any read was stale.
func (r *StaleReads) Stale() (Staleness, bool) {
	if r == nil {
		return Staleness{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s, r.stale
}

type staleKey struct{}

// WithStaleReads returns ctx allowing the store to answer its reads
// without a quorum, and the StaleReads that says afterwards whether it
// did.
func WithStaleReads(ctx context.Context) (context.Context, *StaleReads) {
	r := &StaleReads{}
	return context.WithValue(ctx, staleKey{}, r), r
}

// StaleReadsOf is the StaleReads ctx carries: nil if it allows no stale
// read.
func StaleReadsOf(ctx context.Context) *StaleReads {
	r, _ := ctx.Value(staleKey{}).(*StaleReads)
	return r
}

// NoQuorum is the Reason of a read answered without a quorum.
const NoQuorum = "no quorum"
