package initproc

import specs "github.com/opencontainers/runtime-spec/specs-go"

// ExecArg is os.Args[1] of a re-executed exec helper (StartExec). main
// packages (and test binaries that exec into containers) call ExecMain when
// they see it, before anything else.
const ExecArg = "__tender_exec__"

// ExecConfig is what the exec helper needs to run a command inside a running
// container; the parent sends it as JSON over the sync socket once the
// helper has been placed in the container's cgroup.
type ExecConfig struct {
	// Process is the command: Args (required), Env, Cwd (created when
	// missing, resolved inside the container's root), User, Capabilities
	// (bounding, effective, permitted), Rlimits, NoNewPrivileges and
	// User.Umask, applied as the container's init applies them.
	Process *specs.Process `json:"process"`
	// User, when set, overrides Process.User as Config.User does.
	User string `json:"user,omitempty"`
	// Seccomp is "default" or "unconfined", as in Config.
	Seccomp string `json:"seccomp"`
}
