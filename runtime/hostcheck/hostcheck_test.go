package hostcheck

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixture is a fake host: files under a temporary root, written from a map
// of paths (relative to it) to contents, on top of a healthy v2 host.
type fixture struct {
	t     *testing.T
	dir   string
	files map[string]string
	host  Host
}

const (
	v2Mountinfo = `20 1 254:0 / / rw - ext4 /dev/vda rw
21 20 0:21 / /proc rw - proc proc rw
22 20 0:22 / /sys rw - sysfs sysfs rw
23 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`
	v1Mountinfo = `20 1 254:0 / / rw - ext4 /dev/vda rw
21 20 0:21 / /proc rw - proc proc rw
31 20 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 31 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
`
	procCgroups = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
memory	4	1	1
devices	5	1	1
pids	8	1	1
`
)

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), files: map[string]string{
		"proc/sys/kernel/osrelease":              "6.1.0-18-amd64\n",
		"proc/filesystems":                       "nodev\tproc\nnodev\ttmpfs\n\text4\nnodev\toverlay\n",
		"proc/self/mountinfo":                    v2Mountinfo,
		"proc/cgroups":                           procCgroups,
		"proc/self/status":                       "Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n",
		"proc/sys/kernel/seccomp/actions_avail":  "kill_process kill_thread trap errno user_notif trace log allow\n",
		"sys/fs/cgroup/cgroup.controllers":       "cpuset cpu io memory hugetlb pids rdma misc\n",
		"sys/fs/cgroup/cgroup.subtree_control":   "memory pids\n",
		"lib/modules/6.1.0-18-amd64/modules.dep": "",
	}}
	for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "user", "cgroup"} {
		f.files["proc/self/ns/"+ns] = ""
	}
	f.host = Host{
		Proc: filepath.Join(f.dir, "proc"), Sys: filepath.Join(f.dir, "sys"), Modules: filepath.Join(f.dir, "lib/modules"),
		StateDir: filepath.Join(f.dir, "var/lib/tender"), Now: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC),
		Statfs:            func(string, *unix.Statfs_t) error { return errors.New("set by the test") },
		ProbeDeviceFilter: func() error { return nil },
		ProbeNftables:     func() error { return nil },
		LockHeld:          func(string) (bool, error) { return false, os.ErrNotExist },
	}
	f.host.Statfs = statfsFake(8<<30, 100000)
	return f
}

// statfsFake is a filesystem of 4 KiB blocks with free bytes and inodes
// free inodes (of twice as many).
func statfsFake(free, inodes uint64) func(string, *unix.Statfs_t) error {
	return func(_ string, st *unix.Statfs_t) error {
		st.Bsize = 4096
		st.Bavail = free / 4096
		st.Files, st.Ffree = inodes*2, inodes
		return nil
	}
}

// run writes the files and runs the checks.
func (f *fixture) run() []Result {
	f.t.Helper()
	for p, s := range f.files {
		full := filepath.Join(f.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	return Run(f.host)
}

func find(t *testing.T, rs []Result, check string) Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no %q line in %+v", check, rs)
	return Result{}
}

// want checks one line's status and that its value and fix contain the
// given words.
func want(t *testing.T, rs []Result, check string, st Status, words ...string) {
	t.Helper()
	r := find(t, rs, check)
	if r.Status != st {
		t.Errorf("%s: %s (%s; %s), want %s", check, r.Status, r.Value, r.Fix, st)
	}
	for _, w := range words {
		if !strings.Contains(r.Value+" "+r.Fix, w) {
			t.Errorf("%s: %q / %q lacks %q", check, r.Value, r.Fix, w)
		}
	}
	if st != OK && r.Fix == "" && r.Value != "not probed" {
		t.Errorf("%s: %s without a fix", check, st)
	}
}

func TestRun_HealthyV2Host(t *testing.T) {
	rs := newFixture(t).run()
	for _, r := range rs {
		if r.Status != OK {
			t.Errorf("%s: %s %s %s", r.Check, r.Status, r.Value, r.Fix)
		}
	}
	if Failed(rs) {
		t.Error("Failed on a healthy host")
	}
	want(t, rs, "Cgroups", OK, "v2")
	want(t, rs, "Cgroup delegation", OK, "memory pids", "enables cpu cpuset")
}

func TestKernel(t *testing.T) {
	for rel, st := range map[string]Status{"6.1.0-18-amd64": OK, "5.3.0": OK, "5.2.21": Fail, "4.19.0-rt": Fail, "5.10-rc1": OK, "weird": Warn} {
		f := newFixture(t)
		f.files["proc/sys/kernel/osrelease"] = rel + "\n"
		want(t, f.run(), "Kernel version", st, rel)
	}
}

func TestNamespaces(t *testing.T) {
	f := newFixture(t)
	delete(f.files, "proc/self/ns/user")
	want(t, f.run(), "Namespaces", Warn, "user", "CONFIG_USER_NS")
	f = newFixture(t)
	delete(f.files, "proc/self/ns/pid")
	rs := f.run()
	want(t, rs, "Namespaces", Fail, "pid", "CONFIG_PID_NS")
	if !Failed(rs) {
		t.Error("a missing pid namespace does not fail the check")
	}
}

func TestOverlay(t *testing.T) {
	f := newFixture(t)
	f.files["proc/filesystems"] = "nodev\tproc\n\text4\n"
	f.files["lib/modules/6.1.0-18-amd64/kernel/fs/overlayfs/overlay.ko"] = ""
	want(t, f.run(), "Overlay filesystem", Warn, "modprobe overlay")
	f = newFixture(t)
	f.files["proc/filesystems"] = "nodev\tproc\n\text4\n"
	want(t, f.run(), "Overlay filesystem", Fail, "CONFIG_OVERLAY_FS")
}

func TestCgroups(t *testing.T) {
	t.Run("v2 without pids", func(t *testing.T) {
		f := newFixture(t)
		f.files["sys/fs/cgroup/cgroup.controllers"] = "cpuset cpu memory\n"
		want(t, f.run(), "Cgroup controllers", Fail, "missing pids")
	})
	t.Run("v2 without cpuset", func(t *testing.T) {
		f := newFixture(t)
		f.files["sys/fs/cgroup/cgroup.controllers"] = "cpu memory pids\n"
		want(t, f.run(), "Cgroup controllers", Warn, "cpuset")
	})
	t.Run("v2 device filter", func(t *testing.T) {
		f := newFixture(t)
		f.host.ProbeDeviceFilter = func() error { return unix.EINVAL }
		want(t, f.run(), "Device filter (eBPF)", Fail, "CONFIG_CGROUP_BPF")
	})
	t.Run("no nftables", func(t *testing.T) {
		f := newFixture(t)
		f.host.ProbeNftables = func() error { return unix.EPROTONOSUPPORT }
		want(t, f.run(), "Bridge network (nftables)", Warn, "apps with network: bridge will be refused")
	})
	t.Run("hybrid is v1", func(t *testing.T) {
		f := newFixture(t)
		f.files["proc/self/mountinfo"] = v1Mountinfo
		rs := f.run()
		want(t, rs, "Cgroups", OK, "v1 (hybrid")
		want(t, rs, "Cgroup controllers", OK, "cpuset cpu memory devices pids")
		want(t, rs, "Device cgroup", OK)
	})
	t.Run("v1 without devices", func(t *testing.T) {
		f := newFixture(t)
		f.files["proc/self/mountinfo"] = v1Mountinfo
		f.files["proc/cgroups"] = strings.Replace(procCgroups, "devices\t5\t1\t1", "devices\t5\t1\t0", 1)
		want(t, f.run(), "Device cgroup", Fail, "CONFIG_CGROUP_DEVICE")
	})
	t.Run("none", func(t *testing.T) {
		f := newFixture(t)
		f.files["proc/self/mountinfo"] = "20 1 254:0 / / rw - ext4 /dev/vda rw\n"
		want(t, f.run(), "Cgroups", Fail, "mount -t cgroup2")
	})
}

func TestSeccomp(t *testing.T) {
	f := newFixture(t)
	f.files["proc/self/status"] = "Name:\tx\n"
	want(t, f.run(), "Seccomp", Fail, "CONFIG_SECCOMP_FILTER")
	f = newFixture(t)
	f.files["proc/sys/kernel/seccomp/actions_avail"] = "kill_process trap allow\n"
	want(t, f.run(), "Seccomp", Fail, "errno")
}

func TestRootFilesystem(t *testing.T) {
	f := newFixture(t)
	f.files["proc/self/mountinfo"] = "1 1 0:2 / / rw - rootfs rootfs rw\n23 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	want(t, f.run(), "Root filesystem", Warn, "initramfs", "switch_root")
	f = newFixture(t)
	f.files["proc/self/mountinfo"] = "1 1 0:2 / / rw - tmpfs rootfs rw\n23 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	want(t, f.run(), "Root filesystem", Warn, "without pivot_root")
	want(t, newFixture(t).run(), "Root filesystem", OK, "ext4: pivot_root")
}

func TestSpace(t *testing.T) {
	for _, tc := range []struct {
		free, inodes  uint64
		space, inodeS Status
	}{
		{8 << 30, 100000, OK, OK},
		{100 << 20, 5000, Warn, Warn},
		{10 << 20, 10, Fail, Fail},
	} {
		f := newFixture(t)
		var asked string
		fake := statfsFake(tc.free, tc.inodes)
		f.host.Statfs = func(p string, st *unix.Statfs_t) error { asked = p; return fake(p, st) }
		rs := f.run()
		want(t, rs, "Free space", tc.space)
		want(t, rs, "Free inodes", tc.inodeS)
		// The state dir does not exist yet: its nearest parent is asked.
		if asked != f.dir {
			t.Errorf("statfs asked about %s, want %s", asked, f.dir)
		}
	}
}

func TestClock(t *testing.T) {
	f := newFixture(t)
	f.host.Now = time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC)
	want(t, f.run(), "Clock", Warn, "1970", "not set")
}

// The daemon's lock, for real: an exclusive flock on agent.db, as bbolt
// takes it, is seen; none is not.
func TestLock(t *testing.T) {
	f := newFixture(t)
	f.host.LockHeld = nil // the real one
	want(t, f.run(), "Agent daemon", OK, "no state yet")
	if err := os.MkdirAll(f.host.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := os.Create(filepath.Join(f.host.StateDir, "agent.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want(t, f.run(), "Agent daemon", OK, "not running")
	if err := unix.Flock(int(db.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	want(t, f.run(), "Agent daemon", OK, "running (it holds")
}
