package health

import "time"

// Status is a workload's health as Docker reports it.
type Status string

const (
	Starting  Status = "starting"
	Healthy   Status = "healthy"
	Unhealthy Status = "unhealthy"
)

// Tracker turns probe results into a Status:
//
//	starting --success--> healthy <--success-- unhealthy
//	    |                   |                      ^
//	    +---- Retries failures in a row -----------+
//
// While starting and within StartPeriod of the start, failures do not
// count; after a first success they always do. It is pure (results and
// times are passed in) and not safe for concurrent use.
type Tracker struct {
	retries     int
	startPeriod time.Duration
	started     time.Time
	status      Status
	failures    int
	last        Result
}

// NewTracker tracks a workload started at started, probed by p.
func NewTracker(p Probe, started time.Time) *Tracker {
	p = p.Normalized()
	return &Tracker{retries: p.Retries, startPeriod: p.StartPeriod, started: started, status: Starting}
}

// Observe records a result seen at now, and returns the status and whether
// it changed.
func (t *Tracker) Observe(r Result, now time.Time) (Status, bool) {
	t.last = r
	prev := t.status
	switch {
	case r.Healthy:
		t.failures = 0
		t.status = Healthy
	case t.status == Starting && now.Sub(t.started) < t.startPeriod:
		// Still starting: this failure does not count.
	default:
		t.failures++
		if t.failures >= t.retries {
			t.status = Unhealthy
		}
	}
	return t.status, t.status != prev
}

// Status is the current status.
func (t *Tracker) Status() Status { return t.status }

// Failures is the count of consecutive failures that counted.
func (t *Tracker) Failures() int { return t.failures }

// Last is the last result observed.
func (t *Tracker) Last() Result { return t.last }
