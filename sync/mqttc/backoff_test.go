package mqttc

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoff_Ceiling(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 2 * time.Minute}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 120, 120}
	for n, w := range want {
		if got := b.Ceiling(n); got != w*time.Second {
			t.Errorf("Ceiling(%d) = %s, want %s", n, got, w*time.Second)
		}
	}
	if got := b.Ceiling(1 << 20); got != 2*time.Minute {
		t.Errorf("Ceiling(huge) = %s, want the cap", got)
	}
	if got := (Backoff{}).Ceiling(0); got != DefaultBackoffBase {
		t.Errorf("zero Backoff Ceiling(0) = %s, want the default base", got)
	}
}

// TestBackoff_JitterSpreads: ten thousand devices reconnecting at attempt
// 5 (ceiling 32s) spread over the whole window, never past the cap.
func TestBackoff_JitterSpreads(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 2 * time.Minute}
	r := rand.New(rand.NewPCG(1, 2))
	const n = 10000
	var buckets [8]int // 4s each over [0, 32s]
	lo, hi := time.Hour, time.Duration(0)
	for i := 0; i < n; i++ {
		d := b.Delay(r, 5)
		if d < 0 || d > 32*time.Second {
			t.Fatalf("Delay = %s, outside [0, 32s]", d)
		}
		lo, hi = min(lo, d), max(hi, d)
		buckets[min(int(d/(4*time.Second)), 7)]++
	}
	if lo > 100*time.Millisecond || hi < 31*time.Second {
		t.Errorf("delays span [%s, %s], want nearly [0, 32s]", lo, hi)
	}
	for i, c := range buckets {
		if c < n/8*8/10 || c > n/8*12/10 { // within 20% of uniform
			t.Errorf("bucket %d holds %d of %d delays: not uniform (%v)", i, c, n, buckets)
		}
	}
	for i := 0; i < 1000; i++ {
		if d := b.Delay(r, 40); d > 2*time.Minute {
			t.Fatalf("Delay at attempt 40 = %s, over the cap", d)
		}
	}
}

func TestBackoff_SeedDeterminesSequence(t *testing.T) {
	b := Backoff{}
	seq := func(seed uint64) []time.Duration {
		r := rand.New(rand.NewPCG(seed, 0))
		var out []time.Duration
		for i := 0; i < 5; i++ {
			out = append(out, b.Delay(r, i))
		}
		return out
	}
	a1, a2, c := seq(7), seq(7), seq(8)
	for i := range a1 {
		if a1[i] != a2[i] {
			t.Fatalf("same seed, different delays: %v vs %v", a1, a2)
		}
	}
	same := true
	for i := range a1 {
		same = same && a1[i] == c[i]
	}
	if same {
		t.Errorf("different seeds gave the same delays %v", a1)
	}
}
