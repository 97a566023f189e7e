package fleetsim

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

// MQTT 3.1.1 control packet types (high nibble of the fixed header).
const (
	pConnect    = 1
	pConnack    = 2
	pPublish    = 3
	pPuback     = 4
	pSubscribe  = 8
	pSuback     = 9
	pPingreq    = 12
	pPingresp   = 13
	pDisconnect = 14
)

// maxPacket bounds what a connection reads: the largest wire message plus
// the topic and headers.
const maxPacket = wire.MaxMessageSize + 1<<10

// ConnectOptions are the fields of an MQTT 3.1.1 CONNECT.
type ConnectOptions struct {
	ClientID           string
	Username, Password string // empty: not sent
	KeepAlive          time.Duration
	CleanSession       bool
	// Will, if WillTopic is set, is published by the broker (QoS 1,
	// retained as WillRetain says) when the connection ends without a
	// DISCONNECT.
	WillTopic   string
	WillPayload []byte
	WillRetain  bool
}

func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// appendPacket appends a fixed header (type and flags, remaining length)
// for a body of n bytes.
func appendHeader(b []byte, typ, flags byte, n int) []byte {
	b = append(b, typ<<4|flags)
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func encodeConnect(o ConnectOptions) []byte {
	body := appendString(make([]byte, 0, 64+len(o.ClientID)+len(o.WillTopic)+len(o.WillPayload)), "MQTT")
	var flags byte
	if o.CleanSession {
		flags |= 0x02
	}
	if o.WillTopic != "" {
		flags |= 0x04 | 1<<3 // will, QoS 1
		if o.WillRetain {
			flags |= 0x20
		}
	}
	if o.Username != "" {
		flags |= 0x80
		if o.Password != "" {
			flags |= 0x40
		}
	}
	body = append(body, 4, flags)
	body = binary.BigEndian.AppendUint16(body, uint16(o.KeepAlive/time.Second))
	body = appendString(body, o.ClientID)
	if o.WillTopic != "" {
		body = appendString(body, o.WillTopic)
		body = appendString(body, string(o.WillPayload))
	}
	if o.Username != "" {
		body = appendString(body, o.Username)
		if o.Password != "" {
			body = appendString(body, o.Password)
		}
	}
	return append(appendHeader(nil, pConnect, 0, len(body)), body...)
}

// encodePublish encodes a PUBLISH of QoS 0 (id unused) or 1.
func encodePublish(topic string, payload []byte, qos byte, retain bool, id uint16) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	flags := qos << 1
	if retain {
		flags |= 1
	}
	b := appendHeader(make([]byte, 0, n+5), pPublish, flags, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return append(b, payload...)
}

// encodeSubscribe asks for every filter at QoS 1.
func encodeSubscribe(id uint16, filters ...string) []byte {
	n := 2
	for _, f := range filters {
		n += 2 + len(f) + 1
	}
	b := appendHeader(make([]byte, 0, n+5), pSubscribe, 0x02, n)
	b = binary.BigEndian.AppendUint16(b, id)
	for _, f := range filters {
		b = append(appendString(b, f), 1)
	}
	return b
}

func encodeAck(typ byte, id uint16) []byte {
	return []byte{typ << 4, 2, byte(id >> 8), byte(id)}
}

// readPacket reads one packet: its type, the flags of its fixed header and
// its body (a fresh slice).
func readPacket(r *bufio.Reader) (typ, flags byte, body []byte, err error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, shift := 0, 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, 0, nil, fmt.Errorf("mqtt: malformed remaining length: %w", errdefs.ErrInvalidArgument)
		}
	}
	if n > maxPacket {
		return 0, 0, nil, fmt.Errorf("mqtt: packet of %d bytes, at most %d: %w", n, maxPacket, errdefs.ErrInvalidArgument)
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, nil, err
	}
	return h >> 4, h & 0x0f, body, nil
}

// parsePublish splits a PUBLISH body.
func parsePublish(flags byte, body []byte) (topic string, qos byte, id uint16, payload []byte, err error) {
	qos = flags >> 1 & 3
	if len(body) < 2 {
		return "", 0, 0, nil, fmt.Errorf("mqtt: short PUBLISH: %w", errdefs.ErrInvalidArgument)
	}
	tl := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < tl || (qos > 0 && len(rest) < tl+2) || qos > 1 {
		return "", 0, 0, nil, fmt.Errorf("mqtt: malformed PUBLISH (qos %d): %w", qos, errdefs.ErrInvalidArgument)
	}
	topic, rest = string(rest[:tl]), rest[tl:]
	if qos > 0 {
		id, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	return topic, qos, id, rest, nil
}

// ErrRefused is a CONNACK with a non-zero return code (bad credentials,
// not authorised, server unavailable); it wraps errdefs.ErrPermissionDenied.
var ErrRefused = fmt.Errorf("mqtt: connection refused by the broker: %w", errdefs.ErrPermissionDenied)

// Conn is a minimal MQTT 3.1.1 client connection: CONNECT with a will,
// SUBSCRIBE, PUBLISH at QoS 0 or 1 (the broker's PUBACKs counted, not
// waited for), PUBACK of what it receives at QoS 1, PINGREQ. It holds no
// goroutine of its own: Serve reads on the caller's. Writes are safe
// from any goroutine.
type Conn struct {
	nc      net.Conn
	r       *bufio.Reader
	wmu     sync.Mutex
	ids     atomic.Uint32
	written atomic.Int64 // unix nanos of the last write
	acks    atomic.Uint64
	keep    time.Duration
}

// Dialer dials brokers: "tcp://host:port", or "ssl://", "tls://",
// "mqtts://" with TLS.
type Dialer struct {
	TLS     *tls.Config // for TLS brokers; ServerName defaults to the host
	Timeout time.Duration
}

// SplitBroker parses a broker URL into its address and whether it is TLS.
func SplitBroker(broker string) (addr string, useTLS bool, err error) {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" {
		return "", false, fmt.Errorf("broker %q: want tcp://HOST:PORT or ssl://HOST:PORT: %w", broker, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		return u.Host, false, nil
	case "ssl", "tls", "mqtts":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("broker %q: scheme %q, want tcp or ssl: %w", broker, u.Scheme, errdefs.ErrInvalidArgument)
}

// Dial connects to broker, sends CONNECT and waits for the CONNACK.
func (d Dialer) Dial(ctx context.Context, broker string, o ConnectOptions) (*Conn, error) {
	addr, useTLS, err := SplitBroker(broker)
	if err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", broker, err)
	}
	if useTLS {
		cfg := &tls.Config{}
		if d.TLS != nil {
			cfg = d.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", broker, err)
		}
		nc = tc
	}
	c := &Conn{nc: nc, r: bufio.NewReaderSize(nc, 512), keep: o.KeepAlive}
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	if err := c.write(encodeConnect(o)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", broker, err)
	}
	typ, _, body, err := readPacket(c.r)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to %s: waiting for CONNACK: %w", broker, err)
	}
	if typ != pConnack || len(body) != 2 {
		nc.Close()
		return nil, fmt.Errorf("connect to %s: packet type %d instead of CONNACK: %w", broker, typ, errdefs.ErrInvalidArgument)
	}
	if body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("connect to %s as %q: return code %d: %w", broker, o.ClientID, body[1], ErrRefused)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.nc.Write(b)
	c.written.Store(time.Now().UnixNano())
	return err
}

func (c *Conn) nextID() uint16 {
	for {
		if id := uint16(c.ids.Add(1)); id != 0 {
			return id
		}
	}
}

// Subscribe asks for filters at QoS 1; Serve checks the SUBACK.
func (c *Conn) Subscribe(filters ...string) error {
	return c.write(encodeSubscribe(c.nextID(), filters...))
}

// Publish sends payload to topic at QoS 1 without waiting for the PUBACK
// (Acks counts them).
func (c *Conn) Publish(topic string, payload []byte, retain bool) error {
	return c.write(encodePublish(topic, payload, 1, retain, c.nextID()))
}

// Ping sends a PINGREQ if nothing was written for half the keepalive.
func (c *Conn) Ping() error {
	if c.keep <= 0 || time.Since(time.Unix(0, c.written.Load())) < c.keep/2 {
		return nil
	}
	return c.write([]byte{pPingreq << 4, 0})
}

// Acks is the number of PUBACKs received.
func (c *Conn) Acks() uint64 { return c.acks.Load() }

// Disconnect sends DISCONNECT (the will is not published) and closes.
func (c *Conn) Disconnect() {
	_ = c.write([]byte{pDisconnect << 4, 0})
	_ = c.nc.Close()
}

// Close closes the connection without DISCONNECT: the broker publishes
// the will.
func (c *Conn) Close() error { return c.nc.Close() }

// Serve reads packets until the connection fails or is closed, handing
// every PUBLISH to h (on this goroutine) and acknowledging it after h
// returns. A read waits at most twice the keepalive (the pings keep the
// broker talking).
func (c *Conn) Serve(h func(topic string, payload []byte)) error {
	for {
		if c.keep > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(2*c.keep + 5*time.Second))
		}
		typ, flags, body, err := readPacket(c.r)
		if err != nil {
			return err
		}
		switch typ {
		case pPublish:
			t, qos, id, payload, err := parsePublish(flags, body)
			if err != nil {
				return err
			}
			h(t, payload)
			if qos == 1 {
				if err := c.write(encodeAck(pPuback, id)); err != nil {
					return err
				}
			}
		case pPuback:
			c.acks.Add(1)
		case pSuback:
			for _, code := range body[min(2, len(body)):] {
				if code == 0x80 {
					return fmt.Errorf("mqtt: subscription refused by the broker: %w", errdefs.ErrPermissionDenied)
				}
			}
		case pPingresp:
		default:
			return fmt.Errorf("mqtt: unexpected packet type %d: %w", typ, errdefs.ErrInvalidArgument)
		}
	}
}

// isClosed reports whether err is the end of a connection closed here.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
