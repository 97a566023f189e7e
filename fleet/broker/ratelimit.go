package broker

import (
	"sync"
	"time"
)

// limiter is a token bucket per device: each holds up to burst tokens,
// refilled at rate per second; a publish takes one or is dropped.
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// allow takes a token from id's bucket and reports whether there was one.
func (l *limiter) allow(id string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[id]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[id] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops id's bucket (a revoked device).
func (l *limiter) forget(id string) {
	l.mu.Lock()
	delete(l.buckets, id)
	l.mu.Unlock()
}
