package main

import (
	"context"
	"fmt"

	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/nsenter"
)

// execCmd: tender-agent exec [-u USER] CONTAINER COMMAND [ARGS...]
// The command runs inside the container with its namespaces, cgroup,
// capabilities, no_new_privs and seccomp; its output (up to 1 MiB) is
// printed when it ends, and its exit code is ours.
func (c *cli) execCmd(ctx context.Context, args []string) error {
	fs := c.flagSet("exec", "[OPTIONS] CONTAINER COMMAND [ARGS...]")
	user := fs.String("u", "", "user: name, uid or uid:gid (default: the container's)")
	workdir := fs.String("w", "", "working directory in the container")
	rest, err := c.parse(fs, args, 2)
	if err != nil {
		return err
	}
	_, ctr, err := c.lookup(rest[0])
	if err != nil {
		return err
	}
	if ctr.State.Status != container.Running {
		return fmt.Errorf("%w: %s", container.ErrNotRunning, ctr.Name)
	}
	o := nsenter.ExecOptions{
		Pid: ctr.State.Pid, PidStart: ctr.State.PidStart, Args: rest[1:],
		Process: ctr.Spec.Process, User: ctr.User, Seccomp: ctr.Seccomp, Cwd: *workdir,
		MaxOutput: 1 << 20,
		Place: func(pid int) error {
			cg, err := cgroups.Load(ctr.Cgroup)
			if err != nil {
				return err
			}
			return cg.Add(pid)
		},
	}
	if *user != "" {
		o.User = *user
	}
	code, out, err := nsenter.Exec(ctx, o)
	c.stdout.Write(out)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}
