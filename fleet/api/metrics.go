package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's Prometheus metrics. The API feeds the
// request and authentication counters itself; the controller updates the
// rest (Server.Metrics) as its state changes.
type Metrics struct {
	// Requests counts API requests by route pattern and status code.
	Requests *prometheus.CounterVec
	// AuthFailures counts refused bearer tokens by reason: missing,
	// unknown, revoked, forbidden (a read-only token on a write route).
	AuthFailures *prometheus.CounterVec

	// DevicesOnline is the number of devices whose presence is online.
	DevicesOnline prometheus.Gauge
	// Devices is the number of enrolled devices.
	Devices prometheus.Gauge
	// Rollouts is the number of rollouts by phase (progressing, paused,
	// succeeded, rolling-back, rolled-back, aborted); set every phase,
	// zero included, so a phase that empties shows 0.
	Rollouts *prometheus.GaugeVec
	// ReportsIngested counts reports stored from devices.
	ReportsIngested prometheus.Counter
	// EventsIngested counts events stored from devices.
	EventsIngested prometheus.Counter
	// PublishLatency is the time from a decision to its desired document
	// published, in seconds.
	PublishLatency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_api_requests_total", Help: "API requests by route and HTTP status code.",
		}, []string{"route", "code"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_api_auth_failures_total", Help: "API requests refused by authentication or role, by reason.",
		}, []string{"reason"}),
		DevicesOnline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_devices_online", Help: "Devices whose presence is online.",
		}),
		Devices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_devices", Help: "Enrolled devices.",
		}),
		Rollouts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tender_rollouts", Help: "Rollouts by phase.",
		}, []string{"phase"}),
		ReportsIngested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_reports_ingested_total", Help: "Device reports stored.",
		}),
		EventsIngested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_events_ingested_total", Help: "Device events stored.",
		}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tender_publish_latency_seconds", Help: "Time from a placement or rollout decision to the desired document published.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	for _, reason := range []string{"missing", "unknown", "revoked", "forbidden"} {
		m.AuthFailures.WithLabelValues(reason)
	}
	reg.MustRegister(m.Requests, m.AuthFailures, m.DevicesOnline, m.Devices, m.Rollouts,
		m.ReportsIngested, m.EventsIngested, m.PublishLatency)
	return m
}
