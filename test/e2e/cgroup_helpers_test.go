package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The same tests run on this machine's cgroup v1 hierarchies and in the
// cgroup v2 guests of `make vmtest`: these helpers find a container's
// control files on either.

// cgroupV2 reports whether /sys/fs/cgroup is the unified (v2) hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// cgroupFile is the path of a container's control file: v1name in the v1
// hierarchy of controller, or v2name in its v2 directory.
func cgroupFile(id, controller, v1name, v2name string) string {
	if cgroupV2() {
		return filepath.Join("/sys/fs/cgroup/tender", id, v2name)
	}
	return filepath.Join("/sys/fs/cgroup", controller, "tender", id, v1name)
}

// cgroupDirs are the directories a container's cgroup may have: one per
// v1 hierarchy the runtime uses, and the v2 one.
func cgroupDirs(id string) []string {
	var out []string
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer", "unified", ""} {
		out = append(out, filepath.Join("/sys/fs/cgroup", c, "tender", id))
	}
	return out
}

// cpuUsageNanos is the CPU time a container has used: cpuacct.usage on v1,
// usage_usec of cpu.stat on v2.
func cpuUsageNanos(t *testing.T, id string) int64 {
	t.Helper()
	p := cgroupFile(id, "cpuacct", "cpuacct.usage", "cpu.stat")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read cgroup cpu usage: %v", err)
	}
	if !cgroupV2() {
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return n
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			return n * 1000
		}
	}
	t.Fatalf("%s has no usage_usec:\n%s", p, b)
	return 0
}
