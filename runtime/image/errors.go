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
	// ErrNoPlatform is wrapped when an index has no manifest for the
	// wanted platform.
	ErrNoPlatform = errors.New("no manifest for this platform")
	// ErrUnauthorized is wrapped when a registry refused the credentials
	// (or their absence).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnreachable is wrapped when no registry (mirror or upstream)
	// could be reached.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrDigestMismatch is wrapped when downloaded content does not match
	// its digest. Nothing of it is kept.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNoSpace is wrapped when the store's file system is full. Whole
	// partial downloads are kept for the next attempt.
	ErrNoSpace = errors.New("no space left on device")
)

// categoryError carries a plain message and reports a category through Is,
// so messages read naturally ("path escapes layer") while callers can still
// use errors.Is(err, ErrInvalid).
type categoryError struct {
	cat  error
	also error // a second category, may be nil
	msg  string
}

func (e *categoryError) Error() string        { return e.msg }
func (e *categoryError) Is(target error) bool { return target == e.cat || target == e.also }

func invalidf(format string, a ...any) error {
	return &categoryError{cat: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

func limitf(format string, a ...any) error {
	return &categoryError{cat: ErrLimit, msg: fmt.Sprintf(format, a...)}
}

func unsupportedf(format string, a ...any) error {
	return &categoryError{cat: ErrUnsupported, msg: fmt.Sprintf(format, a...)}
}

func noPlatformf(format string, a ...any) error {
	return &categoryError{cat: ErrNoPlatform, also: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

func categoryf(cat error, format string, a ...any) error {
	return &categoryError{cat: cat, msg: fmt.Sprintf(format, a...)}
}

// wrapCategory keeps err's chain and adds cat to it.
type wrapCategory struct {
	cat error
	err error
}

func (e *wrapCategory) Error() string        { return e.err.Error() }
func (e *wrapCategory) Unwrap() error        { return e.err }
func (e *wrapCategory) Is(target error) bool { return target == e.cat }
