package main

import (
	"os"
	"runtime"

	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/initproc"
)

// init catches the re-executions of this binary before flags, logging or
// anything else run: a container's init, a process exec'd into a
// container (health checks), and the monitor of an
// agent root's containers.
func init() {
	// No heap profile is ever taken of this binary: without sampling, the
	// runtime keeps no profile buckets (up to a few hundred KiB in a
	// long-lived process, the daemon's and the monitor's).
	runtime.MemProfileRate = 0
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case initproc.Arg:
		initproc.Main() // never returns
	case initproc.ExecArg:
		initproc.ExecMain() // never returns
	case container.MonitorArg:
		os.Exit(container.MonitorMain(os.Args[2:]))
	}
}
