// Command tender is the fleet controller (`tender serve`) and the
// operator's command line: every other subcommand is a client of the
// controller's HTTP API (fleet/api), with kubectl's conventions (aligned
// tables, -o json|yaml|wide, -l selectors, --watch, one-line errors, exit
// codes from one table, shell completions). This package is the command
// line (cobra) and wiring only.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	// Maintenance windows are read in each device's own time zone: the
	// controller carries the tz database (450 KB) rather than trust the
	// host's, which minimal containers and hardened hosts often lack.
	_ "time/tzdata"

	"github.com/tender-edge/tender/internal/termsafe"
)

// Set by the linker: -X main.version=...
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := report(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv), os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs the command they name. getenv is os.Getenv
// (tests pass their own).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	c := newCLI(stdout, stderr, getenv)
	root := newRoot(c)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	flush(c.out)
	var ue usageError
	if err != nil && !c.started && !errors.As(err, &ue) {
		// cobra's own errors: unknown command, bad arguments.
		err = usageError{Err: err, Path: cmd.CommandPath()}
	}
	return err
}

// report prints err, if any, on one line and returns the exit code for it.
func report(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		return exitInterrupt
	}
	// Messages quote names, labels and versions that come from devices:
	// shown escaped on a terminal.
	w := termsafe.For(stderr)
	fmt.Fprintln(w, "tender:", strings.TrimRight(err.Error(), "\n"))
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", ue.Path)
	}
	flush(w)
	return exitCode(err)
}

func flush(ws ...io.Writer) {
	for _, w := range ws {
		if f, ok := w.(*termsafe.Writer); ok {
			f.Flush()
		}
	}
}
