package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
	"github.com/tender-edge/tender/runtime/initproc"
	"github.com/tender-edge/tender/runtime/spec"
	"github.com/tender-edge/tender/test/rootfs"
)

// envDial makes the test binary a client of the monitor socket it names:
// it sends a start request and prints the reply (see
// TestMonitor_RefusesNonRoot).
const envDial = "TENDER_TEST_MONITOR_DIAL"

// The test binary is also the container's init and the monitor (both
// re-execute os.Executable).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case initproc.Arg:
			initproc.Main()
		case initproc.ExecArg:
			initproc.ExecMain()
		case MonitorArg:
			os.Exit(MonitorMain(os.Args[2:]))
		}
	}
	if sock := os.Getenv(envDial); sock != "" {
		os.Exit(dialAndPrint(sock))
	}
	// Idle monitors of the tests' roots go soon after them.
	os.Setenv(EnvMonitorLinger, "200ms")
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

func dialAndPrint(sock string) int {
	conn, err := dialUnix(sock)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer conn.Close()
	b, _ := json.Marshal(monitorRequest{V: MonitorProtocol, ID: "nothing"})
	// A refusal may come before the request is even written.
	_, _ = conn.Write(append(b, '\n'))
	reply, _ := io.ReadAll(conn)
	fmt.Print(string(reply))
	return 0
}

// fixture is the containers' lower layer: /workload (test/workload) and
// /etc, built once.
var fixture struct {
	once sync.Once
	dir  string
	err  error
}

// liveRuntime is a Runtime whose containers really run, in cgroups of
// their own test parent.
func liveRuntime(t *testing.T) *Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "container-test-")
		if fixture.err == nil {
			fixture.err = rootfs.Build(fixture.dir, map[string]string{"workload": "../../test/workload"})
		}
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	// A short root: the socket path must fit a sockaddr_un.
	root, err := os.MkdirTemp("", "mon")
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(root, images{dir: fixture.dir}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	r.CgroupParent = "/tender-test"
	t.Cleanup(func() {
		cs, _ := r.List()
		for _, c := range cs {
			if err := r.Delete(c.ID, true); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		os.RemoveAll(root)
	})
	return r
}

func createRun(t *testing.T, r *Runtime, name string, args ...string) *Container {
	t.Helper()
	c, err := r.Create(context.Background(), CreateOptions{Name: name, Image: "test:latest", Options: spec.Options{Args: args}, StopGrace: 5 * time.Second})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return c
}

func startDetached(t *testing.T, r *Runtime, name string, args ...string) *Container {
	t.Helper()
	c, err := r.StartDetached(createRun(t, r, name, args...).ID)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if c.State.Status != Running {
		t.Fatalf("%s after start: %+v", name, c.State)
	}
	return c
}

func ppid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	n, _ := strconv.Atoi(f[1])
	return n
}

// waitFor polls cond; the bound only keeps a broken build from hanging.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 6000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within a minute", what)
}

// One monitor is the parent of all of a root's containers, however many
// callers start them at once, and records each exit.
func TestMonitor_OneForAllContainers(t *testing.T) {
	r := liveRuntime(t)
	var wg sync.WaitGroup
	cs := make([]*Container, 4)
	errs := make([]error, len(cs))
	for i := range cs {
		c := createRun(t, r, fmt.Sprintf("c%d", i), "sleep", "1000")
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs[i], errs[i] = r.StartDetached(c.ID)
		}()
	}
	wg.Wait()
	mon := 0
	for i, c := range cs {
		if errs[i] != nil {
			t.Fatalf("start c%d: %v", i, errs[i])
		}
		if mon == 0 {
			mon = c.State.MonitorPid
		}
		if c.State.MonitorPid != mon || ppid(t, c.State.Pid) != mon {
			t.Errorf("c%d: monitor %d, parent %d; want both %d", i, c.State.MonitorPid, ppid(t, c.State.Pid), mon)
		}
	}
	if mon == os.Getpid() || mon == 0 {
		t.Fatalf("monitor pid %d", mon)
	}
	if err := r.Kill("c1", unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c1 recorded", func() bool {
		c, err := r.Get("c1")
		return err == nil && c.State.Status == Exited
	})
	c1, _ := r.Get("c1")
	if c1.State.ExitCode != 137 || c1.State.Error != "" || c1.State.FinishedAt.IsZero() {
		t.Errorf("c1 killed: %+v; want exit 137 recorded with its time", c1.State)
	}
	if err := r.Stop("c2", time.Second); err != nil {
		t.Fatal(err)
	}
	// The workload's sleep ends with 0 on SIGTERM.
	if c2, _ := r.Get("c2"); c2.State.Status != Exited || c2.State.ExitCode != 0 || c2.State.FinishedAt.IsZero() {
		t.Errorf("c2 stopped: %+v; want exit 0 recorded", c2.State)
	}
	// The others run on, under the same monitor.
	for _, n := range []string{"c0", "c3"} {
		if c, _ := r.Get(n); c.State.Status != Running || !alive(mon, 0) {
			t.Errorf("%s: %+v", n, c.State)
		}
	}
}

// An attached start gets the output and the final record on its
// connection; the workload's exit code is kept.
func TestMonitor_AttachedRun(t *testing.T) {
	r := liveRuntime(t)
	c := createRun(t, r, "att", "echo", "hello")
	var out, errb bytes.Buffer
	tr := trace.New("cli")
	m, err := r.Start(trace.With(context.Background(), tr), c.ID, IO{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Wait()
	if err != nil || st.Status != Exited || st.ExitCode != 0 {
		t.Fatalf("wait: %+v, %v", st, err)
	}
	if got := out.String(); got != "hello\n" {
		t.Errorf("stdout %q, want hello", got)
	}
	seen := map[string]bool{}
	for _, p := range tr.Phases() {
		seen[p.Proc+" "+p.Name] = true
	}
	for _, p := range []string{"cli monitor-connect", "mon state-open", "mon exec-workload", "mon wait", "mon cleanup", "init config-read"} {
		if !seen[p] {
			t.Errorf("phase %q missing from %v", p, tr.Phases())
		}
	}
	c = createRun(t, r, "three", "exit", "3")
	m, err = r.Start(context.Background(), c.ID, IO{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := m.Wait(); err != nil || st.ExitCode != 3 {
		t.Errorf("exit 3: %+v, %v", st, err)
	}
	// A start that fails is the caller's error and is recorded.
	c = createRun(t, r, "bad", "sleep", "1")
	if err := os.Remove(filepath.Join(r.Dir(c), "rootfs")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(context.Background(), c.ID, IO{}); err == nil {
		t.Fatal("start without a rootfs mount point succeeded")
	}
	if c, _ := r.Get("bad"); c.State.Status != Exited || c.State.ExitCode != 125 {
		t.Errorf("failed start recorded as %+v; want exit 125", c.State)
	}
}

// A caller that goes away (its output pipe closed, its connection gone:
// a killed CLI) changes nothing: the container runs to its end and its
// exit is recorded; an AutoRemove one is removed.
func TestMonitor_CallerGone(t *testing.T) {
	r := liveRuntime(t)
	for _, rm := range []bool{false, true} {
		name := fmt.Sprintf("gone-%v", rm)
		c, err := r.Create(context.Background(), CreateOptions{Name: name, Image: "test:latest", AutoRemove: rm,
			Options: spec.Options{Args: []string{"ticks", "3"}}})
		if err != nil {
			t.Fatal(err)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.Start(context.Background(), c.ID, IO{Stdout: pw, Stderr: pw})
		pw.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pr.Read(make([]byte, 1)); err != nil {
			t.Fatalf("first byte: %v", err)
		}
		pr.Close()
		m.conn.Close()
		waitFor(t, name+" recorded", func() bool {
			c, err := r.Get(c.ID)
			if rm {
				return errdefs.IsNotFound(err)
			}
			return err == nil && c.State.Status == Exited
		})
		if !rm {
			c, _ := r.Get(c.ID)
			if c.State.ExitCode != 0 || c.State.FinishedAt.IsZero() {
				t.Errorf("%s: %+v; want exit 0 recorded", name, c.State)
			}
			b, err := os.ReadFile(filepath.Join(r.LogDir(c), "container.log"))
			if err != nil || strings.Count(string(b), " stdout ") < 3 {
				t.Errorf("%s: log after the caller went: %q, %v; want every tick", name, b, err)
			}
		}
	}
}

// A monitor killed with -9 leaves its containers running; when one ends,
// its exit is unknown and recorded so. The next start gets a new monitor.
func TestMonitor_KilledLeavesContainersRunning(t *testing.T) {
	r := liveRuntime(t)
	c := startDetached(t, r, "orphan", "sleep", "1000")
	mon := c.State.MonitorPid
	if err := unix.Kill(mon, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the monitor to die", func() bool { return !alive(mon, c.State.MonitorStart) })
	if cur, _ := r.Get(c.ID); cur.State.Status != Running || !alive(c.State.Pid, c.State.PidStart) {
		t.Fatalf("after its monitor was killed: %+v", cur.State)
	}
	d := startDetached(t, r, "next", "sleep", "1000")
	if d.State.MonitorPid == mon {
		t.Fatalf("the next start reports the dead monitor %d", mon)
	}
	if err := unix.Kill(c.State.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the orphan's end noticed", func() bool {
		cur, err := r.Get(c.ID)
		return err == nil && cur.State.Status == Exited
	})
	cur, _ := r.Get(c.ID)
	if cur.State.ExitCode != -1 || !strings.Contains(cur.State.Error, "monitor are gone") {
		t.Errorf("orphan's end: %+v; want exit -1 and why", cur.State)
	}
	if cur, _ := r.Get("next"); cur.State.Status != Running {
		t.Errorf("next: %+v", cur.State)
	}
}

// ask sends a request of protocol version v for id straight to the
// root's monitor and returns its refusal.
func ask(t *testing.T, r *Runtime, v int, id string) *reportedError {
	t.Helper()
	conn, err := dialUnix(filepath.Join(r.top, monitorSock))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := json.Marshal(monitorRequest{V: v, ID: id})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	_, err = readFirstReply(conn, nil)
	var re *reportedError
	if !errors.As(err, &re) {
		t.Fatalf("reply to version %d: %v", v, err)
	}
	return re
}

// handedOver checks that the monitor of old has made way for a new one,
// which starts the next container, while it watches old to its end and
// records it, and then exits.
func handedOver(t *testing.T, r *Runtime, old *Container) {
	t.Helper()
	mon, start := old.State.MonitorPid, old.State.MonitorStart
	d := startDetached(t, r, old.Name+"-next", "sleep", "1000")
	if d.State.MonitorPid == mon {
		t.Fatalf("the old monitor %d started the next container", mon)
	}
	if !alive(mon, start) {
		t.Fatal("the old monitor exited while its container ran")
	}
	if err := r.Stop(old.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c, _ := r.Get(old.ID); c.State.Status != Exited || c.State.ExitCode != 0 || c.State.Error != "" {
		t.Errorf("the old monitor's container: %+v; want its exit recorded", c.State)
	}
	waitFor(t, "the old monitor to exit", func() bool { return !alive(mon, start) })
	if c, _ := r.Get(d.ID); c.State.Status != Running {
		t.Errorf("the new monitor's container: %+v", c.State)
	}
}

// A request of another protocol version makes the monitor hand over to a
// new one (the caller's); it watches its own containers to their end.
func TestMonitor_ProtocolVersion(t *testing.T) {
	r := liveRuntime(t)
	c := startDetached(t, r, "v1", "sleep", "1000")
	re := ask(t, r, MonitorProtocol+1, "nothing")
	if !re.Retry || re.Version != MonitorProtocol || !strings.Contains(re.Msg, "speaks protocol version 1, the caller 2") {
		t.Errorf("reply to version 2: %+v", re)
	}
	handedOver(t, r, c)
}

// An upgrade replaces the binary on disk: the monitor running the old one
// hands over at the next start, and watches its containers to their end.
func TestMonitor_BinaryReplaced(t *testing.T) {
	r := liveRuntime(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "tender-agent")
	b, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	install := func() {
		if err := os.WriteFile(bin+".new", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin+".new", bin); err != nil {
			t.Fatal(err)
		}
	}
	install()
	monitorExe = bin
	defer func() { monitorExe = "" }()
	c := startDetached(t, r, "old", "sleep", "1000")
	if re := ask(t, r, MonitorProtocol, "nothing"); re.Retry || !strings.Contains(re.Msg, "no such container") {
		t.Fatalf("before the upgrade: %+v", re)
	}
	install()
	handedOver(t, r, c)
}

// Only root may ask: a caller of another uid that reaches the socket (it
// holds CAP_DAC_OVERRIDE here) is refused.
func TestMonitor_RefusesNonRoot(t *testing.T) {
	r := liveRuntime(t)
	conn, err := r.dialMonitor()
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// A copy of this binary that uid 65534 may run.
	dir, err := os.MkdirTemp("", "montest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envDial+"="+filepath.Join(r.top, monitorSock))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{unix.CAP_DAC_OVERRIDE},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid 65534: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534 may not start containers") {
		t.Errorf("reply to uid 65534: %s", out)
	}
}

// A descriptor the starter of the monitor leaked to it (no close-on-exec)
// is closed there: a pipe's reader sees its end although the monitor
// lives on.
func TestMonitor_ClosesInheritedDescriptors(t *testing.T) {
	r := liveRuntime(t)
	var p [2]int
	if err := unix.Pipe2(p[:], 0); err != nil { // inherited by every child
		t.Fatal(err)
	}
	rd := os.NewFile(uintptr(p[0]), "leak-r")
	defer rd.Close()
	// The monitor starts with this start, and the write end goes with it.
	c := startDetached(t, r, "leak", "sleep", "1000")
	unix.Close(p[1])
	if err := unix.SetNonblock(p[0], true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pipe's end", func() bool {
		_, err := unix.Read(p[0], make([]byte, 1))
		return err == nil // 0 bytes: EOF; EAGAIN while a writer is left
	})
	if !alive(c.State.MonitorPid, c.State.MonitorStart) {
		t.Fatal("the monitor is gone")
	}
}
