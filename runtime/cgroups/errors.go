package cgroups

import "errors"

var (
	// ErrNotFound is returned by Load when the cgroup does not exist.
	ErrNotFound = errors.New("cgroup not found")
	// ErrUnavailable is returned when a limit is asked for a controller
	// that the host lacks (memory, cpu or pids), or when the host has no
	// usable cgroup mount at all.
	ErrUnavailable = errors.New("cgroup controller unavailable")
)
