package topic

import (
	"go/build"
	"testing"
)

// TestPure fails if the topic package reaches for I/O: it is a pure core package.
func TestPure(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"fmt": true, "strings": true, "github.com/containerd/errdefs": true}
	for _, imp := range pkg.Imports {
		if !allowed[imp] {
			t.Errorf("topic imports %s; only %v are allowed", imp, allowed)
		}
	}
}
