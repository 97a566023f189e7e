package fleetsim

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Config describes a simulated fleet and the broker it connects to.
type Config struct {
	// Broker is tcp://HOST:PORT or ssl://HOST:PORT.
	Broker string
	// IDs are the device ids; if empty, Devices ids Prefix+"00000",
	// Prefix+"00001", ... (Prefix defaults to "sim-").
	IDs     []string
	Devices int
	Prefix  string
	// FleetKey verifies desired documents and commands.
	FleetKey ed25519.PublicKey

	// CA, if set, issues each device a client certificate (CN = its id)
	// when it first connects. RootCAs trust the broker's certificate
	// (default: the CA's certificate alone); ServerName overrides the
	// name checked in it (default: the broker's host).
	CA *CA
	// Certificate, if set, gives device id its client certificate
	// instead of CA (from an enrollment, a test PKI, files).
	Certificate func(id string) (tls.Certificate, error)
	RootCAs     *x509.CertPool
	ServerName  string
	// Password, if set, gives device id's password; the username is the
	// id. For plain TCP brokers, or TLS without client certificates.
	Password func(id string) string

	// ConnectRate paces connects, reconnects included, over the whole
	// fleet: at most this many a second (default 200). BackoffBase and
	// BackoffCap bound the wait before a reconnect (default 1s, 30s;
	// full jitter).
	ConnectRate             int
	BackoffBase, BackoffCap time.Duration
	// KeepAlive is the MQTT keepalive (default 60s); Heartbeat the
	// interval of unprompted reports (default 60s; negative: none).
	KeepAlive, Heartbeat time.Duration
	// CleanSession starts a fresh broker-side session on each connect;
	// the agent keeps its session (false), and so does the simulator by
	// default.
	CleanSession bool

	// ApplyDelay is how long "applying" an accepted document takes, plus
	// up to ApplyJitter, uniformly.
	ApplyDelay, ApplyJitter time.Duration
	// Bad says which app versions fail on the device: their containers
	// run unhealthy, the app stays "verifying" and the device does not
	// report the generation as observed. Nil: every version is good.
	Bad func(app, version string) bool
	// Facts are the facts device i reports (default: amd64, 4 CPUs, 1Gi).
	Facts func(i int, id string) wire.DeviceFacts
	// Report, if set, may change device i's report before it is sent:
	// resource use, or what a hostile device would say.
	Report func(i int, r *wire.Reported)
	// CommandOutput, if set, is the output a device answers a verified
	// command with (a log tail); by default an empty success.
	CommandOutput func(id string, cmd wire.Command) string
	// Logf, if set, receives one line per notable failure (connect
	// errors, lost connections), at most one a second.
	Logf func(format string, args ...any)
}

// Sim runs a simulated fleet. Its methods are safe for concurrent use.
type Sim struct {
	cfg     Config
	base    *tls.Config
	devices []*device
	pace    *pacer
	stats   counters

	started  time.Time
	allConn  atomic.Int64 // nanoseconds from start to all connected, once
	lastLog  atomic.Int64
	runOnce  sync.Once
	shutdown chan struct{}
}

// New checks cfg and prepares the devices; Run connects them.
func New(cfg Config) (*Sim, error) {
	if _, _, err := SplitBroker(cfg.Broker); err != nil {
		return nil, err
	}
	if len(cfg.FleetKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("fleet public key of %d bytes, want %d: %w", len(cfg.FleetKey), ed25519.PublicKeySize, errdefs.ErrInvalidArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim-"
	}
	ids := cfg.IDs
	if len(ids) == 0 {
		if cfg.Devices <= 0 {
			return nil, fmt.Errorf("devices: %d, want at least 1: %w", cfg.Devices, errdefs.ErrInvalidArgument)
		}
		ids = DeviceIDs(cfg.Prefix, cfg.Devices)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if err := topic.ValidDeviceID(id); err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, fmt.Errorf("device id %q twice: %w", id, errdefs.ErrInvalidArgument)
		}
		seen[id] = true
	}
	if cfg.ConnectRate <= 0 {
		cfg.ConnectRate = 200
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffCap <= 0 {
		cfg.BackoffCap = 30 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 60 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 60 * time.Second
	}
	if cfg.Facts == nil {
		cfg.Facts = defaultFacts
	}
	s := &Sim{cfg: cfg, pace: newPacer(cfg.ConnectRate), shutdown: make(chan struct{})}
	if _, useTLS, _ := SplitBroker(cfg.Broker); useTLS {
		s.base = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs, ServerName: cfg.ServerName}
		if s.base.RootCAs == nil && cfg.CA != nil {
			s.base.RootCAs = cfg.CA.Pool()
		}
	} else if cfg.CA != nil || cfg.Certificate != nil {
		return nil, fmt.Errorf("broker %s is plain TCP: client certificates need ssl://: %w", cfg.Broker, errdefs.ErrInvalidArgument)
	}
	s.devices = make([]*device, len(ids))
	for i, id := range ids {
		s.devices[i] = &device{s: s, i: i, id: id, prefix: topic.Root + "/devices/" + id + "/"}
	}
	return s, nil
}

// defaultFacts are a simulated device's facts: amd64, 4 CPUs, 1Gi.
func defaultFacts(int, string) wire.DeviceFacts {
	return wire.DeviceFacts{Arch: "amd64", CPUs: 4, MemoryBytes: 1 << 30, CgroupVersion: 2, AgentVersion: "fleetsim"}
}

// DeviceIDs are the ids of n devices named from prefix: prefix+"00000",
// prefix+"00001", ... (at least five digits).
func DeviceIDs(prefix string, n int) []string {
	width := max(5, len(fmt.Sprint(n-1)))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", prefix, width, i)
	}
	return ids
}

// IDs are the device ids, in order.
func (s *Sim) IDs() []string {
	ids := make([]string, len(s.devices))
	for i, d := range s.devices {
		ids[i] = d.id
	}
	return ids
}

// Run connects every device, paced, keeps them connected (reconnecting
// with backoff) and answering, and returns when ctx ends, after each
// device said "offline" and disconnected. It runs once.
func (s *Sim) Run(ctx context.Context) error {
	ran := false
	s.runOnce.Do(func() { ran = true })
	if !ran {
		return fmt.Errorf("simulation already run: %w", errdefs.ErrFailedPrecondition)
	}
	s.started = time.Now()
	var wg sync.WaitGroup
	for _, d := range s.devices {
		wg.Go(func() { d.run(ctx) })
	}
	<-ctx.Done()
	close(s.shutdown)
	for _, d := range s.devices {
		d.stop()
	}
	wg.Wait()
	return nil
}

// ReportAll makes every connected device publish its report now, as a
// heartbeat would, and returns how many it asked: a burst of reports, all
// the fleet at once, to measure how fast a controller ingests them
// (test/bench/fleet.sh sends the command SIGUSR1 for it). The reports go
// out from a few goroutines, not one per device.
func (s *Sim) ReportAll() int {
	var todo []*device
	for _, d := range s.devices {
		d.mu.Lock()
		if d.conn != nil && !d.stopped {
			todo = append(todo, d)
		}
		d.mu.Unlock()
	}
	var wg sync.WaitGroup
	workers := min(len(todo), 4*runtime.GOMAXPROCS(0))
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(todo); i += workers {
				todo[i].report()
			}
		})
	}
	wg.Wait()
	return len(todo)
}

// Connected is the number of devices connected now.
func (s *Sim) Connected() int { return int(s.stats.connected.Load()) }

// Observed is the number of devices whose last report said they run
// generation gen or a newer one.
func (s *Sim) Observed(gen uint64) int {
	n := 0
	for _, d := range s.devices {
		if d.observed.Load() >= gen {
			n++
		}
	}
	return n
}

// ObservedOf is the generation device id last reported as observed, and
// whether id is a device of the simulation.
func (s *Sim) ObservedOf(id string) (uint64, bool) {
	for _, d := range s.devices {
		if d.id == id {
			return d.observed.Load(), true
		}
	}
	return 0, false
}

// logf logs at most one line a second.
func (s *Sim) logf(format string, args ...any) {
	if s.cfg.Logf == nil {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	if now-last < int64(time.Second) || !s.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.cfg.Logf(format, args...)
}

// backoff is the wait before reconnect attempt n (1, 2, ...): full
// jitter under min(cap, base·2^(n-1)).
func (s *Sim) backoff(n int) time.Duration {
	ceil := s.cfg.BackoffBase << min(n-1, 20)
	if ceil <= 0 || ceil > s.cfg.BackoffCap {
		ceil = s.cfg.BackoffCap
	}
	return time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
}

// pacer hands out connect slots, at most rate a second, first come first
// served.
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

func newPacer(rate int) *pacer { return &pacer{every: time.Second / time.Duration(rate)} }

// wait blocks until the caller's slot.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.every)
	p.mu.Unlock()
	return sleep(ctx, time.Until(slot))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// counters are the simulation's statistics, updated by the devices.
type counters struct {
	connected, connects, disconnects, connectErrors atomic.Int64
	verified, refused, commands, cmdRefused         atomic.Int64
	reports, events, publishErrors                  atomic.Int64

	mu        sync.Mutex
	refusedBy map[string]int64
	lastErr   string
	latency   []time.Duration
}

func (c *counters) refuse(reason string) {
	c.refused.Add(1)
	c.mu.Lock()
	if c.refusedBy == nil {
		c.refusedBy = map[string]int64{}
	}
	c.refusedBy[reason]++
	c.mu.Unlock()
}

func (c *counters) connectError(err error) {
	c.connectErrors.Add(1)
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
}

// Stats is a snapshot of the simulation's figures.
type Stats struct {
	Devices   int `json:"devices"`
	Connected int `json:"connected"`
	// AllConnected is the time from Run to every device connected at
	// once for the first time (zero: not yet).
	AllConnected  time.Duration `json:"allConnected"`
	Connects      int64         `json:"connects"`
	Disconnects   int64         `json:"disconnects"`
	ConnectErrors int64         `json:"connectErrors"`
	LastError     string        `json:"lastError,omitempty"`
	// Verified and Refused count desired documents; RefusedBy by reason
	// (the sign or wire sentinel's text).
	Verified        int64            `json:"verified"`
	Refused         int64            `json:"refused"`
	RefusedBy       map[string]int64 `json:"refusedBy,omitempty"`
	Commands        int64            `json:"commands"`
	CommandsRefused int64            `json:"commandsRefused"`
	Reports         int64            `json:"reports"`
	Events          int64            `json:"events"`
	PublishErrors   int64            `json:"publishErrors"`
	Latency         Percentiles      `json:"latency"`
}

// Percentiles summarise the time from a document's issuedAt to the
// device's report that it runs it.
type Percentiles struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func (p Percentiles) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", p.N, p.P50, p.P90, p.P99, p.Max)
}

// percentiles of samples (sorted in place).
func percentiles(samples []time.Duration) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	at := func(q float64) time.Duration { return samples[min(len(samples)-1, int(q*float64(len(samples))))] }
	return Percentiles{N: len(samples), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: samples[len(samples)-1]}
}

// Stats returns the figures so far. Latency covers the reports since the
// last TakeLatency.
func (s *Sim) Stats() Stats {
	c := &s.stats
	st := Stats{
		Devices: len(s.devices), Connected: int(c.connected.Load()),
		AllConnected: time.Duration(s.allConn.Load()),
		Connects:     c.connects.Load(), Disconnects: c.disconnects.Load(), ConnectErrors: c.connectErrors.Load(),
		Verified: c.verified.Load(), Refused: c.refused.Load(),
		Commands: c.commands.Load(), CommandsRefused: c.cmdRefused.Load(),
		Reports: c.reports.Load(), Events: c.events.Load(), PublishErrors: c.publishErrors.Load(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.LastError = c.lastErr
	if len(c.refusedBy) > 0 {
		st.RefusedBy = make(map[string]int64, len(c.refusedBy))
		for k, v := range c.refusedBy {
			st.RefusedBy[k] = v
		}
	}
	st.Latency = percentiles(slices.Clone(c.latency))
	return st
}

// TakeLatency returns the percentiles of the reports since the last call
// and starts a new series (one per generation rolled out, say).
func (s *Sim) TakeLatency() Percentiles {
	s.stats.mu.Lock()
	l := s.stats.latency
	s.stats.latency = nil
	s.stats.mu.Unlock()
	return percentiles(l)
}

func (s *Sim) noteConnected() {
	if n := s.stats.connected.Add(1); int(n) == len(s.devices) && s.allConn.Load() == 0 {
		s.allConn.CompareAndSwap(0, int64(time.Since(s.started)))
	}
}
