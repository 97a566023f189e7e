package network

import (
	"net/netip"
	"testing"
)

func TestResolvConf(t *testing.T) {
	for _, c := range []struct{ host, upstream, want string }{
		{"nameserver 192.168.1.1\nsearch lan\n", "", "nameserver 192.168.1.1\nsearch lan\n"},
		{"nameserver 127.0.0.53\noptions edns0\n", "nameserver 10.0.0.53\nnameserver ::1\n", "options edns0\nnameserver 10.0.0.53\n"},
		{"nameserver 127.0.0.1\nnameserver 192.168.1.1\n", "", "nameserver 192.168.1.1\n"},
		{"nameserver 127.0.0.1\n", "", "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{"", "", "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
	} {
		if got := string(resolvConf([]byte(c.host), []byte(c.upstream))); got != c.want {
			t.Errorf("resolvConf(%q, %q) = %q, want %q", c.host, c.upstream, got, c.want)
		}
	}
}

func TestHostsFile(t *testing.T) {
	ip := netip.MustParseAddr
	a := Endpoint{ID: "1", Name: "app.web.1", Aliases: []string{"web"}, Groups: []string{"app"}, IP: ip("10.88.0.2")}
	b := Endpoint{ID: "2", Name: "app.db.1", Aliases: []string{"db"}, Groups: []string{"app", "shared"}, IP: ip("10.88.0.3")}
	c := Endpoint{ID: "3", Name: "other.x.1", Groups: []string{"other"}, IP: ip("10.88.0.4")}
	d := Endpoint{ID: "4", Name: "third.y.1", Groups: []string{"shared"}, IP: ip("10.88.0.5")}
	all := []Endpoint{a, b, c, d}
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.2\tapp.web.1 web\n10.88.0.3\tapp.db.1 db\n"
	if got := string(hostsFile(a, all)); got != want {
		t.Errorf("hosts of a:\n%s\nwant:\n%s", got, want)
	}
	want = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.3\tapp.db.1 db\n10.88.0.2\tapp.web.1 web\n10.88.0.5\tthird.y.1\n"
	if got := string(hostsFile(b, all)); got != want {
		t.Errorf("hosts of b:\n%s\nwant:\n%s", got, want)
	}
}
