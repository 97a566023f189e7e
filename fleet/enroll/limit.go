package enroll

import (
	"sync"
	"time"
)

// Limiter is a token bucket per key (a source address): each key may make
// Burst attempts at once and one more every Every. Time is passed in.
// It holds at most MaxKeys buckets; when full, buckets that have refilled
// are dropped first, and if none has, the new key is refused (an attacker
// with many addresses cannot grow it without bound).
type Limiter struct {
	Every   time.Duration
	Burst   int
	MaxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter of burst attempts, refilled one per every,
// for at most 10,000 keys.
func NewLimiter(every time.Duration, burst int) *Limiter {
	return &Limiter{Every: every, Burst: burst, MaxKeys: 10000, buckets: map[string]*bucket{}}
}

// Allow takes one attempt from key's bucket at now and reports whether
// there was one.
func (l *Limiter) Allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.MaxKeys && !l.evict(now) {
			return false
		}
		b = &bucket{tokens: float64(l.Burst), last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.Every, l.Burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, every time.Duration, burst int) {
	if d := now.Sub(b.last); d > 0 && every > 0 {
		b.tokens = min(float64(burst), b.tokens+float64(d)/float64(every))
		b.last = now
	}
}

// evict drops the buckets that are full again at now; it reports whether
// it dropped any.
func (l *Limiter) evict(now time.Time) bool {
	n := len(l.buckets)
	for k, b := range l.buckets {
		b.refill(now, l.Every, l.Burst)
		if b.tokens >= float64(l.Burst) {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets) < n
}
