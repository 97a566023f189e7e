package quantity

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
)

// Duration is a time.Duration written as a string in JSON and YAML ("10s",
// "1m30s"). A value that does not parse does not fail the whole decode: it
// is kept, so that the owner's Validate can name its field (Err), as a
// strict decode error could not.
type Duration struct {
	time.Duration
	invalid string // the refused value as written, "" if valid
}

// D makes a Duration.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// MarshalJSON writes "10s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Duration.String())
}

// UnmarshalJSON reads "10s". A bare number or a bad string is kept for
// Err to report.
func (d *Duration) UnmarshalJSON(b []byte) error {
	*d = Duration{}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		d.invalid = string(b)
		if len(d.invalid) > 40 {
			d.invalid = d.invalid[:40] + "…"
		}
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		d.invalid = strconv.Quote(s)
		return nil
	}
	d.Duration = v
	return nil
}

// Err says why the value read was refused, or nil. The error wraps
// errdefs.ErrInvalidArgument; the caller adds the field name.
func (d Duration) Err() error {
	if d.invalid == "" {
		return nil
	}
	return fmt.Errorf("invalid duration %s: want a string like \"10s\", \"1m30s\", \"500ms\": %w", d.invalid, errdefs.ErrInvalidArgument)
}

// IsZero lets omitzero skip unset durations.
func (d Duration) IsZero() bool { return d.Duration == 0 && d.invalid == "" }
