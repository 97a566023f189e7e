package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tender-edge/tender/sync/topic"
)

// ReservedID is the identity no device may have: the controller's user
// on an external broker (configs/mosquitto/acl).
const ReservedID = "controller"

// Which of a device's own topics it may publish and subscribe to.
var (
	devicePublishes  = map[topic.Kind]bool{topic.Reported: true, topic.Events: true, topic.Presence: true, topic.CommandResult: true}
	deviceSubscribes = map[topic.Kind]bool{topic.Desired: true, topic.Command: true}
)

// hook is the mochi hook holding Tender's rules: authentication, ACL,
// rate limit, and the counters.
type hook struct {
	mqtt.HookBase
	b *Broker

	mu     sync.Mutex
	epochs map[string]uint64         // device → Disconnect calls so far (only devices ever disconnected)
	authAt map[*mqtt.Client]authInfo // connects between authentication and session established
	live   map[*mqtt.Client]struct{} // accepted clients not yet disconnected
}

// authInfo is what a client was accepted as.
type authInfo struct {
	method Method
	epoch  uint64
}

func newHook(b *Broker) *hook {
	return &hook{b: b, epochs: map[string]uint64{}, authAt: map[*mqtt.Client]authInfo{}, live: map[*mqtt.Client]struct{}{}}
}

func (h *hook) ID() string { return "tender" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished,
		mqtt.OnPublish, mqtt.OnWill, mqtt.OnDisconnect,
	}, []byte{b})
}

// refusal is why a connection was refused: the counted reason and the
// detail that is logged.
type refusal struct {
	reason Reason
	err    error
}

func refuse(r Reason, format string, args ...any) *refusal {
	return &refusal{reason: r, err: fmt.Errorf(format+": %w", append(args, errdefs.ErrPermissionDenied)...)}
}

// verifyCertificate checks a client's certificate chain (as presented: the
// leaf first) against the fleet CA and the revocation list, and returns
// the device id it names.
func (b *Broker) verifyCertificate(chain []*x509.Certificate) (string, *refusal) {
	leaf := chain[0]
	if b.cfg.ClientCAs == nil {
		return "", refuse(ReasonCertificate, "client certificate %q: no fleet CA configured", leaf.Subject.CommonName)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: b.cfg.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", refuse(ReasonCertificate, "client certificate %q (serial %s): %v", leaf.Subject.CommonName, leaf.SerialNumber, err)
	}
	if b.cfg.Revoked != nil && b.cfg.Revoked(leaf.SerialNumber) {
		return "", refuse(ReasonRevoked, "client certificate %q (serial %s) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
	}
	id := leaf.Subject.CommonName
	if r := checkIdentity(id); r != nil {
		return "", r
	}
	return id, nil
}

func checkIdentity(id string) *refusal {
	if err := topic.ValidDeviceID(id); err != nil {
		return refuse(ReasonIdentity, "identity %q is no device id (%v)", id, err)
	}
	if id == ReservedID {
		return refuse(ReasonIdentity, "identity %q is reserved", id)
	}
	return nil
}

// authenticate decides on a CONNECT; it returns the identity and method,
// or why it is refused.
func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet) (string, Method, *refusal) {
	c := pk.Connect
	var chain []*x509.Certificate
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		chain = tc.ConnectionState().PeerCertificates
	}
	var id string
	var method Method
	switch {
	case len(chain) > 0:
		var r *refusal
		if id, r = h.b.verifyCertificate(chain); r != nil {
			return "", "", r
		}
		if c.UsernameFlag && string(c.Username) != id {
			return "", "", refuse(ReasonUsername, "username %q with the certificate of %q", c.Username, id)
		}
		method = MethodCertificate
	case c.UsernameFlag && len(c.Username) > 0:
		id = string(c.Username)
		if r := checkIdentity(id); r != nil {
			return "", "", r
		}
		if h.b.cfg.Passwords == nil || !h.b.cfg.Passwords.Check(id, string(c.Password)) {
			return "", "", refuse(ReasonPassword, "device %q: unknown or wrong password", id)
		}
		method = MethodPassword
	default:
		return "", "", refuse(ReasonAnonymous, "no client certificate and no username")
	}
	if c.ClientIdentifier != id {
		return "", "", refuse(ReasonClientID, "client id %q for device %q: the client id must be the device id", c.ClientIdentifier, id)
	}
	if ka := c.Keepalive; ka == 0 || int64(ka) > int64(h.b.cfg.MaxKeepAlive.Seconds()) {
		return "", "", refuse(ReasonKeepAlive, "device %q: keepalive %ds, want 1 to %.0fs", id, ka, h.b.cfg.MaxKeepAlive.Seconds())
	}
	if c.WillFlag {
		if want := topic.MustBuild(id, topic.Presence); c.WillTopic != want {
			return "", "", refuse(ReasonWill, "device %q: last will on %q, only %q is allowed", id, c.WillTopic, want)
		}
	}
	return id, method, nil
}

// OnConnectAuthenticate accepts or refuses a CONNECT (see the package doc).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	id, method, r := h.authenticate(cl, pk)
	if r != nil {
		h.b.stats.add(func(s *Stats) { s.Refused[r.reason]++ })
		h.b.log.Info().Str("reason", string(r.reason)).Str("remote", cl.Net.Remote).Err(r.err).Msg("mqtt connect refused")
		return false
	}
	h.mu.Lock()
	if len(h.authAt) >= 1024 { // connects that ended between CONNECT and CONNACK (mochi calls no hook then)
		for c := range h.authAt {
			if c.Closed() {
				delete(h.authAt, c)
			}
		}
	}
	h.authAt[cl] = authInfo{method: method, epoch: h.epochs[id]}
	h.mu.Unlock()
	return true
}

// OnSessionEstablished cuts a client that Disconnect was called for after
// it authenticated but before it was registered (Disconnect could not see
// it then); otherwise it counts the client as accepted.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	a, ok := h.authAt[cl]
	delete(h.authAt, cl)
	stale := ok && h.epochs[cl.ID] != a.epoch
	if ok && !stale {
		h.live[cl] = struct{}{}
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	if stale {
		h.b.stats.add(func(s *Stats) { s.Disconnected++ })
		h.b.log.Info().Str("device", cl.ID).Msg("mqtt client cut: disconnected while connecting")
		cl.Stop(errDisconnected)
		return
	}
	h.b.stats.add(func(s *Stats) { s.Accepted[a.method]++; s.Connected++ })
	h.b.log.Debug().Str("device", cl.ID).Str("method", string(a.method)).Str("remote", cl.Net.Remote).Msg("mqtt client connected")
}

var errDisconnected = fmt.Errorf("disconnected by the controller: %w", errdefs.ErrPermissionDenied)

// OnDisconnect counts the end of an accepted client and a connection cut
// for an oversized packet.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	_, live := h.live[cl]
	delete(h.live, cl)
	delete(h.authAt, cl)
	h.mu.Unlock()
	h.b.stats.add(func(s *Stats) {
		if live {
			s.Connected--
		}
		if errors.Is(err, packets.ErrPacketTooLarge) {
			s.Oversized++
		}
	})
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.b.log.Warn().Str("device", cl.ID).Int("limit", h.b.cfg.MaxPacketSize).Msg("mqtt client cut: packet over the size limit")
	}
}

// OnACLCheck allows the inline client everything and a device only its
// own topics (see the package doc). topic is a publish's topic (write) or
// a subscription's filter or a delivery's topic (read).
func (h *hook) OnACLCheck(cl *mqtt.Client, t string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if allowed(cl.ID, t, write) {
		return true
	}
	h.b.stats.add(func(s *Stats) {
		if write {
			s.DeniedPublish++
		} else {
			s.DeniedSubscribe++
		}
	})
	h.b.log.Info().Str("device", cl.ID).Str("topic", t).Bool("write", write).Msg("mqtt acl denied")
	return false
}

// allowed is the device ACL: id may write its reports and read its
// desired state and commands, by exact topic (no wildcards).
func allowed(id, t string, write bool) bool {
	if checkIdentity(id) != nil {
		return false
	}
	tid, kind, err := topic.Parse(t) // refuses wildcards, $SYS and anything not a device topic
	if err != nil || tid != id {
		return false
	}
	if write {
		return devicePublishes[kind]
	}
	return deviceSubscribes[kind]
}

// OnPublish applies the per-device rate limit: a publish over it is
// acknowledged and dropped (CodeSuccessIgnore).
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if h.b.limit.allow(cl.ID) {
		if pk.FixedHeader.Retain && h.b.consumed(pk.TopicName) {
			pk.FixedHeader.Retain = false
		}
		return pk, nil
	}
	first := false
	h.b.stats.add(func(s *Stats) {
		s.RateLimited++
		s.RateLimitedBy[cl.ID]++
		first = s.RateLimitedBy[cl.ID] == 1
	})
	if first {
		h.b.log.Warn().Str("device", cl.ID).Float64("rate", h.b.cfg.Rate).Int("burst", h.b.cfg.Burst).Msg("mqtt device over its publish rate: dropping")
	}
	return pk, packets.CodeSuccessIgnore
}

// OnWill keeps a device's Last Will (its presence, offline) from being
// retained once the controller consumes it, as OnPublish does.
func (h *hook) OnWill(cl *mqtt.Client, w mqtt.Will) (mqtt.Will, error) {
	if w.Retain && h.b.consumed(w.TopicName) {
		w.Retain = false
	}
	return w, nil
}

// disconnect records a Disconnect of id for clients still connecting.
func (h *hook) disconnect(id string) {
	h.mu.Lock()
	h.epochs[id]++
	h.mu.Unlock()
}
