package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/runtime/spec"
)

// R-12, end to end: clone3 is denied with ENOSYS (so that libcs fall back
// to clone, whose flags the filter can see).
func TestSecurity_Clone3(t *testing.T) {
	if out := strings.TrimSpace(ok(t, "run", "--rm", image, "clone3")); out != "ENOSYS" {
		t.Errorf("clone3 in a container: %s, want ENOSYS", out)
	}
}

// R-13 on whatever kernel runs the tests: every masked and read-only path
// of the default spec that this host has is checked (none is skipped
// because another kernel's file is missing), and at least one of each kind
// must exist here.
func TestSecurity_MaskedAndReadonlyPaths(t *testing.T) {
	mounts := ok(t, "run", "--rm", image, "mounts")
	mountOpts := func(p string) (string, bool) {
		for _, line := range strings.Split(mounts, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == p {
				return f[3], true
			}
		}
		return "", false
	}
	masked, readonly := 0, 0
	for _, p := range spec.MaskedPaths {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		masked++
		if st.IsDir() {
			if opts, ok := mountOpts(p); !ok || !strings.HasPrefix(opts, "ro") {
				t.Errorf("masked directory %s: mount options %q, want a read-only mount over it", p, opts)
			}
			continue
		}
		if r := agent(t, "run", "--rm", image, "cat", p); r.code != 0 || r.stdout != "" {
			t.Errorf("masked file %s: %s; want it empty", p, r)
		}
	}
	for _, p := range spec.ReadonlyPaths {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		readonly++
		file := p
		if st.IsDir() {
			if opts, ok := mountOpts(p); !ok || !strings.HasPrefix(opts, "ro") {
				t.Errorf("read-only directory %s: mount options %q, want ro", p, opts)
			}
			file = writableFileIn(p)
			if file == "" {
				continue
			}
		}
		// Writing back what the host holds changes nothing even if the
		// protection were gone.
		cur, err := os.ReadFile(file)
		if err != nil || len(cur) == 0 || len(cur) > 4096 {
			continue
		}
		r := agent(t, "run", "--rm", image, "write", file, strings.TrimSpace(string(cur)))
		if r.code == 0 || !strings.Contains(r.stderr, "read-only file system") {
			t.Errorf("write to %s: %s; want read-only file system", file, r)
		}
	}
	t.Logf("checked %d masked and %d read-only paths of this kernel", masked, readonly)
	if masked == 0 || readonly == 0 {
		t.Errorf("this kernel has %d of the masked and %d of the read-only paths: nothing of one kind was tested", masked, readonly)
	}
}

// writableFileIn returns a root-writable regular file directly in dir or
// one level below, "" if there is none.
func writableFileIn(dir string) string {
	for _, pattern := range []string{"*", "*/*"} {
		ms, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range ms {
			if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o200 != 0 {
				return m
			}
		}
	}
	return ""
}

// a fork bomb is capped by pids.max, and neither the agent nor
// another container notices.
func TestSecurity_ForkBomb(t *testing.T) {
	bb := busybox(t)
	ok(t, "run", "-d", "--name", "bystander", image, "sleep", "300")
	t.Cleanup(func() { agent(t, "rm", "-f", "bystander") })
	const limit = 32
	id := strings.TrimSpace(ok(t, "run", "-d", "--name", "bomb", "--pids", strconv.Itoa(limit), "--cpus", "0.5", bb, "b() { b | b & }; b; sleep 1000"))
	t.Cleanup(func() { agent(t, "rm", "-f", "bomb") })
	current := func() int {
		b, err := os.ReadFile(cgroupFile(id, "pids", "pids.current", "pids.current"))
		if err != nil {
			return -1
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	peak := 0
	waitFor(t, "the bomb to reach its limit", 30*time.Second, func() bool {
		peak = max(peak, current())
		return peak >= limit-2
	})
	if peak > limit {
		t.Errorf("pids.current reached %d over pids.max %d", peak, limit)
	}
	// While it rages: the agent answers, the bystander runs commands, a
	// new container starts.
	if out := ok(t, "ps"); !strings.Contains(out, "bystander") || !strings.Contains(out, "bomb") {
		t.Errorf("ps during the bomb:\n%s", out)
	}
	if out := ok(t, "exec", "bystander", "/workload", "echo", "alive"); out != "alive\n" {
		t.Errorf("exec in the bystander during the bomb: %q", out)
	}
	if out := ok(t, "run", "--rm", image, "echo", "fresh"); out != "fresh\n" {
		t.Errorf("a new container during the bomb: %q", out)
	}
	if n := current(); n > limit {
		t.Errorf("pids.current %d over pids.max %d", n, limit)
	}
	ok(t, "rm", "-f", "bomb")
	if !eventually(30*time.Second, func() bool { return gone(id) }) {
		t.Errorf("the bomb's container is not gone after rm -f")
	}
}
