// Package portspec reads published ports, "[HOSTIP:]HOSTPORT:PORT[/PROTO]",
// for the app spec (sync/wire) and the runtime (runtime/network) alike. It
// is pure.
package portspec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Port is a published port: HostPort on HostIP (every local address when
// invalid) forwarded to ContainerPort.
type Port struct {
	HostIP        netip.Addr `json:"hostIP,omitzero"`
	HostPort      uint16     `json:"hostPort"`
	ContainerPort uint16     `json:"containerPort"`
	Proto         string     `json:"proto"` // tcp or udp
}

// String is the port in the form ParsePort reads.
func (p Port) String() string {
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Proto)
	if p.HostIP.IsValid() {
		s = p.HostIP.String() + ":" + s
	}
	return s
}

// Overlaps reports whether p and q claim the same host port: same protocol
// and port, and the same address or either on every address.
func (p Port) Overlaps(q Port) bool {
	return p.Proto == q.Proto && p.HostPort == q.HostPort &&
		(!p.HostIP.IsValid() || !q.HostIP.IsValid() || p.HostIP == q.HostIP)
}

// ParsePort reads "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]" (tcp by
// default; an IPv6 host address in brackets is refused: ports are
// published on IPv4 only).
func ParsePort(s string) (Port, error) {
	bad := func(why string) (Port, error) {
		return Port{}, fmt.Errorf("port %q: %s (want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]): %w", s, why, errdefs.ErrInvalidArgument)
	}
	spec, proto, hasProto := strings.Cut(s, "/")
	p := Port{Proto: "tcp"}
	if hasProto {
		switch proto {
		case "tcp", "udp":
			p.Proto = proto
		default:
			return bad("protocol " + strconv.Quote(proto) + " is not tcp or udp")
		}
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 2:
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return bad("host address " + strconv.Quote(parts[0]) + " is not an IPv4 address")
		}
		p.HostIP = ip
		parts = parts[1:]
	default:
		return bad("wrong number of fields")
	}
	hp, err := portNum(parts[0])
	if err != nil {
		return bad("host port: " + err.Error())
	}
	cp, err := portNum(parts[1])
	if err != nil {
		return bad("container port: " + err.Error())
	}
	p.HostPort, p.ContainerPort = hp, cp
	return p, nil
}

func portNum(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// ParsePorts reads each of ss with ParsePort and refuses two that claim
// the same host port.
func ParsePorts(ss []string) ([]Port, error) {
	var ps []Port
	for _, s := range ss {
		p, err := ParsePort(s)
		if err != nil {
			return nil, err
		}
		for _, q := range ps {
			if p.Overlaps(q) {
				return nil, fmt.Errorf("ports %s and %s publish the same host port: %w", q, p, errdefs.ErrInvalidArgument)
			}
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// FormatPorts is ports as ps shows them: "0.0.0.0:8080->80/tcp, ...".
func FormatPorts(ps []Port) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		ip := "0.0.0.0"
		if p.HostIP.IsValid() {
			ip = p.HostIP.String()
		}
		fmt.Fprintf(&b, "%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Proto)
	}
	return b.String()
}
