package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// inNewNetNS runs fn on a thread of its own in a fresh network namespace
// and returns a descriptor of that namespace (valid until the test ends).
// The thread is never given back: it ends with its goroutine.
func inNewNetNS(t *testing.T, fn func() error) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("unshare: %w", err)}
			return
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil && fn != nil {
			err = fn()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// The rtnetlink layer against the kernel, in two fresh namespaces (a
// host and a container): what the bridge network asks of it, and what it
// reads back.
func TestRTNL(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ctrNS := inNewNetNS(t, nil)
	hostNS := inNewNetNS(t, nil)
	host, err := dialRTNL(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()

	if _, err := host.linkByName("tb0"); !errors.Is(err, errLinkNotFound) || !errdefs.IsNotFound(err) {
		t.Fatalf("missing link: %v, want errLinkNotFound (not found)", err)
	}
	if err := host.addBridge("tb0"); err != nil {
		t.Fatal(err)
	}
	if err := host.addBridge("tb0"); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second bridge: %v, want EEXIST", err)
	}
	br, err := host.linkByName("tb0")
	if err != nil || br.Kind != "bridge" || br.Index == 0 || br.MTU != 1500 {
		t.Fatalf("bridge: %+v %v", br, err)
	}
	if l, err := host.linkByIndex(br.Index); err != nil || l.Name != "tb0" {
		t.Fatalf("by index: %+v %v", l, err)
	}
	if lo, err := host.linkByName("lo"); err != nil || lo.Kind != "" {
		t.Fatalf("lo: %+v %v", lo, err)
	}
	gw := netip.MustParsePrefix("10.99.0.1/24")
	for range 2 { // replace: the second is no error
		if err := host.addAddr(br.Index, gw, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := host.setUp(br.Index); err != nil {
		t.Fatal(err)
	}
	out := ipIn(t, hostNS, "-4", "addr", "show", "dev", "tb0")
	if !strings.Contains(out, "inet 10.99.0.1/24 brd 10.99.0.255 scope global tb0") || !strings.Contains(out, "UP") {
		t.Fatalf("ip addr show tb0:\n%s", out)
	}
	routes, err := host.routes4()
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(routes, "10.99.0.0/24", br.Index) {
		t.Fatalf("routes %v: no 10.99.0.0/24 on tb0 (%d)", routes, br.Index)
	}
	if err := checkOverlap(host, netip.MustParsePrefix("10.99.0.0/16"), -1); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "10.99.0.0/24 dev tb0") {
		t.Fatalf("overlap: %v", err)
	}
	if err := checkOverlap(host, netip.MustParsePrefix("10.99.0.0/16"), br.Index); err != nil {
		t.Fatalf("overlap with the bridge's own route: %v", err)
	}

	if err := host.addVeth("tvtest", 1400, "eth0", ctrNS); err != nil {
		t.Fatal(err)
	}
	veth, err := host.linkByName("tvtest")
	if err != nil || veth.Kind != "veth" || veth.MTU != 1400 {
		t.Fatalf("veth: %+v %v", veth, err)
	}
	if err := host.setMaster(veth.Index, br.Index); err != nil {
		t.Fatal(err)
	}
	if err := host.setUp(veth.Index); err != nil {
		t.Fatal(err)
	}
	if out := ipIn(t, hostNS, "link", "show", "tvtest"); !strings.Contains(out, "master tb0") || !strings.Contains(out, "mtu 1400") {
		t.Fatalf("ip link show tvtest:\n%s", out)
	}
	links, err := host.links()
	if err != nil {
		t.Fatal(err)
	}
	if names := linkNames(links); names != "lo tb0 tvtest" {
		t.Fatalf("links: %s", names)
	}

	ctr, err := dialRTNL(ctrNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Close()
	eth, err := ctr.linkByName("eth0")
	if err != nil || eth.Kind != "veth" || eth.MTU != 1400 {
		t.Fatalf("container eth0: %+v %v", eth, err)
	}
	if err := ctr.addAddr(eth.Index, netip.MustParsePrefix("10.99.0.2/24"), false); err != nil {
		t.Fatal(err)
	}
	if err := ctr.addAddr(eth.Index, netip.MustParsePrefix("10.99.0.2/24"), false); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second address without replace: %v, want EEXIST", err)
	}
	if err := ctr.setUp(eth.Index); err != nil {
		t.Fatal(err)
	}
	if err := ctr.addDefaultRoute(eth.Index, gw.Addr()); err != nil {
		t.Fatal(err)
	}
	if out := ipIn(t, ctrNS, "-4", "route", "show"); !strings.Contains(out, "default via 10.99.0.1 dev eth0") {
		t.Fatalf("container routes:\n%s", out)
	}
	ctrRoutes, err := ctr.routes4()
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(ctrRoutes, "default", eth.Index) || !hasRoute(ctrRoutes, "10.99.0.0/24", eth.Index) {
		t.Fatalf("container routes: %v", ctrRoutes)
	}

	if err := host.deleteLink(veth.Index); err != nil {
		t.Fatal(err)
	}
	if _, err := host.linkByName("tvtest"); !errors.Is(err, errLinkNotFound) {
		t.Fatalf("deleted veth: %v", err)
	}
	if _, err := ctr.linkByName("eth0"); !errors.Is(err, errLinkNotFound) {
		t.Fatalf("the peer outlived its veth: %v", err)
	}
}

func hasRoute(rs []route, dst string, index int) bool {
	for _, r := range rs {
		d := "default"
		if r.Dst.IsValid() {
			d = r.Dst.String()
		}
		if d == dst && r.LinkIndex == index {
			return true
		}
	}
	return false
}

func linkNames(ls []link) string {
	var n []string
	for _, l := range ls {
		n = append(n, l.Name)
	}
	return strings.Join(n, " ")
}

// ipIn runs ip(8) in the network namespace nsFD refers to, as a second
// opinion on what the kernel holds.
func ipIn(t *testing.T, nsFD int, args ...string) string {
	t.Helper()
	ns := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), nsFD)
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "ip"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
