package main

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/internal/cliexit"
)

// Exit codes, as docker and systemctl use them.
const (
	exitBadInput  = 1   // bad input, unknown names, refused requests
	exitNoDaemon  = 3   // the command needs the daemon and it is not running (systemctl's "inactive")
	exitRuntime   = 125 // the runtime itself failed (docker's convention)
	exitInterrupt = 130 // the command was interrupted (128+SIGINT)
)

// exitCodes is the one table from error categories to exit codes; the
// first row that matches wins, and an error no row matches is the
// runtime's own failure (125). A foreground run or an exec exits with the
// workload's code instead (exitError).
var exitCodes = []struct {
	is   func(error) bool
	code int
}{
	{errdefs.IsInvalidArgument, exitBadInput}, // usage errors carry it too
	{errdefs.IsNotFound, exitBadInput},
	{errdefs.IsFailedPrecondition, exitBadInput},
	{errdefs.IsConflict, exitBadInput},
	{errdefs.IsAlreadyExists, exitBadInput},
	{errdefs.IsUnauthorized, exitBadInput},
	{errdefs.IsPermissionDenied, exitBadInput},
	{isNoDaemon, exitNoDaemon},
}

// isNoDaemon is the daemon not running: that error only, not every
// unavailable thing (an unreachable registry is the runtime's failure).
func isNoDaemon(err error) bool { return errors.Is(err, api.ErrNoDaemon) }

func is(targets ...error) func(error) bool {
	return func(err error) bool {
		for _, t := range targets {
			if errors.Is(err, t) {
				return true
			}
		}
		return false
	}
}

func exitCode(err error) int {
	for _, row := range exitCodes {
		if row.is(err) {
			return row.code
		}
	}
	return exitRuntime
}

// exitError carries a workload's exit code through run: a foreground run
// or an exec exits with it, and prints nothing.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError and invalid are the kinds both command lines share
// (internal/cliexit).
type usageError = cliexit.UsageError

var invalid = cliexit.Invalid
