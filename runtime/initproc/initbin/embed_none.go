//go:build !tender_small_init

package initbin

// Built without the tender_small_init tag: no init embedded; the runtime
// re-executes its own binary.
var (
	blob []byte
	sum  string
)
