package main

import (
	"os"

	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/initproc"
)

// init catches the re-executions of this binary before flags, logging or
// anything else run: a container's init and a process exec'd into a
// container (health checks), unless this agent embeds the small init
// (built with -tags tender_small_init, as the Makefile does), and a
// container's shim.
func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case initproc.Arg, initproc.ExecArg:
		initproc.SelfMain() // never returns
	case container.ShimArg:
		os.Exit(container.ShimMain(os.Args[2:]))
	}
}
