//go:build !tender_small_init

package initproc

import "os"

// Built without the tender_small_init tag (as the small init itself is):
// no embedded init; the runtime re-executes its own binary.

// InitDir is where the small init is written, when there is one.
const InitDir = "/run/tender/init"

func hasSmallInit() bool { return false }

func smallInitPath() (string, error) { return "", nil }

func smallInitMemfd() (*os.File, error) { panic("initproc: no small init in this binary") }
