package nsenter

import "errors"

// Sentinels callers branch on.
var (
	// ErrNotRunning: the process is gone, or its pid now belongs to
	// another process.
	ErrNotRunning = errors.New("process is not running")
	// ErrInvalid: the request cannot be carried out as given.
	ErrInvalid = errors.New("invalid argument")
)
