package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/nsenter"
)

// execCmd: tender-agent exec [OPTIONS] CONTAINER COMMAND [ARG...]
// The command runs inside the container with its namespaces, cgroup,
// capabilities, no_new_privs and seccomp; its output (up to 1 MiB) is
// printed when it ends, and its exit code is ours.
func (c *cli) execCmd() *cobra.Command {
	var user, workdir string
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container, with the container's namespaces,
cgroup, capabilities, no_new_privs and seccomp filter. Its output (up to
1 MiB) is printed when it ends, and tender-agent exits with its exit code.
Options stand before the container's name.`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return c.exec(cmd.Context(), args, user, workdir) },
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false) // exec CTR CMD --flag: --flag is the command's
	fs.StringVarP(&user, "user", "u", "", "user: `NAME|UID[:GID]` (default: the container's)")
	fs.StringVarP(&workdir, "workdir", "w", "", "working directory in the container")
	return cmd
}

func (c *cli) exec(ctx context.Context, args []string, user, workdir string) error {
	_, ctr, err := c.lookup(args[0])
	if err != nil {
		return err
	}
	if ctr.State.Status != container.Running {
		return fmt.Errorf("%w: %s", container.ErrNotRunning, ctr.Name)
	}
	o := nsenter.ExecOptions{
		Pid: ctr.State.Pid, PidStart: ctr.State.PidStart, Args: args[1:],
		Process: ctr.Spec.Process, User: ctr.User, Seccomp: ctr.Seccomp, Cwd: workdir,
		MaxOutput: 1 << 20,
		Place: func(pid int) error {
			cg, err := cgroups.Load(ctr.Cgroup)
			if err != nil {
				return err
			}
			return cg.Add(pid)
		},
	}
	if user != "" {
		o.User = user
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
