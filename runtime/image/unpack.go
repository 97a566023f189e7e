package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	overlayOpaque  = "trusted.overlay.opaque"
)

// unpacker extracts one layer tar into a fresh directory that will serve as
// an overlayfs lowerdir. Every tar entry is treated as hostile: names are
// checked lexically, and every file system change is made with *at system
// calls relative to a parent directory that was resolved inside the layer
// through an os.Root, so no symlink (from this tar) can lead a write
// outside the layer directory.
type unpacker struct {
	dir    string     // absolute layer directory (a temp dir until committed)
	root   *os.Root   // confines resolution to dir
	lowers []*os.Root // lower layers, topmost first: attributes of implicit parents
	lim    Limits
	log    zerolog.Logger

	entries int
	bytes   int64
	devices int             // device nodes skipped (never created), said once per layer
	regular map[string]bool // regular files extracted in this layer (hardlink targets)
	seen    map[string]bool // paths created by this layer's entries (whiteouts do not hide them)
	dirs    []dirTimes      // directory times, applied after all entries
}

type dirTimes struct {
	name         string
	atime, mtime time.Time
}

func newUnpacker(dir string, lowers []*os.Root, lim Limits, log zerolog.Logger) (*unpacker, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &unpacker{
		dir: dir, root: root, lowers: lowers, lim: lim, log: log,
		regular: map[string]bool{}, seen: map[string]bool{},
	}, nil
}

func (u *unpacker) Close() error { return u.root.Close() }

// unpack extracts the uncompressed tar stream r. It returns the number of
// regular-file bytes written.
func (u *unpacker) unpack(ctx context.Context, r io.Reader) (int64, error) {
	if err := os.Chmod(u.dir, 0o755); err != nil {
		return 0, err
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read tar: %w", err)
		}
		u.entries++
		if u.entries > u.lim.MaxEntries {
			return 0, limitf("more than %d entries", u.lim.MaxEntries)
		}
		if err := u.entry(tr, hdr); err != nil {
			return 0, fmt.Errorf("entry %q: %w", quoteName(hdr.Name), err)
		}
	}
	if err := u.applyDirTimes(); err != nil {
		return 0, err
	}
	return u.bytes, nil
}

func quoteName(s string) string {
	if len(s) > 256 {
		return s[:256] + "…"
	}
	return s
}

// cleanName checks a tar name and returns it relative and clean. ".."
// components and absolute names are refused outright.
func (u *unpacker) cleanName(name string) (string, error) {
	if name == "" {
		return "", invalidf("empty name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", invalidf("name contains NUL")
	}
	if len(name) > u.lim.MaxPathLen {
		return "", limitf("name longer than %d bytes", u.lim.MaxPathLen)
	}
	if strings.Trim(name, "/") == "" {
		// umoci insert … / writes the layer root as "/": the root itself,
		// nothing outside the layer.
		return ".", nil
	}
	if strings.HasPrefix(name, "/") {
		return "", invalidf("absolute path")
	}
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "..":
			return "", invalidf("path escapes layer")
		case "", ".":
		default:
			depth++
		}
	}
	if depth > u.lim.MaxDepth {
		return "", limitf("path deeper than %d components", u.lim.MaxDepth)
	}
	return path.Clean(name), nil
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := u.cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Uid > math.MaxInt32 || hdr.Gid < 0 || hdr.Gid > math.MaxInt32 {
		return invalidf("owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return invalidf("layer root is not a directory (type %q)", hdr.Typeflag)
		}
		return u.rootDir(hdr)
	}
	if base := path.Base(name); strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(path.Dir(name), base)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		return u.regularFile(name, hdr, tr)
	case tar.TypeDir:
		return u.directory(name, hdr)
	case tar.TypeSymlink:
		return u.symlink(name, hdr)
	case tar.TypeLink:
		return u.hardlink(name, hdr)
	case tar.TypeFifo:
		return u.fifo(name, hdr)
	case tar.TypeChar, tar.TypeBlock:
		// Documented behaviour, and ordinary in distribution images (their
		// /dev): counted, and reported once per layer by the caller.
		u.devices++
		return nil
	default:
		return invalidf("unsupported entry type %q", hdr.Typeflag)
	}
}

// mkparents makes sure every component of dir exists. Missing directories
// take mode and owner from the topmost lower layer that has them, so that
// an implicit parent does not change the merged view (0755 root:root
// otherwise).
func (u *unpacker) mkparents(dir string) error {
	if dir == "." {
		return nil
	}
	comps := strings.Split(dir, "/")
	for i := range comps {
		p := strings.Join(comps[:i+1], "/")
		fi, err := u.root.Lstat(p)
		if err == nil {
			if fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
				// A symlink is resolved (inside the layer, or refused)
				// when the next component is opened.
				continue
			}
			return invalidf("parent %q is not a directory", p)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resolve %q: %w", p, err)
		}
		mode, uid, gid := os.FileMode(0o755), 0, 0
		for _, lr := range u.lowers {
			lfi, err := lr.Lstat(p)
			if err != nil {
				continue
			}
			if st, ok := lfi.Sys().(*syscall.Stat_t); ok && lfi.IsDir() {
				mode = lfi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky)
				uid, gid = int(st.Uid), int(st.Gid)
			}
			break
		}
		if err := u.root.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("create parent %q: %w", p, err)
		}
		f, err := u.openDirNoFollow(p)
		if err != nil {
			return err
		}
		err = errors.Join(f.Chown(uid, gid), f.Chmod(mode))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("create parent %q: %w", p, err)
		}
		u.seen[p] = true
	}
	return nil
}

// openParent creates the parents of name and returns its parent directory,
// resolved inside the layer, and the final component.
func (u *unpacker) openParent(name string) (*os.File, string, error) {
	dir := path.Dir(name)
	if err := u.mkparents(dir); err != nil {
		return nil, "", err
	}
	return u.openDir(dir, path.Base(name))
}

// openDir opens dir (following symlinks only inside the layer).
func (u *unpacker) openDir(dir, base string) (*os.File, string, error) {
	f, err := u.root.Open(dir)
	if err != nil {
		return nil, "", fmt.Errorf("resolve %q: %w", dir, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.IsDir() {
		err = invalidf("parent %q is not a directory", dir)
	}
	if err != nil {
		_ = f.Close()
		return nil, "", err
	}
	return f, base, nil
}

// openDirNoFollow opens name, which must itself be a directory and not a
// symlink.
func (u *unpacker) openDirNoFollow(name string) (*os.File, error) {
	pf, base, err := u.openDir(path.Dir(name), path.Base(name))
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	fd, err := unix.Openat(int(pf.Fd()), base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %q: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// clear removes whatever exists at base in dirfd, except a directory when
// keepDir is set. It reports whether a directory was kept.
func (u *unpacker) clear(dirfd int, base, name string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat: %w", err)
	}
	delete(u.regular, name)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		if err := u.root.RemoveAll(name); err != nil {
			return false, fmt.Errorf("replace directory: %w", err)
		}
		return false, nil
	}
	if err := unix.Unlinkat(dirfd, base, 0); err != nil {
		return false, fmt.Errorf("replace: %w", err)
	}
	return false, nil
}

func fileMode(hdr *tar.Header) os.FileMode {
	return hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func tarTimes(hdr *tar.Header) []unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
}

// setMeta applies owner, mode (after chown, which clears setuid) and
// xattrs through an open descriptor.
func (u *unpacker) setMeta(f *os.File, hdr *tar.Header) error {
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := f.Chmod(fileMode(hdr)); err != nil {
		return err
	}
	u.setXattrs(int(f.Fd()), hdr)
	return nil
}

func (u *unpacker) setXattrs(fd int, hdr *tar.Header) {
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(attr, "trusted.") {
			u.log.Warn().Str("entry", quoteName(hdr.Name)).Str("xattr", attr).Msg("dropping trusted xattr from layer")
			continue
		}
		if err := unix.Fsetxattr(fd, attr, []byte(hdr.PAXRecords[k]), 0); err != nil {
			u.log.Warn().Err(err).Str("entry", quoteName(hdr.Name)).Str("xattr", attr).Msg("cannot set xattr")
		}
	}
}

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			return true
		}
	}
	return false
}

func (u *unpacker) regularFile(name string, hdr *tar.Header, r io.Reader) error {
	if hdr.Size < 0 {
		return invalidf("negative size")
	}
	if hdr.Size > u.lim.MaxLayerBytes-u.bytes {
		return limitf("layer larger than %d bytes", u.lim.MaxLayerBytes)
	}
	u.bytes += hdr.Size
	pf, base, err := u.openParent(name)
	if err != nil {
		return err
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	if _, err := u.clear(dirfd, base, name, false); err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	n, err := io.Copy(f, io.LimitReader(r, hdr.Size))
	if err == nil && n != hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = u.setMeta(f, hdr)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := unix.UtimesNanoAt(dirfd, base, tarTimes(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	u.regular[name] = true
	u.seen[name] = true
	return nil
}

func (u *unpacker) directory(name string, hdr *tar.Header) error {
	pf, base, err := u.openParent(name)
	if err != nil {
		return err
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	kept, err := u.clear(dirfd, base, name, true)
	if err != nil {
		return err
	}
	if !kept {
		if err := unix.Mkdirat(dirfd, base, 0o700); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	}
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	err = u.setMeta(f, hdr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("directory metadata: %w", err)
	}
	u.seen[name] = true
	u.dirs = append(u.dirs, dirTimes{name: name, atime: hdr.AccessTime, mtime: hdr.ModTime})
	return nil
}

func (u *unpacker) rootDir(hdr *tar.Header) error {
	f, err := u.root.Open(".")
	if err != nil {
		return err
	}
	err = u.setMeta(f, hdr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("layer root metadata: %w", err)
	}
	u.dirs = append(u.dirs, dirTimes{name: ".", atime: hdr.AccessTime, mtime: hdr.ModTime})
	return nil
}

func (u *unpacker) symlink(name string, hdr *tar.Header) error {
	target := hdr.Linkname
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return invalidf("symlink target empty or contains NUL")
	}
	if len(target) > u.lim.MaxPathLen {
		return limitf("symlink target longer than %d bytes", u.lim.MaxPathLen)
	}
	pf, base, err := u.openParent(name)
	if err != nil {
		return err
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	if _, err := u.clear(dirfd, base, name, false); err != nil {
		return err
	}
	// The target is kept verbatim: absolute targets resolve inside the
	// container's root at run time, never at unpack time.
	if err := unix.Symlinkat(target, dirfd, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := unix.Fchownat(dirfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lchown: %w", err)
	}
	if err := unix.UtimesNanoAt(dirfd, base, tarTimes(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	if hasXattrs(hdr) {
		u.log.Warn().Str("entry", quoteName(hdr.Name)).Msg("ignoring xattrs on symlink")
	}
	u.seen[name] = true
	return nil
}

func (u *unpacker) hardlink(name string, hdr *tar.Header) error {
	target, err := u.cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", quoteName(hdr.Linkname), err)
	}
	if target == name || target == "." {
		return invalidf("hardlink to itself or to the layer root")
	}
	if !u.regular[target] {
		return invalidf("hardlink target %q is not a regular file extracted earlier in this layer", target)
	}
	fi, err := u.root.Lstat(target)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", target, err)
	}
	if !fi.Mode().IsRegular() {
		return invalidf("hardlink target %q is not a regular file", target)
	}
	of, obase, err := u.openDir(path.Dir(target), path.Base(target))
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	defer of.Close()
	pf, base, err := u.openParent(name)
	if err != nil {
		return err
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	if _, err := u.clear(dirfd, base, name, false); err != nil {
		return err
	}
	// No AT_SYMLINK_FOLLOW: the link is made to the entry itself, which was
	// checked above to be a regular file inside the layer.
	if err := unix.Linkat(int(of.Fd()), obase, dirfd, base, 0); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	u.regular[name] = true
	u.seen[name] = true
	return nil
}

func (u *unpacker) fifo(name string, hdr *tar.Header) error {
	pf, base, err := u.openParent(name)
	if err != nil {
		return err
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	if _, err := u.clear(dirfd, base, name, false); err != nil {
		return err
	}
	// Created, never opened.
	if err := unix.Mknodat(dirfd, base, unix.S_IFIFO|0o600, 0); err != nil {
		return fmt.Errorf("mkfifo: %w", err)
	}
	if err := unix.Fchownat(dirfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lchown: %w", err)
	}
	if err := unix.Fchmodat(dirfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := unix.UtimesNanoAt(dirfd, base, tarTimes(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	u.seen[name] = true
	return nil
}

// whiteout converts an OCI whiteout into overlayfs form: ".wh.name" becomes
// a 0:0 character device "name", ".wh..wh..opq" the trusted.overlay.opaque
// xattr on the directory.
func (u *unpacker) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		return u.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		u.log.Warn().Str("entry", path.Join(dir, base)).Msg("skipping whiteout metadata entry")
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return invalidf("invalid whiteout name %q", base)
	}
	name := path.Join(dir, target)
	if u.seen[name] {
		// A whiteout does not hide an entry of its own layer.
		return nil
	}
	pf, tbase, err := u.openParent(name)
	if err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	defer pf.Close()
	dirfd := int(pf.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil // already whited out (or an implicit parent of this layer)
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("whiteout: stat: %w", err)
	}
	if err := unix.Mknodat(dirfd, tbase, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout: mknod: %w", err)
	}
	return nil
}

func (u *unpacker) opaque(dir string) error {
	var f *os.File
	var err error
	if dir == "." {
		f, err = u.root.Open(".")
	} else {
		if err := u.mkparents(dir); err != nil {
			return fmt.Errorf("opaque whiteout: %w", err)
		}
		f, err = u.openDirNoFollow(dir)
	}
	if err != nil {
		return fmt.Errorf("opaque whiteout: %w", err)
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), overlayOpaque, []byte("y"), 0); err != nil {
		return fmt.Errorf("opaque whiteout: set %s: %w", overlayOpaque, err)
	}
	return nil
}

func (u *unpacker) applyDirTimes() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		if d.atime.IsZero() {
			d.atime = d.mtime
		}
		ts := []unix.Timespec{unix.NsecToTimespec(d.atime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		if d.name == "." {
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, u.dir, ts, 0); err != nil {
				return fmt.Errorf("set times of layer root: %w", err)
			}
			continue
		}
		pf, base, err := u.openDir(path.Dir(d.name), path.Base(d.name))
		if err != nil {
			continue // replaced later in the stream
		}
		err = unix.UtimesNanoAt(int(pf.Fd()), base, ts, unix.AT_SYMLINK_NOFOLLOW)
		_ = pf.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("set times of %q: %w", d.name, err)
		}
	}
	return nil
}
