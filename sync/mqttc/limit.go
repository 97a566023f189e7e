package mqttc

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	"github.com/containerd/errdefs"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tender-edge/tender/sync/wire"
)

// DefaultMaxPacketSize is the largest MQTT packet a client accepts by
// default (its remaining length): the wire's largest message, plus room for
// the topic and the packet id.
const DefaultMaxPacketSize = wire.MaxMessageSize + 1<<10

// ErrPacketTooLarge is why a connection was cut: the broker began a packet
// larger than Config.MaxPacketSize. It wraps errdefs.ErrInvalidArgument.
var ErrPacketTooLarge = reason("mqtt packet over the size limit", errdefs.ErrInvalidArgument)

// PacketTooLargeError says how large a refused packet was (at least) and
// the limit. It matches ErrPacketTooLarge.
type PacketTooLargeError struct {
	Size  int // remaining length, or as much of it as was read
	Limit int
}

func (e *PacketTooLargeError) Error() string {
	return fmt.Sprintf("mqtt packet of at least %d bytes from the broker: over the limit of %d", e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrPacketTooLarge) true.
func (e *PacketTooLargeError) Unwrap() error { return ErrPacketTooLarge }

// dial opens the network connection for paho (its CustomOpenConnectionFn),
// plain TCP or TLS, and wraps it so that no packet over the limit is read.
func (c *Client) dial(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: c.cfg.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = d.Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts":
		conn, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
	default:
		return nil, fmt.Errorf("broker scheme %q: want tcp, ssl, tls or mqtts: %w", uri.Scheme, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: conn, scan: packetScanner{limit: c.cfg.MaxPacketSize}, refused: c.packetRefused}, nil
}

// limitConn passes the broker's bytes through to paho while following the
// MQTT framing. When a fixed header announces a packet over the limit, it
// closes the connection and returns an error before paho sees that header:
// paho would allocate the whole packet before anyone could check it.
type limitConn struct {
	net.Conn
	scan    packetScanner
	refused func(*PacketTooLargeError)
	err     error
}

func (c *limitConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if serr := c.scan.scan(p[:n]); serr != nil {
		c.err = serr
		_ = c.Conn.Close()
		if tl, ok := serr.(*PacketTooLargeError); ok && c.refused != nil {
			c.refused(tl)
		}
		return 0, serr
	}
	return n, err
}

// packetScanner follows MQTT fixed headers (a type byte, then the remaining
// length in 1-4 bytes of 7 bits, least significant first) through a byte
// stream, skipping the bodies. It holds no data, only counters.
type packetScanner struct {
	limit  int
	inLen  bool // reading the remaining length
	length int  // remaining length so far
	shift  uint
	body   int // body bytes still to pass
}

// scan consumes b and returns an error at the first header over the limit
// (as soon as the length read so far exceeds it) or a malformed length.
func (s *packetScanner) scan(b []byte) error {
	for len(b) > 0 {
		switch {
		case s.body > 0:
			k := min(s.body, len(b))
			s.body -= k
			b = b[k:]
		case !s.inLen: // the packet type byte
			s.inLen, s.length, s.shift = true, 0, 0
			b = b[1:]
		default:
			x := b[0]
			b = b[1:]
			s.length |= int(x&0x7f) << s.shift
			s.shift += 7
			if s.length > s.limit {
				return &PacketTooLargeError{Size: s.length, Limit: s.limit}
			}
			if x&0x80 == 0 {
				s.inLen, s.body = false, s.length
			} else if s.shift >= 28 {
				return fmt.Errorf("mqtt packet from the broker: remaining length longer than 4 bytes: %w", errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}
