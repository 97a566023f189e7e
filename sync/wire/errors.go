package wire

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/internal/sentinel"
)

// Sentinel errors of the decoders; every decode error wraps exactly one.
// They are the finer reasons the agent reports ("oversized", "malformed",
// ...); each wraps errdefs.ErrInvalidArgument. Any other invalid value
// (a field out of range, an invalid app spec) wraps
// errdefs.ErrInvalidArgument directly.
var (
	ErrTooLarge     = reason("message too large", errdefs.ErrInvalidArgument)
	ErrMalformed    = reason("malformed message", errdefs.ErrInvalidArgument)
	ErrSchema       = reason("unsupported schema version", errdefs.ErrInvalidArgument)
	ErrUnknownField = reason("unknown field", errdefs.ErrInvalidArgument)
	// ErrGenerationRange refuses a generation no fleet issues (above
	// MaxGeneration): accepting one would lock the device out of every
	// later document.
	ErrGenerationRange = reason("generation out of range", errdefs.ErrInvalidArgument)
)

func reason(msg string, cat error) error { return sentinel.New(msg, cat) }

// TooLargeError says which cap a message broke. It matches ErrTooLarge.
type TooLargeError struct {
	Kind  string // "desired", "reported", ...
	Size  int
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s message of %d bytes: over the limit of %d", e.Kind, e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

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

// Unwrap makes errors.Is(err, ErrSchema) true.
func (e *SchemaError) Unwrap() error { return ErrSchema }
