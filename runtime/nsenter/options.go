package nsenter

import specs "github.com/opencontainers/runtime-spec/specs-go"

// DefaultMaxOutput caps the output Exec keeps when ExecOptions.MaxOutput is
// zero.
const DefaultMaxOutput = 64 << 10

// ExecOptions says what to run in which container, and as whom.
type ExecOptions struct {
	// Pid and PidStart are the container's init (container.State.Pid and
	// PidStart).
	Pid      int
	PidStart uint64
	// Args is the command; Args[0] is looked up in the container's PATH
	// (from the environment) unless it holds a slash.
	Args []string
	// Process is the container's process (container.Config.Spec.Process):
	// its Env, Cwd, User, Capabilities, Rlimits, NoNewPrivileges and
	// umask apply to the command too. Its Args are ignored. Required.
	Process *specs.Process
	// User, when set, overrides Process.User ("name", "uid", "name:group",
	// "uid:gid"), as container.Config.User does; pass the container's
	// Config.User for the workload's own identity.
	User string
	// Seccomp is the container's profile (container.Config.Seccomp):
	// "default" or "unconfined".
	Seccomp string
	// Env entries are added to Process.Env, replacing those of the same
	// name. Cwd, when set, replaces Process.Cwd.
	Env []string
	Cwd string
	// Place puts a pid into the container's cgroup (for example the
	// container's cgroups Add). It is called with the helper's host pid
	// once the helper has set itself up inside the container, right before
	// it execs the command (so that a pids limit the container fills
	// applies to the command, not to the helper's threads). Nil leaves the
	// command in the caller's cgroup.
	Place func(pid int) error
	// MaxOutput caps the combined stdout and stderr kept; the rest is read
	// and dropped. Zero means DefaultMaxOutput.
	MaxOutput int
}
