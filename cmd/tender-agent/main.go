// Command tender-agent runs OCI containers on an edge gateway with
// Tender's own runtime. This package is the command line (cobra) and
// wiring only.
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

	"github.com/tender-edge/tender/internal/termsafe"
)

// Set by the linker: -X main.version=...
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := report(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs the command they name.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCLI(stdout, stderr)
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

// report prints err, if any, and returns the exit code for it.
func report(err error, stderr io.Writer) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, context.Canceled):
		return exitInterrupt
	}
	// Messages quote names, versions and messages that come from images,
	// specs and the fleet: shown escaped on a terminal.
	w := termsafe.For(stderr)
	fmt.Fprintln(w, "tender-agent:", strings.TrimRight(err.Error(), "\n"))
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", ue.Path)
	}
	flush(w)
	return exitCode(err)
}
