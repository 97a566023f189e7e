package initproc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// v2Group makes a cgroup v2 group for the test (in the hybrid host's
// cgroup2 mount, or on a v2 host its hierarchy) and opens it as
// Hooks.Cgroup wants it, or skips. It returns the file and the group's
// path as /proc/<pid>/cgroup names it.
func v2Group(t *testing.T) (*os.File, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	var root string
	for _, d := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(d, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = d
			break
		}
	}
	if root == "" {
		t.Skip("no cgroup2 mount")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "/tender-initproc-test-" + hex.EncodeToString(b)
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if err := unix.Rmdir(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return f, name
}

// v2CgroupOf reads the cgroup v2 path of pid ("0::" in /proc/<pid>/cgroup).
func v2CgroupOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// runInGroup starts echo with hooks that record whether Join ran and
// where the init was when Place ran (before it reads its config), and
// waits for it.
func runInGroup(t *testing.T, f *os.File, join func(pid int) error) (joined bool, placedIn string) {
	t.Helper()
	e := newEnv(t, "echo", "ran")
	out, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	proc, err := StartWith(e.config(), Stdio{Stdout: outW}, Hooks{
		Cgroup: f,
		Join: func(pid int) error {
			joined = true
			return join(pid)
		},
		Place: func(pid int) error {
			placedIn = v2CgroupOf(pid)
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
	if string(b) != "ran\n" {
		t.Errorf("output %q", b)
	}
	e.checkNoLeak(t)
	return joined, placedIn
}

// With Hooks.Cgroup the init is born in its cgroup (CLONE_INTO_CGROUP):
// it is there before its set-up starts, and no Join moves it.
func TestStart_IntoCgroup(t *testing.T) {
	if os.Getenv(noClone3Env) != "" {
		testIntoCgroupRefused(t)
		return
	}
	f, name := v2Group(t)
	joined, in := runInGroup(t, f, func(int) error { return errors.New("Join called") })
	if err := IntoCgroupRefused(); err != nil {
		t.Skipf("this kernel refuses CLONE_INTO_CGROUP: %v", err)
	}
	if joined || in != name {
		t.Errorf("joined %v, init in %q before its set-up; want not joined, in %q", joined, in, name)
	}
}

// noClone3Env makes TestStart_IntoCgroup the child of
// TestStart_IntoCgroupRefused, under a seccomp filter that answers clone3
// with ENOSYS.
const noClone3Env = "TENDER_INITPROC_TEST_NO_CLONE3"

// Where clone3 is refused (ENOSYS: a container runtime's seccomp profile
// around the agent, or a kernel before 5.3) the init starts in the
// agent's cgroup and Join moves it; the refusal is remembered, and the
// next start goes straight to Join. Run in a child of the test binary
// under a seccomp filter, so that the kernel itself refuses.
func TestStart_IntoCgroupRefused(t *testing.T) {
	if os.Getenv(noClone3Env) != "" {
		t.Skip("child")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStart_IntoCgroup$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), noClone3Env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "refused twice: joined") {
		t.Errorf("child did not get to the end:\n%s", out)
	}
}

func testIntoCgroupRefused(t *testing.T) {
	f, name := v2Group(t)
	denyClone3(t)
	join := func(pid int) error {
		return os.WriteFile(filepath.Join("/proc/self/fd", strconv.Itoa(int(f.Fd())), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	}
	for i := range 2 {
		joined, in := runInGroup(t, f, join)
		if !joined || in != name {
			t.Fatalf("start %d: joined %v, init in %q before its set-up; want joined, in %q", i, joined, in, name)
		}
		if err := IntoCgroupRefused(); !errors.Is(err, unix.ENOSYS) {
			t.Fatalf("start %d: IntoCgroupRefused() = %v, want ENOSYS", i, err)
		}
	}
	t.Log("refused twice: joined")
}

// denyClone3 makes clone3 fail with ENOSYS in every thread of this
// process, as Docker's and Podman's default seccomp profiles do.
func denyClone3(t *testing.T) {
	t.Helper()
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_CLONE3},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		t.Fatalf("seccomp: %v", errno)
	}
}
