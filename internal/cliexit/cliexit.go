// Package cliexit holds the error kinds both command lines (tender and
// tender-agent) give their exit-code tables: a command line that does not
// parse, and a bad value the user gave. Each program keeps its own table.
package cliexit

import "github.com/containerd/errdefs"

// UsageError is a command line that does not parse: an unknown command or
// flag, a bad flag value, missing arguments. It is an invalid argument
// (exit 1) and its message is cobra's or pflag's.
type UsageError struct {
	Err  error
	Path string // the command it concerns, for the hint
}

func (e UsageError) Error() string   { return e.Err.Error() }
func (e UsageError) Unwrap() []error { return []error{e.Err, errdefs.ErrInvalidArgument} }

// Invalid marks err, a problem in what the user gave (a flag's value, a
// file), as an invalid argument without changing its message.
func Invalid(err error) error {
	if err == nil || errdefs.IsInvalidArgument(err) {
		return err
	}
	return invalidError{err}
}

type invalidError struct{ error }

func (e invalidError) Unwrap() []error { return []error{e.error, errdefs.ErrInvalidArgument} }
