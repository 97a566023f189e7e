package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a helper child (see TestMain).
const childEnv = "TENDER_CGROUPS_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "alloc":
		// Wait until the parent has moved us, then touch memory until
		// the OOM killer stops us.
		_, _ = io.ReadFull(os.Stdin, make([]byte, 1))
		var keep [][]byte
		for i := 0; i < 64; i++ {
			b := make([]byte, 4<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println(len(keep))
		os.Exit(0)
	case "open":
		_, _ = io.ReadFull(os.Stdin, make([]byte, 1))
		for _, p := range strings.Fields(os.Getenv("TENDER_CGROUPS_TEST_OPEN")) {
			f, err := os.Open(p)
			if err != nil {
				fmt.Printf("%s denied\n", p)
				continue
			}
			f.Close()
			fmt.Printf("%s ok\n", p)
		}
		os.Exit(0)
	}
}

// needV1 skips unless the test runs as root on a v1 (or hybrid) host.
func needV1(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if Detect() != V1 {
		t.Skip("needs a cgroup v1 host")
	}
}

// testPath returns a unique cgroup path whose cgroup is killed and
// deleted when the test ends, whatever happened.
func testPath(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	p := "/tender-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		c, err := Load(p)
		if errdefs.IsNotFound(err) {
			return
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if err := c.Kill(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// v1Dirs lists the v1 hierarchies mounted under /sys/fs/cgroup.
func v1Dirs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(mountpoint)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		d := filepath.Join(mountpoint, e.Name())
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
			out = append(out, d)
		}
	}
	return out
}

// start runs cmd with a stdin pipe, reaps it in the background and returns
// the channel that receives its wait error.
func start(t *testing.T, cmd *exec.Cmd) (io.WriteCloser, <-chan error) {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			t.Errorf("child %d not reaped after SIGKILL:\n%s", cmd.Process.Pid, b)
		}
	})
	return in, done
}

func wantKilled(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("child ended with %v, want SIGKILL", err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("child ended with %v, want SIGKILL", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child still running after 30s")
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	return readTrim(t, p)
}

func TestCreate_V1WritesKernelVisibleLimits(t *testing.T) {
	needV1(t)
	path := testPath(t)
	res := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(32 << 20)},
		CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0"},
		Pids:   &specs.LinuxPids{Limit: i64(64)},
		Devices: []specs.LinuxDeviceCgroup{
			dev(true, "c", i64(1), i64(3), "rwm"),
			dev(true, "c", i64(1), i64(5), "rwm"),
			dev(true, "c", i64(136), nil, "rw"),
		},
	}
	c, err := Create(path, res)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != path || c.Mode() != V1 {
		t.Errorf("path %q mode %v", c.Path(), c.Mode())
	}
	for file, want := range map[string]string{
		"memory/memory.limit_in_bytes": "33554432",
		"memory/memory.swappiness":     "0",
		"cpu/cpu.cfs_quota_us":         "50000",
		"cpu/cpu.cfs_period_us":        "100000",
		"cpu/cpu.shares":               "512",
		"pids/pids.max":                "64",
		"cpuset/cpuset.cpus":           "0",
		"cpuset/cpuset.mems":           read(t, "/sys/fs/cgroup/cpuset/cpuset.mems"),
		"devices/devices.list":         "c 1:3 rwm\nc 1:5 rwm\nc 136:* rw",
	} {
		ctrl, name, _ := strings.Cut(file, "/")
		if got := read(t, filepath.Join(mountpoint, ctrl, path, name)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if memsw := filepath.Join(mountpoint, "memory", path, "memory.memsw.limit_in_bytes"); fileExists(memsw) {
		if got := read(t, memsw); got != "33554432" {
			t.Errorf("memsw limit = %q, want the memory limit (swap off)", got)
		}
	}
	// A directory in every hierarchy joined (a cpuset was asked for),
	// none in the others nor in the hybrid cgroup2 mount.
	dirs := c.Dirs()
	for _, h := range v1Dirs(t) {
		name := filepath.Base(h)
		want := slices.Contains(append(joinedNames, "cpuset"), name)
		if fileExists(filepath.Join(h, path)) != want {
			t.Errorf("cgroup in %s: %v, want %v", h, !want, want)
		}
		if want && dirs[name] != filepath.Join(h, path) {
			t.Errorf("Dirs()[%s] = %q", name, dirs[name])
		}
	}
	if fileExists(filepath.Join(mountpoint, "unified", path)) {
		t.Error("cgroup made in the hybrid cgroup2 mount")
	}
}

// joinedNames are the v1 hierarchies every container joins (joinedV1);
// cpuset only with a cpuset asked for.
var joinedNames = []string{"memory", "cpu", "cpuacct", "pids", "devices", "freezer", "systemd"}

// A container is in exactly the hierarchies it needs: its process's
// /proc/<pid>/cgroup names its cgroup in memory, cpu, cpuacct, pids,
// devices, freezer and name=systemd, and leaves it where it was in the
// others (cpuset without a cpuset asked for, blkio, ...): each one joined
// is a write at start that waits on the kernel.
func TestCreate_V1JoinsOnlyTheHierarchiesInUse(t *testing.T) {
	needV1(t)
	path := testPath(t)
	c, err := Create(path, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20)},
		CPU:    &specs.LinuxCPU{Quota: i64(50000), Period: u64(100000)},
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	_, done := start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	mine := procCgroups(t, os.Getpid())
	got := procCgroups(t, cmd.Process.Pid)
	var hosts []string
	for _, h := range v1Dirs(t) {
		hosts = append(hosts, filepath.Base(h))
	}
	for _, name := range hosts {
		if slices.Contains(joinedNames, name) {
			if got[name] != path {
				t.Errorf("%s: in %q, want %q", name, got[name], path)
			}
		} else if got[name] != mine[name] {
			t.Errorf("%s: in %q, want the parent's %q (not joined)", name, got[name], mine[name])
		}
	}
	if len(c.Dirs()) != len(slices.DeleteFunc(slices.Clone(hosts), func(n string) bool { return !slices.Contains(joinedNames, n) })) {
		t.Errorf("Dirs() = %v, want one per joined hierarchy of %v", c.Dirs(), hosts)
	}
	// A cpuset cannot come later: said, not silently dropped.
	if err := c.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0"}}); !errdefs.IsNotImplemented(err) {
		t.Errorf("Update with a cpuset: %v, want ErrNotImplemented", err)
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	wantKilled(t, done)
}

// procCgroups reads /proc/<pid>/cgroup as v1 hierarchy name to path
// ("name=systemd" as "systemd"; co-mounted controllers each).
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || f[1] == "" {
			continue
		}
		for _, name := range strings.Split(f[1], ",") {
			m[strings.TrimPrefix(name, "name=")] = f[2]
		}
	}
	return m
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestCreate_V1CpusetInheritsParentWhenUnset(t *testing.T) {
	needV1(t)
	path := testPath(t) + "/nested"
	// Only mems asked for: cpus comes from the parent.
	mems := read(t, filepath.Join(mountpoint, "cpuset", "cpuset.mems"))
	c, err := Create(path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20)}, CPU: &specs.LinuxCPU{Mems: mems}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete() })
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		want := read(t, filepath.Join(mountpoint, "cpuset", f))
		if got := read(t, filepath.Join(mountpoint, "cpuset", path, f)); got != want {
			t.Errorf("%s = %q, want the root's %q", f, got, want)
		}
	}
	// The cpuset hierarchy accepts a task only with both set.
	cmd := exec.Command("sleep", "1000")
	start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if pids, err := readProcs(c.Dirs()["cpuset"]); err != nil || !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("cpuset cgroup.procs = %v, %v", pids, err)
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
}

func TestCgroup_V1AddProcsStatsKillDelete(t *testing.T) {
	needV1(t)
	path := testPath(t)
	c, err := Create(path, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20)},
		Pids:   &specs.LinuxPids{Limit: i64(32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// sh waits for a line, so that the sleeps it forks start inside.
	cmd := exec.Command("sh", "-c", "read x; sleep 1000 & sleep 1000 & exec sleep 1000")
	in, done := start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	for name, dir := range c.Dirs() {
		pids, err := readProcs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pids, cmd.Process.Pid) {
			t.Errorf("%s cgroup.procs = %v, want pid %d", name, pids, cmd.Process.Pid)
		}
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	var pids []int
	if err := poll(10*time.Second, func() (bool, error) {
		pids, err = c.Procs()
		return len(pids) == 3, err
	}); err != nil {
		t.Fatalf("procs %v: %v", pids, err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids != 3 || st.PidsLimit != 32 || st.MemoryLimit != 64<<20 || st.MemoryUsage == 0 || st.OOMKills != 0 {
		t.Errorf("stats = %+v", st)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if lp, _ := l.Procs(); !slices.Equal(lp, pids) {
		t.Errorf("loaded cgroup procs %v, want %v", lp, pids)
	}
	if err := c.Delete(); err == nil {
		t.Error("Delete of a cgroup with processes succeeded")
	}
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	if left, err := c.Procs(); err != nil || len(left) != 0 {
		t.Fatalf("after Kill procs = %v, %v", left, err)
	}
	wantKilled(t, done)
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, h := range v1Dirs(t) {
		if fileExists(filepath.Join(h, path)) {
			t.Errorf("%s still has the cgroup", h)
		}
	}
	if err := c.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := Load(path); !errdefs.IsNotFound(err) {
		t.Errorf("Load after Delete: %v, want ErrNotFound", err)
	}
	if err := c.Kill(); err != nil {
		t.Errorf("Kill of a deleted cgroup: %v", err)
	}
}

func TestCgroup_V1OOMKill(t *testing.T) {
	needV1(t)
	path := testPath(t)
	c, err := Create(path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(16 << 20)}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=alloc")
	in, done := start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	wantKilled(t, done)
	n, err := c.OOMKills()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("OOMKills() = 0 after an OOM kill")
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OOMKills != n || st.MemoryMaxUsage < 8<<20 {
		t.Errorf("stats = %+v", st)
	}
}

// TestCreateV2_DeviceFilterOnHybridMount attaches containerd's BPF device
// filter (pure Go, no cgo) to a group in the hybrid cgroup2 mount, where
// the kernel enforces it like on a v2 host.
func TestCreateV2_DeviceFilterOnHybridMount(t *testing.T) {
	needV1(t)
	root := filepath.Join(mountpoint, "unified")
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skip("no hybrid cgroup2 mount")
	}
	path := testPath(t) // cleans the v1 side only; the v2 group is deleted below
	c, err := createV2(root, path, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		dev(true, "c", i64(1), i64(3), "rwm"), // /dev/null
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Kill(); err != nil {
			t.Error(err)
		}
		if err := c.Delete(); err != nil {
			t.Error(err)
		}
	})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=open", "TENDER_CGROUPS_TEST_OPEN=/dev/null /dev/zero")
	var out strings.Builder
	cmd.Stdout = &out
	in, done := start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "/dev/null ok\n/dev/zero denied\n"; got != want {
		t.Errorf("child printed %q, want %q", got, want)
	}
}

// A pids limit written after Create (right before a workload execs) lands
// in pids.max of the v1 pids hierarchy and is in force for new processes.
func TestUpdate_PidsLimitV1(t *testing.T) {
	needV1(t)
	path := testPath(t)
	atCreate, atExec := SplitExec(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(2)}})
	c, err := Create(path, atCreate)
	if err != nil {
		t.Fatal(err)
	}
	pidsMax := filepath.Join(c.Dirs()["pids"], "pids.max")
	if got := strings.TrimSpace(string(must(os.ReadFile(pidsMax)))); got != "max" {
		t.Fatalf("pids.max after Create = %q, want max (the limit waits for exec)", got)
	}
	if err := c.Update(atExec); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(must(os.ReadFile(pidsMax)))); got != "2" {
		t.Errorf("pids.max after Update = %q, want 2", got)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
