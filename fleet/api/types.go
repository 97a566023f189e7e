package api

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// LabelRequest is the body of PATCH /v1/devices/{id}: labels to set and
// label keys to remove.
type LabelRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// LogsRequest is the body of POST /v1/devices/{id}/logs.
type LogsRequest struct {
	App       string `json:"app"`
	Container string `json:"container,omitempty"` // "": the app's only (or first) container
	Lines     int    `json:"lines,omitempty"`     // default DefaultLogLines, at most MaxLogLines
}

// RestartRequest is the body of POST /v1/devices/{id}/restart.
type RestartRequest struct {
	App       string `json:"app"`
	Container string `json:"container,omitempty"` // "": every container of the app
}

// Health is the answer of /healthz.
type Health struct {
	Status string `json:"status"`
}

// Limits of the API's inputs.
const (
	DefaultLogLines = 100
	MaxLogLines     = 10000
	DefaultPage     = 100  // events and audit entries per request by default
	MaxPage         = 1000 // and at most
)

// RolloutCommands are the commands POST /v1/apps/{app}/rollout/{command}
// takes.
var RolloutCommands = []string{"pause", "resume", "abort", "undo"}

// ParseSelector parses a label selector "k=v,k2=v2" (every pair must
// match; "" selects everything, nil).
func ParseSelector(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	sel := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("selector %q: %q is not key=value: %w", s, kv, errdefs.ErrInvalidArgument)
		}
		if old, dup := sel[k]; dup && old != v {
			return nil, fmt.Errorf("selector %q: key %q given twice: %w", s, k, errdefs.ErrInvalidArgument)
		}
		sel[k] = strings.TrimSpace(v)
	}
	return sel, nil
}

// FormatSelector is the inverse of ParseSelector, keys sorted.
func FormatSelector(sel map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(sel)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + sel[k])
	}
	return b.String()
}

// MaxAPITokenName is the longest API token name.
const MaxAPITokenName = 63

// ValidAPITokenName checks an API token's name: 1 to 63 of a-z, 0-9 and
// '-', not starting or ending with '-' (so that no name reads as a flag
// of the CLI).
func ValidAPITokenName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxAPITokenName && name[0] != '-' && name[len(name)-1] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("api token name %q: want 1 to %d of a-z, 0-9 and '-', not starting or ending with '-': %w",
			name, MaxAPITokenName, errdefs.ErrInvalidArgument)
	}
	return nil
}
