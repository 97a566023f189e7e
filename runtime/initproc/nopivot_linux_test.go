package initproc

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// forceNoPivot makes newEnv's containers take the no-pivot fallback
// (TestNoPivot sets it while it runs the other tests again).
var forceNoPivot bool

// TestNoPivot runs the identity, escape and mount tests again with the
// no-pivot fallback forced: this host's / is not the initramfs, so
// pivot_root would work and the fallback would never run otherwise.
func TestNoPivot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	forceNoPivot = true
	defer func() { forceNoPivot = false }()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"IdentityAndHostname", TestStart_IdentityAndHostname},
		{"Namespaces", TestStart_Namespaces},
		{"OnlyStdioReachesWorkload", TestStart_OnlyStdioReachesWorkload},
		{"Capabilities", TestStart_Capabilities},
		{"ProcessStatus", TestStart_ProcessStatus},
		{"MaskedAndReadonlyPaths", TestStart_MaskedAndReadonlyPaths},
		{"User", TestStart_User},
		{"RefusesBadRootfs", TestStart_RefusesBadRootfs},
		{"NullMustBeNullDevice", TestStart_NullMustBeNullDevice},
		{"CwdOutsideContainer", TestStart_CwdOutsideContainer},
		{"Seccomp", TestStart_Seccomp},
		{"Volumes", TestStart_Volumes},
		{"ReadonlyRoot", TestStart_ReadonlyRoot},
		{"DevSetup", TestStart_DevSetup},
		{"LongOverlayOptions", TestStart_LongOverlayOptions},
		{"HostNetworkSysfs", TestStart_HostNetworkSysfs},
		{"Sysctl", TestStart_Sysctl},
		{"FileCapabilitiesGainNothing", TestStart_FileCapabilitiesGainNothing},
		{"HostMountsGone", TestStart_HostMountsGone},
		{"ChrootEscape", TestStart_ChrootEscape},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// nsMount is what statmount(2) says of a mount.
type nsMount struct {
	id, parent uint64 // unique ids
	dev        string // major:minor
}

// nsMounts lists every mount of pid's mount namespace from the
// namespace's own root, with listmount(2) and statmount(2) (Linux 6.11 and
// later, which take a namespace id): unlike /proc/PID/mountinfo, it also
// shows what lies outside the process's root. It skips the test where the
// kernel lacks them.
func nsMounts(t *testing.T, pid int) []nsMount {
	t.Helper()
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	var nsID uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(ns), unix.NS_GET_MNTNS_ID, uintptr(unsafe.Pointer(&nsID))); e != 0 {
		t.Skipf("no mount namespace ids on this kernel (%v)", e)
	}
	// struct mnt_id_req: size (and a zero u32), mnt_id, param, mnt_ns_id
	// (little-endian: the tests run on amd64 and arm64).
	req := func(id, param uint64) []uint64 { return []uint64{unix.MNT_ID_REQ_SIZE_VER1, id, param, nsID} }
	ids := make([]uint64, 4096)
	r := req(^uint64(0), 0) // LSMT_ROOT: the namespace's root
	n, _, e := unix.Syscall6(unix.SYS_LISTMOUNT, uintptr(unsafe.Pointer(&r[0])), uintptr(unsafe.Pointer(&ids[0])), uintptr(len(ids)), 0, 0, 0)
	if e == unix.ENOSYS || e == unix.EINVAL {
		t.Skipf("no listmount with a namespace id on this kernel (%v)", e)
	}
	if e != 0 {
		t.Fatalf("listmount: %v", e)
	}
	var out []nsMount
	buf := make([]byte, 4096)
	for _, id := range ids[:n] {
		const mask = 0x1 | 0x2 // STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC
		r := req(id, mask)
		if _, _, e := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&r[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0); e != 0 {
			t.Fatalf("statmount %d: %v", id, e)
		}
		le := binary.LittleEndian
		out = append(out, nsMount{
			id: le.Uint64(buf[40:]), parent: le.Uint64(buf[48:]),
			dev: fmt.Sprintf("%d:%d", le.Uint32(buf[16:]), le.Uint32(buf[20:])),
		})
	}
	return out
}

// TestStart_HostMountsGone checks, in the container's whole mount
// namespace, that none of the host's filesystems is still mounted there
// but the host's / (and the container root's ancestors, both covered by
// the root): after pivot_root the old root is detached; without it,
// moveRoot detaches them. It also tells which way was taken: the host's /
// is in the namespace (under the container's root) only after the
// fallback.
func TestStart_HostMountsGone(t *testing.T) {
	e := newEnv(t, "sleep", "30")
	hostInfo := hostMountinfo(t)
	host, err := parseMountinfo(strings.NewReader(hostInfo))
	if err != nil {
		t.Fatal(err)
	}
	rootPath := e.cfg.Spec.Root.Path
	var hostRootDev string
	hostDevs := map[string]string{} // dev -> a host mount point of it
	for _, m := range host {
		if m.point == "/" {
			hostRootDev = m.dev
		}
		if !keptMount(m.point, rootPath) {
			hostDevs[m.dev] = m.point
		}
	}
	for _, m := range host {
		if keptMount(m.point, rootPath) {
			delete(hostDevs, m.dev) // the root's filesystem may show elsewhere too
		}
	}
	if len(hostDevs) == 0 {
		t.Fatal("the host has no mount besides / to check")
	}
	proc, wait, err := e.start(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proc.Kill(); wait() }()
	mounts := nsMounts(t, proc.Pid)
	hostRoot := 0
	for _, m := range mounts {
		if p, ok := hostDevs[m.dev]; ok {
			t.Errorf("the host's %s (%s) is still mounted in the container's namespace", p, m.dev)
		}
		if m.dev == hostRootDev {
			hostRoot++
		}
	}
	if forceNoPivot && hostRoot != 1 {
		t.Errorf("no-pivot: %d mounts of the host's / (%s) in the namespace, want 1 (under the container's root)", hostRoot, hostRootDev)
	}
	if !forceNoPivot && hostRoot != 0 {
		t.Errorf("pivot_root: %d mounts of the host's / (%s) in the namespace, want none", hostRoot, hostRootDev)
	}
	// Nothing detached in the container's namespace went from the host's:
	// every mount the host had is still there.
	after := hostMountinfo(t)
	for _, line := range strings.Split(strings.TrimSpace(hostInfo), "\n") {
		if !strings.Contains(after, line+"\n") {
			t.Errorf("host mount gone after the container's start: %s", line)
		}
	}
	t.Logf("%d mounts in the container's namespace, %d on the host", len(mounts), len(host))
}

// TestStart_ChrootEscape: a process with CAP_SYS_CHROOT (Docker's default
// set has it) tries the classic chroot escape. After pivot_root there is
// nothing above the root; after the no-pivot fallback, ".." at the top of
// the namespace leads back onto the container's root, which covers the
// host's /. Either way it ends in the container's own /.
func TestStart_ChrootEscape(t *testing.T) {
	e := newEnv(t)
	e.cfg.Spec.Process.Args = []string{"/probe", "chroot-escape"}
	names := strings.Fields(e.mustRun(t))
	if !slices.Contains(names, "probe") || !slices.Contains(names, "workload") {
		t.Errorf("after the chroot escape / holds %v: not the container's root", names)
	}
}

// hostMountinfo reads the host's mount table: that of this thread, locked
// for the read (/proc/self is the main thread's, which may be the runtime's
// spawner thread, in a private mount namespace of its own).
func hostMountinfo(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseMountinfo(t *testing.T) {
	in := `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:40 / /mnt/with\040space rw master:2 - tmpfs my\134src rw
`
	got, err := parseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{id: 22, parent: 27, dev: "0:21", point: "/proc", fstype: "proc", source: "proc"},
		{id: 27, parent: 1, dev: "254:0", point: "/", fstype: "ext4", source: "/dev/vda"},
		{id: 40, parent: 27, dev: "0:40", point: "/mnt/with space", fstype: "tmpfs", source: `my\src`},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := parseMountinfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("a short line parsed")
	}
}

func TestHostMountsToHide(t *testing.T) {
	// rootfs (1) is /; /var/lib/tender is a data partition (an ancestor of
	// the container's root: kept); the container's root and its /proc are
	// kept; the host's /proc, /sys with its cgroup hierarchies, a stack of
	// two mounts on /mnt, and a mount under the data partition that is not
	// on the way to the root go, the subtrees with their tops.
	const root = "/var/lib/tender/containers/c/rootfs"
	mounts := []mountEntry{
		{id: 1, parent: 1, point: "/"},
		{id: 2, parent: 1, point: "/proc"},
		{id: 3, parent: 1, point: "/sys"},
		{id: 4, parent: 3, point: "/sys/fs/cgroup"},
		{id: 5, parent: 1, point: "/var/lib/tender"},
		{id: 6, parent: 5, point: "/var/lib/tender/images/mnt"},
		{id: 7, parent: 5, point: root},
		{id: 8, parent: 7, point: root + "/proc"},
		{id: 9, parent: 1, point: "/mnt"},
		{id: 10, parent: 9, point: "/mnt"},
		{id: 11, parent: 1, point: "/var/lib/tender-other"},
	}
	points, proc := hostMountsToHide(mounts, root)
	want := []string{"/sys", "/var/lib/tender/images/mnt", "/mnt", "/var/lib/tender-other"}
	if !slices.Equal(points, want) || !proc {
		t.Errorf("hide %v (proc %v), want %v and /proc", points, proc, want)
	}
	for p, want := range map[string]bool{"/": true, "/var": true, root: true, root + "/dev": true, "/var/lib/tenderx": false, "/proc": false} {
		if got := keptMount(p, root); got != want {
			t.Errorf("keptMount(%s) = %v, want %v", p, got, want)
		}
	}
}
