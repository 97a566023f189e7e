package initproc

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tender-edge/tender/runtime/spec"
	"github.com/tender-edge/tender/test/rootfs"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		Main()
	}
	if len(os.Args) > 1 && os.Args[1] == ExecArg {
		ExecMain()
	}
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// fixture is the shared read-only lower layer: the workload and probe
// binaries, /etc/passwd and /etc/group, built once.
var fixture struct {
	once sync.Once
	dir  string // parent of base
	base string
	err  error
}

func baseLayer(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "initproc-test-")
		if fixture.err != nil {
			return
		}
		base := filepath.Join(fixture.dir, "base")
		if fixture.err = rootfs.Build(base, map[string]string{"workload": "../../test/workload", "probe": "./testdata/probe"}); fixture.err != nil {
			return
		}
		fixture.base = base
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.base
}

// dockerCaps is the runtime's default set: Docker's 14.
var dockerCaps = spec.DefaultCaps

const dockerCapsHex = "00000000a80425fb"

func testSpec(root string, args ...string) *specs.Spec {
	mode := os.FileMode(0o666)
	dev := func(path string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: path, Type: "c", Major: major, Minor: minor, FileMode: &mode}
	}
	nosuid := []string{"nosuid", "noexec", "nodev"}
	return &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: root},
		Hostname: "tender-test",
		Process: &specs.Process{
			Args: append([]string{"workload"}, args...),
			Env:  []string{"PATH=/usr/bin:/bin:/"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: dockerCaps, Effective: dockerCaps, Permitted: dockerCaps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: nosuid},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: nosuid},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
			},
			Devices: []specs.LinuxDevice{
				dev("/dev/null", 1, 3), dev("/dev/zero", 1, 5), dev("/dev/full", 1, 7),
				dev("/dev/random", 1, 8), dev("/dev/urandom", 1, 9), dev("/dev/tty", 5, 0),
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
				"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// testEnv is one container's directories: its own upper and work dirs over
// the shared base layer (plus any extra layers), mounted at root.
type testEnv struct {
	dir    string
	lowers []string
	cfg    *Config
}

func newEnv(t *testing.T, args ...string) *testEnv {
	t.Helper()
	base := baseLayer(t)
	dir := t.TempDir()
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &testEnv{dir: dir, lowers: []string{base}}
	e.cfg = &Config{Spec: testSpec(filepath.Join(dir, "root"), args...), Seccomp: "default", NoPivot: forceNoPivot}
	return e
}

// layer adds a lower layer on top of the others, filled by fill.
func (e *testEnv) layer(t *testing.T, fill func(dir string) error) {
	t.Helper()
	d, err := os.MkdirTemp(e.dir, "layer")
	if err != nil {
		t.Fatal(err)
	}
	if err := fill(d); err != nil {
		t.Fatal(err)
	}
	e.lowers = append([]string{d}, e.lowers...)
}

func (e *testEnv) config() *Config {
	e.cfg.RootMounts = []Mount{{
		Type: "overlay", Source: "overlay",
		Options: []string{
			"lowerdir=" + strings.Join(e.lowers, ":"),
			"upperdir=" + filepath.Join(e.dir, "upper"),
			"workdir=" + filepath.Join(e.dir, "work"),
		},
	}}
	return e.cfg
}

type result struct {
	stdout, stderr string
	code           int
}

// start starts the container with pipes for stdout and stderr.
func (e *testEnv) start(t *testing.T, place func(int) error) (*os.Process, func() result, error) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if place == nil {
		place = func(int) error { return nil }
	}
	proc, err := Start(e.config(), Stdio{Stdout: outW, Stderr: errW}, place)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		e.checkNoLeak(t)
		return nil, nil, err
	}
	wait := func() result {
		var r result
		var wg sync.WaitGroup
		var errBuf bytes.Buffer
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(&errBuf, errR) }()
		out, _ := io.ReadAll(outR)
		wg.Wait()
		outR.Close()
		errR.Close()
		st, err := proc.Wait()
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		r.stdout, r.stderr, r.code = string(out), errBuf.String(), st.ExitCode()
		e.checkNoLeak(t)
		return r
	}
	return proc, wait, nil
}

// run runs the container to completion.
func (e *testEnv) run(t *testing.T) (result, error) {
	t.Helper()
	_, wait, err := e.start(t, nil)
	if err != nil {
		return result{}, err
	}
	return wait(), nil
}

// mustRun runs the container and fails unless it exits 0.
func (e *testEnv) mustRun(t *testing.T) string {
	t.Helper()
	r, err := e.run(t)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if r.code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// checkNoLeak fails if any mount of the container shows in the host's
// mount table (this thread's: the main thread may be the spawner, in a
// namespace of its own).
func (e *testEnv) checkNoLeak(t *testing.T) {
	t.Helper()
	b := hostMountinfo(t)
	if strings.Contains(b, e.dir) {
		t.Errorf("container mount visible on the host:\n%s", b)
	}
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

func TestStart_IdentityAndHostname(t *testing.T) {
	e := newEnv(t, "id")
	if got, want := e.mustRun(t), "uid=0 gid=0 hostname=tender-test pid=1\n"; got != want {
		t.Errorf("id = %q, want %q", got, want)
	}
}

func TestStart_ExitCode(t *testing.T) {
	e := newEnv(t, "exit", "7")
	r, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 7 {
		t.Errorf("exit code %d, want 7", r.code)
	}
}

func TestStart_Namespaces(t *testing.T) {
	e := newEnv(t, "sleep", "30")
	var cgroupNsAtPlace string
	proc, wait, err := e.start(t, func(pid int) error {
		// The init is still waiting for its config: its executable is
		// on a read-only mount (R-01: a container process reaching it
		// through /proc/<pid>/exe cannot write to it), and its cgroup
		// namespace is still the host's (it unshares it after place).
		var st unix.Statfs_t
		if err := unix.Statfs(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
			return err
		}
		if st.Flags&unix.ST_RDONLY == 0 {
			return fmt.Errorf("init executable is on a writable mount")
		}
		// While it runs the kernel says ETXTBSY; once it exits, EROFS.
		if _, err := os.OpenFile(fmt.Sprintf("/proc/%d/exe", pid), os.O_WRONLY, 0); !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ETXTBSY) {
			return fmt.Errorf("open init executable for writing: %v, want EROFS or ETXTBSY", err)
		}
		var err error
		cgroupNsAtPlace, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", pid))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"mnt", "pid", "net", "uts", "ipc", "cgroup"} {
		host, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		ctr, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", proc.Pid, ns))
		if err != nil {
			t.Fatal(err)
		}
		if host == ctr {
			t.Errorf("%s namespace is the host's (%s)", ns, host)
		}
	}
	if host, _ := os.Readlink("/proc/self/ns/cgroup"); cgroupNsAtPlace != host {
		t.Errorf("cgroup namespace at place = %s, want the host's %s", cgroupNsAtPlace, host)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", proc.Pid))
	if err != nil || exe != "/workload" {
		t.Errorf("workload exe = %q (%v), want /workload", exe, err)
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.code != -1 {
		t.Errorf("after SIGKILL: %+v", r)
	}
}

func TestStart_OnlyStdioReachesWorkload(t *testing.T) {
	e := newEnv(t, "fds")
	if got := e.mustRun(t); got != "0 1 2\n" {
		t.Errorf("fds = %q, want 0 1 2", got)
	}
}

func TestStart_Capabilities(t *testing.T) {
	e := newEnv(t, "caps")
	if got := strings.TrimSpace(e.mustRun(t)); got != dockerCapsHex {
		t.Errorf("effective caps = %s, want %s", got, dockerCapsHex)
	}
}

func TestStart_ProcessStatus(t *testing.T) {
	e := newEnv(t, "cat", "/proc/self/status")
	st := e.mustRun(t)
	for key, want := range map[string]string{
		"CapInh":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"CapBnd":     dockerCapsHex,
		"CapPrm":     dockerCapsHex,
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	} {
		if got := statusField(t, st, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
}

func TestStart_Rlimit(t *testing.T) {
	e := newEnv(t, "cat", "/proc/self/limits")
	out := e.mustRun(t)
	if !regexpLine(out, "Max open files", "1024", "1024") {
		t.Errorf("limits:\n%s", out)
	}
}

func regexpLine(out, name string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			return len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ")
		}
	}
	return false
}

func TestStart_MaskedAndReadonlyPaths(t *testing.T) {
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts"} {
		t.Run("read "+p, func(t *testing.T) {
			if _, err := os.Stat(p); err != nil {
				t.Skipf("this kernel has no %s", p)
			}
			e := newEnv(t, "cat", p)
			if got := e.mustRun(t); got != "" {
				t.Errorf("read %d bytes from %s", len(got), p)
			}
		})
	}
	t.Run("firmware dir is empty", func(t *testing.T) {
		e := newEnv(t, "cat", "/proc/self/mountinfo")
		out := e.mustRun(t)
		if !strings.Contains(out, " /sys/firmware ro,") {
			t.Errorf("no read-only mount on /sys/firmware:\n%s", out)
		}
	})
	for _, p := range []string{"/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern"} {
		t.Run("write "+p, func(t *testing.T) {
			if _, err := os.Stat(p); err != nil {
				t.Skipf("this kernel has no %s", p)
			}
			e := newEnv(t, "write", p, "x")
			r, err := e.run(t)
			if err != nil {
				t.Fatal(err)
			}
			if r.code == 0 || !strings.Contains(r.stderr, "read-only file system") {
				t.Errorf("write %s: %+v", p, r)
			}
		})
	}
	t.Run("sys is read-only", func(t *testing.T) {
		e := newEnv(t, "write", "/sys/kernel/uevent_helper", "/x")
		r, err := e.run(t)
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 0 {
			t.Errorf("wrote to /sys: %+v", r)
		}
	})
}

func TestStart_User(t *testing.T) {
	for _, tc := range []struct{ user, want string }{
		{"app", "uid=1000 gid=1000"},
		{"1000", "uid=1000 gid=1000"},
		{"1000:5", "uid=1000 gid=5"},
		{"app:tty", "uid=1000 gid=5"},
		{"4242", "uid=4242 gid=0"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			e := newEnv(t, "id")
			e.cfg.User = tc.user
			if got := e.mustRun(t); !strings.HasPrefix(got, tc.want+" ") {
				t.Errorf("id = %q, want prefix %q", got, tc.want)
			}
		})
	}
	t.Run("supplementary groups and no caps", func(t *testing.T) {
		e := newEnv(t, "cat", "/proc/self/status")
		e.cfg.User = "app"
		st := e.mustRun(t)
		if got := statusField(t, st, "Groups"); got != "2000" {
			t.Errorf("Groups = %q, want 2000", got)
		}
		if got := statusField(t, st, "CapEff"); got != "0000000000000000" {
			t.Errorf("CapEff = %s, want 0 for a non-root user", got)
		}
	})
	t.Run("without no_new_privs", func(t *testing.T) {
		// The filter is then loaded before the switch to the user.
		e := newEnv(t, "cat", "/proc/self/status")
		e.cfg.User = "app"
		e.cfg.Spec.Process.NoNewPrivileges = false
		st := e.mustRun(t)
		if got := statusField(t, st, "Seccomp"); got != "2" {
			t.Errorf("Seccomp = %s, want 2", got)
		}
		if got := statusField(t, st, "NoNewPrivs"); got != "0" {
			t.Errorf("NoNewPrivs = %s, want 0", got)
		}
		if got := statusField(t, st, "Uid"); !strings.HasPrefix(got, "1000") {
			t.Errorf("Uid = %s", got)
		}
	})
	t.Run("HOME from passwd", func(t *testing.T) {
		e := newEnv(t, "env")
		e.cfg.User = "app"
		if got := e.mustRun(t); !strings.Contains(got, "HOME=/home/app\n") {
			t.Errorf("env = %q", got)
		}
	})
	for _, bad := range []string{"4294967296", "4294967296:0", "-1", "2147483648", "0:2147483648", "nobody", "app:nogroup", ":0"} {
		t.Run("reject "+bad, func(t *testing.T) {
			e := newEnv(t, "id")
			e.cfg.User = bad
			_, err := e.run(t)
			var ie *InitError
			if !errors.As(err, &ie) {
				t.Fatalf("user %q: err = %v, want an InitError", bad, err)
			}
			t.Log(err)
		})
	}
	t.Run("reject spec uid out of range", func(t *testing.T) {
		e := newEnv(t, "id")
		e.cfg.Spec.Process.User.UID = 1 << 31
		_, err := e.run(t)
		if err == nil || !strings.Contains(err.Error(), "invalid user") {
			t.Fatalf("err = %v, want invalid user", err)
		}
	})
}

func TestStart_RefusesBadRootfs(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill func(dir string) error
		want string
	}{
		{"proc symlink", func(d string) error { return os.Symlink("/tmp", filepath.Join(d, "proc")) }, "is a symlink"},
		{"sys symlink", func(d string) error { return os.Symlink("../../..", filepath.Join(d, "sys")) }, "is a symlink"},
		{"proc file", func(d string) error { return os.WriteFile(filepath.Join(d, "proc"), nil, 0o644) }, "not a directory"},
		{"dev symlink to host", func(d string) error { return os.Symlink("/dev", filepath.Join(d, "dev")) }, "is a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "id")
			e.layer(t, tc.fill)
			_, err := e.run(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestStart_NullMustBeNullDevice(t *testing.T) {
	// no /dev tmpfs and no device list: /dev/null comes from the
	// image, where it points at core_pattern.
	e := newEnv(t, "id")
	e.layer(t, func(d string) error {
		if err := os.Mkdir(filepath.Join(d, "dev"), 0o755); err != nil {
			return err
		}
		return os.Symlink("/proc/sys/kernel/core_pattern", filepath.Join(d, "dev", "null"))
	})
	s := e.cfg.Spec
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if !strings.HasPrefix(m.Destination, "/dev") {
			mounts = append(mounts, m)
		}
	}
	s.Mounts, s.Linux.Devices = mounts, nil
	_, err := e.run(t)
	if err == nil || !strings.Contains(err.Error(), "not the null device") {
		t.Fatalf("err = %v, want a refusal of /dev/null", err)
	}
}

func TestStart_CwdOutsideContainer(t *testing.T) {
	for _, cwd := range []string{"/proc/self/fd/3", "/proc/self/cwd", "/proc"} {
		t.Run(cwd, func(t *testing.T) {
			e := newEnv(t, "id")
			e.cfg.Spec.Process.Cwd = cwd
			_, err := e.run(t)
			if err == nil || !strings.Contains(err.Error(), "cwd outside container") {
				t.Fatalf("err = %v, want cwd outside container", err)
			}
		})
	}
	t.Run("symlink to proc fd", func(t *testing.T) {
		e := newEnv(t, "id")
		e.layer(t, func(d string) error { return os.Symlink("/proc/self/fd/3", filepath.Join(d, "work")) })
		e.cfg.Spec.Process.Cwd = "/work"
		_, err := e.run(t)
		if err == nil || !strings.Contains(err.Error(), "cwd outside container") {
			t.Fatalf("err = %v, want cwd outside container", err)
		}
		t.Log(err)
	})
	t.Run("created when missing", func(t *testing.T) {
		e := newEnv(t, "cat", "../../etc/group")
		e.cfg.Spec.Process.Cwd = "/srv/app"
		if got := e.mustRun(t); !strings.Contains(got, "app:x:1000") {
			t.Errorf("cat = %q", got)
		}
	})
}

func TestStart_Seccomp(t *testing.T) {
	e := newEnv(t)
	e.cfg.Spec.Process.Args = []string{"/probe"}
	out := e.mustRun(t)
	want := map[string]string{
		"unshare":           "EPERM",
		"mount":             "EPERM",
		"keyctl":            "EPERM",
		"bpf":               "EPERM",
		"io_uring_setup":    "EPERM",
		"socket_alg":        "EPERM",
		"socket_vsock":      "EPERM",
		"socket_alg_hibits": "EPERM",
		"socket_unix":       "ok",
		"clone3":            "ENOSYS",
		"clone_newuser":     "EPERM",
		"ptrace":            "EPERM",
		"personality_query": "ok",
		"personality_rie":   "EPERM",
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %s", k, got[k], w)
		}
	}
}

func TestStart_Volumes(t *testing.T) {
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("rw", func(t *testing.T) {
		e := newEnv(t, "write", "/data/vol/out", "hello")
		e.cfg.Spec.Mounts = append(e.cfg.Spec.Mounts, specs.Mount{Destination: "/data/vol", Type: "bind", Source: host, Options: []string{"rbind", "rprivate"}})
		e.mustRun(t)
		if b, err := os.ReadFile(filepath.Join(host, "out")); err != nil || string(b) != "hello" {
			t.Errorf("host file = %q, %v", b, err)
		}
	})
	t.Run("ro", func(t *testing.T) {
		e := newEnv(t, "write", "/data/vol/out2", "hello")
		e.cfg.Spec.Mounts = append(e.cfg.Spec.Mounts, specs.Mount{Destination: "/data/vol", Type: "bind", Source: host, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
		r, err := e.run(t)
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 0 || !strings.Contains(r.stderr, "read-only file system") {
			t.Errorf("write to ro volume: %+v", r)
		}
	})
	t.Run("file", func(t *testing.T) {
		e := newEnv(t, "cat", "/etc/in")
		e.cfg.Spec.Mounts = append(e.cfg.Spec.Mounts, specs.Mount{Destination: "/etc/in", Type: "bind", Source: filepath.Join(host, "in"), Options: []string{"bind", "ro"}})
		if got := e.mustRun(t); got != "from host" {
			t.Errorf("cat = %q", got)
		}
	})
	t.Run("symlinked destination refused", func(t *testing.T) {
		canary := t.TempDir()
		e := newEnv(t, "id")
		e.layer(t, func(d string) error { return os.Symlink(canary, filepath.Join(d, "vol")) })
		e.cfg.Spec.Mounts = append(e.cfg.Spec.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: host, Options: []string{"rbind"}})
		_, err := e.run(t)
		if err == nil || !strings.Contains(err.Error(), "is a symlink") {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
	t.Run("symlinked parent stays inside", func(t *testing.T) {
		// /up -> ../../../../tender-inside: resolved inside the root, so
		// the mount lands in the container's /tender-inside, never on a
		// host path.
		e := newEnv(t, "cat", "/tender-inside/vol/in")
		e.layer(t, func(d string) error {
			if err := os.Mkdir(filepath.Join(d, "tender-inside"), 0o755); err != nil {
				return err
			}
			return os.Symlink("../../../../tender-inside", filepath.Join(d, "up"))
		})
		e.cfg.Spec.Mounts = append(e.cfg.Spec.Mounts, specs.Mount{Destination: "/up/vol", Type: "bind", Source: host, Options: []string{"rbind"}})
		if got := e.mustRun(t); got != "from host" {
			t.Errorf("cat = %q", got)
		}
		if _, err := os.Lstat("/tender-inside"); err == nil {
			t.Error("/tender-inside created on the host")
		}
	})
}

func TestStart_InitErrors(t *testing.T) {
	t.Run("missing executable", func(t *testing.T) {
		e := newEnv(t)
		e.cfg.Spec.Process.Args = []string{"/nonexistent"}
		_, err := e.run(t)
		if err == nil || !strings.Contains(err.Error(), "exec /nonexistent") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("not in PATH", func(t *testing.T) {
		e := newEnv(t)
		e.cfg.Spec.Process.Args = []string{"nonexistent"}
		_, err := e.run(t)
		if err == nil || !strings.Contains(err.Error(), "not found in $PATH") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("place fails", func(t *testing.T) {
		e := newEnv(t, "id")
		var pid int
		_, _, err := e.start(t, func(p int) error { pid = p; return errors.New("no cgroup") })
		if err == nil || !strings.Contains(err.Error(), "no cgroup") {
			t.Fatalf("err = %v", err)
		}
		if err := unix.Kill(pid, 0); err != unix.ESRCH {
			t.Errorf("init %d still exists after a failed Start: %v", pid, err)
		}
	})
	t.Run("no mount namespace", func(t *testing.T) {
		e := newEnv(t, "id")
		e.cfg.Spec.Linux.Namespaces = e.cfg.Spec.Linux.Namespaces[1:]
		if _, err := e.run(t); err == nil {
			t.Fatal("started without a mount namespace")
		}
	})
}

func TestStart_ReadonlyRoot(t *testing.T) {
	e := newEnv(t, "write", "/etc/x", "y")
	e.cfg.Spec.Root.Readonly = true
	r, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if r.code == 0 || !strings.Contains(r.stderr, "read-only file system") {
		t.Errorf("write on ro root: %+v", r)
	}
}

func TestStart_DevSetup(t *testing.T) {
	e := newEnv(t, "cat", "/proc/self/mountinfo")
	e.cfg.Spec.Process.Args = []string{"/workload", "mounts"}
	out := e.mustRun(t)
	for _, want := range []string{" /dev tmpfs ", " /dev/pts devpts ", " /dev/shm tmpfs ", " /dev/mqueue mqueue ", " /sys sysfs ro,", " /proc/sys proc ro,"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in mounts:\n%s", want, out)
		}
	}
	e2 := newEnv(t, "cat", "/dev/zero")
	e2.cfg.Spec.Process.Args = []string{"/workload", "write", "/dev/null", "discarded"}
	e2.mustRun(t)
	e3 := newEnv(t, "cat", "/dev/stdin")
	e3.mustRun(t) // stdin is /dev/null through the /dev/stdin symlink
}

func TestSealedExe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, self)
	// The copy is of the small init when this binary embeds one.
	want := expectedInit(t)
	f, err := sealedExe()
	if err != nil {
		t.Fatal(err)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantSeals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if seals&wantSeals != wantSeals {
		t.Errorf("seals = %#x, want %#x", seals, wantSeals)
	}
	if int(f.Fd()) < minExeFd {
		t.Errorf("memfd is fd %d, want >= %d", f.Fd(), minExeFd)
	}
	// Writing through /proc/self/fd (as a container process reaching
	// /proc/<init>/exe would) fails.
	w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY, 0)
	if err == nil {
		_, err = w.Write([]byte("pwned"))
		w.Close()
	}
	if err == nil {
		t.Error("wrote to the sealed executable")
	}
	if err := unix.Ftruncate(int(f.Fd()), 0); err == nil {
		t.Error("truncated the sealed executable")
	}
	if f2, _ := sealedExe(); f2 != f {
		t.Error("sealed executable not cached")
	}
	if fileHash(t, self) != before {
		t.Error("own executable changed")
	}
	if fileHash(t, fmt.Sprintf("/proc/self/fd/%d", f.Fd())) != want {
		t.Error("sealed copy differs from the init")
	}
}

func fileHash(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestStart_LongOverlayOptions(t *testing.T) {
	e := newEnv(t, "cat", "/etc/layer59")
	// Many lowers with long names under one parent: the absolute option
	// string exceeds a page, the relative one does not.
	parent := filepath.Join(e.dir, "l")
	base := filepath.Join(parent, "base")
	for _, d := range []string{"etc", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(e.lowers[0], "workload"), filepath.Join(base, "workload")); err != nil {
		t.Fatal(err)
	}
	e.lowers = []string{base}
	for i := 0; i < 60; i++ {
		d := filepath.Join(parent, fmt.Sprintf("%02d%s", i, strings.Repeat("x", 38)))
		if err := os.MkdirAll(filepath.Join(d, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "etc", fmt.Sprintf("layer%d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		e.lowers = append([]string{d}, e.lowers...)
	}
	if n := len(strings.Join(e.lowers, ":")); n <= os.Getpagesize() {
		t.Fatalf("lowerdir option only %d bytes", n)
	}
	if got := e.mustRun(t); got != "59" {
		t.Errorf("cat = %q, want 59", got)
	}
}

func TestStart_HostNetworkSysfs(t *testing.T) {
	e := newEnv(t, "mounts")
	var nss []specs.LinuxNamespace
	for _, n := range e.cfg.Spec.Linux.Namespaces {
		if n.Type != specs.NetworkNamespace {
			nss = append(nss, n)
		}
	}
	e.cfg.Spec.Linux.Namespaces = nss
	out := e.mustRun(t)
	if !strings.Contains(out, "sysfs /sys sysfs ro,") {
		t.Errorf("no read-only /sys:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasPrefix(f[1], "/sys/") && f[1] != "/sys/fs/cgroup" && !strings.HasPrefix(f[3], "ro") {
			t.Errorf("writable mount under /sys: %s", line)
		}
	}
}

func TestStart_Sysctl(t *testing.T) {
	e := newEnv(t, "cat", "/proc/sys/net/ipv4/ip_forward")
	e.cfg.Spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	if got := e.mustRun(t); got != "1\n" {
		t.Errorf("ip_forward = %q", got)
	}
	e = newEnv(t, "id")
	e.cfg.Spec.Linux.Sysctl = map[string]string{"kernel.core_pattern": "|/pwn"}
	if _, err := e.run(t); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("host sysctl: err = %v", err)
	}
}

// A config past the status message's 64 KiB (long environment values, many
// of them, a long argv) reaches the child whole: the sync socket carries
// what execve can take, not what fits a status.
func TestStart_LargeConfig(t *testing.T) {
	val := strings.Repeat("v", 100<<10)
	arg := strings.Repeat("a", 100<<10)
	e := newEnv(t, "env", arg)
	for _, k := range []string{"BIG1", "BIG2", "BIG3"} {
		e.cfg.Spec.Process.Env = append(e.cfg.Spec.Process.Env, k+"="+val)
	}
	out := e.mustRun(t)
	for _, k := range []string{"BIG1", "BIG2", "BIG3"} {
		if !strings.Contains(out, "\n"+k+"="+val+"\n") {
			t.Errorf("%s missing from the workload's environment (output %d bytes)", k, len(out))
		}
	}
}

// Beyond what execve takes, nothing starts and the error says why.
func TestStart_RefusesOversizedExec(t *testing.T) {
	args := []string{"echo"}
	for i := 0; i < 30; i++ {
		args = append(args, strings.Repeat("a", 100<<10))
	}
	e := newEnv(t, args...)
	placed := false
	_, _, err := e.start(t, func(int) error { placed = true; return nil })
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "ARG_MAX") || placed {
		t.Errorf("3 MiB of arguments: err = %v, placed %v; want ErrInvalidArgument naming ARG_MAX before any start", err, placed)
	}
}

// BeforeExec runs once, after the child's set-up and before the workload
// runs; its error stops the start.
func TestStart_BeforeExecHook(t *testing.T) {
	e := newEnv(t, "echo", "ran")
	var calls []int
	var placed int
	out, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	proc, err := StartWith(e.config(), Stdio{Stdout: outW}, Hooks{
		Place: func(pid int) error { placed = pid; return nil },
		BeforeExec: func(pid int) error {
			// The child is set up (its root is the container's) and has
			// not exec'd: it is still the init.
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if strings.Contains(exe, "workload") {
				t.Errorf("BeforeExec ran after exec: exe %s", exe)
			}
			calls = append(calls, pid)
			return nil
		},
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out)
	if _, err := proc.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != placed || string(b) != "ran\n" {
		t.Errorf("BeforeExec calls %v (placed %d), output %q", calls, placed, b)
	}
	e.checkNoLeak(t)

	e = newEnv(t, "echo", "ran")
	_, err = StartWith(e.config(), Stdio{}, Hooks{BeforeExec: func(int) error { return errors.New("no limit for you") }})
	if err == nil || !strings.Contains(err.Error(), "no limit for you") {
		t.Errorf("failing BeforeExec: err = %v", err)
	}
	e.checkNoLeak(t)
}

// a file of the image carrying file capabilities (setcap
// cap_sys_admin+ei: inheritable, with the effective bit) gives the process
// that runs it nothing: its inheritable set is empty, no_new_privs ignores
// file capabilities, and the ambient set stays empty, as root and as
// another user. (With +eip the kernel refuses the exec, CAP_SYS_ADMIN
// being outside the bounding set.)
func TestStart_FileCapabilitiesGainNothing(t *testing.T) {
	const capSysAdmin = 21
	for _, user := range []string{"", "app"} {
		t.Run("user "+user, func(t *testing.T) {
			e := newEnv(t)
			e.layer(t, func(d string) error {
				bin, err := os.ReadFile(filepath.Join(e.lowers[len(e.lowers)-1], "workload"))
				if err != nil {
					return err
				}
				p := filepath.Join(d, "capbin")
				if err := os.WriteFile(p, bin, 0o755); err != nil {
					return err
				}
				// struct vfs_cap_data, revision 2, little-endian:
				// magic_etc (revision | effective), then permitted and
				// inheritable of the low and high 32 capabilities.
				xattr := make([]byte, 20)
				le := func(off int, v uint32) {
					xattr[off], xattr[off+1], xattr[off+2], xattr[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
				}
				le(0, 0x02000000|0x1)
				le(8, 1<<capSysAdmin) // inheritable
				return unix.Setxattr(p, "security.capability", xattr, 0)
			})
			e.cfg.Spec.Process.Args = []string{"/capbin", "cat", "/proc/self/status"}
			e.cfg.User = user
			st := e.mustRun(t)
			for _, key := range []string{"CapInh", "CapAmb"} {
				if got := statusField(t, st, key); got != "0000000000000000" {
					t.Errorf("%s = %s, want 0", key, got)
				}
			}
			for _, key := range []string{"CapEff", "CapPrm"} {
				v, err := strconv.ParseUint(statusField(t, st, key), 16, 64)
				if err != nil || v&(1<<capSysAdmin) != 0 {
					t.Errorf("%s = %x, %v: has CAP_SYS_ADMIN", key, v, err)
				}
			}
		})
	}
}
