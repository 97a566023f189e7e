// Package sentinel makes the errors that callers branch on: each has a
// message of its own and a category (a containerd/errdefs error) that shows
// only to errors.Is and errdefs.IsX, so that messages read "malformed
// message", not "malformed message: invalid argument".
package sentinel

// New is an error with message msg in category cat.
func New(msg string, cat error) error { return &sentinel{msg: msg, cat: cat} }

type sentinel struct {
	msg string
	cat error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.cat }
