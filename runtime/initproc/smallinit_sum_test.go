//go:build tender_small_init

package initproc

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tender-edge/tender/runtime/initproc/initbin"
)

func smallInitSum(*testing.T) string { return initbin.Sum() }

// The small init's file is rewritten when it is not what was checked:
// writable, or of another size.
func TestWriteSmallInit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	want := expectedInit(t)
	if !hasSmallInit() {
		t.Skip("no small init embedded (build with -tags tender_small_init)")
	}
	dir := filepath.Join(t.TempDir(), "init")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Another build's init goes when this one is written.
	stale := filepath.Join(dir, "init-0000")
	if err := os.WriteFile(stale, []byte("old"), 0o500); err != nil {
		t.Fatal(err)
	}
	p, err := writeSmallInit(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale init %s: %v, want removed", stale, err)
	}
	if fileHash(t, p) != want {
		t.Fatal("written init differs from the embedded one")
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("init directory mode %v (%v), want 0700", st.Mode(), err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o500 {
		t.Errorf("init mode %v (%v), want 0500", st.Mode(), err)
	}
	// A torn or tampered copy (writable, truncated) is replaced.
	if err := os.Chmod(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	if p2, err := writeSmallInit(dir); err != nil || p2 != p || fileHash(t, p) != want {
		t.Errorf("rewrite: %s %v, or content differs", p2, err)
	}
	// A directory others can write to is refused.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := writeSmallInit(dir); err == nil {
		t.Error("used an init directory writable by others")
	}
}
