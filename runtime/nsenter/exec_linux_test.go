package nsenter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// execIn runs args in c as the container's workload would run.
func (c *testContainer) exec(t *testing.T, ctx context.Context, o ExecOptions) (int, string, error) {
	t.Helper()
	o.Pid, o.PidStart, o.Process = c.pid, c.start, c.spec.Process
	if o.Seccomp == "" {
		o.Seccomp = "default"
	}
	code, out, err := Exec(ctx, o)
	return code, string(out), err
}

func (c *testContainer) mustExec(t *testing.T, o ExecOptions) string {
	t.Helper()
	code, out, err := c.exec(t, context.Background(), o)
	if err != nil {
		t.Fatalf("exec %v: %v", o.Args, err)
	}
	if code != 0 {
		t.Fatalf("exec %v: exit %d, output %q", o.Args, code, out)
	}
	return out
}

func statusField(t *testing.T, status, key string) string {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in status:\n%s", key, status)
	return ""
}

func TestExec(t *testing.T) {
	c := startContainer(t, nil, "sleep", "60")
	run := func(args ...string) ExecOptions { return ExecOptions{Args: append([]string{"workload"}, args...)} }

	t.Run("identity and namespaces", func(t *testing.T) {
		out := c.mustExec(t, run("id"))
		// Host name from the uts namespace; a pid of the container's pid
		// namespace (its init is 1).
		var uid, gid, pid int
		var host string
		if _, err := fmt.Sscanf(out, "uid=%d gid=%d hostname=%s pid=%d", &uid, &gid, &host, &pid); err != nil {
			t.Fatalf("id output %q: %v", out, err)
		}
		if uid != 0 || gid != 0 || host != "tender-test" || pid < 2 || pid > 100 {
			t.Errorf("id = %q, want uid 0, hostname tender-test, a small pid", out)
		}
		// The container's files (mount namespace).
		if out := c.mustExec(t, run("cat", "/etc/group")); !strings.Contains(out, "extra:x:2000:app") {
			t.Errorf("/etc/group = %q, want the container's", out)
		}
	})
	t.Run("user", func(t *testing.T) {
		o := run("id")
		o.User = "app"
		if out := c.mustExec(t, o); !strings.HasPrefix(out, "uid=1000 gid=1000 ") {
			t.Errorf("id as app = %q, want uid=1000 gid=1000", out)
		}
	})
	t.Run("confinement", func(t *testing.T) {
		status := c.mustExec(t, run("cat", "/proc/self/status"))
		for key, want := range map[string]string{
			"Seccomp": "2", "NoNewPrivs": "1",
			"CapEff": dockerCapsHex, "CapBnd": dockerCapsHex, "CapPrm": dockerCapsHex,
			"CapInh": "0000000000000000", "CapAmb": "0000000000000000",
		} {
			if got := statusField(t, status, key); got != want {
				t.Errorf("%s = %s, want %s", key, got, want)
			}
		}
		o := run("cat", "/proc/self/status")
		o.User = "app"
		status = c.mustExec(t, o)
		if got := statusField(t, status, "CapEff"); got != "0000000000000000" {
			t.Errorf("CapEff as app = %s, want none", got)
		}
		if out := c.mustExec(t, run("fds")); out != "0 1 2\n" {
			t.Errorf("fds = %q, want 0 1 2", out)
		}
	})
	t.Run("environment and cwd", func(t *testing.T) {
		o := run("env")
		o.Env = []string{"EXTRA=yes", "FROM_SPEC=2"}
		out := c.mustExec(t, o)
		if !strings.Contains(out, "EXTRA=yes\n") || !strings.Contains(out, "FROM_SPEC=2\n") || strings.Contains(out, "FROM_SPEC=1") {
			t.Errorf("env = %q, want EXTRA=yes and FROM_SPEC=2 only", out)
		}
		o = run("write", "here", "x")
		o.Cwd = "/tmp"
		c.mustExec(t, o)
		if out := c.mustExec(t, run("cat", "/tmp/here")); out != "x" {
			t.Errorf("file written in cwd /tmp = %q", out)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		code, _, err := c.exec(t, context.Background(), run("exit", "3"))
		if err != nil || code != 3 {
			t.Errorf("exit 3: code %d, err %v", code, err)
		}
		code, out, err := c.exec(t, context.Background(), run("cat", "/nonexistent"))
		if err != nil || code != 1 || !strings.Contains(out, "no such file") {
			t.Errorf("cat missing file: code %d, output %q, err %v", code, out, err)
		}
	})
	t.Run("missing command", func(t *testing.T) {
		_, _, err := c.exec(t, context.Background(), ExecOptions{Args: []string{"no-such-command"}})
		if err == nil || !strings.Contains(err.Error(), "no-such-command") || !strings.Contains(err.Error(), "not found") {
			t.Errorf("missing command: %v, want a not-found error", err)
		}
		_, _, err = c.exec(t, context.Background(), ExecOptions{Args: []string{"/no/such/file"}})
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("missing path: %v", err)
		}
	})
	t.Run("bad user", func(t *testing.T) {
		o := run("id")
		o.User = "nobody-here"
		if _, _, err := c.exec(t, context.Background(), o); err == nil {
			t.Error("exec as an unknown user succeeded")
		}
	})
	t.Run("timeout kills", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		begin := time.Now()
		code, _, err := c.exec(t, ctx, run("sleep", "30"))
		if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
			t.Errorf("sleep past deadline: code %d, err %v, want DeadlineExceeded", code, err)
		}
		if d := time.Since(begin); d > 20*time.Second { // sleep 30 would take 30s: it was killed
			t.Errorf("exec took %v after a 300ms deadline", d)
		}
	})
	t.Run("output cap", func(t *testing.T) {
		o := run("echo", strings.Repeat("y", 1000))
		o.MaxOutput = 10
		if out := c.mustExec(t, o); out != "yyyyyyyyyy" {
			t.Errorf("capped output = %q", out)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			go func() {
				_, out, err := c.exec(t, context.Background(), run("echo", "hi"))
				if err == nil && out != "hi\n" {
					err = fmt.Errorf("output %q", out)
				}
				errs <- err
			}()
		}
		for i := 0; i < 8; i++ {
			if err := <-errs; err != nil {
				t.Errorf("concurrent exec: %v", err)
			}
		}
	})
	t.Run("unconfined", func(t *testing.T) {
		o := run("cat", "/proc/self/status")
		o.Seccomp = "unconfined"
		if got := statusField(t, c.mustExec(t, o), "Seccomp"); got != "0" {
			t.Errorf("Seccomp unconfined = %s, want 0", got)
		}
	})
	checkThreadsInHostNetns(t)
}

// TestExec_Cgroup checks that Place runs with the helper in the container's
// pid namespace, before the command runs, and that the command lands in the
// container's cgroup (a real v1 pids hierarchy).
func TestExec_Cgroup(t *testing.T) {
	baseLayer(t)
	root := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Skip("no cgroup v1 pids hierarchy")
	}
	cg := filepath.Join(root, fmt.Sprintf("tender-nsenter-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	place := func(pid int) error {
		return os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
	// Cleanups run last in, first out: this one after the container's.
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	c := startContainer(t, place, "sleep", "60")
	containerPidNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	var placed int
	var placedNS string
	o := ExecOptions{Args: []string{"workload", "cat", "/proc/self/cgroup"}, Place: func(pid int) error {
		placed = pid
		placedNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		// The helper runs the protected copy of our executable:
		// a read-only mount or a sealed memfd.
		var st unix.Statfs_t
		if err := unix.Statfs(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
			return err
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); st.Flags&unix.ST_RDONLY == 0 && !strings.HasPrefix(exe, "/memfd:") {
			return fmt.Errorf("exec helper runs %s from a writable mount", exe)
		}
		return place(pid)
	}}
	out := c.mustExec(t, o)
	if placed == 0 || placedNS != containerPidNS {
		t.Errorf("Place got pid %d in pid namespace %q, want one in %q", placed, placedNS, containerPidNS)
	}
	// The container's cgroup namespace is rooted at its cgroup: the
	// command, in the same cgroup, sees itself at the root.
	found := false
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, ":pids:") {
			found = true
			if !strings.HasSuffix(line, ":pids:/") {
				t.Errorf("exec's pids cgroup %q, want the container's (/)", line)
			}
		}
	}
	if !found {
		t.Errorf("no pids line in %q", out)
	}
	// A failing Place stops the exec before it runs.
	o.Place = func(int) error { return unix.EPERM }
	if _, _, err := c.exec(t, context.Background(), o); !errors.Is(err, unix.EPERM) {
		t.Errorf("exec with a failing Place: %v, want EPERM", err)
	}
}

// An exec's command and environment past 64 KiB reach the command whole;
// past what execve takes, Exec refuses before starting anything.
func TestExec_LargeCommand(t *testing.T) {
	c := startContainer(t, nil, "sleep", "60")
	val := strings.Repeat("v", 100<<10)
	o := ExecOptions{Args: []string{"workload", "env", strings.Repeat("a", 100<<10)}, Env: []string{"BIG1=" + val, "BIG2=" + val}, MaxOutput: 1 << 20}
	out := c.mustExec(t, o)
	if !strings.Contains(out, "\nBIG1="+val+"\n") || !strings.Contains(out, "\nBIG2="+val+"\n") {
		t.Errorf("large environment missing from the command's (output %d bytes)", len(out))
	}
	args := []string{"workload", "echo"}
	for i := 0; i < 30; i++ {
		args = append(args, strings.Repeat("a", 100<<10))
	}
	_, _, err := c.exec(t, context.Background(), ExecOptions{Args: args})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "ARG_MAX") {
		t.Errorf("3 MiB of arguments: %v, want ErrInvalidArgument naming ARG_MAX", err)
	}
}
