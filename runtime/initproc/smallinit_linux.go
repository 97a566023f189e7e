//go:build tender_small_init

package initproc

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/initproc/initbin"
)

// The small init (cmd/tender-init, embedded by initbin when the agent is
// built with the tender_small_init tag) is what containers exec, when
// there is one: it starts in about a third of the agent's time. It is
// written once per boot to InitDir/init-SHA256 (/run is a tmpfs: one copy
// per boot), checked against the embedded sha256 as it is written, and
// then exec'd like the agent's own binary before it: from a read-only bind
// mount that only the spawner thread sees (spawner_linux.go), or from a
// sealed memfd when that mount cannot be made. Without a blob, the
// runtime re-executes its own binary, as before.

// InitDir is where the small init is written: a directory of the runtime's
// user (root), 0700, that no container ever sees. /run is a tmpfs: one
// copy per boot.
const InitDir = "/run/tender/init"

// initFile is the small init's file, made once per process.
var initFile struct {
	once sync.Once
	path string
	err  error
}

// hasSmallInit says whether this binary embeds the small init.
func hasSmallInit() bool { return initbin.Blob() != nil }

// smallInitPath returns the path of the small init's file, writing it
// when it is missing, or "" without a blob.
func smallInitPath() (string, error) {
	if initbin.Blob() == nil {
		return "", nil
	}
	initFile.once.Do(func() {
		initFile.path, initFile.err = writeSmallInit(InitDir)
	})
	return initFile.path, initFile.err
}

// writeSmallInit makes dir (0700) and dir/init-SUM, unless a file of that
// name, owned by us, read-only and of the right size, is there already: it
// was written and checked earlier in this boot (a copy is only ever
// renamed into place once its sha256 matched).
func writeSmallInit(dir string) (string, error) {
	sum, size := initbin.Sum(), initbin.Size()
	if sum == "" || size <= 0 {
		return "", fmt.Errorf("embedded init has no valid checksum or size: %w", errdefs.ErrFailedPrecondition)
	}
	// Only the init's own directory is private: /run/tender holds the
	// agent's socket too.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("init directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("init directory: %w", err)
	}
	if err := checkOwned(dir, true); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "init-"+sum)
	err := checkInitFile(path, size)
	if err == nil {
		return path, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		// Not ours, writable or torn: replace it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("remove bad init %s: %w", path, err)
		}
	}
	tmp, err := os.CreateTemp(dir, ".init-*")
	if err != nil {
		return "", fmt.Errorf("write init: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	h := sha256.New()
	n, err := decompressInit(io.MultiWriter(tmp, h))
	if err == nil {
		err = tmp.Chmod(0o500)
	}
	if err == nil {
		err = tmp.Sync() // /run may be a disk: never a torn init after a power cut
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("write init %s: %w", tmp.Name(), err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum || n != size {
		return "", fmt.Errorf("embedded init has sha256 %s and %d bytes, its checksum file says %s and %d: %w",
			got, n, sum, size, errdefs.ErrDataLoss)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("write init: %w", err)
	}
	removeOtherInits(dir, path)
	return path, checkInitFile(path, size)
}

// removeOtherInits removes the inits of other builds (an agent upgraded
// within the boot): each takes RAM on a tmpfs. A runtime still using one
// keeps it through its detached mount; one that starts later writes its
// own again.
func removeOtherInits(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "init-*"))
	for _, p := range old {
		if p != keep {
			_ = os.Remove(p)
		}
	}
}

// checkOwned refuses a path that is a symlink, not owned by us, or writable
// by others; dir says whether it must be a directory (else a regular file).
func checkOwned(path string, dir bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	want := uint32(unix.S_IFREG)
	if dir {
		want = unix.S_IFDIR
	}
	switch {
	case st.Mode&unix.S_IFMT != want:
		return fmt.Errorf("%s: not a %s: %w", path, map[bool]string{true: "directory", false: "regular file"}[dir], errdefs.ErrFailedPrecondition)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s: owned by uid %d, not by us: %w", path, st.Uid, errdefs.ErrFailedPrecondition)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s: writable by others (mode %o): %w", path, st.Mode&0o7777, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// checkInitFile says whether path is a finished init: ours, a regular
// file without any write permission, of the init's size.
func checkInitFile(path string, size int64) error {
	if err := checkOwned(path, false); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&0o222 != 0 || st.Size != size {
		return fmt.Errorf("%s: mode %o and %d bytes, want read-only and %d: %w", path, st.Mode&0o7777, st.Size, size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// decompressInit writes the uncompressed init to w.
func decompressInit(w io.Writer) (int64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(initbin.Blob()))
	if err != nil {
		return 0, fmt.Errorf("embedded init: %w", err)
	}
	n, err := io.Copy(w, zr)
	if err != nil {
		return n, fmt.Errorf("embedded init: %w", err)
	}
	return n, nil
}

// smallInitMemfd is the sealed memfd copy of the small init, for when its
// file or the read-only mount cannot be had: it costs a decompression per
// process (tens of milliseconds), so it is the last resort.
func smallInitMemfd() (*os.File, error) {
	return sealedCopy(func(fd int) error {
		h := sha256.New()
		n, err := decompressInit(io.MultiWriter(fdWriter(fd), h))
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != initbin.Sum() || n != initbin.Size() {
			return fmt.Errorf("embedded init has sha256 %s, its checksum file says %s: %w", got, initbin.Sum(), errdefs.ErrDataLoss)
		}
		return nil
	})
}

// fdWriter writes to a descriptor it does not own (an *os.File would close
// it when collected).
type fdWriter int

func (w fdWriter) Write(b []byte) (int, error) {
	if err := writeAll(int(w), b); err != nil {
		return 0, err
	}
	return len(b), nil
}
