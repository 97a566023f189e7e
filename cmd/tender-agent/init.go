package main

import (
	"os"
	"runtime"

	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/initproc"
)

// init catches the re-executions of this binary before flags, logging or
// anything else run: a container's init and a process exec'd into a
// container (health checks), unless this agent embeds the small init
// (built with -tags tender_small_init, as the Makefile does), and the
// monitor of an agent root's containers.
func init() {
	// No heap profile is ever taken of this binary: without sampling, the
	// runtime keeps no profile buckets (up to a few hundred KiB in a
	// long-lived process, the daemon's and the monitor's).
	runtime.MemProfileRate = 0
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case initproc.Arg, initproc.ExecArg:
		initproc.SelfMain() // never returns
	case container.MonitorArg:
		os.Exit(container.MonitorMain(os.Args[2:]))
	}
}
