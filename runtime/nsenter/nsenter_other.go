//go:build !linux

package nsenter

import (
	"context"
	"errors"
	"net"
)

var errUnsupported = errors.New("nsenter needs linux")

// StartTime fails: containers need Linux.
func StartTime(pid int) (uint64, error) { return 0, errUnsupported }

// Dial fails: containers need Linux.
func Dial(ctx context.Context, pid int, start uint64, network, addr string) (net.Conn, error) {
	return nil, errUnsupported
}

// Exec fails: containers need Linux.
func Exec(ctx context.Context, o ExecOptions) (int, []byte, error) { return -1, nil, errUnsupported }
