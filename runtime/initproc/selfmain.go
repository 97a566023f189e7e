//go:build !tender_small_init

package initproc

import "os"

// SelfMain is Main or ExecMain, after os.Args[1] (Arg or ExecArg): a
// binary built without the small init (initbin) is its own init, and its
// main package calls this first thing when it sees either argument.
func SelfMain() {
	if len(os.Args) > 1 && os.Args[1] == ExecArg {
		ExecMain() // never returns
	}
	Main() // never returns
}
