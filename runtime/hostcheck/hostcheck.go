// Package hostcheck tells whether a host can run Tender's containers, line
// by line, as `docker info` and `lxc-checkconfig` do: the kernel, its
// namespaces, overlayfs, cgroups (version, controllers, the v2 device
// filter), seccomp, pivot_root or the initramfs fallback, room under the
// state directory, the clock and the daemon's lock. Each line says what to
// do when it is not OK. The checks read /proc and /sys under roots given
// in Host, so that fixture trees test them; the few probes that need the
// kernel itself (statfs, BPF, flock) are functions in Host too.
package hostcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Status is a line's verdict.
type Status string

// The verdicts: Fail means containers cannot run (or run without a
// protection Tender relies on); Warn that they run, with less.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one line of the report.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Value  string `json:"value"`
	// Fix says what to do; empty when OK.
	Fix string `json:"fix,omitempty"`
}

// Host is where the checks look.
type Host struct {
	Proc     string // "/proc"
	Sys      string // "/sys"
	Modules  string // "/lib/modules"
	StateDir string // the agent's --root
	Now      time.Time
	// Statfs stats a filesystem (unix.Statfs).
	Statfs func(path string, st *unix.Statfs_t) error
	// ProbeDeviceFilter loads a cgroup device BPF program (cgroups.ProbeDeviceFilter).
	ProbeDeviceFilter func() error
	// ProbeNftables builds Tender's nftables tables in a network namespace
	// of its own (network.ProbeIsolated).
	ProbeNftables func() error
	// LockHeld reports whether another process holds the lock on path.
	LockHeld func(path string) (bool, error)
}

// MinKernel is the oldest kernel Tender runs on: pidfd_open (5.3), which
// the runtime signals containers through.
var MinKernel = [2]int{5, 3}

// ClockFloor is a time the clock cannot truly be before: a year before
// which a device's clock is certainly unset (no RTC, no NTP yet).
var ClockFloor = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Run runs every check, in the report's order.
func Run(h Host) []Result {
	mounts, merr := readMounts(filepath.Join(h.Proc, "self/mountinfo"))
	out := []Result{
		kernel(h),
		namespaces(h),
		overlay(h),
	}
	out = append(out, cgroupChecks(h, mounts, merr)...)
	out = append(out,
		seccomp(h),
		pivot(mounts, merr),
		nftables(h),
	)
	out = append(out, space(h)...)
	out = append(out, clock(h), lock(h))
	return out
}

// Failed reports whether any result is Fail.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

func kernel(h Host) Result {
	r := Result{Check: "Kernel version"}
	b, err := os.ReadFile(filepath.Join(h.Proc, "sys/kernel/osrelease"))
	if err != nil {
		return Result{Check: r.Check, Status: Fail, Value: "unknown", Fix: fmt.Sprintf("cannot read it (%v): is /proc mounted?", err)}
	}
	r.Value = strings.TrimSpace(string(b))
	v, ok := parseKernel(r.Value)
	switch {
	case !ok:
		r.Status, r.Fix = Warn, "cannot parse the version; Tender needs "+kernelString(MinKernel)+" or later"
	case v[0] < MinKernel[0] || v[0] == MinKernel[0] && v[1] < MinKernel[1]:
		r.Status, r.Fix = Fail, "Tender needs Linux "+kernelString(MinKernel)+" or later (pidfd_open): upgrade the kernel"
	default:
		r.Status = OK
	}
	return r
}

func kernelString(v [2]int) string { return fmt.Sprintf("%d.%d", v[0], v[1]) }

// parseKernel reads "6.1.0-18-amd64" as [6 1].
func parseKernel(s string) ([2]int, bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return [2]int{}, false
	}
	return [2]int{major, mi}, true
}

// requiredNS are the namespaces every container gets; the others are
// optional (user: not used yet; cgroup: the container then sees the host's
// cgroup paths).
var (
	requiredNS = []string{"mnt", "pid", "uts", "ipc", "net"}
	optionalNS = []string{"user", "cgroup"}
)

func namespaces(h Host) Result {
	r := Result{Check: "Namespaces"}
	var have, missReq, missOpt []string
	for _, ns := range append(slices.Clone(requiredNS), optionalNS...) {
		if _, err := os.Lstat(filepath.Join(h.Proc, "self/ns", ns)); err == nil {
			have = append(have, ns)
		} else if slices.Contains(requiredNS, ns) {
			missReq = append(missReq, ns)
		} else {
			missOpt = append(missOpt, ns)
		}
	}
	r.Value = strings.Join(have, " ")
	switch {
	case len(missReq) > 0:
		r.Status, r.Fix = Fail, "missing "+strings.Join(missReq, " ")+": build the kernel with CONFIG_"+nsConfig(missReq)
	case len(missOpt) > 0:
		r.Status, r.Fix = Warn, "missing "+strings.Join(missOpt, " ")+": containers run without them (CONFIG_"+nsConfig(missOpt)+")"
	default:
		r.Status = OK
	}
	return r
}

func nsConfig(nss []string) string {
	names := map[string]string{"mnt": "NAMESPACES", "pid": "PID_NS", "uts": "UTS_NS", "ipc": "IPC_NS", "net": "NET_NS", "user": "USER_NS", "cgroup": "CGROUPS"}
	var out []string
	for _, n := range nss {
		out = append(out, names[n])
	}
	return strings.Join(out, ", CONFIG_")
}

func overlay(h Host) Result {
	r := Result{Check: "Overlay filesystem"}
	if b, err := os.ReadFile(filepath.Join(h.Proc, "filesystems")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "overlay" {
				r.Status, r.Value = OK, "overlay"
				return r
			}
		}
	}
	if rel, err := os.ReadFile(filepath.Join(h.Proc, "sys/kernel/osrelease")); err == nil {
		dir := filepath.Join(h.Modules, strings.TrimSpace(string(rel)), "kernel/fs/overlayfs")
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			r.Status, r.Value = Warn, "module not loaded"
			r.Fix = "modprobe overlay (Tender loads nothing itself); add it to /etc/modules to load it at boot"
			return r
		}
	}
	r.Status, r.Value = Fail, "missing"
	r.Fix = "images are mounted with overlayfs: build the kernel with CONFIG_OVERLAY_FS"
	return r
}

// mountEntry is what the checks need of a mountinfo line.
type mountEntry struct {
	id, parent int
	point      string
	fstype     string
}

func readMounts(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 6 || len(f) < sep+2 {
			continue
		}
		id, _ := strconv.Atoi(f[0])
		parent, _ := strconv.Atoi(f[1])
		out = append(out, mountEntry{id: id, parent: parent, point: f[4], fstype: f[sep+1]})
	}
	return out, sc.Err()
}

// cgroupControllers are those Tender writes limits to; cpuset is optional.
var (
	requiredControllers = []string{"memory", "cpu", "pids"}
	optionalControllers = []string{"cpuset"}
)

func cgroupChecks(h Host, mounts []mountEntry, merr error) []Result {
	mode := Result{Check: "Cgroups"}
	if merr != nil {
		mode.Status, mode.Value, mode.Fix = Fail, "unknown", fmt.Sprintf("cannot read the mount table (%v)", merr)
		return []Result{mode}
	}
	var v1, v2 bool
	for _, m := range mounts {
		switch {
		case m.fstype == "cgroup2" && m.point == "/sys/fs/cgroup":
			v2 = true
		case m.fstype == "cgroup" && strings.HasPrefix(m.point, "/sys/fs/cgroup/"):
			v1 = true
		}
	}
	ctrl := Result{Check: "Cgroup controllers"}
	var have []string
	switch {
	case v2:
		mode.Status, mode.Value = OK, "v2 (unified)"
		b, err := os.ReadFile(filepath.Join(h.Sys, "fs/cgroup/cgroup.controllers"))
		if err != nil {
			ctrl.Status, ctrl.Fix = Fail, fmt.Sprintf("cannot read cgroup.controllers (%v)", err)
			return []Result{mode, ctrl}
		}
		have = strings.Fields(string(b))
	case v1:
		mode.Status, mode.Value = OK, "v1"
		if slices.ContainsFunc(mounts, func(m mountEntry) bool { return m.fstype == "cgroup2" }) {
			mode.Value = "v1 (hybrid: the cgroup2 mount is not used)"
		}
		have = v1Controllers(h)
	default:
		mode.Status, mode.Value = Fail, "none"
		mode.Fix = "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup), or the v1 hierarchies"
		return []Result{mode}
	}
	ctrl.Value = strings.Join(have, " ")
	var missReq, missOpt []string
	for _, c := range requiredControllers {
		if !slices.Contains(have, c) {
			missReq = append(missReq, c)
		}
	}
	for _, c := range optionalControllers {
		if !slices.Contains(have, c) {
			missOpt = append(missOpt, c)
		}
	}
	switch {
	case len(missReq) > 0:
		ctrl.Status, ctrl.Fix = Fail, "missing "+strings.Join(missReq, " ")+": limits on them cannot be applied; enable them in the kernel (CONFIG_MEMCG, CONFIG_CGROUP_SCHED, CONFIG_CGROUP_PIDS) and, on v2, in the parent's cgroup.subtree_control"
	case len(missOpt) > 0:
		ctrl.Status, ctrl.Fix = Warn, "missing "+strings.Join(missOpt, " ")+": --cpuset-cpus cannot be used"
	default:
		ctrl.Status = OK
	}
	out := []Result{mode, ctrl}
	if v2 {
		out = append(out, delegation(h, have), deviceFilter(h))
	} else {
		dev := Result{Check: "Device cgroup", Value: "devices controller"}
		if slices.Contains(have, "devices") {
			dev.Status = OK
		} else {
			dev.Status, dev.Value = Fail, "no devices controller"
			dev.Fix = "containers could open any device node (R-11): build the kernel with CONFIG_CGROUP_DEVICE"
		}
		out = append(out, dev)
	}
	return out
}

// v1Controllers are the enabled subsystems of /proc/cgroups.
func v1Controllers(h Host) []string {
	b, err := os.ReadFile(filepath.Join(h.Proc, "cgroups"))
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && !strings.HasPrefix(f[0], "#") && f[3] == "1" {
			out = append(out, f[0])
		}
	}
	return out
}

// delegation says which controllers the root's cgroup.subtree_control
// enables: the agent enables those it needs in its parent ("/tender")
// itself, which works only when the root grants them.
func delegation(h Host, have []string) Result {
	r := Result{Check: "Cgroup delegation"}
	b, err := os.ReadFile(filepath.Join(h.Sys, "fs/cgroup/cgroup.subtree_control"))
	if err != nil {
		r.Status, r.Value, r.Fix = Warn, "unknown", fmt.Sprintf("cannot read cgroup.subtree_control (%v)", err)
		return r
	}
	on := strings.Fields(string(b))
	r.Value = strings.Join(on, " ")
	if r.Value == "" {
		r.Value = "none yet"
	}
	var off []string
	for _, c := range append(slices.Clone(requiredControllers), optionalControllers...) {
		if slices.Contains(have, c) && !slices.Contains(on, c) {
			off = append(off, c)
		}
	}
	r.Status = OK
	if len(off) > 0 {
		// Not a failure: the agent writes +memory +cpu ... itself when it
		// creates /tender, as root in the root cgroup's namespace.
		r.Value += " (the agent enables " + strings.Join(off, " ") + " when it needs them)"
	}
	return r
}

func deviceFilter(h Host) Result {
	r := Result{Check: "Device filter (eBPF)"}
	if h.ProbeDeviceFilter == nil {
		r.Status, r.Value = Warn, "not probed"
		return r
	}
	if err := h.ProbeDeviceFilter(); err != nil {
		r.Status, r.Value = Fail, "cannot load"
		r.Fix = fmt.Sprintf("v2 device rules need BPF_PROG_TYPE_CGROUP_DEVICE (CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF): %v", err)
		return r
	}
	r.Status, r.Value = OK, "BPF_PROG_TYPE_CGROUP_DEVICE loads"
	return r
}

// nftables tells whether network: bridge can work. Without it only host
// and none do: a warning, since many devices need nothing else.
func nftables(h Host) Result {
	r := Result{Check: "Bridge network (nftables)"}
	if h.ProbeNftables == nil {
		r.Status, r.Value = Warn, "not probed"
		return r
	}
	if err := h.ProbeNftables(); err != nil {
		r.Status, r.Value = Warn, "unusable"
		r.Fix = fmt.Sprintf("apps with network: bridge will be refused; the kernel needs CONFIG_NF_TABLES, NFT_NAT, NFT_MASQ, NFT_FIB_IPV4, NFT_CT, NF_TABLES_BRIDGE, CONFIG_VETH and CONFIG_BRIDGE (host and none networks work without them): %v", err)
		return r
	}
	r.Status, r.Value = OK, "NAT, port forwarding and bridge filtering load"
	return r
}

func seccomp(h Host) Result {
	r := Result{Check: "Seccomp"}
	b, err := os.ReadFile(filepath.Join(h.Proc, "self/status"))
	if err != nil || !bytes.Contains(b, []byte("\nSeccomp:")) {
		r.Status, r.Value = Fail, "missing"
		r.Fix = "the default syscall filter cannot be applied: build the kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER"
		return r
	}
	actions, err := os.ReadFile(filepath.Join(h.Proc, "sys/kernel/seccomp/actions_avail"))
	if err != nil {
		// Before 4.14 the file does not exist; filter mode is there
		// since 3.5.
		r.Status, r.Value = OK, "filter"
		return r
	}
	have := strings.Fields(string(actions))
	r.Value = "filter (" + strings.Join(have, " ") + ")"
	if !slices.Contains(have, "errno") {
		r.Status, r.Fix = Fail, "the default filter answers denied calls with an errno: this kernel cannot"
		return r
	}
	r.Status = OK
	return r
}

// pivot tells whether / is the initramfs (rootfs, which pivot_root cannot
// leave): the / mount that is its own parent, or of type rootfs.
func pivot(mounts []mountEntry, merr error) Result {
	r := Result{Check: "Root filesystem"}
	if merr != nil {
		r.Status, r.Value, r.Fix = Warn, "unknown", fmt.Sprintf("cannot read the mount table (%v)", merr)
		return r
	}
	var root *mountEntry
	for i, m := range mounts {
		if m.point == "/" {
			root = &mounts[i] // the last one is on top
		}
	}
	if root == nil {
		r.Status, r.Value = Warn, "no / in the mount table"
		return r
	}
	if root.fstype == "rootfs" || root.parent == root.id {
		r.Status, r.Value = Warn, root.fstype+", the initramfs: containers enter their root without pivot_root (MS_MOVE and chroot)"
		r.Fix = "switch_root into a tmpfs or a disk from the initramfs' init to get pivot_root"
		return r
	}
	r.Status, r.Value = OK, root.fstype+": pivot_root"
	return r
}

// Thresholds of space: below the first a line warns, below the second it
// fails (no room to unpack an image or write state).
const (
	warnFreeBytes  = 512 << 20
	failFreeBytes  = 32 << 20
	warnFreeInodes = 10000
	failFreeInodes = 1000
)

func space(h Host) []Result {
	rs := Result{Check: "Free space"}
	ri := Result{Check: "Free inodes"}
	dir := h.StateDir
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" || dir == "." {
			break
		}
		dir = filepath.Dir(dir) // the state dir is made on first use
	}
	var st unix.Statfs_t
	if h.Statfs == nil {
		h.Statfs = unix.Statfs
	}
	if err := h.Statfs(dir, &st); err != nil {
		rs.Status, rs.Value, rs.Fix = Warn, "unknown", fmt.Sprintf("statfs %s: %v", dir, err)
		return []Result{rs}
	}
	free := st.Bavail * uint64(st.Bsize)
	rs.Value = fmt.Sprintf("%s free under %s", bytesString(free), dir)
	switch {
	case free < failFreeBytes:
		rs.Status, rs.Fix = Fail, "no room for images and state: free space or point --root elsewhere"
	case free < warnFreeBytes:
		rs.Status, rs.Fix = Warn, "little room for images: free space or point --root elsewhere"
	default:
		rs.Status = OK
	}
	if st.Files == 0 {
		ri.Status, ri.Value = OK, "not limited by the filesystem"
		return []Result{rs, ri}
	}
	ri.Value = fmt.Sprintf("%d of %d free", st.Ffree, st.Files)
	switch {
	case st.Ffree < failFreeInodes:
		ri.Status, ri.Fix = Fail, "no inodes left for image layers: remove files or use a filesystem with more inodes"
	case st.Ffree < warnFreeInodes:
		ri.Status, ri.Fix = Warn, "few inodes left for image layers"
	default:
		ri.Status = OK
	}
	return []Result{rs, ri}
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func clock(h Host) Result {
	r := Result{Check: "Clock", Value: h.Now.UTC().Format(time.RFC3339)}
	if h.Now.Before(ClockFloor) {
		r.Status = Warn
		r.Fix = "the clock is before " + ClockFloor.Format("2006") + ", so it is not set: certificates and expiries are judged by generation only until NTP or an RTC sets it"
		return r
	}
	r.Status = OK
	return r
}

func lock(h Host) Result {
	r := Result{Check: "Agent daemon"}
	db := filepath.Join(h.StateDir, "agent.db")
	if h.LockHeld == nil {
		h.LockHeld = lockHeld
	}
	held, err := h.LockHeld(db)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Status, r.Value = OK, "not running (no state yet)"
	case err != nil:
		r.Status, r.Value, r.Fix = Warn, "unknown", fmt.Sprintf("cannot check the lock on %s: %v", db, err)
	case held:
		r.Status, r.Value = OK, "running (it holds "+db+")"
	default:
		r.Status, r.Value = OK, "not running"
	}
	return r
}

// lockHeld tries a shared lock on path, without waiting: a daemon holds an
// exclusive one (bbolt's) while it runs. It never creates the file.
func lockHeld(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, unix.Flock(int(f.Fd()), unix.LOCK_UN)
}
