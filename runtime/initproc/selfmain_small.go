//go:build tender_small_init

package initproc

import "os"

// SelfMain refuses: a binary built with the small init (initbin) starts
// containers with it and is not an init itself, so that the linker leaves
// the init's code out of it (Main and ExecMain stay for test binaries).
func SelfMain() {
	os.Stderr.WriteString("this binary starts containers with its embedded init (tender-init) and is not one itself\n")
	os.Exit(1)
}
