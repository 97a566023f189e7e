package container

import (
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/spec"
)

// HostDevice describes the host's device node at p for passing it
// through to a container (its numbers, mode and owner).
func HostDevice(p string) (spec.Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return spec.Device{}, fmt.Errorf("device %s: %v: %w", p, err, errdefs.ErrInvalidArgument)
	}
	d := spec.Device{Path: filepath.Clean(p), Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: st.Mode & 0o777, UID: st.Uid, GID: st.Gid}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		d.Type = "c"
	case unix.S_IFBLK:
		d.Type = "b"
	default:
		return spec.Device{}, fmt.Errorf("device %s is not a device node: %w", p, errdefs.ErrInvalidArgument)
	}
	return d, nil
}
