// Command tender-agent runs OCI containers on an edge gateway with
// Tender's own runtime. This file is flag parsing and wiring only.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

// Set by the linker: -X main.version=...
var version = "dev"

// exitError carries a process exit code through run.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, context.Canceled):
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "tender-agent:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode maps error categories to exit codes: 125 for the runtime's own
// failures (docker's convention), 1 for bad input and unknown names, 3 when
// a command needs the daemon and it is not running (systemctl's "inactive").
func exitCode(err error) int {
	switch {
	case errors.Is(err, errUsage), errors.Is(err, errdefs.ErrNotFound), errors.Is(err, container.ErrNotRunning), errors.Is(err, errdefs.ErrInvalidArgument),
		errors.Is(err, image.ErrNotFound), errors.Is(err, image.ErrUnauthorized), errors.Is(err, image.ErrNoPlatform),
		errors.Is(err, image.ErrInvalid), errors.Is(err, wire.ErrInvalid), errors.Is(err, agent.ErrNotFound):
		return 1
	case errors.As(err, new(inputError)):
		return 1
	case errors.Is(err, agent.ErrNoDaemon):
		return 3
	}
	return 125
}

var errUsage = errors.New("usage")

// inputError marks an error in what the user gave (a config file, a spec)
// without changing its message: exit code 1.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

const usage = `Usage: tender-agent [--root DIR] COMMAND [OPTIONS]

Run OCI containers on an edge gateway.

Commands:
  daemon    Run the agent: converge the device on its desired apps
  apply     Add or update an app from a spec file (apply -f app.yaml)
  apps      List the desired apps and their state
  app rm    Remove an app
  run       Run a container from an image
  ps        List containers
  exec      Run a command in a running container
  logs      Show a container's output
  stop      Stop running containers
  rm        Remove containers
  stats     Show running containers' resource use
  inspect   Show a container as JSON
  pull      Pull an image from a registry
  images    List images ('images prune' removes unused ones)
  rmi       Remove images
  load      Load an image from an OCI archive
  save      Save an image to an OCI archive
  version   Show the version

Run 'tender-agent COMMAND --help' for a command's options.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := globals{root: defaultRoot, socket: defaultSocket}
	args, err := g.parse(args)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, rest := args[0], args[1:]
	c := &cli{globals: g, stdout: stdout, stderr: stderr}
	switch cmd {
	case "run":
		return c.run(ctx, rest)
	case "ps":
		return c.ps(rest)
	case "exec":
		return c.execCmd(ctx, rest)
	case "logs":
		return c.logs(ctx, rest)
	case "stop":
		return c.stop(rest)
	case "rm":
		return c.rm(rest)
	case "stats":
		return c.stats(ctx, rest)
	case "inspect":
		return c.inspect(rest)
	case "images":
		if len(rest) > 0 && rest[0] == "prune" {
			return c.imagesPrune(rest[1:])
		}
		return c.images(rest)
	case "pull":
		return c.pull(ctx, rest)
	case "save":
		return c.save(ctx, rest)
	case "rmi":
		return c.rmi(rest)
	case "load":
		return c.load(ctx, rest)
	case "daemon":
		return c.daemonCmd(ctx, rest)
	case "apply":
		return c.apply(ctx, rest)
	case "apps":
		return c.apps(ctx, rest)
	case "app":
		return c.appCmd(ctx, rest)
	case "version":
		fmt.Fprintf(stdout, "tender-agent %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}
