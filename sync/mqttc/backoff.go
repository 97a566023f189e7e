package mqttc

import (
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential backoff with full jitter: the delay
// before attempt n is uniform in [0, min(Cap, Base·2ⁿ)], so devices that
// lost the broker at the same moment come back spread over the window
// instead of all at once.
type Backoff struct {
	Base time.Duration // default 1s
	Cap  time.Duration // default 2m
}

// Defaults of Backoff.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffCap  = 2 * time.Minute
)

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultBackoffBase
	}
	if b.Cap <= 0 {
		b.Cap = DefaultBackoffCap
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	return b
}

// Ceiling returns the upper bound of the delay before attempt n (0-based).
func (b Backoff) Ceiling(attempt int) time.Duration {
	b = b.withDefaults()
	ceil := b.Base
	for i := 0; i < attempt && ceil < b.Cap; i++ {
		ceil *= 2
	}
	return min(ceil, b.Cap)
}

// Delay draws the delay before attempt n from r.
func (b Backoff) Delay(r *rand.Rand, attempt int) time.Duration {
	return time.Duration(r.Int64N(int64(b.Ceiling(attempt)) + 1))
}
