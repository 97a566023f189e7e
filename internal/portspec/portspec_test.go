package portspec

import (
	"net/netip"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePort(t *testing.T) {
	for in, want := range map[string]Port{
		"8080:80":                {HostPort: 8080, ContainerPort: 80, Proto: "tcp"},
		"5353:53/udp":            {HostPort: 5353, ContainerPort: 53, Proto: "udp"},
		"192.168.1.10:80:80/tcp": {HostIP: netip.MustParseAddr("192.168.1.10"), HostPort: 80, ContainerPort: 80, Proto: "tcp"},
	} {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ParsePort(got.String()); err != nil || again != got {
			t.Errorf("ParsePort(%q.String()) = %+v, %v", in, again, err)
		}
	}
	for _, in := range []string{"", "80", "0:80", "80:0", "65536:80", "80:80/sctp", "::1:80:80", "[::1]:80:80", "host:80:80", "1:2:3:4", "80:80/"} {
		if p, err := ParsePort(in); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParsePort(%q) = %+v, %v; want an invalid-argument error", in, p, err)
		}
	}
}

func TestOverlaps(t *testing.T) {
	all := Port{HostPort: 80, ContainerPort: 1, Proto: "tcp"}
	one := Port{HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 80, ContainerPort: 2, Proto: "tcp"}
	other := Port{HostIP: netip.MustParseAddr("10.0.0.2"), HostPort: 80, ContainerPort: 2, Proto: "tcp"}
	udp := Port{HostPort: 80, ContainerPort: 1, Proto: "udp"}
	for _, c := range []struct {
		a, b Port
		want bool
	}{{all, one, true}, {one, other, false}, {all, udp, false}, {one, one, true}} {
		if c.a.Overlaps(c.b) != c.want || c.b.Overlaps(c.a) != c.want {
			t.Errorf("%s overlaps %s: want %v", c.a, c.b, c.want)
		}
	}
	if _, err := ParsePorts([]string{"80:80", "10.0.0.1:80:81"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ParsePorts of two ports on host port 80: %v", err)
	}
}
