// Package mountpath decides which paths inside a container are the
// runtime's own, where no volume or bind may go. It is a leaf: it imports
// only the standard library, so that the runtime (runtime/spec) and the app
// validation of the wire (sync/wire) ask the same function and cannot
// disagree.
package mountpath

import (
	"path"
	"strconv"
	"strings"
)

// subtrees are mounted by the runtime with their own rules (masked and
// read-only paths, a read-only sysfs and cgroup tree): nothing may be bound
// at or below them.
var subtrees = []string{"/proc", "/sys"}

// exact are the runtime's mounts that may hold binds below them but may not
// be replaced themselves: the root and the minimal /dev.
var exact = []string{"/", "/dev"}

// ReservedPath reports whether p, a path inside a container, is managed by
// the runtime, and if so why, in words fit for an operator:
// "/proc/sys is managed by the runtime". p is cleaned first; a path that is
// not absolute is reserved too (it names no place in the container).
func ReservedPath(p string) (reason string, reserved bool) {
	if !path.IsAbs(p) {
		return strconv.Quote(p) + " is not an absolute path", true
	}
	p = path.Clean(p)
	for _, t := range subtrees {
		if p == t || strings.HasPrefix(p, t+"/") {
			return p + " is managed by the runtime", true
		}
	}
	for _, t := range exact {
		if p == t {
			return p + " is managed by the runtime", true
		}
	}
	return "", false
}
