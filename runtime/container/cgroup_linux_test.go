package container

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tender-edge/tender/runtime/cgroups"
)

// A running container's init is in its cgroup in exactly the hierarchies
// the runtime uses (on v1: memory, cpu, cpuacct, pids, devices, freezer,
// name=systemd; no cpuset unless asked, no blkio or others), and on v2 in
// its group, as /proc/<pid>/cgroup says.
func TestStart_InitInItsCgroupOnly(t *testing.T) {
	r := liveRuntime(t)
	c := startDetached(t, r, "cg", "sleep", "1000")
	mine := procCgroups(t, os.Getpid())
	got := procCgroups(t, c.State.Pid)
	if cgroups.Detect() == cgroups.V2 {
		if got[""] != c.Cgroup {
			t.Errorf("v2: in %q, want %q", got[""], c.Cgroup)
		}
		return
	}
	joined := []string{"memory", "cpu", "cpuacct", "pids", "devices", "freezer", "systemd"}
	for name, p := range mine {
		if name == "" {
			continue // the hybrid cgroup2 mount: no controllers, not joined
		}
		want := p
		if slices.Contains(joined, name) {
			want = c.Cgroup
		}
		if got[name] != want {
			t.Errorf("%s: in %q, want %q", name, got[name], want)
		}
	}
}

// procCgroups reads /proc/<pid>/cgroup as hierarchy name to path
// ("name=systemd" as "systemd", the v2 line as "").
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, name := range strings.Split(f[1], ",") {
			m[strings.TrimPrefix(name, "name=")] = f[2]
		}
	}
	return m
}
