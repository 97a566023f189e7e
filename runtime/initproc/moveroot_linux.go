package initproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The no-pivot fallback (runc's --no-pivot, msMoveRoot; Docker's
// DOCKER_RAMDISK). pivot_root cannot leave rootfs, the initramfs a system
// runs from when it never switched to another root (run-from-RAM images,
// some Yocto builds): the kernel says EINVAL. The root is then moved over
// / with MS_MOVE and the init chroots into it. That is weaker than
// pivot_root in one way: the host's mounts stay in the container's mount
// namespace, under the root that now covers them. They are reachable by no
// path (".." at the top of the namespace leads back onto the container's
// root, which is mounted there), yet they would pin the host's
// filesystems, and a full procfs or sysfs left in the namespace is what
// lets a mount of a new, unmasked one through (the kernel's
// mount_too_revealing check). So, first, every mount that is not the
// container's (under its root) nor on the way to it (the root's
// ancestors, which cannot be detached without detaching the root) is made
// a slave, so that nothing propagates to the host, and detached. What is
// left is / and the ancestors of the root, covered by the root.

// moveRoot makes root (the mount at the container's root path, cwd not
// assumed) the process's root without pivot_root.
func moveRoot(root *os.File) error {
	rootPath, err := os.Readlink(fdPath(root))
	if err != nil {
		return fmt.Errorf("resolve root: %w", err)
	}
	if err := hideHostMounts(rootPath); err != nil {
		return err
	}
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return fmt.Errorf("chdir to root: %w", err)
	}
	// "." is the root of the container's mount (cwd), whatever its path.
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// mountEntry is a line of /proc/PID/mountinfo.
type mountEntry struct {
	id, parent int
	dev        string // major:minor of the filesystem
	point      string // unescaped
	fstype     string
	source     string
}

// parseMountinfo reads a mountinfo table (proc(5)).
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 6 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %q: malformed", sc.Text())
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %q: malformed ids", sc.Text())
		}
		out = append(out, mountEntry{
			id: id, parent: parent, dev: f[2], point: unescapeOctal(f[4]),
			fstype: f[sep+1], source: unescapeOctal(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline and
// backslash in mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// keptMount reports whether the mount at point stays when the root at
// rootPath is moved over /: / itself, the root's ancestors and the root
// with everything under it.
func keptMount(point, rootPath string) bool {
	return point == "/" || point == rootPath ||
		strings.HasPrefix(rootPath, point+"/") || strings.HasPrefix(point, rootPath+"/")
}

// hostMountsToHide returns, from a mountinfo table, the mount points to
// detach in one round: those not kept whose parent is kept (detaching them
// takes their whole subtree), each once. /proc is left out and reported
// apart: its /proc/self/fd is how the others are reached, so it goes last.
func hostMountsToHide(mounts []mountEntry, rootPath string) (points []string, proc bool) {
	kept := map[int]bool{}
	listed := map[int]bool{}
	for _, m := range mounts {
		listed[m.id] = true
		if keptMount(m.point, rootPath) {
			kept[m.id] = true
		}
	}
	for _, m := range mounts {
		if kept[m.id] || listed[m.parent] && !kept[m.parent] {
			continue
		}
		switch {
		case m.point == "/proc":
			proc = true
		case !slices.Contains(points, m.point):
			points = append(points, m.point)
		}
	}
	return points, proc
}

// maxHideRounds bounds hideHostMounts: each round detaches the top mount at
// each point, so a stack of mounts on one point takes a round per layer.
const maxHideRounds = 16

// hideHostMounts detaches every host mount outside rootPath and its
// ancestors from this (the container's) mount namespace; see the comment
// at the top of this file. A mount reachable by no path (a point covered
// by a later mount on an ancestor) stays, covered by the root like / is.
func hideHostMounts(rootPath string) error {
	for round := 0; round < maxHideRounds; round++ {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return fmt.Errorf("read mount table: %w", err)
		}
		mounts, err := parseMountinfo(strings.NewReader(string(b)))
		if err != nil {
			return err
		}
		points, proc := hostMountsToHide(mounts, rootPath)
		if len(points) == 0 {
			if !proc {
				return nil
			}
			points = []string{"/proc"}
		}
		progress := false
		for _, p := range points {
			done, err := detachMount(p)
			if err != nil {
				return fmt.Errorf("hide host mount %s: %w", p, err)
			}
			progress = progress || done
		}
		if !progress || points[0] == "/proc" {
			return nil
		}
	}
	return nil
}

// detachMount makes the top mount at point a slave (recursively: its
// unmount must not propagate to the host whatever the rootfs propagation)
// and detaches it. It reports false when point is no longer a mount point
// or no longer exists (its parent went first). The point is opened without
// following a last symlink and acted on through its descriptor.
func detachMount(point string) (bool, error) {
	fd, err := unix.Open(point, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return false, nil
		}
		return false, fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Mount("", p, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, nil // not a mount point (any more)
		}
		return false, fmt.Errorf("make rslave: %w", err)
	}
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		return false, fmt.Errorf("detach: %w", err)
	}
	return true, nil
}
