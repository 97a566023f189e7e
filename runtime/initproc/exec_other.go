//go:build !linux

package initproc

import (
	"context"
	"os"
)

// ExecMain exits: containers need Linux.
func ExecMain() { Main() }

// StartExec fails: containers need Linux.
func StartExec(ctx context.Context, cfg *ExecConfig, pidfd int, stdio Stdio, place func(pid int) error) (*os.Process, error) {
	return nil, errUnsupported
}
