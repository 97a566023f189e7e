package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setupRootfs builds the container's filesystem and pivots into it: root
// mounts, spec mounts, /dev, masked and read-only paths, pivot_root and the
// optional read-only root.
func setupRootfs(cfg *Config, ns map[specs.LinuxNamespaceType]bool) error {
	s := cfg.Spec
	prop := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if p := s.Linux.RootfsPropagation; p != "" {
		f, ok := propagationFlags[p]
		if !ok {
			return fmt.Errorf("rootfs propagation %q: unknown", p)
		}
		prop = f
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("make / %s: %w", s.Linux.RootfsPropagation, err)
	}
	rootPath := s.Root.Path
	if !filepath.IsAbs(rootPath) {
		return fmt.Errorf("root %q: not absolute", rootPath)
	}
	rootPath = filepath.Clean(rootPath)
	for _, m := range cfg.RootMounts {
		if err := mountRoot(m, rootPath); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, rootPath, err)
		}
	}
	if len(cfg.RootMounts) == 0 {
		// pivot_root needs the new root to be a mount point.
		if err := unix.Mount(rootPath, rootPath, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind root %s: %w", rootPath, err)
		}
	}
	root, err := openPath(rootPath)
	if err != nil {
		return fmt.Errorf("open root: %w", err)
	}
	defer root.Close()

	devMounted := false
	for _, m := range s.Mounts {
		if err := mountSpec(root, m, ns[specs.NetworkNamespace]); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, m.Destination, err)
		}
		if filepath.Clean(m.Destination) == "/dev" && m.Type != "bind" {
			devMounted = true
		}
	}
	if err := setSysctls(root, s.Linux.Sysctl, ns); err != nil {
		return err
	}
	for _, d := range s.Linux.Devices {
		if err := createDevice(root, d); err != nil {
			return fmt.Errorf("create device %s: %w", d.Path, err)
		}
	}
	if devMounted {
		if err := devSymlinks(root); err != nil {
			return err
		}
	}
	if len(s.Linux.MaskedPaths) > 0 {
		if err := maskPaths(root, s.Linux.MaskedPaths); err != nil {
			return err
		}
	}
	for _, p := range s.Linux.ReadonlyPaths {
		if err := readonlyPath(root, p); err != nil {
			return fmt.Errorf("read-only path %s: %w", p, err)
		}
	}
	if err := enterRoot(root, cfg.NoPivot); err != nil {
		return err
	}
	if s.Root.Readonly {
		if err := remountReadonly("/"); err != nil {
			return fmt.Errorf("remount / read-only: %w", err)
		}
	}
	return nil
}

func openPath(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// fdPath names f through /proc/self/fd so that mount(2) acts on the very
// inode that was resolved and checked, not on whatever the path names now.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

func mkdirAllInRoot(root *os.File, p string) (*os.File, error) {
	return pathrs.MkdirAllHandle(root, p, 0o755)
}

// mountRoot mounts one of the root mounts at rootPath.
func mountRoot(m Mount, rootPath string) error {
	o, err := parseMountOptions(m.Options)
	if err != nil {
		return err
	}
	if m.Type == "bind" || o.flags&unix.MS_BIND != 0 {
		if err := unix.Mount(m.Source, rootPath, "", unix.MS_BIND|(o.flags&unix.MS_REC), ""); err != nil {
			return err
		}
		if extra := o.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); extra != 0 {
			if err := unix.Mount("", rootPath, "", extra|unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount: %w", err)
			}
		}
		return nil
	}
	data := o.data
	chdir := ""
	if m.Type == "overlay" && len(data) >= unix.Getpagesize() {
		data, chdir = shortenOverlayData(data)
		if len(data) >= unix.Getpagesize() {
			return errors.New("overlay options exceed a page")
		}
	}
	if chdir != "" {
		if err := unix.Chdir(chdir); err != nil {
			return fmt.Errorf("chdir %s: %w", chdir, err)
		}
		defer unix.Chdir("/")
	}
	src := m.Source
	if src == "" {
		src = m.Type
	}
	return unix.Mount(src, rootPath, m.Type, o.flags, data)
}

// shortenOverlayData rewrites the lowerdirs relative to their common parent
// directory, which it returns (the mount is then done from there).
func shortenOverlayData(data string) (string, string) {
	opts := strings.Split(data, ",")
	li := -1
	for i, o := range opts {
		if strings.HasPrefix(o, "lowerdir=") {
			li = i
		}
	}
	if li < 0 {
		return data, ""
	}
	lowers := strings.Split(strings.TrimPrefix(opts[li], "lowerdir="), ":")
	common := filepath.Dir(lowers[0])
	for _, l := range lowers[1:] {
		for common != "/" && !strings.HasPrefix(l, common+"/") {
			common = filepath.Dir(common)
		}
	}
	if common == "/" || !filepath.IsAbs(common) {
		return data, ""
	}
	for i, l := range lowers {
		lowers[i] = strings.TrimPrefix(l, common+"/")
	}
	opts[li] = "lowerdir=" + strings.Join(lowers, ":")
	return strings.Join(opts, ","), common
}

// mountSpec mounts one of Spec.Mounts inside the root. The destination is
// resolved inside the root (created when missing); its last component must
// not be a symlink.
func mountSpec(root *os.File, m specs.Mount, netns bool) error {
	if !filepath.IsAbs(m.Destination) {
		return errors.New("destination not absolute")
	}
	dest := filepath.Clean(m.Destination)
	o, err := parseMountOptions(m.Options)
	if err != nil {
		return err
	}
	typ, src := m.Type, m.Source
	switch typ {
	case "sysfs":
		if !netns {
			// sysfs cannot be mounted in the host's network namespace:
			// bind the host's read-only instead.
			// Not recursive: the host's mounts under /sys (cgroup
			// hierarchies, debugfs, bpffs...) would stay writable.
			typ, src = "bind", "/sys"
			o.flags = o.flags&^unix.MS_REC | unix.MS_BIND | unix.MS_RDONLY
		}
	case "cgroup", "cgroup2":
		// Never fail the container for this.
		_ = mountCgroup(root, dest, o)
		return nil
	}
	if typ == "bind" || o.flags&unix.MS_BIND != 0 {
		return mountBind(root, src, dest, o)
	}
	dst, err := destHandle(root, dest, true)
	if err != nil {
		return err
	}
	defer dst.Close()
	if src == "" {
		src = typ
	}
	if err := unix.Mount(src, fdPath(dst), typ, o.flags, o.data); err != nil {
		return err
	}
	return setPropagation(root, dest, o.propagation)
}

func mountBind(root *os.File, src, dest string, o mountOpts) error {
	sfd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	srcf := os.NewFile(uintptr(sfd), src)
	defer srcf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	dst, err := destHandle(root, dest, st.Mode&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := unix.Mount(fdPath(srcf), fdPath(dst), "", unix.MS_BIND|(o.flags&unix.MS_REC), ""); err != nil {
		return err
	}
	if extra := o.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); extra != 0 {
		// The new mount sits on top of dst: resolve the path again to
		// reach it.
		top, err := pathrs.OpenatInRoot(root, dest)
		if err != nil {
			return fmt.Errorf("reopen: %w", err)
		}
		err = unix.Mount("", fdPath(top), "", extra|unix.MS_BIND|unix.MS_REMOUNT, "")
		top.Close()
		if err != nil {
			return fmt.Errorf("remount: %w", err)
		}
	}
	return setPropagation(root, dest, o.propagation)
}

func setPropagation(root *os.File, dest string, props []uintptr) error {
	if len(props) == 0 {
		return nil
	}
	top, err := pathrs.OpenatInRoot(root, dest)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	defer top.Close()
	for _, p := range props {
		if err := unix.Mount("", fdPath(top), "", p, ""); err != nil {
			return fmt.Errorf("set propagation: %w", err)
		}
	}
	return nil
}

// mountCgroup mounts cgroup2 read-only on a cgroup v2 host, a read-only
// tmpfs on a v1 host.
func mountCgroup(root *os.File, dest string, o mountOpts) error {
	dst, err := destHandle(root, dest, true)
	if err != nil {
		return err
	}
	defer dst.Close()
	flags := o.flags | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	var sfs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &sfs); err == nil && sfs.Type == unix.CGROUP2_SUPER_MAGIC {
		return unix.Mount("cgroup2", fdPath(dst), "cgroup2", flags, "")
	}
	return unix.Mount("tmpfs", fdPath(dst), "tmpfs", flags, "mode=755,size=4k")
}

// destHandle returns an O_PATH handle on dest inside root, creating it (a
// directory, or an empty file when !dir) and its parents when missing. It
// refuses a symlink as last component and a mismatched file type.
func destHandle(root *os.File, dest string, dir bool) (*os.File, error) {
	parent, base := filepath.Split(dest)
	if base == "" {
		return nil, errors.New("cannot mount over the root")
	}
	pdir, err := mkdirAllInRoot(root, parent)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", parent, err)
	}
	defer pdir.Close()
	pfd := int(pdir.Fd())
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		if dir {
			err = unix.Mkdirat(pfd, base, 0o755)
		} else {
			var cfd int
			cfd, err = unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(cfd)
			}
		}
		if err != nil && err != unix.EEXIST {
			return nil, fmt.Errorf("create %s: %w", dest, err)
		}
		fd, err = unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dest, err)
	}
	f := os.NewFile(uintptr(fd), dest)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", dest, err)
	}
	switch t := st.Mode & unix.S_IFMT; {
	case t == unix.S_IFLNK:
		err = fmt.Errorf("%s is a symlink", dest)
	case dir && t != unix.S_IFDIR:
		err = fmt.Errorf("%s is not a directory", dest)
	case !dir && t == unix.S_IFDIR:
		err = fmt.Errorf("%s is a directory", dest)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func createDevice(root *os.File, d specs.LinuxDevice) error {
	if !filepath.IsAbs(d.Path) {
		return errors.New("path not absolute")
	}
	p := filepath.Clean(d.Path)
	parent, base := filepath.Split(p)
	if base == "" {
		return errors.New("bad path")
	}
	var mode uint32
	switch d.Type {
	case "c", "u":
		mode = unix.S_IFCHR
	case "b":
		mode = unix.S_IFBLK
	case "p":
		mode = unix.S_IFIFO
	default:
		return fmt.Errorf("unknown type %q", d.Type)
	}
	perm := uint32(0o666)
	if d.FileMode != nil {
		perm = uint32(d.FileMode.Perm())
	}
	pdir, err := mkdirAllInRoot(root, parent)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", parent, err)
	}
	defer pdir.Close()
	pfd := int(pdir.Fd())
	dev := int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))
	err = unix.Mknodat(pfd, base, mode|perm, dev)
	if err == unix.EEXIST {
		// Whatever the image had there (maybe a symlink aimed at the
		// host, R-08) goes; unlinkat never follows it.
		if err = unix.Unlinkat(pfd, base, 0); err == nil {
			err = unix.Mknodat(pfd, base, mode|perm, dev)
		}
	}
	if err == unix.EPERM && mode != unix.S_IFIFO {
		// No mknod here: bind the host's node onto an empty file.
		fd, cerr := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if cerr != nil {
			return fmt.Errorf("mknod: %w; create bind target: %v", err, cerr)
		}
		unix.Close(fd)
		dst, cerr := destHandle(root, p, false)
		if cerr != nil {
			return cerr
		}
		defer dst.Close()
		if err := unix.Mount(p, fdPath(dst), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind host node: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	if d.UID != nil || d.GID != nil {
		uid, gid := -1, -1
		if d.UID != nil {
			uid = int(*d.UID)
		}
		if d.GID != nil {
			gid = int(*d.GID)
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	return nil
}

var devLinks = [...][2]string{
	{"/proc/self/fd", "fd"},
	{"/proc/self/fd/0", "stdin"},
	{"/proc/self/fd/1", "stdout"},
	{"/proc/self/fd/2", "stderr"},
	{"pts/ptmx", "ptmx"},
}

func devSymlinks(root *os.File) error {
	dev, err := destHandle(root, "/dev", true)
	if err != nil {
		return fmt.Errorf("dev symlinks: %w", err)
	}
	defer dev.Close()
	for _, l := range devLinks {
		if err := unix.Symlinkat(l[0], int(dev.Fd()), l[1]); err != nil && err != unix.EEXIST {
			return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// maskPaths hides paths: the container's /dev/null, verified to be the null
// character device, over files; a read-only tmpfs over directories.
// Missing paths are skipped.
func maskPaths(root *os.File, paths []string) error {
	var null *os.File
	defer func() {
		if null != nil {
			null.Close()
		}
	}()
	for _, p := range paths {
		target, err := pathrs.OpenatInRoot(root, p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(int(target.Fd()), &st)
		if err == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				err = unix.Mount("tmpfs", fdPath(target), "tmpfs", unix.MS_RDONLY, "size=0k")
			} else {
				if null == nil {
					null, err = verifiedNull(root)
				}
				if err == nil {
					err = unix.Mount(fdPath(null), fdPath(target), "", unix.MS_BIND, "")
				}
			}
		}
		target.Close()
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

func verifiedNull(root *os.File) (*os.File, error) {
	dev, err := pathrs.OpenatInRoot(root, "/dev")
	if err != nil {
		return nil, fmt.Errorf("open /dev: %w", err)
	}
	defer dev.Close()
	fd, err := unix.Openat(int(dev.Fd()), "null", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/dev/null")
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat /dev/null: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(uint64(st.Rdev)) != 1 || unix.Minor(uint64(st.Rdev)) != 3 {
		f.Close()
		return nil, errors.New("/dev/null is not the null device")
	}
	return f, nil
}

// readonlyPath binds p onto itself and remounts the bind read-only, keeping
// its nosuid/nodev/noexec flags. A missing path is skipped.
func readonlyPath(root *os.File, p string) error {
	target, err := pathrs.OpenatInRoot(root, p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = unix.Mount(fdPath(target), fdPath(target), "", unix.MS_BIND|unix.MS_REC, "")
	target.Close()
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	top, err := pathrs.OpenatInRoot(root, p)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	defer top.Close()
	return remountReadonly(fdPath(top))
}

func remountReadonly(p string) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(p, &sfs); err != nil {
		return err
	}
	keep := uintptr(sfs.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	return unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keep, "")
}

// enterRoot makes root the process's root: with pivot_root, or, when forced
// (noPivot) or when pivot_root refuses because / is the initramfs itself,
// with the no-pivot fallback (moveRoot).
func enterRoot(root *os.File, noPivot bool) error {
	if !noPivot {
		if err := unix.Fchdir(int(root.Fd())); err != nil {
			return fmt.Errorf("pivot root: chdir: %w", err)
		}
		err := unix.PivotRoot(".", ".")
		if err == nil {
			if err := detachOldRoot(); err != nil {
				return fmt.Errorf("pivot root: %w", err)
			}
			return nil
		}
		// The kernel refuses to pivot away from rootfs (the initramfs
		// that was never switched away from) with EINVAL. Any other
		// EINVAL is a bug, not a reason to settle for less.
		if err != unix.EINVAL || !rootIsInitramfs() {
			return fmt.Errorf("pivot root: %w", err)
		}
	}
	if err := moveRoot(root); err != nil {
		return fmt.Errorf("move root over / (no pivot_root): %w", err)
	}
	return nil
}

// rootIsInitramfs reports whether / is a RAM filesystem, as rootfs (the
// initramfs) always is: ramfs, or tmpfs when the kernel has it.
func rootIsInitramfs() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	t := uint32(st.Type) // int32 on 32-bit ARM, where RAMFS_MAGIC overflows it
	return t == unix.RAMFS_MAGIC || t == unix.TMPFS_MAGIC
}

// detachOldRoot finishes pivotRoot: the old root, stacked under the new one
// by the pivot_root(".", ".") trick, is detached with everything mounted
// on it.
func detachOldRoot() error {
	// Keep the unmount of the old root from propagating to the host.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

// ipcSysctls are the kernel.* sysctls that belong to the ipc namespace.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
	"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true,
}

// setSysctls writes the spec's sysctls through the container's /proc/sys,
// accepting only those that belong to a namespace of the container's own
// (as runc's validator does): anything else would change the host.
func setSysctls(root *os.File, sysctls map[string]string, ns map[specs.LinuxNamespaceType]bool) error {
	for k, v := range sysctls {
		var ok bool
		switch {
		case strings.HasPrefix(k, "net."):
			ok = ns[specs.NetworkNamespace]
		case ipcSysctls[k] || strings.HasPrefix(k, "fs.mqueue."):
			ok = ns[specs.IPCNamespace]
		case k == "kernel.hostname" || k == "kernel.domainname":
			ok = ns[specs.UTSNamespace]
		}
		if !ok || strings.Contains(k, "/") || strings.Contains(k, "..") {
			return fmt.Errorf("sysctl %s: not allowed in this container", k)
		}
		h, err := pathrs.OpenatInRoot(root, "/proc/sys/"+strings.ReplaceAll(k, ".", "/"))
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
		f, err := pathrs.Reopen(h, unix.O_WRONLY)
		h.Close()
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
		_, err = f.WriteString(v)
		f.Close()
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}
