package initproc

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The kernel's bounds on what execve may pass (fs/exec.c): every argument
// and environment string, with its NUL, at most MAX_ARG_STRLEN (32 pages);
// all of them, with their pointers, at most a quarter of the stack rlimit,
// capped at three quarters of _STK_LIM (6 MiB) and at least ARG_MAX (32
// pages).
const (
	maxArgStrlen = 32 * 4096
	minArgMax    = 32 * 4096
	maxArgMax    = 8 << 20 / 4 * 3
)

// ArgMax is how many bytes of arguments and environment (strings, their
// NULs and their pointers) a process exec'd with the stack rlimits of
// rlimits (or, without an RLIMIT_STACK there, of this process) may be given.
func ArgMax(rlimits []specs.POSIXRlimit) int64 {
	var stack uint64
	found := false
	for _, l := range rlimits {
		if l.Type == "RLIMIT_STACK" {
			stack, found = l.Soft, true
		}
	}
	if !found {
		var r unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_STACK, &r); err != nil {
			return minArgMax
		}
		stack = r.Cur
	}
	limit := int64(maxArgMax)
	if q := stack / 4; q < uint64(limit) {
		limit = int64(q)
	}
	return max(limit, minArgMax)
}

// CheckExecSize refuses, with an error wrapping errdefs.ErrInvalidArgument,
// a command and environment that execve would refuse (E2BIG): callers
// check before they start anything, so the user learns what is too large
// instead of how the start broke.
func CheckExecSize(args, env []string, rlimits []specs.POSIXRlimit) error {
	total := int64(0)
	for _, list := range []struct {
		what string
		s    []string
	}{{"argument", args}, {"environment variable", env}} {
		for i, s := range list.s {
			if len(s)+1 > maxArgStrlen {
				name := fmt.Sprintf("%d", i)
				if list.what == "environment variable" {
					name = s[:min(len(s), 32)]
					if k, _, ok := cutEq(s); ok {
						name = k
					}
				}
				return fmt.Errorf("%s %s is %d bytes; the kernel passes at most %d bytes in one: %w",
					list.what, name, len(s), maxArgStrlen-1, errdefs.ErrInvalidArgument)
			}
			total += int64(len(s)) + 1 + 8
		}
	}
	if limit := ArgMax(rlimits); total > limit {
		return fmt.Errorf("the command and environment take %d bytes; a process may be given at most %d (ARG_MAX, a quarter of the stack size limit): %w",
			total, limit, errdefs.ErrInvalidArgument)
	}
	return nil
}

func cutEq(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
