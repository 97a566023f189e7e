package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
)

// ErrBodyTooLarge is a request body over the route's cap. It is the
// client's mistake (an invalid argument) answered with 413.
var ErrBodyTooLarge = fmt.Errorf("request body too large: %w", errdefs.ErrInvalidArgument)

// ErrUnreachable means nothing answers at the controller's address (the
// client's error, never the server's).
var ErrUnreachable = fmt.Errorf("the fleet controller is not reachable: %w", errdefs.ErrUnavailable)

// categories is the one table of this edge: an error category, its HTTP
// status and the name it travels under. The first row that matches wins,
// so finer sentinels come before their categories.
var categories = []struct {
	err    error
	status int
	kind   string
}{
	{ErrBodyTooLarge, http.StatusRequestEntityTooLarge, "toolarge"},
	{errdefs.ErrInvalidArgument, http.StatusBadRequest, "invalid"},
	{errdefs.ErrNotFound, http.StatusNotFound, "notfound"},
	{errdefs.ErrAlreadyExists, http.StatusConflict, "exists"},
	{errdefs.ErrConflict, http.StatusConflict, "conflict"},
	{errdefs.ErrFailedPrecondition, http.StatusPreconditionFailed, "precondition"},
	{errdefs.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{errdefs.ErrPermissionDenied, http.StatusForbidden, "permission"},
	{errdefs.ErrResourceExhausted, http.StatusTooManyRequests, "exhausted"},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
	{errdefs.ErrNotImplemented, http.StatusNotImplemented, "notimplemented"},
	{errdefs.ErrDataLoss, http.StatusInternalServerError, "dataloss"},
}

// classify is err's HTTP status and category name ("internal" if none).
func classify(err error) (int, string) {
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return c.status, c.kind
		}
	}
	return http.StatusInternalServerError, "internal"
}

// Error is an error as the API returns it: a category and a message.
type Error struct {
	Kind string `json:"kind"`
	Msg  string `json:"error"`
}

func (e *Error) Error() string { return e.Msg }

// Unwrap is the error's category, for errors.Is and errdefs.IsX.
func (e *Error) Unwrap() error {
	for _, c := range categories {
		if c.kind == e.Kind {
			return c.err
		}
	}
	return errdefs.ErrUnknown
}
