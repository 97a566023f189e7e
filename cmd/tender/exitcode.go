package main

import (
	"errors"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/internal/cliexit"
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

// usageError and invalid are the kinds both command lines share
// (internal/cliexit).
type usageError = cliexit.UsageError

var invalid = cliexit.Invalid
