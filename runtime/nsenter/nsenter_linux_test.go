package nsenter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/initproc"
	"github.com/tender-edge/tender/runtime/spec"
	"github.com/tender-edge/tender/test/rootfs"
)

// hostNetns is the test process's network namespace, read before any test.
var hostNetns string

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case initproc.Arg:
			initproc.Main()
		case initproc.ExecArg:
			initproc.ExecMain()
		}
	}
	var err error
	if hostNetns, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// fixture is the shared read-only lower layer: the workload binary,
// /etc/passwd and /etc/group, built once.
var fixture struct {
	once sync.Once
	dir  string
	base string
	err  error
}

func baseLayer(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "nsenter-test-")
		if fixture.err != nil {
			return
		}
		base := filepath.Join(fixture.dir, "base")
		if fixture.err = rootfs.Build(base, map[string]string{"workload": "../../test/workload"}); fixture.err != nil {
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

// testContainer is a running container started with initproc.
type testContainer struct {
	pid   int
	start uint64
	spec  *specs.Spec
}

// startContainer runs the workload with args in new mount, pid, uts, ipc,
// net and cgroup namespaces, its loopback up, with place (if any) called
// on its init before it starts. It is killed at the end of the test.
func startContainer(t *testing.T, place func(pid int) error, args ...string) *testContainer {
	t.Helper()
	base := baseLayer(t)
	dir := t.TempDir()
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nosuid := []string{"nosuid", "noexec", "nodev"}
	mode := os.FileMode(0o666)
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: filepath.Join(dir, "root")},
		Hostname: "tender-test",
		Process: &specs.Process{
			Args: append([]string{"workload"}, args...),
			Env:  []string{"PATH=/usr/bin:/bin:/", "FROM_SPEC=1"},
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
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
			},
			Devices: []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3, FileMode: &mode}},
		},
	}
	cfg := &initproc.Config{
		Spec:    s,
		Seccomp: "default",
		RootMounts: []initproc.Mount{{Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + base,
			"upperdir=" + filepath.Join(dir, "upper"),
			"workdir=" + filepath.Join(dir, "work"),
		}}},
	}
	proc, err := initproc.Start(cfg, initproc.Stdio{}, func(pid int) error {
		if place != nil {
			if err := place(pid); err != nil {
				return err
			}
		}
		return nil // initproc brings lo up itself
	})
	if err != nil {
		t.Fatalf("start container: %v", err)
	}
	t.Cleanup(func() {
		_ = proc.Kill()
		_, _ = proc.Wait()
	})
	start, err := StartTime(proc.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return &testContainer{pid: proc.Pid, start: start, spec: s}
}

// freePort is a TCP port nothing on the host listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitDial dials until the container's server accepts, for up to 10s.
func waitDial(t *testing.T, c *testContainer, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := Dial(context.Background(), c.pid, c.start, "tcp", addr)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v", addr, err)
		}
		runtime.Gosched()
	}
}

func TestDial_ReachesContainerLoopback(t *testing.T) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := startContainer(t, nil, "serve", addr)
	conn := waitDial(t, c, addr)
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello from tender-test\n" {
		t.Errorf("response %d %q, want 200 from tender-test", resp.StatusCode, body)
	}
	// The same address on the host reaches nothing.
	if hc, err := net.Dial("tcp", addr); err == nil {
		hc.Close()
		t.Errorf("host dial of %s succeeded; the server should be in the container only", addr)
	}
	// "localhost" means the container's loopback too.
	lc, err := Dial(context.Background(), c.pid, c.start, "tcp", "localhost:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("dial localhost: %v", err)
	}
	lc.Close()
	// A closed port is refused, not hung.
	if _, err := Dial(context.Background(), c.pid, c.start, "tcp", "127.0.0.1:1"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("dial closed port: %v, want ECONNREFUSED", err)
	}
	// Concurrent dials, each on its own locked thread.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), c.pid, c.start, "tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent dial: %v", err)
	}
	checkThreadsInHostNetns(t)
}

// checkThreadsInHostNetns fails if any thread of this process is not in
// the process's network namespace (a Dial that did not go back).
func checkThreadsInHostNetns(t *testing.T) {
	t.Helper()
	host := hostNetns
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // thread gone
		}
		if ns != host {
			t.Errorf("thread %s is in %s, not %s", task.Name(), ns, host)
		}
		// No thread is left with its children going into a container's
		// pid namespace (StartExec).
		pidNS, err1 := os.Readlink("/proc/self/task/" + task.Name() + "/ns/pid")
		forChildren, err2 := os.Readlink("/proc/self/task/" + task.Name() + "/ns/pid_for_children")
		if err1 == nil && err2 == nil && pidNS != forChildren {
			t.Errorf("thread %s: pid_for_children %s, pid %s", task.Name(), forChildren, pidNS)
		}
	}
}

func TestDial_RefusesReusedPid(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	self := os.Getpid()
	start, err := StartTime(self)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), self, start+1, "tcp", "127.0.0.1:1")
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("dial with a wrong start time: %v, want ErrNotRunning", err)
	}
	_, err = Dial(context.Background(), self, 0, "tcp", "127.0.0.1:1")
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("dial without a start time: %v, want ErrInvalidArgument", err)
	}
	_, err = Dial(context.Background(), self, start, "tcp", "example.com:80")
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("dial of a host name: %v, want ErrInvalidArgument", err)
	}
	_, _, err = Exec(context.Background(), ExecOptions{Pid: self, PidStart: start + 1, Args: []string{"x"}, Process: &specs.Process{}})
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec with a wrong start time: %v, want ErrNotRunning", err)
	}
}

func TestStartTime(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	a, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 || b < a {
		t.Errorf("start times: self %d, child %d", a, b)
	}
	if _, err := StartTime(-1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("StartTime(-1): %v", err)
	}
}
