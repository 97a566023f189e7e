// Package mqttc is the device's (and the controller's) MQTT session, on
// github.com/eclipse/paho.mqtt.golang: TCP or TLS (optionally mutual),
// username/password, QoS 1 only, a persistent session (clean session off,
// client id = device id), the presence Last Will, keepalive, and its own
// reconnect loop with jittered exponential backoff (paho's is not jittered).
//
// Each connection uses a fresh paho client: paho's in-memory store would
// re-send unacknowledged publishes after a reconnect and complete the
// original tokens without a PUBACK, which would break Publish's promise.
// Durability across connections is the outbox's job (Drain).
//
// The client opens the network connection itself and follows the MQTT
// framing of what the broker sends: a packet larger than MaxPacketSize
// (default: the wire's largest message) cuts the connection at its fixed
// header, before paho reads and buffers it (limit.go). Errors wrap errdefs
// categories: ErrNotConnected and ErrConnectionLost are unavailable,
// ErrSubscribeRefused is permission denied.
package mqttc

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/internal/sentinel"
)

// Errors of Publish and Subscribe. Drain and callers branch on them; each
// wraps an errdefs category.
var (
	ErrNotConnected     = reason("mqtt not connected", errdefs.ErrUnavailable)
	ErrConnectionLost   = reason("mqtt connection lost before acknowledgement", errdefs.ErrUnavailable)
	ErrSubscribeRefused = reason("mqtt subscription refused", errdefs.ErrPermissionDenied)
)

func reason(msg string, cat error) error { return sentinel.New(msg, cat) }

// Message is one received message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Handler handles a received message. It runs on the session's receive
// path, in order: hand work off and return quickly.
type Handler func(Message)

// Config configures a Client.
type Config struct {
	// Broker is the broker URL: tcp://host:1883, or ssl://host:8883 (also
	// tls://, mqtts://) for TLS.
	Broker string
	// ClientID is the MQTT client id: the device id.
	ClientID string
	// Username and Password authenticate with a password file; leave them
	// empty with a client certificate in TLS.
	Username string
	Password string
	// TLS configures TLS (RootCAs, Certificates for mutual TLS, ServerName).
	TLS *tls.Config
	// Time is the clock TLS validity checks use when TLS.Time is nil
	// (clock.Floor.Now, so a device whose clock says 1970 still connects).
	Time func() time.Time
	// PresenceTopic, if set, gets a retained "online" after each connect,
	// a retained "offline" on a clean shutdown, and "offline" as the Last
	// Will (retained) for an unclean end.
	PresenceTopic string
	// KeepAlive defaults to 30s; ConnectTimeout (dial, TLS and CONNACK) to 10s.
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	// Backoff paces reconnects.
	Backoff Backoff
	// Rand draws backoff jitter; nil seeds one from crypto/rand. Only Run uses it.
	Rand *rand.Rand
	// CleanSession discards the broker-side session on connect; devices
	// keep it false so the broker queues their QoS 1 messages. (After a
	// connection was cut for an oversized packet, the next connection is
	// clean once anyway: the broker would otherwise resend that packet,
	// still unacknowledged, on every reconnect.)
	CleanSession bool
	// MaxPacketSize bounds the packets read from the broker (their
	// remaining length); 0 means DefaultMaxPacketSize. A larger packet
	// cuts the connection before any of it is buffered.
	MaxPacketSize int
	Log           zerolog.Logger
}

// conn is one live connection.
type conn struct {
	cl   paho.Client
	lost chan struct{} // closed when the connection is lost
}

// Client is an MQTT session. Create it with New, start it with Run.
type Client struct {
	cfg  Config
	opts *paho.ClientOptions // template; cloned per connection
	log  zerolog.Logger

	mu       sync.Mutex
	cur      *conn
	up       chan struct{} // closed while connected
	subs     map[string]Handler
	order    []string
	runned   bool
	connects uint64
	refused  uint64 // connections cut for an oversized packet
	clean    bool   // the next connection starts a clean session
}

// PacketsRefused returns how many connections were cut because the broker
// sent a packet over MaxPacketSize.
func (c *Client) PacketsRefused() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

func (c *Client) packetRefused(e *PacketTooLargeError) {
	c.mu.Lock()
	c.refused++
	c.clean = true
	c.mu.Unlock()
	c.log.Warn().Int("size", e.Size).Int("limit", e.Limit).Msg("mqtt packet too large, connection cut")
}

// Connects returns how many sessions Run has established so far.
func (c *Client) Connects() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connects
}

// New validates cfg and returns a client; it connects nothing.
func New(cfg Config) (*Client, error) {
	if cfg.Broker == "" {
		return nil, fmt.Errorf("mqtt config: broker missing: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("mqtt config: client id missing: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxPacketSize <= 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	u, err := url.Parse(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("mqtt config: broker %q: %v: %w", cfg.Broker, err, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return nil, fmt.Errorf("mqtt config: broker %q: want tcp://, ssl://, tls:// or mqtts://: %w", cfg.Broker, errdefs.ErrInvalidArgument)
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	if cfg.Rand == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		cfg.Rand = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	}
	o := paho.NewClientOptions()
	o.AddBroker(cfg.Broker)
	o.SetClientID(cfg.ClientID)
	o.SetProtocolVersion(4) // MQTT 3.1.1
	o.SetCleanSession(cfg.CleanSession)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	o.SetOrderMatters(true)
	o.SetKeepAlive(cfg.KeepAlive)
	o.SetPingTimeout(cfg.KeepAlive / 2)
	o.SetConnectTimeout(cfg.ConnectTimeout)
	o.SetWriteTimeout(cfg.ConnectTimeout)
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
		o.SetPassword(cfg.Password)
	}
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.Time == nil && cfg.Time != nil {
			t.Time = cfg.Time
		}
		o.SetTLSConfig(t)
	}
	if cfg.PresenceTopic != "" {
		o.SetBinaryWill(cfg.PresenceTopic, []byte("offline"), 1, true)
	}
	c := &Client{
		cfg:  cfg,
		opts: o,
		log:  cfg.Log.With().Str("component", "mqtt").Str("client_id", cfg.ClientID).Logger(),
		up:   make(chan struct{}),
		subs: make(map[string]Handler),
	}
	o.SetCustomOpenConnectionFn(c.dial)
	return c, nil
}

// Connected reports whether a session is up now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// WaitConnected blocks until a session is up or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Subscribe registers h for filter (QoS 1). The subscription is made on
// every (re)connect and, if a session is up, right away; it returns
// ErrSubscribeRefused (and forgets the filter) if the broker refused it on
// the live session. A refusal while reconnecting is logged, not fatal.
func (c *Client) Subscribe(ctx context.Context, filter string, h Handler) error {
	c.mu.Lock()
	if _, ok := c.subs[filter]; !ok {
		c.order = append(c.order, filter)
	}
	c.subs[filter] = h
	cur := c.cur
	c.mu.Unlock()
	if cur == nil {
		return nil
	}
	err := c.subscribeOn(ctx, cur, filter, h)
	if errors.Is(err, ErrSubscribeRefused) {
		c.mu.Lock()
		delete(c.subs, filter)
		for i, f := range c.order {
			if f == filter {
				c.order = append(c.order[:i], c.order[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
	}
	return err
}

func wrap(h Handler) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		h(Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	}
}

func (c *Client) subscribeOn(ctx context.Context, cn *conn, filter string, h Handler) error {
	tok := cn.cl.Subscribe(filter, 1, wrap(h))
	if err := c.wait(ctx, cn, tok); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	st, ok := tok.(*paho.SubscribeToken)
	if ok {
		if code, found := st.Result()[filter]; found && code == 0x80 {
			return fmt.Errorf("subscribe %s: %w", filter, ErrSubscribeRefused)
		}
	}
	return nil
}

// wait waits for tok, the connection's loss, or ctx.
func (c *Client) wait(ctx context.Context, cn *conn, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-cn.lost:
		// The token may have completed in the same instant.
		select {
		case <-tok.Done():
			return tok.Error()
		default:
		}
		return ErrConnectionLost
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish sends payload to topic with QoS 1 and returns once the broker's
// PUBACK arrived. It returns ErrNotConnected without a session and
// ErrConnectionLost if the session ended first; the message may then or may
// not have reached the broker (at least once: retry it).
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	return c.publishAsync(topic, payload, retained)(ctx)
}

// publishAsync starts a QoS 1 publish and returns what waits for its
// PUBACK (with Publish's errors). Publishes started one after another on
// a connection reach the broker in that order.
func (c *Client) publishAsync(topic string, payload []byte, retained bool) func(context.Context) error {
	cn := c.current()
	if cn == nil {
		return func(context.Context) error { return fmt.Errorf("publish %s: %w", topic, ErrNotConnected) }
	}
	tok := cn.cl.Publish(topic, 1, retained, payload)
	return func(ctx context.Context) error {
		if err := c.wait(ctx, cn, tok); err != nil {
			if errors.Is(err, paho.ErrNotConnected) {
				err = ErrNotConnected
			}
			return fmt.Errorf("publish %s: %w", topic, err)
		}
		return nil
	}
}

// Run owns the session: it connects, resubscribes, announces presence,
// waits for the connection to drop and reconnects after a jittered backoff,
// until ctx ends. On the way out it publishes "offline" and disconnects
// cleanly. It returns ctx.Err().
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.runned {
		c.mu.Unlock()
		return fmt.Errorf("mqtt client: Run called twice: %w", errdefs.ErrFailedPrecondition)
	}
	c.runned = true
	c.mu.Unlock()

	attempt := 0
	for {
		cn, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn().Err(err).Str("broker", c.cfg.Broker).Int("attempt", attempt).Msg("mqtt connect failed")
		} else {
			since := time.Now()
			c.setConn(cn)
			c.log.Info().Str("broker", c.cfg.Broker).Msg("mqtt connected")
			select {
			case <-cn.lost:
				c.setConn(nil)
				c.log.Warn().Dur("connected_for", time.Since(since)).Msg("mqtt connection lost")
				// A session that stayed up longer than the longest backoff
				// starts the backoff over.
				if time.Since(since) > c.cfg.Backoff.Cap {
					attempt = 0
				}
			case <-ctx.Done():
				c.setConn(nil)
				c.shutdown(cn)
				return ctx.Err()
			}
		}
		d := c.cfg.Backoff.Delay(c.cfg.Rand, attempt)
		attempt++
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

func (c *Client) setConn(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = cn
	if cn != nil {
		c.connects++
		close(c.up)
	} else {
		select {
		case <-c.up:
			c.up = make(chan struct{})
		default:
		}
	}
}

// connect makes one connection attempt, then subscribes and announces
// presence on it.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	cn := &conn{lost: make(chan struct{})}
	var once sync.Once
	o := *c.opts // a shallow copy; the fields set below are per connection
	o.SetStore(paho.NewMemoryStore())
	c.mu.Lock()
	clean := c.clean
	c.mu.Unlock()
	if clean {
		o.SetCleanSession(true)
	}
	o.SetConnectionLostHandler(func(_ paho.Client, _ error) { once.Do(func() { close(cn.lost) }) })
	c.mu.Lock()
	subs := make(map[string]Handler, len(c.subs))
	order := append([]string(nil), c.order...)
	for k, v := range c.subs {
		subs[k] = v
	}
	c.mu.Unlock()
	cn.cl = paho.NewClient(&o)
	// Routes first: a persistent session may deliver queued messages
	// right after CONNACK, before the SUBSCRIBEs below.
	for _, f := range order {
		cn.cl.AddRoute(f, wrap(subs[f]))
	}
	tok := cn.cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); cn.cl.Disconnect(0) }()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", c.cfg.Broker, err)
	}
	fail := func(err error) (*conn, error) {
		cn.cl.Disconnect(0)
		return nil, err
	}
	if clean {
		c.mu.Lock()
		c.clean = false
		c.mu.Unlock()
		c.log.Info().Msg("mqtt clean session after an oversized packet")
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	for _, f := range order {
		if err := c.subscribeOn(sctx, cn, f, subs[f]); err != nil {
			if errors.Is(err, ErrSubscribeRefused) {
				// An ACL said no; the session is still useful.
				c.log.Error().Err(err).Str("topic", f).Msg("mqtt subscription refused")
				continue
			}
			return fail(err)
		}
	}
	if c.cfg.PresenceTopic != "" {
		if err := c.wait(sctx, cn, cn.cl.Publish(c.cfg.PresenceTopic, 1, true, []byte("online"))); err != nil {
			return fail(fmt.Errorf("announce presence: %w", err))
		}
	}
	return cn, nil
}

// shutdown ends a session cleanly: "offline" first, since a clean
// DISCONNECT suppresses the Last Will.
func (c *Client) shutdown(cn *conn) {
	if c.cfg.PresenceTopic != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := c.wait(ctx, cn, cn.cl.Publish(c.cfg.PresenceTopic, 1, true, []byte("offline"))); err != nil {
			c.log.Warn().Err(err).Msg("mqtt offline announcement failed")
		}
		cancel()
	}
	cn.cl.Disconnect(250)
}
