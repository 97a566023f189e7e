package fleetlink

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/sync/clock"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Agent is what the link needs of the agent.
type Agent interface {
	// Apps is the status of each desired app as of the last round.
	Apps() []reconcile.AppStatus
	// Containers describes the agent's containers by runtime name, with
	// their resource use if stats is set.
	Containers(stats bool) map[string]Container
	// Changed is signalled after each round and event (status or events
	// may have changed).
	Changed() <-chan struct{}
	// Wake asks the agent for a new round.
	Wake()
	// Logs writes the last lines of a container's output to w.
	Logs(app, container string, lines int, w LineWriter) error
	// Restart restarts an app's containers (one, if container is set)
	// without counting it as a failure.
	Restart(app, container string) error
	// Facts describe the device.
	Facts() wire.DeviceFacts
}

// LineWriter takes log lines; it returns false to stop (enough output).
type LineWriter func(line string) bool

// Container is what reports say of one container beyond its app status.
type Container struct {
	Image                              string
	Running                            bool
	ExitCode                           int
	OOMKilled                          bool
	StartedAt                          time.Time
	Health                             wire.HealthState
	CPUNanos, MemoryBytes, MemoryLimit uint64
}

// Config is the link's part of the agent config.
type Config struct {
	DeviceID  string
	Broker    string // tcp://host:1883 or tls://host:8883
	PublicKey string // the fleet's ed25519 key (base64 or PEM)
	Username  string
	Password  string
	CAFile    string
	CertFile  string
	KeyFile   string
	// Heartbeat is how often a report is sent when nothing changes
	// (default DefaultHeartbeat).
	Heartbeat time.Duration
	// ReconnectMax caps the jittered reconnect backoff.
	ReconnectMax time.Duration
	// System is the system clock (default time.Now); the time floor
	// guards it.
	System func() time.Time
	// BuildTime is a time the clock cannot truly be before.
	BuildTime time.Time
}

// errFlood is the reason for command messages dropped because the loop
// could not keep up.
var errFlood = fmt.Errorf("more command messages than the device takes: %w", errdefs.ErrResourceExhausted)

// DefaultHeartbeat is how often a report is sent when nothing changes.
const DefaultHeartbeat = 30 * time.Second

// Link connects the agent to its fleet over MQTT. Create it with New and
// run it with Run.
type Link struct {
	agent Agent
	db    *store.DB
	id    string
	log   zerolog.Logger
	pub   ed25519.PublicKey
	floor *clock.Floor
	ob    *outbox.Outbox
	cl    *mqttc.Client
	beat  time.Duration
	facts wire.DeviceFacts
	now   func() time.Time // monotonic-safe time for pacing (the floor)

	desired  chan []byte
	commands chan []byte // command messages for the loop; full: dropped
	dropped  uint64      // command messages dropped (a flood), loop reads it
	cmds     *commands

	rejects rejections // desired documents refused (loop only)

	mu         sync.Mutex
	lastDigest string    // of the last desired envelope received
	lastNews   string    // the last report's apps, generation and clock trust
	lastExtra  string    // the last report's desired digest and dropped count
	lastReport time.Time // when a report was last written
	observed   uint64
}

// New prepares the link; it connects nothing and starts nothing.
func New(cfg Config, agent Agent, db *store.DB, log zerolog.Logger) (*Link, error) {
	if err := topic.ValidDeviceID(cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("fleet: deviceId: %w", err)
	}
	if cfg.PublicKey == "" {
		return nil, fmt.Errorf("fleet: publicKey missing: the agent accepts only signed desired state: %w", errdefs.ErrInvalidArgument)
	}
	pub, err := sign.ParsePublicKey([]byte(cfg.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("fleet: publicKey: %w", err)
	}
	if cfg.System == nil {
		cfg.System = time.Now
	}
	l := &Link{
		agent: agent, db: db, id: cfg.DeviceID, pub: pub,
		log:      log.With().Str("component", "fleet").Logger(),
		beat:     cfg.Heartbeat,
		desired:  make(chan []byte, 8),
		commands: make(chan []byte, 16),
	}
	if l.beat <= 0 {
		l.beat = DefaultHeartbeat
	}
	l.floor, err = clock.New(clock.Options{System: cfg.System, Store: db, BuildTime: cfg.BuildTime})
	if err != nil {
		return nil, err
	}
	l.now = l.floor.Now
	if l.ob, err = db.Outbox(outbox.Limits{}); err != nil {
		return nil, err
	}
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	l.cl, err = mqttc.New(mqttc.Config{
		Broker: cfg.Broker, ClientID: l.id, Username: cfg.Username, Password: cfg.Password,
		TLS: tlsConf, Time: l.floor.Now,
		PresenceTopic: topic.MustBuild(l.id, topic.Presence),
		Backoff:       backoff(cfg.ReconnectMax),
		Log:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	saved, err := db.CommandGuard()
	if err != nil {
		return nil, err
	}
	if l.cmds, err = newCommands(l, saved); err != nil {
		return nil, err
	}
	l.facts = agent.Facts()
	st, err := db.FleetState()
	if err != nil {
		return nil, err
	}
	l.observed = l.observedIfConverged(st, agent.Apps())
	return l, nil
}

// backoff paces reconnects: from 1s (or the cap, if lower) doubling up to
// the cap, with full jitter.
func backoff(capd time.Duration) mqttc.Backoff {
	if capd <= 0 {
		capd = mqttc.DefaultBackoffCap
	}
	return mqttc.Backoff{Base: min(mqttc.DefaultBackoffBase, capd/4), Cap: capd}
}

// tlsConfig builds the TLS settings: the CA to trust (system roots if
// none) and the client certificate for mutual TLS. Nil for tcp://.
func tlsConfig(cfg Config) (*tls.Config, error) {
	if strings.HasPrefix(cfg.Broker, "tcp://") && cfg.CAFile == "" && cfg.CertFile == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: caFile: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("fleet: caFile %s: no PEM certificate: %w", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// Run owns the session, the outbox drain, the command workers and the
// link's own loop until ctx ends, and waits for all of them. Losing the
// broker stops none of the agent's work.
func (l *Link) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	// The command topic first, the retained desired topic last: with mochi,
	// a SUBSCRIBE sent while the retained messages of the previous one
	// still arrive was seen acknowledged and never served.
	if err := l.cl.Subscribe(ctx, topic.MustBuild(l.id, topic.Command), func(m mqttc.Message) {
		// Never block the MQTT client on commands: past what the loop
		// holds, a flood is dropped (and counted).
		select {
		case l.commands <- m.Payload:
		default:
			atomic.AddUint64(&l.dropped, 1)
		}
	}); err != nil {
		return err
	}
	if err := l.cl.Subscribe(ctx, topic.MustBuild(l.id, topic.Desired), func(m mqttc.Message) {
		if len(m.Payload) == 0 {
			return // a retained document cleared by the controller
		}
		select {
		case l.desired <- m.Payload:
		case <-ctx.Done():
		}
	}); err != nil {
		return err
	}
	g.Go(func() error { return l.cl.Run(ctx) })
	g.Go(func() error { return mqttc.Drain(ctx, l.cl, l.ob, l.id) })
	g.Go(func() error { return l.loop(ctx) })
	err := g.Wait()
	l.cmds.wait()
	if perr := l.floor.Persist(); perr != nil {
		l.log.Warn().Err(perr).Msg("persisting the time floor")
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (l *Link) loop(ctx context.Context) error {
	if l.floor.Untrusted() {
		l.log.Warn().Time("floor", l.floor.Now()).Msg("system clock is behind the time floor: untrusted, judging desired state by generation and the floor")
		l.event(wire.Event{Kind: wire.EventClockUntrusted, Reason: "system clock behind the time floor"})
	}
	if err := l.floor.Persist(); err != nil {
		l.log.Warn().Err(err).Msg("persisting the time floor")
	}
	l.sync(true)
	beat := time.NewTicker(l.beat)
	defer beat.Stop()
	// flush ends a rejection window and writes a report held back by the
	// report spacing.
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	changed := l.agent.Changed()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p := <-l.desired:
			l.handleDesired(p)
		case p := <-l.commands:
			l.cmds.handle(ctx, p)
			if n := atomic.SwapUint64(&l.dropped, 0); n > 0 {
				for range min(n, 1000) { // counted; more is still a flood
					l.reject(wire.EventRejectedCommand, errFlood, "")
				}
			}
		case <-changed:
			l.sync(false)
		case <-flush.C:
			l.flushRejections()
			l.sync(false)
		case <-beat.C:
			if err := l.floor.Persist(); err != nil {
				l.log.Warn().Err(err).Msg("persisting the time floor")
			}
			l.sync(true)
		}
		if d, ok := l.nextFlush(); ok {
			flush.Reset(d)
		}
	}
}
