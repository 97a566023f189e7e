package image

import (
	"errors"
	"fmt"
)

// Sentinel categories. Callers branch on them with errors.Is.
var (
	// ErrNotFound is wrapped by Get and Remove for unknown references.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is wrapped when an archive, manifest or layer is malformed
	// or hostile and was refused.
	ErrInvalid = errors.New("invalid")
	// ErrLimit is wrapped when a configured Limits bound was exceeded.
	ErrLimit = errors.New("limit exceeded")
	// ErrUnsupported is wrapped for well-formed input that this store does
	// not handle yet (for example zstd layers).
	ErrUnsupported = errors.New("unsupported")
)

// categoryError carries a plain message and reports a category through Is,
// so messages read naturally ("path escapes layer") while callers can still
// use errors.Is(err, ErrInvalid).
type categoryError struct {
	cat error
	msg string
}

func (e *categoryError) Error() string        { return e.msg }
func (e *categoryError) Is(target error) bool { return target == e.cat }

func invalidf(format string, a ...any) error {
	return &categoryError{cat: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

func limitf(format string, a ...any) error {
	return &categoryError{cat: ErrLimit, msg: fmt.Sprintf(format, a...)}
}

func unsupportedf(format string, a ...any) error {
	return &categoryError{cat: ErrUnsupported, msg: fmt.Sprintf(format, a...)}
}
