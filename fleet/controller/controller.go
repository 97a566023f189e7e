package controller

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/fleet/placement"
	"github.com/tender-edge/tender/fleet/publish"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/topic"
)

// Defaults of Config.
const (
	DefaultTick           = time.Second
	DefaultIngestDelay    = 5 * time.Millisecond
	DefaultIngestBatch    = 500
	DefaultCommandTimeout = 10 * time.Second
	DefaultResync         = time.Minute
)

// Config is the controller's configuration.
type Config struct {
	// Dir is the data directory: enroll's CA, server certificate and CRL
	// go there (see PrepareDir, LoadOrCreateKey for the rest).
	Dir string
	// FleetID is written into desired documents (optional).
	FleetID string
	// Brokers are the MQTT URLs devices are told at enrollment.
	Brokers []string
	// Broker says, for Status, which broker runs: "embedded" or the URL.
	Broker string
	// Version of the controller, for Status.
	Version string
	// ID names this controller among several (Status, the audit log).
	ID string
	// StoreName names the store in errors ("etcd"; default "bbolt").
	StoreName string
	// SharedGroup, if set, subscribes to reports and presence as MQTT
	// shared subscriptions of that group ($share/GROUP/...): with several
	// controllers on one external broker, each message reaches one of
	// them. Events and command results are not shared (see doc.go).
	SharedGroup string
	// Grace is how long a device of an N-device app may be offline
	// before its share moves (placement.DefaultGrace when zero).
	Grace time.Duration
	// Reserve is kept free on every device for the agent and the system.
	Reserve placement.Resources
	// Tick is how often the loop runs without a change (DefaultTick).
	Tick time.Duration
	// Resync is how often the loop reads every device from the store
	// (DefaultResync); between, it reads only those that ingest, the API
	// and enrollment changed.
	Resync time.Duration
	// IngestDelay and IngestBatch bound how long and how many messages
	// ingest gathers before one store write.
	IngestDelay time.Duration
	IngestBatch int
	// CommandTimeout is how long Logs and Restart wait for the device's
	// answer (DefaultCommandTimeout).
	CommandTimeout time.Duration
	// EnrollLimiter bounds enrollment attempts per source address (nil:
	// enroll's default, 10 at once then one every 6 s). Only a benchmark
	// raises it (tender serve --enroll-rate); F-04.
	EnrollLimiter *enroll.Limiter
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log zerolog.Logger
}

// Metrics are the hooks the controller feeds (the API's Prometheus
// metrics); each may be nil.
type Metrics struct {
	PublishLatency func(time.Duration)
	Ingested       func(reports, events int)
	// Fleet is told, after each loop pass, the number of devices, of
	// online ones, and of rollouts by phase.
	Fleet func(devices, online int, rollouts map[string]int)
}

// Deps are the controller's parts made by its caller.
type Deps struct {
	Store store.Store
	// Key signs desired documents and commands.
	Key       ed25519.PrivateKey
	Transport Transport
	// Revoker, optional, acts on the broker when a device is removed.
	Revoker Revoker
	// Resolver resolves image tags to digests at Apply; nil: every image
	// must already name a digest.
	Resolver Resolver
	Metrics  Metrics
	// Leadership, with several controllers on one store, says whether
	// this one leads (leader.go); nil: it always does.
	Leadership Leadership
	// DeviceWatch, optional, tells the loop which devices any
	// controller wrote (etcdstore.DB); while it runs, the loop reads
	// only those between resyncs. Without it, a controller sharing the
	// store (Leadership set) reads every device at every pass.
	DeviceWatch DeviceWatch
}

// DeviceWatch tells which devices' records or statuses were written in
// the store, by any controller (etcdstore.DB.WatchDevices).
type DeviceWatch interface {
	// WatchDevices calls changed with the ids of devices written, and
	// up(true) once every write from then on is told, up(false) when
	// writes may go untold; it returns at once and runs until ctx ends.
	WatchDevices(ctx context.Context, changed func(ids []string), up func(bool))
}

// Controller is the fleet controller: it implements api.Controller.
type Controller struct {
	cfg     Config
	st      store.Store
	key     ed25519.PrivateKey
	tr      Transport
	rv      Revoker
	res     Resolver
	met     Metrics
	pub     *publish.Publisher
	en      *enroll.Enroller
	log     zerolog.Logger
	started time.Time

	in chan inMsg // ingest: handlers → batcher
	// stopped is closed when Run returns: handlers still called by the
	// broker (the Last Wills of devices it closes at shutdown) drop
	// their message instead of blocking its clients for good.
	stopped  chan struct{}
	stopOnce sync.Once
	kick     chan struct{} // cap 1: something changed, run the loop

	// view is what the loop published after its last pass, for the
	// API to read without waiting for it; ready is closed once there is
	// one.
	view atomic.Pointer[snapshot]
	// last is what the API read last, served while the store does not
	// answer (lastview.go).
	last      lastView
	ready     chan struct{}
	readyOnce sync.Once

	// changes are the devices written since the loop last read them;
	// cmds says a rollout command was stored for the loop.
	changes changes
	cmds    atomic.Bool

	refused      atomic.Uint64 // F-08: payload device ≠ topic device
	storeRefused atomic.Uint64 // the same, caught by the store (events of a batch)
	malformed    atomic.Uint64
	ingested     atomic.Uint64

	cmdMu   sync.Mutex
	waiting map[string]waiter // command id → its caller

	lp *loop // owned by Run's goroutine

	dw DeviceWatch
	// watching: dw tells every device written (a pass may read only
	// those marked, between resyncs).
	watching atomic.Bool
	// follow is the follower's copy of the devices, kept between its
	// passes while watching (owned by Run's goroutine; nil: read all).
	follow *loop

	ld      Leadership
	lead    leaderState // owned by Run's goroutine
	deposed atomic.Bool // a fenced write of this pass was refused
}

// New builds a controller. It subscribes nothing and starts nothing:
// Run does.
func New(ctx context.Context, cfg Config, deps Deps) (*Controller, error) {
	if deps.Transport == nil || len(deps.Key) != ed25519.PrivateKeySize || deps.Store.Devices == nil || deps.Store.Docs == nil {
		return nil, fmt.Errorf("controller: Store, Key and Transport are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("controller: data directory missing: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.IngestDelay <= 0 {
		cfg.IngestDelay = DefaultIngestDelay
	}
	if cfg.IngestBatch <= 0 {
		cfg.IngestBatch = DefaultIngestBatch
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{"tls://localhost:8883"}
	}
	c := &Controller{
		cfg: cfg, st: deps.Store, key: deps.Key, tr: deps.Transport, rv: deps.Revoker, res: deps.Resolver, met: deps.Metrics,
		log: cfg.Log, started: cfg.Now(),
		in: make(chan inMsg, 4096), stopped: make(chan struct{}), kick: make(chan struct{}, 1), ready: make(chan struct{}),
		waiting: map[string]waiter{}, ld: deps.Leadership, dw: deps.DeviceWatch,
	}
	var err error
	c.pub, err = publish.New(publish.Config{
		Key: deps.Key, FleetID: cfg.FleetID, Generations: deps.Store.Generations,
		States: publish.StoreStates(deps.Store.Docs), Transport: deps.Transport, Now: cfg.Now,
		Latency: deps.Metrics.PublishLatency,
	})
	if err != nil {
		return nil, err
	}
	c.en, err = enroll.New(ctx, enroll.Config{
		Dir: cfg.Dir, Store: enrollStore{tokens: deps.Store.JoinTokens, docs: deps.Store.Docs, now: cfg.Now},
		Brokers: cfg.Brokers, SigningKey: deps.Key.Public().(ed25519.PublicKey), Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: enrollment: %w", err)
	}
	return c, nil
}

// Enroller is the controller's enrollment (its CA, for the server
// certificate and the broker's client checks).
func (c *Controller) Enroller() *enroll.Enroller { return c.en }

// EnrollHandler serves POST /v1/enroll; each device enrolled is recorded
// in the store with the labels of its token.
func (c *Controller) EnrollHandler() http.Handler {
	return c.en.Handler(enroll.HandlerOptions{Limiter: c.cfg.EnrollLimiter, Enrolled: c.enrolled})
}

// Run subscribes to the devices' topics, then runs the ingest and the
// loop until ctx ends. It returns ctx's error, or the first failure to
// start.
func (c *Controller) Run(ctx context.Context) error {
	defer c.stopOnce.Do(func() { close(c.stopped) })
	if c.dw != nil {
		c.dw.WatchDevices(ctx, func(ids []string) { c.changes.mark(ids...) }, func(up bool) {
			// Either way every device is read at the next pass: writes
			// before the watch was in place, or since it broke, are
			// told by nothing else.
			c.watching.Store(up)
			c.changes.markAll()
		})
	}
	var lp *loop
	if c.ld == nil {
		var err error
		if lp, err = c.loadLoop(ctx); err != nil {
			return err
		}
		c.lp = lp
		apps, err := c.st.Apps.List(ctx)
		if err != nil {
			return fmt.Errorf("controller: apps: %w", err)
		}
		current := make(map[string]store.App, len(apps))
		for _, a := range apps {
			current[a.Name] = a
		}
		c.publishView(ctx, lp, current)
	} else {
		// Until the election says who leads, the API reads the store.
		c.followPass(ctx)
	}
	for _, k := range []topic.Kind{topic.CommandResult, topic.Events, topic.Presence, topic.Reported} {
		f, err := topic.AllDevices(k)
		if err != nil {
			return err
		}
		if c.cfg.SharedGroup != "" && (k == topic.Presence || k == topic.Reported) {
			f = "$share/" + c.cfg.SharedGroup + "/" + f
		}
		c.log.Debug().Str("filter", f).Msg("subscribe")
		if err := c.tr.Subscribe(f, c.receive); err != nil {
			return fmt.Errorf("controller: subscribe %s: %w", f, err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.ingest(ctx) }()
	err := c.run(ctx, lp)
	wg.Wait()
	return err
}

// Kick asks the loop for a pass now.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// snapshot returns what the loop published last; before its first
// publication (Run reading the store back), it waits for it.
func (c *Controller) snapshot(ctx context.Context) (*snapshot, error) {
	if v := c.view.Load(); v != nil {
		return v, nil
	}
	select {
	case <-c.ready:
		return c.view.Load(), nil
	case <-c.stopped:
		return nil, fmt.Errorf("controller stopped: %w", errdefs.ErrUnavailable)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// changes is a set of devices written since the loop last read them, or
// all of them.
type changes struct {
	mu      sync.Mutex
	ids     map[string]struct{}
	removed map[string]struct{}
	all     bool // every device is to be read
}

// markAll asks for every device to be read at the next pass.
func (ch *changes) markAll() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.all = true
}

// mark records devices written to the store (after the write).
func (ch *changes) mark(ids ...string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ids == nil {
		ch.ids = map[string]struct{}{}
	}
	for _, id := range ids {
		ch.ids[id] = struct{}{}
	}
}

// markRemoved records a device deleted from the store.
func (ch *changes) markRemoved(id string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed == nil {
		ch.removed = map[string]struct{}{}
	}
	ch.removed[id] = struct{}{}
	if ch.ids == nil {
		ch.ids = map[string]struct{}{}
	}
	ch.ids[id] = struct{}{}
}

// take returns the devices marked since the last take, those removed,
// and whether every device is to be read.
func (ch *changes) take() (ids, removed map[string]struct{}, all bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ids, removed, all = ch.ids, ch.removed, ch.all
	ch.ids, ch.removed, ch.all = nil, nil, false
	return ids, removed, all
}

// takeWritten is take for a follower: the devices removed stay marked
// for the loop of a later term (which forgets what it published to
// them, and reads every device anyway).
func (ch *changes) takeWritten() (ids map[string]struct{}, all bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ids, all = ch.ids, ch.all
	ch.ids, ch.all = nil, false
	return ids, all
}

// Stats are counters of what ingest dropped and stored.
type Stats struct {
	// Refused counts messages whose payload names another device than
	// their topic (SECURITY.md F-08).
	Refused uint64
	// StoreRefused counts the same as the store refused them, flagging
	// the sender (the messages of Refused, once they reached the store).
	StoreRefused uint64
	// Malformed counts messages that do not decode (size, schema).
	Malformed uint64
	// Ingested counts reports, events and presence messages stored.
	Ingested uint64
}

// Stats returns the ingest counters.
func (c *Controller) Stats() Stats {
	return Stats{Refused: c.refused.Load(), StoreRefused: c.storeRefused.Load(), Malformed: c.malformed.Load(), Ingested: c.ingested.Load()}
}
