package e2e

// Two `tender serve` on a three-member etcd cluster and one mosquitto,
// with simulated devices (test/fleetsim: they verify every signed
// document as the agent does and refuse an older or replayed generation).
// A rollout runs; the leader is killed with -9 mid-wave and the other
// takes over and finishes it; a leader SIGSTOPped is replaced and, once
// SIGCONT, follows; one etcd member down changes nothing; two applies of
// one app at once: each stored or refused with a conflict naming the
// winner; two members down, reads are served from the member still up (or
// each controller's last view) marked stale, the leader unknown, and writes
// refused naming etcd's quorum. Throughout, no device refuses a
// document (no generation older than or equal to one it has), and each
// wave of each rollout is started once.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tender-edge/tender/test/etcdtest"
	"github.com/tender-edge/tender/test/fleetsim"
	"github.com/tender-edge/tender/test/mqtttest"
	"github.com/tender-edge/tender/test/registry"
)

// haApp is an app whose rollout has a wave per device group and a soak
// long enough to kill a leader in the middle of it.
func haApp(reg, version string) string {
	return fmt.Sprintf(`name: demo
version: "%s"
containers:
  - name: main
    image: %s/tender/workload:1
    env: {V: "%s"}
placement: {selector: {fleet: ha}}
rollout: {waves: ["2", "6", "100%%"], maxUnavailable: "100%%", healthyFor: 3s}
`, version, reg, version)
}

type haStatus struct {
	Leader  string `json:"leader"`
	Members []struct {
		ID     string `json:"id"`
		Leader bool   `json:"leader"`
	} `json:"members"`
	Online int `json:"online"`
}

func (c *controller) status() (haStatus, bool) {
	var s haStatus
	r := c.cli("status", "-o", "json")
	if r.code != 0 {
		return s, false
	}
	err := json.Unmarshal([]byte(r.stdout), &s)
	return s, err == nil
}

func TestHA_TwoControllersOneLeader(t *testing.T) {
	const n = 12
	if !etcdtest.Installed() {
		t.Skip("etcd-server missing (apt-get install etcd-server)")
	}
	if _, err := os.Stat(mqtttest.MosquittoBin); err != nil {
		t.Skipf("%s missing: %v", mqtttest.MosquittoBin, err)
	}
	reg := registry.Start(t, registry.Options{})
	archive, err := os.ReadFile(testImage)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.Push(context.Background(), archive, reg.Addr+"/tender/workload:1", true); err != nil {
		t.Fatal(err)
	}
	etcd := etcdtest.Start(t, 3)
	storeURL := "etcd://" + strings.Join(etcd.Endpoints(), ",")

	// Controller a makes the fleet's keys and CA; b gets a copy of its
	// data directory (what an operator does), and logs in to the broker
	// under its own name.
	a := startController(t, reg.Addr, mosquitto, "--store", storeURL, "--id", "a", "--lease-ttl", "3s", "--token-cache-ttl", "5m", "--enroll-rate", "1000")
	bdir := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command("cp", "-a", a.dir, bdir).CombinedOutput(); err != nil {
		t.Fatalf("copy data: %v\n%s", err, out)
	}
	b := &controller{t: t, dir: bdir, api: "127.0.0.1:" + mqtttest.FreePort(t), regConf: a.regConf, mosq: a.mosq,
		args: []string{"--store", storeURL, "--id", "b", "--lease-ttl", "3s", "--token-cache-ttl", "5m", "--broker-identity", "tender-controller-2"}}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("controller b log:\n%s", b.log)
		}
	})
	b.start()
	ctrls := map[string]*controller{"a": a, "b": b}

	leader := func(c *controller) string {
		s, ok := c.status()
		if !ok {
			return ""
		}
		return s.Leader
	}
	waitFor(t, "a leader both controllers agree on", 30*time.Second, func() bool {
		la := leader(a)
		return la != "" && !strings.HasPrefix(la, "(") && la == leader(b)
	})
	s, _ := a.status()
	if len(s.Members) != 2 {
		t.Fatalf("members: %+v", s.Members)
	}

	var tok struct{ Token string }
	b.json(&tok, "token", "create", "--labels", "fleet=ha", "--ttl", "10m", "--uses", fmt.Sprint(n)) // through a follower or the leader
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ids := fleetsim.DeviceIDs("ha-", n)
	e, err := fleetsim.Enroll(ctx, fleetsim.EnrollConfig{Server: "https://" + a.api, Token: tok.Token, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := fleetsim.New(fleetsim.Config{Broker: a.mosq.CertAddr, IDs: ids, FleetKey: e.FleetKey, RootCAs: e.Pool(),
		Certificate: e.Certificate, ConnectRate: 1000, Heartbeat: -1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = sim.Run(sctx) })
	defer func() { stop(); wg.Wait() }()
	waitFor(t, "every device online at both controllers", time.Minute, func() bool {
		sa, ok1 := a.status()
		sb, ok2 := b.status()
		return ok1 && ok2 && sa.Online == n && sb.Online == n
	})
	refusedNone := func(when string) {
		t.Helper()
		if st := sim.Stats(); st.Refused != 0 {
			t.Fatalf("%s: devices refused %d documents (%v): an older or repeated generation", when, st.Refused, st.RefusedBy)
		}
	}
	apply := func(c *controller, v string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(p, []byte(haApp(reg.Addr, v)), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ok("apply", "-f", p)
	}
	succeeded := func(c *controller, v string) {
		t.Helper()
		waitFor(t, "the rollout of "+v+" to succeed", 2*time.Minute, func() bool {
			var r rolloutView
			res := c.cli("rollout", "status", "demo", "-o", "json")
			if res.code != 0 || json.Unmarshal([]byte(res.stdout), &r) != nil {
				return false
			}
			return r.Phase == "succeeded" && strings.HasPrefix(r.To, v+" ")
		})
		var got map[string]string
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if got = c.versions("demo"); len(got) == n {
				break
			}
		}
		if len(got) != n {
			t.Fatalf("%d devices report demo, want %d:\n%s", len(got), n, c.ok("devices"))
		} else {
			for id, ver := range got {
				if ver != v {
					t.Fatalf("%s runs demo %s, want %s", id, ver, v)
				}
			}
		}
	}

	apply(a, "1")
	succeeded(b, "1")
	refusedNone("first rollout")

	// Kill -9 the leader in the middle of wave 2.
	first := ctrls[leader(a)]
	other := a
	if first == a {
		other = b
	}
	apply(other, "2")
	waitFor(t, "wave 2 of version 2 under way", time.Minute, func() bool {
		r := other.rollout("demo")
		return strings.HasPrefix(r.To, "2 ") && len(r.Waves) == 3 && r.Waves[0].Healthy == r.Waves[0].Devices &&
			r.Waves[1].Updating+r.Waves[1].Updated+r.Waves[1].Healthy > 0 && r.Waves[2].Updating+r.Waves[2].Updated+r.Waves[2].Healthy == 0
	})
	killed := time.Now()
	_ = first.cmd.Process.Kill()
	_ = first.cmd.Wait()
	first.cmd = nil
	otherID := "a"
	if other == b {
		otherID = "b"
	}
	waitFor(t, "the other controller to lead", 20*time.Second, func() bool { return leader(other) == otherID })
	t.Logf("leader killed -9 mid-wave: %s leads %v later", otherID, time.Since(killed).Round(100*time.Millisecond))
	succeeded(other, "2")
	refusedNone("after the leader was killed mid-wave")
	waveStarts(t, other, "2")

	// The killed one comes back and follows.
	first.start()
	firstID := map[*controller]string{a: "a", b: "b"}[first]
	waitFor(t, "the restarted controller to follow", 30*time.Second, func() bool { return leader(first) == otherID })

	// SIGSTOP the leader: the other leads; SIGCONT: it follows.
	if err := other.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitFor(t, "the paused leader replaced", 20*time.Second, func() bool { return leader(first) == firstID })
	t.Logf("leader paused: %s leads %v later", firstID, time.Since(stopped).Round(100*time.Millisecond))
	apply(first, "3")
	waitFor(t, "wave 1 of version 3 under way", time.Minute, func() bool {
		r := first.rollout("demo")
		return strings.HasPrefix(r.To, "3 ") && len(r.Waves) > 0 && r.Waves[0].Updating+r.Waves[0].Updated+r.Waves[0].Healthy > 0
	})
	if err := other.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	succeeded(first, "3")
	waitFor(t, "the resumed controller to follow", 20*time.Second, func() bool { return leader(other) == firstID })
	refusedNone("after the leader was paused and resumed")
	waveStarts(t, first, "3")

	// One etcd member down: everything goes on.
	etcd.Members[0].Kill()
	apply(other, "4")
	succeeded(first, "4")
	refusedNone("with one etcd member down")

	// Concurrent apply of one app through both: each is stored as its
	// own revision or refused with a conflict; nothing is lost.
	var cw sync.WaitGroup
	res := make([]result, 2)
	for i, c := range []*controller{first, other} {
		p := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(p, []byte(haApp(reg.Addr, fmt.Sprint(5+i))), 0o600); err != nil {
			t.Fatal(err)
		}
		cw.Go(func() { res[i] = c.cli("apply", "-f", p) })
	}
	cw.Wait()
	var hist []struct {
		Version string `json:"version"`
	}
	first.json(&hist, "app", "history", "demo")
	for i, r := range res {
		v := fmt.Sprint(5 + i)
		stored := false
		for _, h := range hist {
			stored = stored || h.Version == v
		}
		switch {
		case r.code == 0 && !stored:
			t.Fatalf("apply of %s answered ok and is not in the history %+v", v, hist)
		case r.code != 0 && (stored || !strings.Contains(r.stderr, "app demo changed since you read it: revision ") || !strings.Contains(r.stderr, "; apply again")):
			t.Fatalf("apply of %s: %s; want a conflict naming the winner, and nothing stored", v, r)
		case r.code != 0 && r.code != 1:
			t.Fatalf("apply of %s: exit %d, want 1 for a conflict", v, r.code)
		}
		t.Logf("concurrent apply of %s: exit %d %s", v, r.code, strings.TrimSpace(r.stderr))
	}

	// The console behind a balancer: a session begun at one controller is
	// taken by the other, and a sign-out at the other ends it at both.
	br := newConsoleBrowser(t, filepath.Join(first.dir, "ca.crt"))
	br.signIn(first)
	if code := br.do(other, "GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("console session begun at one controller, at the other: %d", code)
	}
	if code := br.do(other, "POST", "/ui/logout", url.Values{"csrf": {br.csrf}}); code != http.StatusSeeOther {
		t.Fatalf("console sign-out at the other controller: %d", code)
	}
	for _, c := range []*controller{first, other} {
		if code := br.do(c, "GET", "/ui/", nil); code != http.StatusUnauthorized {
			t.Fatalf("console after sign-out, at %s: %d", c.api, code)
		}
	}
	br.signIn(other) // kept through the outage below
	if code := br.do(first, "GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("console session begun at the other controller, at the first: %d", code)
	}

	// Read once with the quorum: this is the view served without it.
	for _, c := range []*controller{first, other} {
		for _, args := range [][]string{{"devices"}, {"apps"}} {
			if r := c.cli(args...); r.code != 0 {
				t.Fatalf("tender %s: %s", args[0], r)
			}
		}
	}

	// Two of three members down: reads served from the last view, writes
	// refused, clearly.
	etcd.Members[1].Kill()
	for _, c := range []*controller{first, other} {
		r := c.cli("devices")
		if r.code != 0 || strings.Count(r.stdout, "\n") < n+1 {
			t.Fatalf("tender devices without a quorum: %s", r)
		}
		r = c.cli("apps")
		if r.code != 0 || !strings.Contains(r.stdout, "demo") {
			t.Fatalf("tender apps without a quorum: %s", r)
		}
	}
	p := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(p, []byte(haApp(reg.Addr, "9")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := first.cli("apply", "-f", p)
	if r.code != 125 || !strings.Contains(r.stderr, "the fleet store (etcd) has no quorum: ") ||
		!strings.Contains(r.stderr, "reads are served from this controller's last view") {
		t.Fatalf("apply without a quorum: %s; want exit 125 naming etcd and its quorum", r)
	}
	t.Logf("apply without a quorum: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	// Every read answers, from the etcd member still up (or this
	// controller's last view), and says it may be stale: one line on
	// stderr, the table on stdout as ever.
	const staleWarning = "tender: warning: this answer may be stale: the fleet store has no quorum; as of "
	for _, c := range []*controller{first, other} {
		for _, args := range [][]string{{"status"}, {"events"}, {"events", "--device", ids[0]}, {"audit"},
			{"rollout", "status", "demo"}, {"device", "show", ids[0]}, {"devices"}, {"apps"}} {
			start := time.Now()
			r := c.cli(args...)
			if r.code != 0 || strings.TrimSpace(r.stdout) == "" || !strings.HasPrefix(r.stderr, staleWarning) || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("tender %s without a quorum: %s; want an answer and one line on stderr starting %q", strings.Join(args, " "), r, staleWarning)
			}
			t.Logf("tender %s without a quorum: %v, %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
		}
		var st struct {
			haStatus
			Stale string `json:"stale"`
		}
		if r := c.cli("status", "-o", "json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil ||
			!strings.HasPrefix(st.Stale, "no quorum; as of revision ") || !strings.HasPrefix(st.Leader, "(unknown: ") || len(st.Members) != 2 {
			t.Fatalf("tender status -o json without a quorum: %s; want stale set, the leader unknown, both members", r)
		}
		for _, m := range st.Members {
			if m.Leader {
				t.Fatalf("without a quorum, status names %s leader: %+v", m.ID, st)
			}
		}
		var ro struct {
			Stale string `json:"stale"`
		}
		if r := c.cli("rollout", "status", "demo", "-o", "json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &ro) != nil || ro.Stale == "" {
			t.Fatalf("tender rollout status -o json without a quorum: %s; want stale set", r)
		}
	}
	// The console session confirmed just before is still taken (the
	// controllers' --token-cache-ttl is 5m here), and its pages say they
	// may be stale.
	for _, c := range []*controller{first, other} {
		for _, page := range []string{"/ui/", "/ui/events", "/ui/audit", "/ui/apps/demo", "/ui/devices/" + ids[0]} {
			if code := br.do(c, "GET", page, nil); code != http.StatusOK || !strings.Contains(br.body, "This page may be stale: the fleet store has no quorum; as of ") {
				t.Fatalf("console %s without a quorum, at %s: %d; want the page marked stale:\n%s", page, c.api, code, br.body)
			}
		}
	}
	if sim.Connected() != n {
		t.Fatalf("%d devices connected without a quorum, want %d", sim.Connected(), n)
	}
	refusedNone("at the end")
}

// waveStarts checks, in the audit log, that each wave of the rollout to
// version v's revision was started once.
func waveStarts(t *testing.T, c *controller, v string) {
	t.Helper()
	var entries []struct {
		Action string `json:"action"`
		Detail string `json:"detail"`
	}
	c.json(&entries, "audit")
	started := map[string]int{}
	// Wave events follow the "rollout start" of the rollout to v: count
	// those after the last start.
	for _, e := range entries {
		if e.Action == "rollout start" {
			started = map[string]int{}
		}
		if e.Action == "rollout wave-started" {
			w, _, _ := strings.Cut(e.Detail, ":")
			started[w]++
		}
	}
	for _, w := range []string{"wave 1", "wave 2", "wave 3"} {
		if started[w] != 1 {
			t.Fatalf("rollout to %s: %s started %d times (%v)", v, w, started[w], started)
		}
	}
}

// consoleBrowser is a browser of the web console of several controllers
// on one host, as behind one name: its cookie jar sends 127.0.0.1's
// cookies to every port.
type consoleBrowser struct {
	t    *testing.T
	c    *http.Client
	csrf string
	body string // of the last answer
}

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func newConsoleBrowser(t *testing.T, caFile string) *consoleBrowser {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	return &consoleBrowser{t: t, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request to controller c's console and returns the status.
func (b *consoleBrowser) do(c *controller, method, path string, form url.Values) int {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "https://"+c.api+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	b.body = string(out)
	if m := consoleCSRF.FindSubmatch(out); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode
}

// signIn signs in at c with its admin token.
func (b *consoleBrowser) signIn(c *controller) {
	b.t.Helper()
	tok, _ := os.ReadFile(filepath.Join(c.dir, "admin.token"))
	b.do(c, "GET", "/ui/login", nil)
	if code := b.do(c, "POST", "/ui/login", url.Values{"token": {strings.TrimSpace(string(tok))}, "csrf": {b.csrf}, "next": {"/ui/"}}); code != http.StatusSeeOther {
		b.t.Fatalf("console sign-in at %s: %d", c.api, code)
	}
	b.do(c, "GET", "/ui/", nil)
}
