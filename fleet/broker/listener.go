package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// listener is a mochi listener on TCP, optionally TLS. Each connection
// gets timeout to finish its TLS handshake and send CONNECT (mochi sets
// the keepalive deadline once CONNECT is read); a failed handshake is
// counted and closed before mochi sees the connection.
type listener struct {
	id      string
	ln      net.Listener
	tls     *tls.Config // nil: plain TCP
	timeout time.Duration
	b       *Broker

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string       { return l.id }
func (l *listener) Address() string  { return l.ln.Addr().String() }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Init(*slog.Logger) error { return nil }

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			l.serveConn(conn, establish)
		}()
	}
}

func (l *listener) serveConn(conn net.Conn, establish listeners.EstablishFn) {
	_ = conn.SetDeadline(time.Now().Add(l.timeout))
	if l.tls != nil {
		tc := tls.Server(conn, l.tls)
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			var cr *certRefusal
			if !errors.As(err, &cr) { // a certificate refusal was counted by verifyConnection
				l.b.stats.add(func(s *Stats) { s.Refused[ReasonHandshake]++ })
				l.b.log.Debug().Str("listener", l.id).Str("remote", conn.RemoteAddr().String()).Err(err).Msg("mqtt tls handshake failed")
			}
			_ = tc.Close()
			return
		}
		conn = tc
	}
	if err := establish(l.id, conn); err != nil {
		l.b.log.Debug().Str("listener", l.id).Str("remote", conn.RemoteAddr().String()).Err(err).Msg("mqtt connection ended")
	}
}

// Close stops accepting, closes the listener's clients and waits for
// their connections to end.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	_ = l.ln.Close()
	closeClients(l.id)
	l.wg.Wait()
}

// certRefusal is a TLS handshake refused for the client's certificate.
type certRefusal struct{ r *refusal }

func (e *certRefusal) Error() string { return e.r.err.Error() }
func (e *certRefusal) Unwrap() error { return e.r.err }

// verifyConnection is the TLS listener's check of a client certificate
// (tls.Config.VerifyConnection): a client that presents one must be a
// device of the fleet CA, not revoked. A client without one goes on to
// password authentication. The CONNECT is checked again (OnConnectAuthenticate).
func (b *Broker) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if _, r := b.verifyCertificate(cs.PeerCertificates); r != nil {
		b.stats.add(func(s *Stats) { s.Refused[r.reason]++ })
		b.log.Info().Str("reason", string(r.reason)).Err(r.err).Msg("mqtt tls client refused")
		return &certRefusal{r: r}
	}
	return nil
}
