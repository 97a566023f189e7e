package network

import (
	"bufio"
	"bytes"
	"net/netip"
	"sort"
	"strings"
)

// hostsFile is the /etc/hosts of a container: itself and its peers (every
// endpoint sharing a group with it), by name and aliases.
func hostsFile(self Endpoint, all []Endpoint) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString(self.IP.String() + "\t" + strings.Join(self.names(), " ") + "\n")
	peers := make([]Endpoint, 0, len(all))
	for _, e := range all {
		if e.ID != self.ID && shareGroup(self, e) {
			peers = append(peers, e)
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	for _, e := range peers {
		b.WriteString(e.IP.String() + "\t" + strings.Join(e.names(), " ") + "\n")
	}
	return b.Bytes()
}

func shareGroup(a, b Endpoint) bool {
	for _, g := range a.Groups {
		for _, h := range b.Groups {
			if g == h {
				return true
			}
		}
	}
	return false
}

// Fallback resolvers when the host has only loopback ones and no other
// source names a reachable one (Docker's defaults).
var fallbackDNS = []string{"8.8.8.8", "8.8.4.4"}

// resolvConf is the host's resolv.conf with loopback nameservers
// (127.0.0.53 of systemd-resolved, 127.0.0.1 of a local dnsmasq), which a
// container cannot reach, dropped; when none is left, the nameservers of
// upstream (systemd-resolved's own list of real servers) are used, and
// failing that fallbackDNS.
func resolvConf(host, upstream []byte) []byte {
	var out bytes.Buffer
	ns := 0
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(f[1])
			if err != nil || a.IsLoopback() || a.Is6() {
				continue
			}
			ns++
		}
		out.WriteString(line + "\n")
	}
	if ns > 0 {
		return out.Bytes()
	}
	var servers []string
	sc = bufio.NewScanner(bytes.NewReader(upstream))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() && a.Is4() {
				servers = append(servers, f[1])
			}
		}
	}
	if len(servers) == 0 {
		servers = fallbackDNS
	}
	for _, s := range servers {
		out.WriteString("nameserver " + s + "\n")
	}
	return out.Bytes()
}
