package main

import (
	"errors"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
)

// Exit codes of the client commands. 1 is kubectl's "it did not work"
// for what the user can fix; 3 and 4 tell scripts the two failures they
// handle differently (retry later; fix the credentials); 125 is the
// controller's own failure, as for tender-agent.
const (
	exitBadInput    = 1   // bad input, unknown names, refused requests
	exitUnreachable = 3   // no controller answers at --server
	exitAuth        = 4   // the token is missing, wrong or revoked, or may not do this; the server is not trusted
	exitServer      = 125 // the controller (or a device behind it) failed
	exitInterrupt   = 130 // interrupted (128+SIGINT)
)

// exitCodes is the one table from error categories to exit codes; the
// first row that matches wins; an error no row matches is exitServer.
var exitCodes = []struct {
	is   func(error) bool
	code int
}{
	{isUnreachable, exitUnreachable},
	{errdefs.IsUnauthorized, exitAuth},
	{errdefs.IsPermissionDenied, exitAuth},
	{errdefs.IsInvalidArgument, exitBadInput}, // usage errors carry it too
	{errdefs.IsNotFound, exitBadInput},
	{errdefs.IsFailedPrecondition, exitBadInput},
	{errdefs.IsConflict, exitBadInput},
	{errdefs.IsAlreadyExists, exitBadInput},
}

// isUnreachable is the controller not answering: that error only, not a
// device the controller cannot reach (unavailable too, but exitServer).
func isUnreachable(err error) bool { return errors.Is(err, api.ErrUnreachable) }

func exitCode(err error) int {
	for _, row := range exitCodes {
		if row.is(err) {
			return row.code
		}
	}
	return exitServer
}

// usageError is a command line that does not parse: an unknown command or
// flag, a bad flag value, missing arguments. It is an invalid argument
// (exit 1) and its message is cobra's or pflag's.
type usageError struct {
	err  error
	path string // the command it concerns, for the hint
}

func (e usageError) Error() string   { return e.err.Error() }
func (e usageError) Unwrap() []error { return []error{e.err, errdefs.ErrInvalidArgument} }

// invalid marks err, a problem in what the user gave (a flag's value, a
// file), as an invalid argument without changing its message.
func invalid(err error) error {
	if err == nil || errdefs.IsInvalidArgument(err) {
		return err
	}
	return invalidError{err}
}

type invalidError struct{ error }

func (e invalidError) Unwrap() []error { return []error{e.error, errdefs.ErrInvalidArgument} }
