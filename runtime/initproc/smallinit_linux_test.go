package initproc

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// requireSmallInit is set by make test (TENDER_REQUIRE_SMALL_INIT=1), which
// builds the tests with the small init as it builds the agent: there,
// containers must run the small init, not the test binary.
var requireSmallInit = os.Getenv("TENDER_REQUIRE_SMALL_INIT") == "1"

// expectedInit is the sha256 of what a container's init must run: the
// small init when this binary embeds one, else this very binary.
func expectedInit(t *testing.T) [32]byte {
	t.Helper()
	if requireSmallInit && !hasSmallInit() {
		t.Fatal("TENDER_REQUIRE_SMALL_INIT=1 but this binary embeds no small init (build with -tags tender_small_init after runtime/initproc/initbin/mkblob.sh)")
	}
	if !hasSmallInit() {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		return fileHash(t, self)
	}
	var want [32]byte
	b, err := hex.DecodeString(smallInitSum(t))
	if err != nil || len(b) != 32 {
		t.Fatalf("embedded init checksum %q: %v", smallInitSum(t), err)
	}
	copy(want[:], b)
	return want
}

// R-01 (CVE-2019-5736): a process holding the init's executable (as a
// container process can through /proc/<init>/exe while the init runs)
// cannot write to it once the init has exec'd the workload and the
// executable is no longer busy; the init is the small init when this binary
// embeds one, and neither it nor this binary changes.
func TestStart_InitExeNotWritable(t *testing.T) {
	e := newEnv(t, "sleep", "30")
	want := expectedInit(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	selfBefore := fileHash(t, self)
	held := -1
	proc, wait, err := e.start(t, func(pid int) error {
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		if got := fileHash(t, exe); got != want {
			return fmt.Errorf("init runs %s with sha256 %x, want %x (small init: %v)", readlink(exe), got, want, hasSmallInit())
		}
		fd, err := unix.Open(exe, unix.O_PATH|unix.O_CLOEXEC, 0)
		held = fd
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	// The init has exec'd the workload: its old executable is not busy
	// any more (no ETXTBSY); only the read-only mount or the seals stop
	// a write.
	if exe := readlink(fmt.Sprintf("/proc/%d/exe", proc.Pid)); exe != "/workload" {
		t.Fatalf("workload exe = %q", exe)
	}
	// It is on a read-only mount, or a sealed memfd.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(held, &sfs); err != nil {
		t.Fatal(err)
	}
	if exe := readlink(fmt.Sprintf("/proc/self/fd/%d", held)); sfs.Flags&unix.ST_RDONLY == 0 && !strings.HasPrefix(exe, "/memfd:") {
		t.Errorf("init executable %s is on a writable mount", exe)
	}
	w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", held), os.O_WRONLY, 0)
	if err == nil {
		_, err = w.Write([]byte("pwned"))
		w.Close()
	}
	if err == nil {
		t.Error("wrote to the container init's executable")
	} else if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EPERM) && (hasSmallInit() || !errors.Is(err, unix.ETXTBSY)) {
		// Without a small init the init is this binary, which runs
		// (ETXTBSY) besides being on the read-only mount.
		t.Errorf("write to the init's executable: %v, want EROFS (read-only mount) or EPERM (sealed memfd)", err)
	}
	if got := fileHash(t, fmt.Sprintf("/proc/self/fd/%d", held)); got != want {
		t.Errorf("init executable changed: sha256 %x, want %x", got, want)
	}
	if fileHash(t, self) != selfBefore {
		t.Error("own executable changed")
	}
	if hasSmallInit() {
		if p, err := smallInitPath(); err != nil || fileHash(t, p) != want {
			t.Errorf("small init file %s (%v) changed", p, err)
		}
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	wait()
}

// The init refuses a runtime that speaks another protocol (an init built
// from another tree), before it reads the config, with an error that says
// so.
func TestStart_ProtocolMismatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	expectedInit(t)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, args := range [][]string{{"tender-init", Arg, "0.0"}, {"tender-init", Arg}, {"tender-exec", ExecArg, "9." + ProtocolID()}} {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		parent, child := os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child")
		// No new namespaces: the init must stop before it does anything.
		proc, err := startInit(args, &os.ProcAttr{Env: []string{}, Files: []*os.File{null, null, null, child}})
		child.Close()
		if err != nil {
			t.Fatal(err)
		}
		// No config follows: an init that went on would fail reading
		// it, with another error.
		if err := unix.Shutdown(int(parent.Fd()), unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		msg, err := readAll(int(parent.Fd()))
		parent.Close()
		st, werr := proc.Wait()
		if werr != nil {
			t.Fatal(werr)
		}
		if err != nil || st.ExitCode() != 1 || !strings.Contains(string(msg), "built from another source tree") {
			t.Errorf("%q: exit %d, message %q (%v), want exit 1 and the protocol error", args, st.ExitCode(), msg, err)
		}
	}
}

func readlink(p string) string {
	s, err := os.Readlink(p)
	if err != nil {
		return err.Error()
	}
	return s
}
