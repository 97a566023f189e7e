//go:build !linux

package initproc

import (
	"errors"
	"os"
)

// Stdio are the workload's standard streams; a nil file becomes /dev/null.
type Stdio struct{ Stdin, Stdout, Stderr *os.File }

var errUnsupported = errors.New("containers need linux")

// Main exits: containers need Linux.
func Main() {
	os.Stderr.WriteString(errUnsupported.Error() + "\n")
	os.Exit(1)
}

// Start fails: containers need Linux.
func Start(cfg *Config, stdio Stdio, place func(pid int) error) (*os.Process, error) {
	return nil, errUnsupported
}
