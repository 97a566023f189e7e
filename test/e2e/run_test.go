package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRun_ExitCode(t *testing.T) {
	if r := agent(t, "run", "--rm", image, "exit", "3"); r.code != 3 {
		t.Fatalf("want exit 3, got %s", r)
	}
	if r := agent(t, "run", "--rm", image, "exit", "0"); r.code != 0 {
		t.Fatalf("want exit 0, got %s", r)
	}
}

func TestRun_Identity(t *testing.T) {
	out := ok(t, "run", "--rm", "--name", "ident", image, "id")
	if strings.TrimSpace(out) != "uid=0 gid=0 hostname=ident pid=1" {
		t.Fatalf("id = %q", out)
	}
	out = ok(t, "run", "--rm", "--user", "app", image, "id")
	if !strings.HasPrefix(out, "uid=1000 gid=1000 ") {
		t.Fatalf("--user app: id = %q", out)
	}
	for _, u := range []string{"4294967296", "-1", "2147483648"} {
		if r := agent(t, "run", "--rm", "--user", u, image, "id"); r.code == 0 {
			t.Errorf("--user %s accepted: %s", u, r)
		}
	}
}

func TestRun_Hardening(t *testing.T) {
	// Docker's 14 capabilities and nothing else.
	if out := strings.TrimSpace(ok(t, "run", "--rm", image, "caps")); out != "00000000a80425fb" {
		t.Errorf("caps = %s, want 00000000a80425fb", out)
	}
	if out := strings.TrimSpace(ok(t, "run", "--rm", image, "fds")); out != "0 1 2" {
		t.Errorf("fds = %q, want 0 1 2", out)
	}
	status := ok(t, "run", "--rm", image, "cat", "/proc/self/status")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapInh:\t0000000000000000", "CapAmb:\t0000000000000000"} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/self/status lacks %q", want)
		}
	}
	// Masked: empty (bound to /dev/null where the kernel has a kcore; the
	// exit code is then 0) or absent. Only its content would be a leak.
	if r := agent(t, "run", "--rm", image, "cat", "/proc/kcore"); r.stdout != "" {
		t.Errorf("/proc/kcore readable: %d bytes, exit %d", len(r.stdout), r.code)
	}
	if r := agent(t, "run", "--rm", image, "write", "/proc/sysrq-trigger", "h"); r.code == 0 {
		t.Errorf("/proc/sysrq-trigger writable: %s", r)
	}
	if r := agent(t, "run", "--rm", image, "write", "/proc/sys/kernel/core_pattern", "|/tmp/x"); r.code == 0 {
		t.Errorf("core_pattern writable: %s", r)
	}
	// The host's processes are invisible: this test's pid does not exist there.
	if r := agent(t, "run", "--rm", image, "cat", "/proc/"+strconv.Itoa(os.Getpid())+"/status"); r.code == 0 {
		t.Errorf("host process visible: %s", r)
	}
}

func TestRun_NetworkNone(t *testing.T) {
	out := ok(t, "run", "--rm", "--net", "none", image, "cat", "/proc/net/dev")
	var ifaces []string
	for _, line := range strings.Split(out, "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			ifaces = append(ifaces, name)
		}
	}
	if len(ifaces) != 1 || ifaces[0] != "lo" {
		t.Fatalf("interfaces = %v, want [lo]", ifaces)
	}
	// lo is up (IFF_UP|IFF_LOOPBACK|IFF_RUNNING...): 127.0.0.1 works inside.
	if flags := strings.TrimSpace(ok(t, "run", "--rm", image, "cat", "/sys/class/net/lo/flags")); flags != "0x9" {
		t.Fatalf("lo flags = %s, want 0x9 (up)", flags)
	}
}

func TestRun_MemoryLimit(t *testing.T) {
	if out := ok(t, "run", "--rm", "--memory", "32Mi", image, "alloc", "16"); strings.TrimSpace(out) != "allocated 16" {
		t.Fatalf("alloc 16 under 32Mi: %q", out)
	}
	r := agent(t, "run", "--name", "oom", "--memory", "32Mi", image, "alloc", "64")
	t.Cleanup(func() { agent(t, "rm", "-f", "oom") })
	if r.code != 137 {
		t.Fatalf("alloc 64 under 32Mi: want exit 137, got %s", r)
	}
	var got []struct {
		State struct {
			Status    string
			ExitCode  int
			OOMKilled bool
		}
	}
	if err := json.Unmarshal([]byte(ok(t, "inspect", "oom")), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	if s := got[0].State; !s.OOMKilled || s.ExitCode != 137 || s.Status != "exited" {
		t.Fatalf("inspect state = %+v, want OOMKilled exit 137", s)
	}
}

func TestRun_PidsLimit(t *testing.T) {
	out := ok(t, "run", "--rm", "--pids", "20", image, "forks", "100")
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "started %d", &n); err != nil {
		t.Fatalf("forks output %q: %v", out, err)
	}
	if n >= 20 || n < 1 {
		t.Fatalf("started %d children under pids 20", n)
	}
}

func TestRun_CPULimit(t *testing.T) {
	id := strings.TrimSpace(ok(t, "run", "-d", "--name", "spinner", "--cpus", "0.2", image, "spin", "30"))
	t.Cleanup(func() { agent(t, "rm", "-f", "spinner") })
	usage := func() (time.Time, int64) {
		return time.Now(), cpuUsageNanos(t, id)
	}
	t0, u0 := usage()
	time.Sleep(2 * time.Second) // a measurement window, not a synchronisation
	t1, u1 := usage()
	rate := float64(u1-u0) / float64(t1.Sub(t0).Nanoseconds())
	t.Logf("cpu use under --cpus 0.2: %.3f CPU-seconds per second", rate)
	if rate > 0.3 {
		t.Fatalf("cpu use %.3f CPU-s/s exceeds 0.3 under --cpus 0.2", rate)
	}
	if rate < 0.01 {
		t.Fatalf("cpu use %.3f: the spinner is not running", rate)
	}
}

func TestDetached_Lifecycle(t *testing.T) {
	mountsBefore := hostMounts(t)
	id := strings.TrimSpace(ok(t, "run", "-d", "--name", "svc", "--memory", "64Mi", image, "sleep", "300"))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want an ID", id)
	}
	ps := ok(t, "ps")
	if !strings.Contains(ps, "svc") || !strings.Contains(ps, "Up ") || !strings.HasPrefix(ps, "CONTAINER ID") {
		t.Fatalf("ps:\n%s", ps)
	}
	if b, err := os.ReadFile(cgroupFile(id, "memory", "memory.limit_in_bytes", "memory.max")); err != nil || strings.TrimSpace(string(b)) != "67108864" {
		t.Fatalf("memory limit while running = %q, %v; want 67108864", b, err)
	}
	if r := agent(t, "rm", "svc"); r.code == 0 {
		t.Fatalf("rm of a running container succeeded: %s", r)
	}
	// The workload says "got terminated" only once its handler is in
	// place: wait for the kernel to show SIGTERM caught before stopping.
	waitFor(t, "the workload to catch SIGTERM", 30*time.Second, func() bool { return catches(t, "svc", syscall.SIGTERM) })
	ok(t, "stop", "-t", "5s", "svc")
	var got []struct{ State struct{ Status string } }
	json.Unmarshal([]byte(ok(t, "inspect", "svc")), &got)
	if len(got) != 1 || got[0].State.Status != "exited" {
		t.Fatalf("after stop: %+v", got)
	}
	if out := ok(t, "logs", "svc"); !strings.Contains(out, "got terminated") {
		t.Errorf("logs after SIGTERM = %q", out)
	}
	ok(t, "rm", "svc")
	if out := ok(t, "ps", "-a"); strings.Contains(out, "svc") {
		t.Fatalf("ps -a after rm:\n%s", out)
	}
	for _, d := range cgroupDirs(id) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left behind", d)
		}
	}
	if after := hostMounts(t); after != mountsBefore {
		t.Errorf("host mounts changed:\nbefore %d lines, after %d", strings.Count(mountsBefore, "\n"), strings.Count(after, "\n"))
	}
}

func TestRun_VolumesAndReadOnly(t *testing.T) {
	host := t.TempDir()
	ok(t, "run", "--rm", "-v", host+":/data", image, "write", "/data/hello", "from the container")
	if b, err := os.ReadFile(filepath.Join(host, "hello")); err != nil || string(b) != "from the container" {
		t.Fatalf("volume write: %q %v", b, err)
	}
	if r := agent(t, "run", "--rm", "-v", host+":/data:ro", image, "write", "/data/x", "y"); r.code == 0 {
		t.Errorf("write to a read-only volume succeeded")
	}
	if r := agent(t, "run", "--rm", "--read-only", image, "write", "/tmp/x", "y"); r.code == 0 {
		t.Errorf("write to a read-only root succeeded")
	}
}

func TestRun_BadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"run", "--rm", "no.such/image:1", "id"}, 1},
		{[]string{"run", "--rm", "--memory", "lots", image, "id"}, 1},
		{[]string{"run", "--rm", "--memory", "1Ki", image, "id"}, 1},
		{[]string{"run", "--rm", "--net", "bridge9", image, "id"}, 1},
		{[]string{"run", "--rm", "-v", "/nonexistent-dir:/x", image, "id"}, 1},
		// The runtime cannot start it: 125 (docker says 127), as documented.
		{[]string{"run", "--rm", "--entrypoint", "/no/such/binary", image}, 125},
	} {
		r := agent(t, tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, "tender-agent: ") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%v: want one clear error line and exit %d, got %s", tc.args, tc.code, r)
		}
	}
	if r := agent(t, "frobnicate"); r.code != 1 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %s", r)
	}
}

// hostMounts is the part of the host's mount table these tests could
// change: mounts on this package's state directory or on the test's own
// dirs, and mounts of those dirs anywhere (a bind mount whose root, in
// mountinfo's fourth field, is one of them: what an escaped volume mount
// would be). The rest of the host's table is left out: other test
// packages, run in parallel, mount and unmount their own things
// (network namespaces under /run/netns, overlays of other state dirs),
// and comparing it made these tests fail on what others did.
func hostMounts(t *testing.T, own ...string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	own = append(own, filepath.Dir(root))
	// A dir's tail (its last two elements, unique for t.TempDir and the
	// package's state dir) finds it in a mount's root whatever
	// filesystem it is on.
	var tails []string
	for _, o := range own {
		o = filepath.Clean(o)
		tails = append(tails, filepath.Base(filepath.Dir(o))+"/"+filepath.Base(o))
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mine := false
		for i, o := range own {
			mp, mroot := f[4], f[3]
			mine = mine || mp == o || strings.HasPrefix(mp, o+"/") ||
				strings.HasSuffix(mroot, "/"+tails[i]) || strings.Contains(mroot, "/"+tails[i]+"/")
		}
		if mine {
			keep = append(keep, strings.Join(f[3:], " ")) // without the mount ids, which a remount renumbers
		}
	}
	return strings.Join(keep, "\n")
}

// Issue 9: a pids limit of 1, 2 or 3 crashed the re-executed Go init (it
// could not start its threads: a Go stack dump and exit 2). The limit now
// applies to the workload only: the container starts, pids.max reads N, and
// a fork beyond N fails inside it.
func TestRun_SmallPidsLimit(t *testing.T) {
	bb := busybox(t)
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("pids %d", n), func(t *testing.T) {
			// Whether the init had started its threads when it was put
			// in the cgroup was a race (a quarter to a third of the starts
			// failed): twenty starts in a row, every one must run.
			for i := 0; i < 20; i++ {
				if r := agent(t, "run", "--rm", "--pids", strconv.Itoa(n), bb, "echo hi"); r.code != 0 || r.stdout != "hi\n" {
					t.Fatalf("start %d under pids %d: %s", i, n, r)
				}
			}
			name := fmt.Sprintf("pids%d", n)
			dir := t.TempDir()
			fifo := filepath.Join(dir, "go")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			// The shell is one process and starts n-1 sleepers, so the
			// cgroup is full; once the test has looked at pids.max it
			// lets the shell fork once more, which must fail (ash then
			// exits 2 saying "can't fork").
			script := fmt.Sprintf(`i=1; while [ $i -lt %d ]; do sleep 1000 & i=$((i+1)); done; `+
				`echo ready; read x < /data/go; /bin/busybox true; echo beyond-ok`, n)
			r := agent(t, "run", "-d", "--name", name, "--pids", strconv.Itoa(n), "-v", dir+":/data", bb, script)
			t.Cleanup(func() { agent(t, "rm", "-f", name) })
			if r.code != 0 {
				t.Fatalf("run -d --pids %d: %s", n, r)
			}
			id := strings.TrimSpace(r.stdout)
			waitFor(t, "the workload ready", 30*time.Second, func() bool {
				return strings.Contains(ok(t, "logs", name), "ready")
			})
			b, err := os.ReadFile(cgroupFile(id, "pids", "pids.max", "pids.max"))
			if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(n) {
				t.Errorf("pids.max = %q, %v; want %d", b, err, n)
			}
			if err := os.WriteFile(fifo, []byte("go\n"), 0); err != nil {
				t.Fatal(err)
			}
			var got []struct{ State struct{ Status string } }
			waitFor(t, "the workload's end", 30*time.Second, func() bool {
				got = nil
				json.Unmarshal([]byte(ok(t, "inspect", name)), &got)
				return len(got) == 1 && got[0].State.Status == "exited"
			})
			lr := agent(t, "logs", name)
			if logs := lr.stdout + lr.stderr; !strings.Contains(logs, "can't fork") || strings.Contains(logs, "beyond-ok") {
				t.Errorf("a fork beyond pids %d: logs %q, want the shell's can't fork", n, logs)
			}
		})
	}
}

// An exec into a container that fills its pids limit runs: the Go exec
// helper joins the container's cgroup only right before it execs the
// command (joining earlier, its threads could not start: about half the
// execs failed with "read status: connection reset by peer").
func TestExec_FullPidsLimit(t *testing.T) {
	bb := busybox(t)
	ok(t, "run", "-d", "--name", "pidsfull", "--pids", "2", bb, "exec sleep 1000")
	t.Cleanup(func() { agent(t, "rm", "-f", "pidsfull") })
	for i := 0; i < 12; i++ {
		if r := agent(t, "exec", "pidsfull", "/bin/busybox", "echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
			t.Fatalf("exec %d into a container at its pids limit: %s", i, r)
		}
	}
}

// Issue 9: a container config over 64 KiB (long environment values, many
// of them, a long argv) broke the start ("init: read status: connection
// reset by peer").
func TestRun_LargeConfig(t *testing.T) {
	val := strings.Repeat("v", 100<<10)
	args := []string{"run", "--rm"}
	for _, k := range []string{"BIG1", "BIG2", "BIG3"} {
		args = append(args, "-e", k+"="+val)
	}
	out := ok(t, append(args, image, "env", strings.Repeat("a", 100<<10))...)
	for _, k := range []string{"BIG1", "BIG2", "BIG3"} {
		if !strings.Contains(out, "\n"+k+"="+val+"\n") {
			t.Errorf("%s missing from the container's environment (%d bytes of output)", k, len(out))
		}
	}
}

// Issue 9: -v :/x bound the agent's working directory read-write; a
// relative host path did the same with a subdirectory; a volume on a path
// the runtime manages failed only at start. All are refused up front with
// a message that names the path.
func TestRun_BadVolumes(t *testing.T) {
	for _, tt := range []struct{ vol, want string }{
		{":/x", "the host path is empty"},
		{"data:/x", `the host path "data" is not absolute`},
		{"/tmp:/proc/sys", "/proc/sys is managed by the runtime"},
		{"/tmp:/sys/fs/cgroup", "/sys/fs/cgroup is managed by the runtime"},
	} {
		r := agent(t, "run", "--rm", "-v", tt.vol, image, "id")
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("-v %s: want exit 1 saying %q, got %s", tt.vol, tt.want, r)
		}
	}
}

// Issue 9: run --rm left its container behind, cgroups included, as
// "Exited (-1) 106751 days ago" when the CLI died (a closed stdout pipe, a
// kill). The shim owns the exit record and the removal: the CLI's death
// changes nothing.
func TestRun_RmOutlivesCLI(t *testing.T) {
	t.Run("closed stdout pipe", func(t *testing.T) {
		cmd := exec.Command(agentBin, "--root", root, "run", "--rm", "--name", "rm-pipe", image, "ticks", "2")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(stdout, make([]byte, 1)); err != nil {
			t.Fatalf("first byte of output: %v", err)
		}
		id := containerID(t, "rm-pipe")
		stdout.Close() // as `| head -c1` does
		_ = cmd.Wait()
		if !eventually(30*time.Second, func() bool { return gone(id) }) {
			t.Fatalf("container %s left behind after its CLI died on a closed pipe:\n%s", id, ok(t, "ps", "-a"))
		}
	})
	t.Run("killed CLI", func(t *testing.T) {
		cmd := exec.Command(agentBin, "--root", root, "run", "--rm", "--name", "rm-kill", image, "sleep", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var id string
		waitFor(t, "rm-kill running", 30*time.Second, func() bool {
			r := agent(t, "inspect", "rm-kill")
			if r.code == 0 && strings.Contains(r.stdout, `"running"`) {
				id = containerID(t, "rm-kill")
				return true
			}
			return false
		})
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !eventually(30*time.Second, func() bool { return gone(id) }) {
			t.Fatalf("container %s left behind after its CLI was killed:\n%s", id, ok(t, "ps", "-a"))
		}
	})
	t.Run("killed CLI without --rm", func(t *testing.T) {
		cmd := exec.Command(agentBin, "--root", root, "run", "--name", "keep-kill", image, "sleep", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { agent(t, "rm", "-f", "keep-kill") })
		waitFor(t, "keep-kill running", 30*time.Second, func() bool {
			r := agent(t, "inspect", "keep-kill")
			return r.code == 0 && strings.Contains(r.stdout, `"running"`)
		})
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		var got []struct {
			ID    string
			State struct {
				Status     string
				ExitCode   int
				FinishedAt time.Time
			}
		}
		waitFor(t, "keep-kill exited", 30*time.Second, func() bool {
			got = nil
			json.Unmarshal([]byte(ok(t, "inspect", "keep-kill")), &got)
			return len(got) == 1 && got[0].State.Status == "exited"
		})
		if s := got[0].State; s.ExitCode != 0 || s.FinishedAt.IsZero() {
			t.Errorf("state after the CLI was killed = %+v; want exit 0 recorded with its time", s)
		}
		if !gone(got[0].ID) {
			// The directory stays (no --rm); the cgroups must not.
			for _, c := range []string{"memory", "pids", "cpu"} {
				if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "tender", got[0].ID)); err == nil {
					t.Errorf("cgroup %s left behind", c)
				}
			}
		}
	})
}

// catches reports whether the workload of container name has a handler for
// sig (SigCgt in its /proc status).
func catches(t *testing.T, name string, sig syscall.Signal) bool {
	t.Helper()
	var got []struct{ State struct{ Pid int } }
	if err := json.Unmarshal([]byte(ok(t, "inspect", name)), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect %s: %v", name, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", got[0].State.Pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// A relative --root is taken from the caller's working directory: the
// shim and the container's init run elsewhere and found nothing there
// ("no such container", exit 125) until the CLI made it absolute.
func TestRun_RelativeRoot(t *testing.T) {
	dir := t.TempDir()
	in := func(args ...string) result {
		t.Helper()
		cmd := exec.Command(agentBin, append([]string{"--root", "state"}, args...)...)
		cmd.Dir = dir
		r, err := runCmd(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := in("load", testImage); r.code != 0 {
		t.Fatalf("load: %s", r)
	}
	if r := in("run", "--rm", image, "exit", "3"); r.code != 3 {
		t.Fatalf("run --rm with --root state: %s, want exit 3", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "images")); err != nil {
		t.Fatalf("the relative root was not used: %v", err)
	}
}
