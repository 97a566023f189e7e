package console

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/api"
)

// TestConsole_Bench measures the overview of a large simulated fleet in
// the browser (issue 12: "loads and becomes interactive in under 1 s"
// with 10,000 devices). It runs only with TENDER_CONSOLE_DEVICES=N
// (`make bench-console`): enrolling and connecting 10,000 devices takes
// about a minute on a 2-core machine. The figures are logged, not
// asserted.
func TestConsole_Bench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TENDER_CONSOLE_DEVICES"))
	if n <= 0 {
		t.Skip("set TENDER_CONSOLE_DEVICES=N (make bench-console) to measure the console with N simulated devices")
	}
	const sites = 20
	f := startFleet(t)
	s := &sims{t: t, stops: map[string]func(){}}
	start := time.Now()
	for k := range sites {
		m := n / sites
		if k < n%sites {
			m++
		}
		s.start(f, fmt.Sprintf("site%02d-", k), m, fmt.Sprintf("site=site-%02d,role=gw", k), -1, usage(start))
	}
	t.Logf("%d devices enrolled and started in %s", n, time.Since(start).Round(time.Second))
	// The API may not answer while the controller's loop is busy with
	// the whole fleet (README, the fleet benchmark): ask again.
	waitFor(t, "every device online", 10*time.Minute, func() bool {
		var st api.StatusView
		return f.try(&st, "status") && st.Online == n
	})
	t.Logf("%d devices online after %s", n, time.Since(start).Round(time.Second))
	f.apply("1", "1s")
	waitFor(t, "version 1 on every device", 10*time.Minute, func() bool {
		var r api.RolloutView
		return f.try(&r, "rollout", "status", "demo") && r.Phase == "succeeded"
	})
	t.Logf("version 1 rolled out after %s", time.Since(start).Round(time.Second))

	b := newBrowser(t, "https://"+f.api, f.spki())
	b.signIn(adminToken)
	for i, p := range []string{"/ui/", "/ui/", "/ui/?q=site%3Dsite-07", "/ui/?page=100", "/ui/?status=offline", "/ui/apps/demo"} {
		if i > 0 && p == "/ui/" {
			// A fresh snapshot: older than the cache's 2 s.
			time.Sleep(2100 * time.Millisecond)
		}
		b.open(p)
		t.Logf("%s with %d devices: %s", p, n, b.timing())
		if p == "/ui/" {
			if got := b.count("matched"); got != n {
				t.Errorf("the overview counts %d devices, want %d", got, n)
			}
		}
	}
}

// try runs a CLI command with -o json into v; false (logged) when the
// controller did not answer.
func (f *fleet) try(v any, args ...string) bool {
	out, err := f.cli(append(args, "-o", "json")...)
	if err != nil {
		f.t.Logf("%v (asking again)", err)
		return false
	}
	return json.Unmarshal([]byte(out), v) == nil
}
