package health

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ok, fail := true, false
	type step struct {
		at      time.Duration // since start
		healthy bool
		want    Status
		changed bool
	}
	tests := []struct {
		name  string
		probe Probe
		steps []step
	}{
		{"healthy after one success", Probe{Retries: 3}, []step{
			{0, ok, Healthy, true},
			{time.Second, ok, Healthy, false},
		}},
		{"unhealthy after retries failures", Probe{Retries: 3}, []step{
			{1 * time.Second, fail, Starting, false},
			{2 * time.Second, fail, Starting, false},
			{3 * time.Second, fail, Unhealthy, true},
			{4 * time.Second, fail, Unhealthy, false},
		}},
		{"default retries is 3", Probe{}, []step{
			{1 * time.Second, fail, Starting, false},
			{2 * time.Second, fail, Starting, false},
			{3 * time.Second, fail, Unhealthy, true},
		}},
		{"a success resets the count", Probe{Retries: 2}, []step{
			{0, ok, Healthy, true},
			{1 * time.Second, fail, Healthy, false},
			{2 * time.Second, ok, Healthy, false},
			{3 * time.Second, fail, Healthy, false},
			{4 * time.Second, fail, Unhealthy, true},
			{5 * time.Second, ok, Healthy, true},
		}},
		{"failures in the start period do not count", Probe{Retries: 2, StartPeriod: 10 * time.Second}, []step{
			{1 * time.Second, fail, Starting, false},
			{2 * time.Second, fail, Starting, false},
			{9 * time.Second, fail, Starting, false},
			{10 * time.Second, fail, Starting, false},
			{11 * time.Second, fail, Unhealthy, true},
		}},
		{"after a success in the start period failures count", Probe{Retries: 2, StartPeriod: 10 * time.Second}, []step{
			{1 * time.Second, ok, Healthy, true},
			{2 * time.Second, fail, Healthy, false},
			{3 * time.Second, fail, Unhealthy, true},
		}},
		{"retries 1", Probe{Retries: 1}, []step{
			{0, fail, Unhealthy, true},
			{time.Second, ok, Healthy, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(tt.probe, t0)
			if tr.Status() != Starting {
				t.Fatalf("initial status %s, want starting", tr.Status())
			}
			for i, s := range tt.steps {
				got, changed := tr.Observe(Result{Healthy: s.healthy}, t0.Add(s.at))
				if got != s.want || changed != s.changed {
					t.Fatalf("step %d (healthy=%v at %v): %s changed=%v, want %s changed=%v",
						i, s.healthy, s.at, got, changed, s.want, s.changed)
				}
			}
		})
	}
}

func TestProbe_Validate(t *testing.T) {
	for _, tt := range []struct {
		p  Probe
		ok bool
	}{
		{Probe{HTTP: "http://127.0.0.1:8080/healthz"}, true},
		{Probe{TCP: "127.0.0.1:5432"}, true},
		{Probe{Exec: []string{"pg_isready"}}, true},
		{Probe{}, false},
		{Probe{HTTP: "http://127.0.0.1/", TCP: "127.0.0.1:1"}, false},
		{Probe{HTTP: "ftp://127.0.0.1/"}, false},
		{Probe{HTTP: "/healthz"}, false},
		{Probe{Exec: []string{""}}, false},
		{Probe{TCP: "127.0.0.1:1", Timeout: -time.Second}, false},
	} {
		if err := tt.p.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tt.p, err, tt.ok)
		}
	}
}
