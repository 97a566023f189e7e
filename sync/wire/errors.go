package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors of the decoders; every decode error wraps exactly one.
var (
	ErrTooLarge     = errors.New("message too large")
	ErrMalformed    = errors.New("malformed message")
	ErrSchema       = errors.New("unsupported schema version")
	ErrUnknownField = errors.New("unknown field")
	ErrInvalid      = errors.New("invalid message")
)

// TooLargeError says which cap a message broke. It matches ErrTooLarge.
type TooLargeError struct {
	Kind  string // "desired", "reported", ...
	Size  int
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s message of %d bytes: over the limit of %d", e.Kind, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// SchemaError names the schema version that was refused. It matches ErrSchema.
type SchemaError struct {
	Kind string
	Got  int // 0 when the field was missing
	Want int
}

func (e *SchemaError) Error() string {
	if e.Got == 0 {
		return fmt.Sprintf("%s message: schema version missing, want %d", e.Kind, e.Want)
	}
	return fmt.Sprintf("%s message: schema version %d, this build speaks %d", e.Kind, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrSchema) true.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }
