//go:build !linux

package initproc

import (
	"errors"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// Hooks are the parent's steps around the child's set-up.
type Hooks struct {
	Cgroup     *os.File
	Join       func(pid int) error
	Place      func(pid int) error
	BeforeExec func(pid int) error
}

// StartWith fails: containers need Linux.
func StartWith(cfg *Config, stdio Stdio, h Hooks) (*os.Process, error) {
	return nil, errUnsupported
}

// CheckExecSize accepts anything: nothing is exec'd here.
func CheckExecSize(args, env []string, rlimits []specs.POSIXRlimit) error { return nil }
