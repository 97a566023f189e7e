package image

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Errors carry a category of github.com/containerd/errdefs; callers branch
// with errors.Is or errdefs.IsX:
//
//   - errdefs.ErrNotFound: Get and Remove for unknown references, a
//     registry's 404.
//   - errdefs.ErrInvalidArgument: a malformed or hostile reference,
//     archive, manifest or layer that was refused.
//   - errdefs.ErrResourceExhausted: a configured Limits bound was exceeded
//     (and ErrNoSpace, below).
//   - errdefs.ErrNotImplemented: well-formed input this store does not
//     handle yet (zstd layers, foreign media types).
//   - errdefs.ErrUnauthenticated: a registry refused the credentials (or
//     their absence).
//
// The sentinels below are finer conditions callers branch on; each wraps a
// category.
var (
	// ErrNoPlatform is wrapped when an index has no manifest for the
	// wanted platform.
	ErrNoPlatform = fmt.Errorf("no manifest for this platform: %w", errdefs.ErrNotFound)
	// ErrUnreachable is wrapped when no registry (mirror or upstream)
	// could be reached. It is distinct from the agent's own "daemon not
	// running", which shares the category.
	ErrUnreachable = fmt.Errorf("registry unreachable: %w", errdefs.ErrUnavailable)
	// ErrDigestMismatch is wrapped when downloaded content does not match
	// its digest. Nothing of it is kept.
	ErrDigestMismatch = fmt.Errorf("digest mismatch: %w", errdefs.ErrDataLoss)
	// ErrNoSpace is wrapped when the store's file system is full. Whole
	// partial downloads are kept for the next attempt.
	ErrNoSpace = fmt.Errorf("no space left on device: %w", errdefs.ErrResourceExhausted)
)

// categoryError carries a plain message and a category it unwraps to, so
// messages read naturally ("path escapes layer") while callers can still
// use errors.Is(err, errdefs.ErrInvalidArgument).
type categoryError struct {
	cat error
	msg string
}

func (e *categoryError) Error() string { return e.msg }
func (e *categoryError) Unwrap() error { return e.cat }

func invalidf(format string, a ...any) error {
	return categoryf(errdefs.ErrInvalidArgument, format, a...)
}

func limitf(format string, a ...any) error {
	return categoryf(errdefs.ErrResourceExhausted, format, a...)
}

func unsupportedf(format string, a ...any) error {
	return categoryf(errdefs.ErrNotImplemented, format, a...)
}

func noPlatformf(format string, a ...any) error {
	return categoryf(ErrNoPlatform, format, a...)
}

func categoryf(cat error, format string, a ...any) error {
	return &categoryError{cat: cat, msg: fmt.Sprintf(format, a...)}
}

// wrapCategory keeps err's chain and adds cat to it.
type wrapCategory struct {
	cat error
	err error
}

func (e *wrapCategory) Error() string   { return e.err.Error() }
func (e *wrapCategory) Unwrap() []error { return []error{e.err, e.cat} }
