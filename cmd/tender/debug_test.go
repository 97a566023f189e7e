package main

import (
	"testing"

	"github.com/containerd/errdefs"
)

// The profiles show the controller's memory, goroutines and command line
// without a token: --debug-addr takes a loopback address only.
func TestCheckDebugAddr(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6060", "127.0.0.2:0", "[::1]:6060", "localhost:6060"} {
		if err := checkDebugAddr(addr); err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
	}
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.1.2.3:6060", "example.com:6060", "6060", "127.0.0.1"} {
		if err := checkDebugAddr(addr); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want refused as an invalid argument", addr, err)
		}
	}
}
