package initproc

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// restrictAndExec is the last stretch of both the init and the exec
// helper: seccomp, the user and capabilities, no_new_privs and the umask,
// in the order that works, then the status byte and execve. It returns
// only with an error.
//
// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the
// workload's user may not keep: it is loaded before the user switch (runc
// does the same); otherwise it is loaded last, so that the init's own
// syscalls are not constrained.
func restrictAndExec(profile string, p *specs.Process, u execUser, argv0 string, env []string) error {
	var filter *seccompFilter
	switch profile {
	case "", "unconfined":
	case "default":
		var err error
		if filter, err = defaultSeccomp(); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
		tr.Mark("seccomp-assembly")
	default:
		return fmt.Errorf("seccomp: unknown profile %q", profile)
	}
	if filter != nil && !p.NoNewPrivileges {
		if err := filter.load(); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
		filter = nil
	}
	if err := setUserAndCaps(u, p.Capabilities); err != nil {
		return err
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask) & 0o777
	}
	unix.Umask(umask)
	if filter != nil {
		if err := filter.load(); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	tr.Mark("caps-seccomp-load")
	if err := awaitGo(); err != nil {
		return err
	}
	if tr != nil {
		tr.Mark("await-go")
		f := os.NewFile(traceFd, "trace")
		_ = tr.Encode(f)
		f.Close()
	}
	writeStatus(string(execByte))
	err := unix.Exec(argv0, p.Args, env)
	return fmt.Errorf("exec %s: %w", argv0, err)
}
