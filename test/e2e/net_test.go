package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// netWorld is a test's own network: a "host" namespace where the agent
// runs and makes its bridge, a "lan" namespace (a client on the host's
// LAN, 192.168.77.0/24) and a "wan" one (a server outside,
// 203.0.113.0/24), joined to the host by veth pairs. No packet leaves
// them; the machine's own interfaces and rules are compared before and
// after.
type netWorld struct {
	host, lan, wan string // namespace names (ip netns)
	root           string // the agent's --root, with the test image
}

const (
	hostLAN = "192.168.77.1"
	lanIP   = "192.168.77.2"
	hostWAN = "203.0.113.1"
	wanIP   = "203.0.113.2"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNetWorld(t *testing.T) *netWorld {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("the nft command is missing (Debian package nftables): %v", err)
	}
	before := hostNetState(t)
	b := make([]byte, 3)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	w := &netWorld{host: "tnh" + tag, lan: "tnl" + tag, wan: "tnw" + tag, root: filepath.Join(t.TempDir(), "root")}
	for _, n := range []string{w.host, w.lan, w.wan} {
		sh(t, "ip", "netns", "add", n)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
		sh(t, "ip", "-n", n, "link", "set", "lo", "up")
	}
	t.Cleanup(func() {
		// The namespaces go in the cleanups registered before this one;
		// the containers first (they hold the host namespace).
		if out, err := exec.Command(agentBin, "--root", w.root, "ps", "-a", "-q").Output(); err == nil {
			if ids := strings.Fields(string(out)); len(ids) > 0 {
				exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + w.host, agentBin, "--root", w.root, "rm", "-f"}, ids...)...).Run()
			}
		}
		if after := hostNetState(t); after != before {
			t.Errorf("the machine's own network changed:\nbefore: %s\nafter:  %s", before, after)
		}
	})
	// veth pairs, made in the host namespace and one end moved out.
	for _, p := range []struct{ ns, hostEnd, hostIP, peerIP string }{
		{w.lan, "hlan", hostLAN, lanIP}, {w.wan, "hwan", hostWAN, wanIP},
	} {
		sh(t, "ip", "-n", w.host, "link", "add", p.hostEnd, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		sh(t, "ip", "-n", w.host, "addr", "add", p.hostIP+"/24", "dev", p.hostEnd)
		sh(t, "ip", "-n", w.host, "link", "set", p.hostEnd, "up")
		sh(t, "ip", "-n", p.ns, "addr", "add", p.peerIP+"/24", "dev", "eth0")
		sh(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
	}
	// The LAN routes through the host (a gateway); the outside server
	// knows no route back to the containers: only NAT gets a reply home.
	sh(t, "ip", "-n", w.lan, "route", "add", "default", "via", hostLAN)
	w.agent(t, "load", testImage)
	return w
}

// hostNetState is the machine's own links, addresses and nftables rule
// set, in a form that ignores counters and link state.
func hostNetState(t *testing.T) string {
	t.Helper()
	var links []struct {
		Name string `json:"ifname"`
		Kind string `json:"link_type"`
	}
	var addrs []struct {
		Name  string `json:"ifname"`
		Addrs []struct {
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(sh(t, "ip", "-j", "link")), &links); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(sh(t, "ip", "-j", "addr")), &addrs); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, l := range links {
		parts = append(parts, "link "+l.Name+" "+l.Kind)
	}
	for _, a := range addrs {
		for _, i := range a.Addrs {
			parts = append(parts, fmt.Sprintf("addr %s %s/%d", a.Name, i.Local, i.Prefix))
		}
	}
	var rs struct {
		Nft []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(sh(t, "nft", "-j", "list", "ruleset")), &rs); err != nil {
		t.Fatal(err)
	}
	for _, o := range rs.Nft {
		for k, v := range o {
			if k != "metainfo" {
				parts = append(parts, "nft "+k+" "+string(v))
			}
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

// agent runs tender-agent with the world's root in the host namespace.
func (w *netWorld) agent(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// nsenter, not ip netns exec: that one mounts a new /sys, hiding the
	// cgroup file system.
	argv := append([]string{"--net=/var/run/netns/" + w.host, agentBin, "--root", w.root}, args...)
	r, err := runCmd(exec.CommandContext(ctx, "nsenter", argv...))
	if err != nil {
		t.Fatalf("tender-agent %s: %v", strings.Join(args, " "), err)
	}
	return r
}

func (w *netWorld) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := w.agent(t, args...)
	if r.code != 0 {
		t.Fatalf("tender-agent %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// in runs f on a thread in namespace ns: sockets f makes stay there.
func in(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // never leave a thread of the test process elsewhere
		}
	}()
	f()
}

// get fetches url over a connection made in namespace ns.
func get(t *testing.T, ns, url string) (string, error) {
	t.Helper()
	var conn net.Conn
	var err error
	addr := strings.TrimPrefix(url, "http://")
	addr, _, _ = strings.Cut(addr, "/")
	in(t, ns, func() { conn, err = net.DialTimeout("tcp", addr, 3*time.Second) })
	if err != nil {
		return "", err
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// serveIn serves HTTP in namespace ns at addr, answering with the
// client's address.
func serveIn(t *testing.T, ns, addr string) {
	t.Helper()
	var l net.Listener
	var err error
	in(t, ns, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "outside sees %s\n", host)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func (w *netWorld) ip(t *testing.T, name string) string {
	t.Helper()
	var cs []struct {
		State struct {
			IP string `json:"ip"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(w.ok(t, "inspect", name)), &cs); err != nil || len(cs) != 1 || cs[0].State.IP == "" {
		t.Fatalf("inspect %s: no address (%v)", name, err)
	}
	return cs[0].State.IP
}

// counts are what the bridge network holds in the host namespace: veths,
// leases, and rules in Tender's tables.
func (w *netWorld) counts(t *testing.T) string {
	t.Helper()
	veths := strings.Count(sh(t, "ip", "-n", w.host, "-o", "link", "show", "type", "veth"), ": tv")
	leases, _ := os.ReadDir(filepath.Join(w.root, "network", "leases"))
	rules := 0
	for _, fam := range []string{"ip", "bridge"} {
		out, _ := exec.Command("ip", "netns", "exec", w.host, "nft", "-a", "list", "table", fam, "tender").CombinedOutput()
		rules += strings.Count(string(out), "# handle") - strings.Count(string(out), "chain ") - strings.Count(string(out), "table ")
	}
	addrs := strings.Count(sh(t, "ip", "-n", w.host, "-o", "-4", "addr"), "inet ")
	return fmt.Sprintf("veths=%d leases=%d rules=%d addrs=%d", veths, len(leases), rules, addrs)
}

func TestNetBridge(t *testing.T) {
	w := newNetWorld(t)
	serveIn(t, w.wan, wanIP+":9000")
	run := func(args ...string) string {
		return w.ok(t, append([]string{"run", "-d", "--net", "bridge"}, args...)...)
	}
	run("--name", "a1", "--network-group", "appA", "-p", "8080:80", image, "serve", "0.0.0.0:80")
	run("--name", "a2", "--network-group", "appA", image, "serve", "0.0.0.0:80")
	run("--name", "b1", "--network-group", "appB", image, "serve", "0.0.0.0:80")
	aIP, bIP := w.ip(t, "a1"), w.ip(t, "b1")
	once := func(group string, args ...string) result {
		return w.agent(t, append([]string{"run", "--rm", "--net", "bridge", "--network-group", group, image}, args...)...)
	}
	waitFor(t, "a1 to serve", 10*time.Second, func() bool {
		_, err := get(t, w.host, "http://"+aIP+":80/")
		return err == nil
	})

	t.Run("by name within an app", func(t *testing.T) {
		if r := once("appA", "get", "http://a1/"); r.code != 0 || r.stdout != "hello from a1\n" {
			t.Fatalf("a container of appA asking for a1: %s", r)
		}
		if r := once("appA", "get", "http://a2/"); r.code != 0 || r.stdout != "hello from a2\n" {
			t.Fatalf("a container of appA asking for a2: %s", r)
		}
	})
	t.Run("published port from the host and the LAN", func(t *testing.T) {
		for _, c := range []struct{ ns, url string }{
			{w.host, "http://127.0.0.1:8080/"},
			{w.host, "http://" + hostLAN + ":8080/"},
			{w.lan, "http://" + hostLAN + ":8080/"},
		} {
			body, err := get(t, c.ns, c.url)
			if err != nil || body != "hello from a1\n" {
				t.Errorf("GET %s from %s: %q, %v", c.url, c.ns, body, err)
			}
		}
		// The LAN routes through the host, yet reaches no container
		// address directly: only published ports.
		if body, err := get(t, w.lan, "http://"+bIP+":80/"); err == nil {
			t.Errorf("the LAN reached b1 at %s without a published port: %q", bIP, body)
		}
	})
	t.Run("outbound NAT", func(t *testing.T) {
		r := once("appA", "get", "http://"+wanIP+":9000/")
		if r.code != 0 || r.stdout != "outside sees "+hostWAN+"\n" {
			t.Fatalf("a container asking a server outside: %s", r)
		}
	})
	t.Run("apps are isolated", func(t *testing.T) {
		if r := once("appA", "get", "http://"+bIP+":80/"); r.code == 0 {
			t.Errorf("appA reached b1 at %s: %s", bIP, r)
		}
		if r := once("appA", "get", "http://b1/"); r.code == 0 {
			t.Errorf("appA resolved and reached b1 by name: %s", r)
		}
		if r := once("appB", "get", "http://"+aIP+":80/"); r.code == 0 {
			t.Errorf("appB reached a1 at %s: %s", aIP, r)
		}
		// A published port is reachable from another app, through the
		// host (hairpin).
		if r := once("appB", "get", "http://10.88.0.1:8080/"); r.code != 0 || r.stdout != "hello from a1\n" {
			t.Errorf("appB asking a1's published port: %s", r)
		}
	})
	t.Run("hosts files follow peers", func(t *testing.T) {
		w.ok(t, "rm", "-f", "a1")
		run("--name", "a3", "--network-group", "appA", image, "sleep", "3600") // takes a1's old address
		run("--name", "a1", "--network-group", "appA", "-p", "8080:80", image, "serve", "0.0.0.0:80")
		newIP := w.ip(t, "a1")
		if newIP == aIP {
			t.Fatalf("a1 kept %s; the test wants a new address", aIP)
		}
		waitFor(t, "a1 to serve again", 10*time.Second, func() bool {
			r := once("appA", "get", "http://a1/")
			return r.code == 0 && r.stdout == "hello from a1\n"
		})
		// a2 was running all along: its /etc/hosts (bound from the
		// container's directory) was rewritten in place.
		r := w.agent(t, "exec", "a2", "/workload", "cat", "/etc/hosts")
		if r.code != 0 || !strings.Contains(r.stdout, newIP+"\ta1\n") || strings.Contains(r.stdout, aIP+"\ta1\n") {
			t.Fatalf("a2's /etc/hosts after a1 restarted at %s: %s", newIP, r)
		}
	})
	t.Run("errors", func(t *testing.T) {
		r := w.agent(t, "run", "-d", "--net", "bridge", "--name", "c1", "-p", "8080:81", image, "sleep", "60")
		if r.code == 0 || !strings.Contains(r.stderr, "already published by container a1") {
			t.Errorf("a second container on host port 8080: %s", r)
		}
		for _, p := range []string{"80", "0:80", "8080:99999", "8080:80/sctp", "::1:80:80", "x:80:80"} {
			r := w.agent(t, "run", "--rm", "--net", "bridge", "-p", p, image, "exit", "0")
			if r.code == 0 || !strings.Contains(r.stderr, "port "+`"`+p+`"`) {
				t.Errorf("-p %s: %s", p, r)
			}
		}
		if r := w.agent(t, "run", "--rm", "-p", "8081:80", image, "exit", "0"); r.code == 0 || !strings.Contains(r.stderr, "--net bridge") {
			t.Errorf("-p without --net bridge: %s", r)
		}
	})
	w.ok(t, "rm", "-f", "a1", "a2", "a3", "b1", "c1")
	if got := w.counts(t); got != "veths=0 leases=0 rules=11 addrs=4" {
		t.Errorf("after removing every container: %s", got)
	}
}

// TestNetBridgeCycles starts and stops bridged containers with a
// published port 200 times: nothing may be left behind.
func TestNetBridgeCycles(t *testing.T) {
	w := newNetWorld(t)
	// A long-lived peer, so the tables and its group stay in use.
	w.ok(t, "run", "-d", "--net", "bridge", "--name", "peer", image, "sleep", "3600")
	before := w.counts(t)
	n := 200
	if testing.Short() {
		n = 20
	}
	for i := 0; i < n; i++ {
		r := w.agent(t, "run", "--rm", "--net", "bridge", "-p", "8090:80", "-p", "8090:53/udp", image, "exit", "0")
		if r.code != 0 {
			t.Fatalf("cycle %d: %s", i, r)
		}
	}
	if after := w.counts(t); after != before {
		t.Errorf("after %d cycles: %s, before: %s", n, after, before)
	}
	t.Logf("after %d cycles: %s", n, before)
	w.ok(t, "rm", "-f", "peer")
}

// TestNetBridgeDaemonCrash runs an app of 5 bridged containers under the
// daemon (in the world's host namespace), kills the daemon with SIGKILL
// and starts it again: the containers kept running, their ports still
// answer, and nothing is duplicated or given twice.
func TestNetBridgeDaemonCrash(t *testing.T) {
	w := newNetWorld(t)
	dir := t.TempDir()
	socket, config := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(config, []byte(fastPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	cli := func(args ...string) result {
		return w.agent(t, append([]string{"--socket", socket}, args...)...)
	}
	start := func() {
		cmd = exec.Command("nsenter", "--net=/var/run/netns/"+w.host, agentBin, "--root", w.root, "--socket", socket, "daemon", "--config", config)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the daemon's socket", 20*time.Second, func() bool { return cli("apps").code == 0 })
	}
	kill := func() {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
			cmd = nil
		}
	}
	t.Cleanup(kill)
	start()
	apply := func(spec string) result {
		p := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
		return cli("apply", "-f", p)
	}
	var spec strings.Builder
	spec.WriteString("name: shop\nversion: \"1\"\ncontainers:\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&spec, "  - {name: c%d, image: %s, network: bridge, ports: [\"%d:80\"], args: [serve, \"0.0.0.0:80\"]}\n", i, image, 8080+i)
	}
	if r := apply(spec.String()); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	answers := func() bool {
		for i := 1; i <= 5; i++ {
			body, err := get(t, w.lan, fmt.Sprintf("http://%s:%d/", hostLAN, 8080+i))
			if err != nil || !strings.HasPrefix(body, "hello from ") {
				return false
			}
		}
		return true
	}
	waitFor(t, "5 published ports to answer", 60*time.Second, answers)
	// Peers by their names in the spec.
	var c1 string
	for _, f := range strings.Fields(w.ok(t, "ps")) {
		if strings.HasPrefix(f, "shop.c1.") {
			c1 = f
		}
	}
	if r := w.agent(t, "exec", c1, "/workload", "get", "http://c3/"); r.code != 0 || !strings.HasPrefix(r.stdout, "hello from ") {
		t.Errorf("c3 by its name in the spec, from c1 (%q): %s", c1, r)
	}
	ips := func() string {
		leases, _ := filepath.Glob(filepath.Join(w.root, "network", "leases", "*.json"))
		var all []string
		seen := map[string]bool{}
		for _, l := range leases {
			var ep struct{ IP string }
			b, _ := os.ReadFile(l)
			json.Unmarshal(b, &ep)
			if seen[ep.IP] {
				t.Errorf("address %s leased twice", ep.IP)
			}
			seen[ep.IP] = true
			all = append(all, ep.IP)
		}
		sort.Strings(all)
		return strings.Join(all, " ")
	}
	before, beforeIPs := w.counts(t), ips()
	kill()
	start()
	if !answers() {
		t.Errorf("the published ports stopped answering after the daemon's restart")
	}
	if after, afterIPs := w.counts(t), ips(); after != before || afterIPs != beforeIPs {
		t.Errorf("after the restart: %s [%s]; before: %s [%s]", after, afterIPs, before, beforeIPs)
	}
	t.Logf("5 containers: %s [%s]", before, beforeIPs)

	t.Run("admission", func(t *testing.T) {
		r := apply("name: other\nversion: \"1\"\ncontainers: [{name: x, image: " + image + ", network: bridge, ports: [\"8083:80\"]}]\n")
		if r.code == 0 || !strings.Contains(r.stderr, "already published by app shop (container c3") {
			t.Errorf("a second app on host port 8083: %s", r)
		}
		r = apply("name: low\nversion: \"1\"\ncontainers: [{name: x, image: " + image + ", network: bridge, ports: [\"80:80\"]}]\n")
		if r.code == 0 || !strings.Contains(r.stderr, "privileged ports (below 1024) are not allowed") {
			t.Errorf("host port 80 under the default policy: %s", r)
		}
		r = apply("name: bad\nversion: \"1\"\ncontainers: [{name: x, image: " + image + ", network: bridge, ports: [\"8090\"]}]\n")
		if r.code == 0 || !strings.Contains(r.stderr, `port "8090": wrong number of fields`) {
			t.Errorf("an invalid port: %s", r)
		}
	})
	// The app goes, and with it everything it held.
	if r := cli("app", "rm", "shop"); r.code != 0 {
		t.Fatalf("app rm: %s", r)
	}
	waitFor(t, "the app's containers to go", 30*time.Second, func() bool {
		return strings.TrimSpace(w.ok(t, "ps", "-a", "-q")) == ""
	})
	if got := w.counts(t); !strings.HasPrefix(got, "veths=0 leases=0 ") {
		t.Errorf("after the app went: %s", got)
	}
}

// TestNetBridgeOverlap refuses a bridge subnet that overlaps a route of
// the host.
func TestNetBridgeOverlap(t *testing.T) {
	w := newNetWorld(t)
	if err := os.MkdirAll(filepath.Join(w.root, "network"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.root, "network", "config.json"), []byte(`{"bridge":"tender0","subnet":"192.168.0.0/16"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := w.agent(t, "run", "--rm", "--net", "bridge", image, "exit", "0")
	if r.code == 0 || !strings.Contains(r.stderr, "bridge subnet 192.168.0.0/16 overlaps the host's route 192.168.77.0/24 dev hlan") {
		t.Errorf("a subnet over the LAN's: %s", r)
	}
}
