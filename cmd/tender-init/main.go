// Command tender-init is the container's init and exec helper, and nothing
// else: the runtime (runtime/initproc) execs it inside a new container's
// namespaces (argument __tender_init__) or inside a running container's
// (__tender_exec__, for exec and health checks). It is small, so it starts
// fast; the agent embeds it (runtime/initproc/initbin) and never lets a
// container write to it (CVE-2019-5736). It imports runtime/initproc and
// the standard library only: no logging, no flags.
package main

import (
	"os"

	"github.com/tender-edge/tender/runtime/initproc"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case initproc.Arg:
			initproc.Main() // never returns
		case initproc.ExecArg:
			initproc.ExecMain() // never returns
		}
	}
	os.Stderr.WriteString("tender-init: the container init of tender-agent, started by it only\n")
	os.Exit(2)
}
