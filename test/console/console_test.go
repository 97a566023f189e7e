package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/fleetsim"
)

// What a hostile device says about itself: markup and terminal escapes
// in an app version, a message, a container image, its kernel and a log
// line. The console must show all of it as text.
const (
	evilVersion = "<script>alert(1)</script>\x1b[31mred"
	evilMessage = "\x1b]0;pwned\x07<b>bold</b>"
	evilKernel  = "<script>alert(3)</script>"
	evilLog     = "line one\n<script>alert(2)</script>\n\x1b[2Jcleared\n"
	evilLabel   = "<script>alert(4)</script>"
)

// sims are simulated devices by group, each group its own fleetsim run.
type sims struct {
	t     *testing.T
	e     *fleetsim.Enrollment
	mu    sync.Mutex
	stops map[string]func()
}

// enroll enrolls n devices named prefix+NNNNN with a join token carrying
// labels, and starts them; heartbeat is their report interval.
func (s *sims) start(f *fleet, prefix string, n int, labels string, heartbeat time.Duration, report func(i int, r *wire.Reported)) []string {
	t := s.t
	t.Helper()
	var tok struct{ Token string }
	f.json(&tok, "token", "create", "--labels", labels, "--ttl", "10m", "--uses", fmt.Sprint(n))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ids := fleetsim.DeviceIDs(prefix, n)
	e, err := fleetsim.Enroll(ctx, fleetsim.EnrollConfig{Server: "https://" + f.api, Token: tok.Token, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := fleetsim.New(fleetsim.Config{Broker: e.Brokers[0], IDs: ids, FleetKey: e.FleetKey, RootCAs: e.Pool(),
		Certificate: e.Certificate, ConnectRate: 2000, Heartbeat: heartbeat, ApplyDelay: 100 * time.Millisecond,
		ApplyJitter: 300 * time.Millisecond, Report: report, Logf: t.Logf,
		CommandOutput: func(id string, cmd wire.Command) string {
			if strings.HasPrefix(id, "evil") {
				return evilLog
			}
			return fmt.Sprintf("%s: %s/%s: hello\n", id, cmd.App, cmd.Container)
		}})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sim.Run(sctx) })
	s.mu.Lock()
	s.stops[prefix] = func() { stop(); wg.Wait() }
	s.mu.Unlock()
	t.Cleanup(func() { stop(); wg.Wait() })
	return ids
}

func (s *sims) stop(prefix string) {
	s.mu.Lock()
	stop := s.stops[prefix]
	s.mu.Unlock()
	stop()
}

// usage gives simulated containers memory and a CPU time that grows with
// the clock, so the overview's bars have something to show.
func usage(t0 time.Time) func(i int, r *wire.Reported) {
	return func(i int, r *wire.Reported) {
		for a := range r.Apps {
			for c := range r.Apps[a].Containers {
				ct := &r.Apps[a].Containers[c]
				ct.MemoryBytes = uint64(96+37*(i%17)) << 20
				ct.CPUNanos = uint64(float64(time.Since(t0).Nanoseconds()) * (0.2 + 0.45*float64(i%7)))
			}
		}
	}
}

func evil(i int, r *wire.Reported) {
	r.Device.Kernel = evilKernel
	r.Apps = append(r.Apps, wire.AppStatus{Name: "probe", Version: evilVersion, State: "running", Message: evilMessage,
		Containers: []wire.ContainerStatus{{Name: "main", Image: "<img src=x>", State: wire.ContainerRunning, MemoryBytes: 64 << 20}}})
}

// TestConsole_Browser is the console in Chromium against tender serve and
// 26 simulated devices over MQTT/TLS: sign-in, the overview's counts and
// filter, a rollout started with the CLI moving on the page, pause and
// undo from the page (checked through the API), a read-only token, CSRF,
// hostile device strings, screenshots.
func TestConsole_Browser(t *testing.T) {
	const berlin, paris = 16, 9
	f := startFleet(t)
	b := newBrowser(t, "https://"+f.api, f.spki())
	s := &sims{t: t, stops: map[string]func(){}}
	t0 := time.Now()
	s.start(f, "berlin-", berlin, "site=berlin,role=gw", time.Second, usage(t0))
	s.start(f, "paris-", paris, "site=paris,role=gw", time.Second, usage(t0))
	s.start(f, "evil-", 1, "site=lab", time.Second, evil)
	const n = berlin + paris + 1
	waitFor(t, "every device online", time.Minute, func() bool { return f.status().Online == n })

	t.Run("nothing before sign-in", func(t *testing.T) {
		for _, p := range []string{"/ui/", "/ui/devices/berlin-00000", "/ui/apps", "/ui/events", "/ui/audit"} {
			for _, cookie := range []string{"", "__Host-tender-session=" + strings.Repeat("0", 64)} {
				req, _ := http.NewRequest("GET", "https://"+f.api+p, nil)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				resp, err := f.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("GET %s (cookie %q): %d, want 401", p, cookie, resp.StatusCode)
				}
				for _, w := range []string{"berlin-0000", "paris-", "evil-", "site=", "demo"} {
					if strings.Contains(string(body), w) && !strings.Contains(p, w) {
						t.Errorf("GET %s before sign-in shows %q", p, w)
					}
				}
			}
		}
		// In the browser: a wrong token, then the page's source.
		b.open("/ui/login")
		b.run("wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"), chromedp.Click(chromedp.CSS("form.login button")),
			chromedp.WaitVisible(chromedp.CSS(".error")))
		src := eval[string](b, `document.documentElement.outerHTML`)
		if strings.Contains(src, "berlin-") || strings.Contains(src, "paris-") {
			t.Errorf("the sign-in page shows the fleet after a wrong token")
		}
	})

	b.signIn(adminToken)
	t.Run("overview counts and filter", func(t *testing.T) {
		b.open("/ui/")
		nt := b.timing()
		t.Logf("overview of %d devices: %s", n, nt)
		if got := b.count("matched"); got != n {
			t.Errorf("overview: %d devices, want %d", got, n)
		}
		if got := b.count("online"); got != n {
			t.Errorf("overview: %d online, want %d", got, n)
		}
		if got := b.count("offline"); got != 0 {
			t.Errorf("overview: %d offline, want 0", got)
		}
		// Grouped by site: berlin 16, paris 9.
		groups := b.text("table.groups tbody")
		if !strings.Contains(groups, fmt.Sprintf("berlin\t%d", berlin)) || !strings.Contains(groups, fmt.Sprintf("paris\t%d", paris)) {
			t.Errorf("groups by site:\n%s", groups)
		}
		// The filter box: a label selector, then a part of a name.
		b.run("filter site=paris", chromedp.SetValue(chromedp.CSS("#q"), "site=paris"), chromedp.Submit(chromedp.CSS("#q")),
			chromedp.WaitVisible(chromedp.CSS("#matched")))
		b.waitJS("the filter to narrow to paris", 10*time.Second, fmt.Sprintf(`document.querySelector('[data-count=matched]').textContent === '%d'`, paris))
		rows := eval[int](b, `document.querySelectorAll('table.devices tbody tr').length`)
		if rows != paris {
			t.Errorf("filtered list: %d rows, want %d", rows, paris)
		}
		b.run("filter by name", chromedp.SetValue(chromedp.CSS("#q"), "berlin-0001"), chromedp.Submit(chromedp.CSS("#q")),
			chromedp.WaitVisible(chromedp.CSS("#matched")))
		b.waitJS("the name filter", 10*time.Second, `document.querySelector('[data-count=matched]').textContent === '6'`) // 00010..00015
	})

	t.Run("rollout from the CLI moves on the page", func(t *testing.T) {
		f.apply("1", "1s")
		waitFor(t, "version 1 to roll out", 2*time.Minute, func() bool {
			r := f.rollout("demo")
			return r.Phase == "succeeded" && strings.HasPrefix(r.To, "1")
		})
		b.open("/ui/apps/demo")
		eval[bool](b, `window.__notReloaded = true`)
		f.apply("2", "2s")
		// Watch the healthy count of the waves grow without a reload.
		seen := map[string]bool{}
		shot := false
		deadline := time.Now().Add(2 * time.Minute)
		for {
			type state struct {
				Healthy, Total int
				Phase, To      string
				Alive          bool
			}
			st := eval[state](b, `(function(){var h=0,t=0;document.querySelectorAll('#rollout .wave').forEach(function(w){h+=parseInt(w.querySelector('[data-n=healthy]').textContent,10);});
				document.querySelectorAll('#rollout .wave-head').forEach(function(e){t+=parseInt(e.textContent.split(': ')[1],10)});
				var p=document.querySelector('#phase');return {Healthy:h,Total:t,Phase:p?p.textContent:'',To:document.querySelector('.phase-line').textContent,Alive:window.__notReloaded===true}})()`)
			if !st.Alive {
				t.Fatal("the page reloaded")
			}
			if strings.Contains(st.To, "→ 2") {
				seen[fmt.Sprint(st.Healthy)] = true
				if !shot && st.Healthy >= 7 && st.Healthy < st.Total {
					shot = true
					b.screenshot("rollout-desktop", 1366, 768)
					b.screenshot("rollout-phone", 390, 844)
				}
				if st.Phase == "succeeded" && st.Healthy == berlin+paris {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page did not show the rollout of 2 succeed: %+v", st)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(seen) < 3 {
			t.Errorf("the page showed the healthy count at only %d values (%v): waves did not move", len(seen), seen)
		}
		// The revision table was rendered before version 2 existed: the
		// page says so instead of showing it stale without a word.
		if note := eval[string](b, `(document.getElementById('stale-note')||{}).textContent||''`); !strings.Contains(note, "new revision") {
			t.Errorf("no notice that the revision table is older than the rollout: %q", note)
		}
		t.Logf("healthy counts seen on the page: %v", seen)
	})

	t.Run("pause and undo from the page", func(t *testing.T) {
		f.apply("3", "4s")
		b.open("/ui/apps/demo")
		b.waitJS("the rollout of 3 with a pause button", 30*time.Second, `!!document.querySelector('#do-pause') && document.querySelector('.phase-line').textContent.indexOf('→ 3') >= 0`)
		// With the keyboard only: Tab to the button, Enter; Tab to the
		// confirmation, Enter.
		b.tabTo("#do-pause")
		b.run("pause", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("form.confirm")))
		what := b.text("#what")
		if !strings.Contains(what, "Pause the rollout of demo") {
			t.Errorf("the confirmation says %q", what)
		}
		b.tabTo("form.confirm button")
		b.run("confirm pause", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#rollout")))
		r := f.rollout("demo")
		if r.Phase != "paused" {
			t.Fatalf("after pause on the page, the API says %s", r.Phase)
		}
		pending := func(r api.RolloutView) int {
			n := 0
			for _, w := range r.Waves {
				n += w.Pending + w.Offline
			}
			return n
		}
		at := pending(r)
		if at == 0 {
			t.Fatalf("paused with nothing pending: %+v", r)
		}
		// Longer than the soak: unpaused, the next wave would start.
		for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if r := f.rollout("demo"); r.Phase != "paused" || pending(r) < at {
				t.Fatalf("paused rollout moved on: %s, %d pending (was %d)", r.Phase, pending(r), at)
			}
		}
		b.waitJS("the page to say paused", 10*time.Second, `document.querySelector('#phase').textContent === 'paused'`)
		b.run("undo", chromedp.Click(chromedp.CSS("#do-undo")), chromedp.WaitVisible(chromedp.CSS("form.confirm")))
		if what := b.text("#what"); !strings.Contains(what, "goes back to 2") {
			t.Errorf("the undo confirmation says %q", what)
		}
		b.run("confirm undo", chromedp.Click(chromedp.CSS("form.confirm button")), chromedp.WaitVisible(chromedp.CSS("#rollout")))
		waitFor(t, "the undo to roll back", 2*time.Minute, func() bool {
			r := f.rollout("demo")
			return r.Phase == "rolled-back"
		})
		var devs []api.DeviceView
		f.json(&devs, "devices", "-l", "role=gw")
		for _, d := range devs {
			for _, a := range d.Apps {
				if a.Name == "demo" && a.Version != "2" {
					t.Errorf("%s runs demo %s after undo, want 2", d.ID, a.Version)
				}
			}
		}
		var audit []struct{ Who, Action string }
		f.json(&audit, "audit")
		found := 0
		for _, e := range audit {
			if e.Who == "ops" && (e.Action == "rollout pause" || e.Action == "rollout undo") {
				found++
			}
		}
		if found != 2 {
			t.Errorf("audit: %d console changes by ops, want pause and undo: %+v", found, audit)
		}
		b.open("/ui/audit")
		if txt := b.text("table.audit"); !strings.Contains(txt, "rollout undo") {
			t.Errorf("the audit page does not show the undo:\n%s", txt)
		}
	})

	t.Run("hostile device strings are text", func(t *testing.T) {
		b.open("/ui/devices/evil-00000")
		b.run("label", chromedp.SetValue(chromedp.CSS("#set"), "note="+evilLabel), chromedp.Submit(chromedp.CSS("#set")),
			chromedp.WaitVisible(chromedp.CSS(".msg")))
		b.run("logs", chromedp.SetValue(chromedp.CSS("#log-app"), "probe"), chromedp.Click(chromedp.CSS(`form[action$="/logs"] button`)),
			chromedp.WaitVisible(chromedp.CSS("#log-output")))
		main := eval[string](b, `document.querySelector('main').textContent`)
		for _, want := range []string{`<script>alert(1)</script>\x1b[31mred`, `\x1b]0;pwned\x07<b>bold</b>`, evilKernel, "note=" + evilLabel,
			"<script>alert(2)</script>", `\x1b[2Jcleared`, "<img src=x>"} {
			if !strings.Contains(main, want) {
				t.Errorf("the device page does not show %q as text", want)
			}
		}
		markup := eval[int](b, `document.querySelectorAll('main script, main b, main img').length`)
		if markup != 0 || b.dialogs.Load() != 0 || strings.Contains(main, "\x1b") {
			t.Errorf("device strings became markup: %d elements, %d dialogs", markup, b.dialogs.Load())
		}
		b.screenshot("device-hostile-desktop", 1366, 768)
		b.open("/ui/devices/berlin-00003")
		b.screenshot("device-desktop", 1366, 768)
		b.screenshot("device-phone", 390, 844)
		b.open("/ui/")
		if b.dialogs.Load() != 0 {
			t.Errorf("the overview opened %d dialogs", b.dialogs.Load())
		}
	})

	t.Run("csrf", func(t *testing.T) {
		b.open("/ui/apps/demo")
		codes := eval[[]int](b, `Promise.all([
			fetch('/ui/apps/demo/rollout', {method: 'POST', body: new URLSearchParams({do: 'undo'})}).then(function(r){return r.status}),
			fetch('/ui/apps/demo/rollout', {method: 'POST', body: new URLSearchParams({do: 'undo', csrf: 'ab'.repeat(32)})}).then(function(r){return r.status})])`)
		if len(codes) != 2 || codes[0] != 403 || codes[1] != 403 {
			t.Errorf("POSTs without or with a wrong CSRF token: %v, want 403 403", codes)
		}
		if r := f.rollout("demo"); r.Phase != "rolled-back" {
			t.Errorf("after refused requests the rollout is %s", r.Phase)
		}
	})

	t.Run("screenshots of the overview", func(t *testing.T) {
		b.open("/ui/")
		// Two reports at least since the rollouts: the CPU bars.
		b.waitJS("CPU bars", 20*time.Second, `document.querySelectorAll('table.devices meter').length >= 2*10`)
		b.screenshot("overview-desktop", 1366, 768)
		b.screenshot("overview-phone", 390, 844)
	})

	t.Run("read-only", func(t *testing.T) {
		ro := newBrowser(t, "https://"+f.api, f.spki())
		ro.signIn(viewerToken)
		for _, p := range []string{"/ui/", "/ui/apps/demo", "/ui/devices/berlin-00000"} {
			ro.open(p)
			controls := eval[int](ro, `document.querySelectorAll('a[href*="confirm?do="], a[href*="/restart"], form[action$="/labels"], form[action$="/rollout"]').length`)
			if controls != 0 {
				t.Errorf("a read-only token sees %d controls that change the fleet on %s", controls, p)
			}
		}
		// A forged request with the session's own CSRF token.
		ro.open("/ui/apps/demo")
		code := eval[int](ro, `fetch('/ui/apps/demo/rollout', {method: 'POST',
			body: new URLSearchParams({do: 'pause', csrf: document.querySelector('form.signout input[name=csrf]').value})}).then(function(r){return r.status})`)
		if code != http.StatusForbidden {
			t.Errorf("a read-only forged rollout command: %d, want 403", code)
		}
		if r := f.rollout("demo"); r.Phase != "rolled-back" {
			t.Errorf("after the read-only request the rollout is %s", r.Phase)
		}
		// Sign-out ends the session.
		ro.run("sign out", chromedp.Click(chromedp.CSS("form.signout button")), chromedp.WaitVisible(chromedp.CSS("#token")))
		ro.open("/ui/")
		src := eval[string](ro, `document.documentElement.outerHTML`)
		if strings.Contains(src, "berlin-") || !strings.Contains(src, `id="token"`) {
			t.Errorf("after sign-out, /ui/ is not the sign-in form")
		}
	})

	t.Run("roll out an older revision from the page", func(t *testing.T) {
		b.open("/ui/apps/demo")
		b.run("apply revision 1", chromedp.Click(chromedp.CSS(`a[href$="do=apply&revision=1"]`)), chromedp.WaitVisible(chromedp.CSS("form.confirm")))
		if what := b.text("#what"); !strings.Contains(what, "Apply revision 1 (version 1) of demo") {
			t.Errorf("the confirmation says %q", what)
		}
		b.run("confirm", chromedp.Click(chromedp.CSS("form.confirm button")), chromedp.WaitVisible(chromedp.CSS("#rollout")))
		waitFor(t, "revision 1 to roll out again", 2*time.Minute, func() bool {
			r := f.rollout("demo")
			return r.Phase == "succeeded" && strings.HasPrefix(r.To, "1 ")
		})
		var devs []api.DeviceView
		f.json(&devs, "devices", "-l", "role=gw")
		for _, d := range devs {
			for _, a := range d.Apps {
				if a.Name == "demo" && a.Version != "1" {
					t.Errorf("%s runs demo %s, want 1", d.ID, a.Version)
				}
			}
		}
	})

	t.Run("offline devices show live", func(t *testing.T) {
		b.open("/ui/")
		eval[bool](b, `window.__notReloaded = true`)
		s.stop("paris-")
		b.waitJS("9 offline on the page, without a reload", 30*time.Second,
			fmt.Sprintf(`window.__notReloaded === true && document.querySelector('[data-count=offline]').textContent === '%d'`, paris))
		b.open(fmt.Sprintf("/ui/devices/%s", "paris-00000"))
		b.run("logs of an offline device", chromedp.Click(chromedp.CSS(`form[action$="/logs"] button`)), chromedp.WaitVisible(chromedp.CSS("#log-error")))
		if e := b.text("#log-error"); !strings.Contains(e, "offline") || !strings.Contains(e, "must be online") {
			t.Errorf("logs of an offline device say %q", e)
		}
	})
}
