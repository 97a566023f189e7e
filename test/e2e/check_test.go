package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// tender-agent check on this host: it can run containers (the other tests
// do), so nothing fails and the command exits 0, with every line there.
func TestCheck_ThisHost(t *testing.T) {
	out := ok(t, "check")
	for _, line := range []string{
		"Kernel version:", "Namespaces:", "Overlay filesystem:", "Cgroups:", "Cgroup controllers:",
		"Seccomp:", "Root filesystem:", "Free space:", "Free inodes:", "Clock:", "Agent daemon:",
	} {
		if !strings.Contains(out, "\n"+line) && !strings.HasPrefix(out, line) {
			t.Errorf("no %q line:\n%s", line, out)
		}
	}
	if strings.Contains(out, " FAIL ") || !strings.Contains(out, " 0 FAIL") {
		t.Errorf("a check fails on a host that runs containers:\n%s", out)
	}
	var rep struct {
		Results []struct{ Check, Status, Value, Fix string }
		Failed  bool
	}
	if err := json.Unmarshal([]byte(ok(t, "check", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Failed || len(rep.Results) < 11 {
		t.Errorf("json: failed=%v, %d results", rep.Failed, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Status != "OK" && r.Status != "WARN" {
			t.Errorf("json: %+v", r)
		}
	}
	t.Logf("\n%s", out)
}
