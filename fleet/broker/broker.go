package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/topic"
)

// Passwords checks the password of a device enrolled with one. Check
// must take the same time whether the device exists or not and compare in
// constant time (a password hash does both).
type Passwords interface {
	Check(device, password string) bool
}

// Config configures a Broker. Zero values take the defaults named.
type Config struct {
	// TLSAddr is the TLS listener's address, ":8883" by default; "-"
	// opens no TLS listener (with TCPAddr set: plain TCP only).
	TLSAddr string
	// Certificate is the broker's server certificate (required with TLS).
	Certificate *tls.Certificate
	// ClientCAs is the fleet CA pool that device certificates must chain
	// to; nil refuses every client certificate.
	ClientCAs *x509.CertPool
	// Revoked reports whether a device certificate's serial number is
	// revoked; nil revokes nothing. It is asked on every connect; call
	// Disconnect after revoking a connected device.
	Revoked func(serial *big.Int) bool
	// Passwords checks password clients; nil refuses them all.
	Passwords Passwords
	// TCPAddr, if set, opens a plain TCP listener (passwords travel in
	// clear text: for loopback and tests).
	TCPAddr string

	// MaxPacketSize is the largest packet a client may send (its remaining
	// length); mqttc.DefaultMaxPacketSize by default.
	MaxPacketSize int
	// Rate and Burst are each device's publish token bucket: Rate messages
	// per second (20), up to Burst at once (100).
	Rate  float64
	Burst int
	// MaxInflight bounds the QoS 1 messages stored per client (1000);
	// MaxPendingWrites the packets queued for writing to a connected
	// client (32). The controller is the broker's inline client, which has
	// no queue: these apply to devices, to which the controller sends a
	// desired document per generation and a few commands. Mochi allocates
	// each client's write queue whole at connect (8 bytes a packet).
	MaxInflight      int
	MaxPendingWrites int
	// MaxKeepAlive is the longest keepalive a client may ask for (5m).
	MaxKeepAlive time.Duration
	// ConnectTimeout bounds the TLS handshake and CONNECT (10s).
	ConnectTimeout time.Duration
	// SessionExpiry drops a persistent session offline this long (30 days).
	SessionExpiry time.Duration
	// Now is the rate limit's clock (time.Now).
	Now func() time.Time

	Log zerolog.Logger
}

func (c *Config) setDefaults() {
	if c.TLSAddr == "" {
		c.TLSAddr = ":8883"
	}
	if c.MaxPacketSize <= 0 {
		c.MaxPacketSize = mqttc.DefaultMaxPacketSize
	}
	if c.Rate <= 0 {
		c.Rate = 20
	}
	if c.Burst <= 0 {
		c.Burst = 100
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 1000
	}
	if c.MaxPendingWrites <= 0 {
		c.MaxPendingWrites = 32
	}
	if c.MaxKeepAlive <= 0 {
		c.MaxKeepAlive = 5 * time.Minute
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.SessionExpiry <= 0 {
		c.SessionExpiry = 30 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// readBufferSize is the size of each client's read buffer.
const readBufferSize = 512

// Broker is the embedded MQTT broker. Create it with New, open its
// listeners with Start, stop it with Close.
type Broker struct {
	cfg   Config
	log   zerolog.Logger
	srv   *mqtt.Server
	hook  *hook
	limit *limiter
	stats *counters

	mu      sync.Mutex
	lns     []*listener
	subs    map[string]int // inline subscription filter → mochi subscription id
	nextSub int
	started bool
	closed  bool
}

// New validates cfg and builds a broker; nothing listens until Start.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	if cfg.TLSAddr != "-" && cfg.Certificate == nil {
		return nil, fmt.Errorf("broker tls listener %s: no server certificate: %w", cfg.TLSAddr, errdefs.ErrInvalidArgument)
	}
	if cfg.TLSAddr == "-" && cfg.TCPAddr == "" {
		return nil, fmt.Errorf("broker: no listener (tls disabled and no tcp address): %w", errdefs.ErrInvalidArgument)
	}
	if cfg.MaxInflight > 65535 {
		return nil, fmt.Errorf("broker max inflight %d: at most 65535: %w", cfg.MaxInflight, errdefs.ErrInvalidArgument)
	}
	b := &Broker{
		cfg:   cfg,
		log:   cfg.Log.With().Str("component", "broker").Logger(),
		limit: newLimiter(cfg.Rate, cfg.Burst, cfg.Now),
		stats: newCounters(),
		subs:  map[string]int{},
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize) + 1 // mochi compares remaining length + 1
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = 0 // retained desired documents never expire
	b.srv = mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		// Each client's read buffer, kept for its life, over the TLS
		// connection's own (mochi's default is 2 KiB): devices publish
		// a report of a few KiB now and then, and a larger packet is read
		// past the buffer.
		ClientNetReadBufferSize: readBufferSize,
		Logger:                  slog.New(&slogHandler{log: b.log}),
	})
	b.hook = newHook(b)
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker hook: %w", err)
	}
	return b, nil
}

// Start opens the listeners and serves until Close.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return fmt.Errorf("broker start: already started or closed: %w", errdefs.ErrFailedPrecondition)
	}
	var lns []*listener
	closeAll := func() {
		for _, l := range lns {
			_ = l.ln.Close()
		}
	}
	if b.cfg.TLSAddr != "-" {
		ln, err := net.Listen("tcp", b.cfg.TLSAddr)
		if err != nil {
			return fmt.Errorf("broker tls listener %s: %w: %w", b.cfg.TLSAddr, err, errdefs.ErrUnavailable)
		}
		lns = append(lns, &listener{id: "tls", ln: ln, timeout: b.cfg.ConnectTimeout, b: b, tls: &tls.Config{
			Certificates: []tls.Certificate{*b.cfg.Certificate},
			MinVersion:   tls.VersionTLS12,
			// Like tls.VerifyClientCertIfGiven, with the verification done by
			// verifyConnection so that refusals are counted by reason.
			ClientAuth:       tls.RequestClientCert,
			VerifyConnection: b.verifyConnection,
		}})
	}
	if b.cfg.TCPAddr != "" {
		ln, err := net.Listen("tcp", b.cfg.TCPAddr)
		if err != nil {
			closeAll()
			return fmt.Errorf("broker tcp listener %s: %w: %w", b.cfg.TCPAddr, err, errdefs.ErrUnavailable)
		}
		lns = append(lns, &listener{id: "tcp", ln: ln, timeout: b.cfg.ConnectTimeout, b: b})
	}
	for _, l := range lns {
		if err := b.srv.AddListener(l); err != nil {
			closeAll()
			return fmt.Errorf("broker listener %s: %w", l.id, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		closeAll()
		return fmt.Errorf("broker serve: %w", err)
	}
	b.lns, b.started = lns, true
	for _, l := range lns {
		b.log.Info().Str("listener", l.id).Str("addr", l.Address()).Msg("mqtt listening")
	}
	return nil
}

// TLSAddr is the TLS listener's address (host:port, the port chosen if
// Config.TLSAddr asked for port 0), or "" without one or before Start.
func (b *Broker) TLSAddr() string { return b.addr("tls") }

// TCPAddr is the plain TCP listener's address, or "".
func (b *Broker) TCPAddr() string { return b.addr("tcp") }

func (b *Broker) addr(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lns {
		if l.id == id {
			return l.Address()
		}
	}
	return ""
}

// Close disconnects every client and stops the broker.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if !started {
		return nil
	}
	return b.srv.Close()
}

// Publish publishes payload on topic with QoS 1 as the controller (the
// inline client, which no ACL restricts). A payload larger than the
// devices' packet limit is refused, since it would cut the receiving
// device's connection.
func (b *Broker) Publish(t string, payload []byte, retained bool) error {
	if n := len(payload) + len(t) + 4; n > b.cfg.MaxPacketSize {
		return fmt.Errorf("publish %s: %d bytes with topic and header, the limit is %d: %w", t, n, b.cfg.MaxPacketSize, errdefs.ErrInvalidArgument)
	}
	if err := b.srv.Publish(t, payload, retained, 1); err != nil {
		return fmt.Errorf("publish %s: %w", t, err)
	}
	return nil
}

// Subscribe delivers every message matching filter, retained ones
// first, to h, as the controller. h runs on the publishing client's
// receive path, one message at a time per client: hand work off and
// return quickly. One handler per filter: a second Subscribe of the same
// filter is refused.
func (b *Broker) Subscribe(filter string, h mqttc.Handler) error {
	b.mu.Lock()
	if _, ok := b.subs[filter]; ok {
		b.mu.Unlock()
		return fmt.Errorf("subscribe %s: already subscribed: %w", filter, errdefs.ErrAlreadyExists)
	}
	b.nextSub++
	id := b.nextSub
	b.subs[filter] = id
	b.mu.Unlock()
	err := b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		h(mqttc.Message{Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...), Retained: pk.FixedHeader.Retain})
	})
	if err != nil {
		b.mu.Lock()
		delete(b.subs, filter)
		b.mu.Unlock()
		return fmt.Errorf("subscribe %s: %w: %w", filter, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// consumed reports whether t is a device's topic of a kind the
// controller subscribed to for every device (topic.AllDevices): such a
// message is not kept retained. The controller stores what it receives,
// and the broker's copy, in memory only, would be a second one, gone with
// the process anyway (the controller and the embedded broker start and
// stop together). At 10,000 devices the retained reports and presences
// held 20 MB, and mochi copies every retained message each second to
// look for expired ones. A copy retained before the controller
// subscribed goes with the device's next message on that topic, so a
// new subscription is never handed an old one.
func (b *Broker) consumed(t string) bool {
	_, kind, err := topic.Parse(t)
	if err != nil {
		return false
	}
	f, err := topic.AllDevices(kind)
	if err != nil {
		return false
	}
	b.mu.Lock()
	_, ok := b.subs[f]
	b.mu.Unlock()
	if ok {
		if _, held := b.srv.Topics.Retained.Get(t); held {
			b.srv.Topics.RetainMessage(packets.Packet{TopicName: t})
		}
	}
	return ok
}

// Unsubscribe ends the controller's subscription to filter.
func (b *Broker) Unsubscribe(filter string) error {
	b.mu.Lock()
	id, ok := b.subs[filter]
	delete(b.subs, filter)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("unsubscribe %s: not subscribed: %w", filter, errdefs.ErrNotFound)
	}
	return b.srv.Unsubscribe(filter, id)
}

// Disconnect cuts device id's connection, if any, and drops its session
// (subscriptions and queued messages). Call it after revoking the device:
// its next connect is refused by Config.Revoked or Config.Passwords. A
// connect of id in progress is cut when its session is established.
func (b *Broker) Disconnect(id string) {
	b.hook.disconnect(id)
	b.limit.forget(id)
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Net.Inline {
		return
	}
	if !cl.Closed() {
		b.stats.add(func(s *Stats) { s.Disconnected++ })
		b.log.Info().Str("device", id).Msg("mqtt client cut: disconnected by the controller")
	}
	cl.Stop(errDisconnected)
	b.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
	b.srv.Clients.Delete(id)
}

// ClearRetained clears device id's retained topics (desired, reported,
// presence) with empty retained publishes, as for a removed device (F-07).
func (b *Broker) ClearRetained(id string) error {
	if err := topic.ValidDeviceID(id); err != nil {
		return fmt.Errorf("clear retained: %w", err)
	}
	for _, k := range []topic.Kind{topic.Desired, topic.Reported, topic.Presence} {
		if err := b.Publish(topic.MustBuild(id, k), nil, true); err != nil {
			return fmt.Errorf("clear retained: %w", err)
		}
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats { return b.stats.snapshot() }

// slogHandler passes mochi's warnings and errors to zerolog; its info and
// debug chatter is dropped.
type slogHandler struct {
	log   zerolog.Logger
	attrs []slog.Attr
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.Warn()
	if r.Level >= slog.LevelError {
		ev = h.log.Error()
	}
	for _, a := range h.attrs {
		ev = ev.Str(a.Key, a.Value.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		ev = ev.Str(a.Key, a.Value.String())
		return true
	})
	ev.Str("mochi", r.Message).Msg("mqtt broker")
	return nil
}

func (h *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &slogHandler{log: h.log, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *slogHandler) WithGroup(string) slog.Handler { return h }
