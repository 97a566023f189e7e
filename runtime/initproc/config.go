// Package initproc is both sides of the container's init: Start, run by the
// parent, execs the init inside new namespaces, from a copy no container can
// write to: the small init (cmd/tender-init, embedded by initbin with the
// tender_small_init tag) or else this binary itself; Main, run in that
// child, sets up the root filesystem, drops privileges and execs the
// workload as PID 1. The child never logs: its errors travel back to the
// parent over the sync socket.
package initproc

import specs "github.com/opencontainers/runtime-spec/specs-go"

// Arg is os.Args[1] of a re-executed init. main packages (and test binaries
// that start containers) call Main when they see it, before anything else.
const Arg = "__tender_init__"

// Config is everything the child needs; the parent sends it as JSON over the
// sync socket (its length first; see the protocol in start_linux.go) once
// the child has been placed in its cgroup.
type Config struct {
	// Spec drives the child: Root.Path is the host path of the (empty)
	// mountpoint for the root filesystem; Process (args, env, cwd,
	// capabilities, rlimits, noNewPrivileges); Hostname; Mounts (mounted in
	// order inside the root, destinations resolved securely inside it);
	// Linux.Devices (the nodes of the minimal /dev); Linux.MaskedPaths and
	// Linux.ReadonlyPaths; Linux.Namespaces (types only: new namespaces).
	// Root.Readonly remounts / read-only after pivot_root.
	Spec *specs.Spec `json:"spec"`
	// RootMounts are mounted, in order, at Spec.Root.Path before anything
	// else (for an image: one overlay mount).
	RootMounts []Mount `json:"rootMounts"`
	// User, when set, overrides Spec.Process.User: "name", "uid",
	// "name:group" or "uid:gid", looked up in the container's /etc/passwd
	// and /etc/group after pivot_root. IDs must be in [0, 2^31).
	User string `json:"user,omitempty"`
	// Seccomp is "default" (the moby-derived allowlist) or "unconfined".
	Seccomp string `json:"seccomp"`
	// NoPivot makes the init enter its root without pivot_root, as it
	// does by itself when pivot_root fails because / is the initramfs:
	// every mount of the host outside the root is detached from the
	// container's mount namespace, the root is moved over / (MS_MOVE) and
	// the init chroots into it (runc's --no-pivot). For tests, and for
	// hosts whose pivot_root fails otherwise.
	NoPivot bool `json:"noPivot,omitempty"`
}

// Mount is a filesystem mount described as data (containerd's mount.Mount).
type Mount struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Options []string `json:"options,omitempty"`
}
