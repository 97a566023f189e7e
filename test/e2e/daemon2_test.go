package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

func TestDaemon_UpdateLock(t *testing.T) {
	d := newDaemon(t, fastPolicy)
	d.ok("load", testImage)
	d.apply(webApp("1", false))
	d.waitPhase("web", "running", "1", 30*time.Second)
	// The app holds its update lock: its container creates the file web in
	// the directory it sees at /run/tender/lock.
	lock := filepath.Join(d.root, "locks", "web", "web")
	ctrs := d.running("web.")
	if len(ctrs) != 1 {
		t.Fatalf("running: %+v", ctrs)
	}
	d.ok("exec", ctrs[0].Name, "/workload", "write", "/run/tender/lock/web", "busy")
	if b, err := os.ReadFile(lock); err != nil || string(b) != "busy" {
		t.Fatalf("the lock written in the container is not the agent's lock file: %q, %v", b, err)
	}
	d.apply(webApp("2", false))
	waitFor(t, "the update to be deferred", 20*time.Second, func() bool { return d.app("web").Phase == "update-deferred" })
	if st := d.app("web"); st.Version != "1" {
		t.Fatalf("deferred update changed the running version: %+v", st)
	}
	os.Remove(lock)
	d.waitPhase("web", "running", "2", 30*time.Second)

	// updateOverride proceeds despite the lock.
	os.WriteFile(lock, []byte("busy"), 0o644)
	d.apply(strings.Replace(webApp("3", false), "rollout:", "updateOverride: true\nrollout:", 1))
	d.waitPhase("web", "running", "3", 30*time.Second)
}

func TestDaemon_SystemdNotify(t *testing.T) {
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := t.TempDir()
	cmd := exec.Command(agentBin, "--root", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "agent.sock"), "daemon", "--config", os.DevNull)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "WATCHDOG_USEC=200000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	got := map[string]bool{}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for !got["READY=1"] || !got["WATCHDOG=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notifications so far %v: %v", got, err)
		}
		got[string(buf[:n])] = true
	}
}

func TestRun_DevicePassthrough(t *testing.T) {
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skip("no /dev/kmsg on this host")
	}
	// Writes to /dev/kmsg are rate-limited by default (ten per five
	// seconds): lift the limit for this test so none is dropped.
	const knob = "/proc/sys/kernel/printk_devkmsg"
	if old, err := os.ReadFile(knob); err == nil {
		if err := os.WriteFile(knob, []byte("on"), 0o644); err == nil {
			t.Cleanup(func() { os.WriteFile(knob, old, 0o644) })
		}
	}
	token := fmt.Sprintf("tender-test-%d", time.Now().UnixNano())
	// Without --device the container's /dev has no such node: the write
	// makes a plain file in its private /dev and never reaches the kernel.
	// (A record without a newline would wait in the kernel for the next.)
	agent(t, "run", "--rm", image, "write", "/dev/kmsg", token+"-without\n")
	ok(t, "run", "--rm", "--device", "/dev/kmsg", image, "write", "/dev/kmsg", token+"-with\n")
	log := kernelLog(t)
	if !strings.Contains(log, token+"-with") {
		t.Errorf("the passed-through device's write is not in the kernel log")
	}
	if strings.Contains(log, token+"-without") {
		t.Errorf("a container without --device wrote to the host's /dev/kmsg")
	}
}

// kernelLog reads the kernel's log buffer without blocking.
func kernelLog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var sb strings.Builder
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EPIPE || err == syscall.EINTR { // a record was overwritten, or a signal: go on
			continue
		}
		if err != nil || n <= 0 {
			return sb.String()
		}
		sb.Write(buf[:n])
	}
}

func TestDaemon_ImageBudget(t *testing.T) {
	d := newDaemon(t, fastPolicy+"store: {maxBytes: 1Mi}\n")
	d.ok("load", testImage)
	// A second, unused image.
	other, err := ociarchive.Single("tender.test/other:1", ociarchive.Image{
		Arch: goruntime.GOARCH, Config: ocispec.ImageConfig{Cmd: []string{"/x"}},
		Layers: []ociarchive.Layer{{{Path: "x", Mode: 0o755, Data: bytes.Repeat([]byte("x"), 64<<10)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.tar")
	os.WriteFile(p, other, 0o644)
	d.ok("load", p)
	d.apply(webApp("1", false))
	d.waitPhase("web", "running", "1", 30*time.Second)
	// The budget is enforced at start and after pulls: restart the agent.
	d.kill()
	d.start()
	waitFor(t, "the unused image to be removed", 20*time.Second, func() bool {
		return !strings.Contains(d.ok("images"), "tender.test/other")
	})
	if out := d.ok("images"); !strings.Contains(out, "tender.test/workload") {
		t.Fatalf("the image in use was removed to fit the budget:\n%s", out)
	}
	if st := d.app("web"); st.Phase != "running" {
		t.Fatalf("app disturbed: %+v", st)
	}
}

func TestDaemon_SecondOneRefused(t *testing.T) {
	d := newDaemon(t, fastPolicy)
	r := d.cli("daemon", "--config", d.config)
	if r.code == 0 || !strings.Contains(r.stderr, "locked by another process") {
		t.Fatalf("a second daemon on the same state: %s", r)
	}
	if d.cli("apps").code != 0 {
		t.Fatalf("the first daemon was disturbed")
	}
}

// the state directory and the API socket are root's alone, and the
// socket is a path, not an abstract name.
func TestDaemon_StateAndSocketPermissions(t *testing.T) {
	d := newDaemon(t, fastPolicy)
	for path, want := range map[string]os.FileMode{
		d.root:                              0o700,
		filepath.Join(d.root, "agent.db"):   0o600,
		d.socket:                            0o600 | os.ModeSocket,
		filepath.Join(d.root, "images"):     0o700,
		filepath.Join(d.root, "containers"): 0o700,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode() & (os.ModePerm | os.ModeSocket); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 {
			t.Errorf("%s: owned by uid %d", path, sys.Uid)
		}
	}
	unix, _ := os.ReadFile("/proc/net/unix")
	if !strings.Contains(string(unix), d.socket) {
		t.Errorf("the API socket is not listed by its path in /proc/net/unix")
	}
}
