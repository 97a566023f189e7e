package termsafe

import "io"

// SetIsTerminal replaces the terminal check For uses until the returned
// function restores it.
func SetIsTerminal(f func(io.Writer) bool) (restore func()) {
	old := isTerminal
	isTerminal = f
	return func() { isTerminal = old }
}
