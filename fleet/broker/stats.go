package broker

import (
	"maps"
	"sync"
)

// Method is how an accepted client authenticated.
type Method string

// The authentication methods.
const (
	MethodCertificate Method = "certificate"
	MethodPassword    Method = "password"
)

// Reason is why a connection was refused.
type Reason string

// The reasons a connection is refused, as counted in Stats.Refused.
const (
	ReasonHandshake   Reason = "handshake"   // TLS handshake failed or timed out (not the certificate's fault)
	ReasonCertificate Reason = "certificate" // not issued by the fleet CA, expired, or not for client auth
	ReasonRevoked     Reason = "revoked"     // certificate revoked
	ReasonIdentity    Reason = "identity"    // certificate CN or username not a device id, or reserved
	ReasonAnonymous   Reason = "anonymous"   // neither certificate nor username
	ReasonPassword    Reason = "password"    // unknown device or wrong password
	ReasonUsername    Reason = "username"    // username differs from the certificate CN
	ReasonClientID    Reason = "client-id"   // empty client id, or not the identity
	ReasonWill        Reason = "will"        // Last Will outside the device's presence topic
	ReasonKeepAlive   Reason = "keepalive"   // keepalive 0 or over MaxKeepAlive
)

// Stats is a snapshot of the broker's counters, all monotonic since New
// except Connected.
type Stats struct {
	Accepted map[Method]uint64 // connects accepted, by method
	Refused  map[Reason]uint64 // connects refused, by reason

	DeniedPublish   uint64 // publishes (writes) refused by the ACL
	DeniedSubscribe uint64 // subscriptions and deliveries (reads) refused by the ACL

	RateLimited   uint64            // publishes dropped by the per-device rate limit
	RateLimitedBy map[string]uint64 // the same, by device (only devices with drops)
	Oversized     uint64            // connections cut for a packet over MaxPacketSize
	Disconnected  uint64            // connections cut by Disconnect

	Connected int64 // clients connected now (the inline client excluded)
}

// counters are the live counters behind Stats.
type counters struct {
	mu sync.Mutex
	s  Stats
}

func newCounters() *counters {
	return &counters{s: Stats{
		Accepted:      map[Method]uint64{},
		Refused:       map[Reason]uint64{},
		RateLimitedBy: map[string]uint64{},
	}}
}

func (c *counters) add(f func(s *Stats)) {
	c.mu.Lock()
	f(&c.s)
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.s
	s.Accepted = maps.Clone(c.s.Accepted)
	s.Refused = maps.Clone(c.s.Refused)
	s.RateLimitedBy = maps.Clone(c.s.RateLimitedBy)
	return s
}
