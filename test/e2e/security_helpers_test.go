package e2e

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

// bbImage is a minimal image of a static busybox (a C program: it starts
// under any pids limit, where a Go program's threads would not), loaded
// once into the shared root.
const bbImage = "tender.test/bb:1"

var bbOnce struct {
	sync.Once
	err error
}

// busybox loads bbImage, or skips without a static busybox.
func busybox(t *testing.T) string {
	t.Helper()
	path := os.Getenv("TENDER_BUSYBOX")
	if path == "" {
		path = "/bin/busybox"
	}
	bb, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no static busybox (make test provides one): %v", err)
	}
	bbOnce.Do(func() {
		layer := ociarchive.Layer{
			{Path: "bin/", Type: tar.TypeDir, Mode: 0o755},
			{Path: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
			{Path: "bin/busybox", Mode: 0o755, Data: bb},
		}
		for _, a := range []string{"sh", "sleep", "true", "cat", "ls", "wc", "touch", "echo"} {
			layer = append(layer, ociarchive.File{Path: "bin/" + a, Type: tar.TypeLink, Linkname: "bin/busybox"})
		}
		archive, err := ociarchive.Single(bbImage, ociarchive.Image{
			Arch: runtime.GOARCH, Layers: []ociarchive.Layer{layer},
			Config: ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, Env: []string{"PATH=/bin"}},
		})
		if err != nil {
			bbOnce.err = err
			return
		}
		p := filepath.Join(t.TempDir(), "bb.tar")
		if bbOnce.err = os.WriteFile(p, archive, 0o644); bbOnce.err != nil {
			return
		}
		if r := agent(t, "load", p); r.code != 0 {
			t.Fatalf("load busybox image: %s", r)
		}
	})
	if bbOnce.err != nil {
		t.Fatal(bbOnce.err)
	}
	return bbImage
}

// containerID is the full ID of the container named name.
func containerID(t *testing.T, name string) string {
	t.Helper()
	var got []struct{ ID string }
	if err := json.Unmarshal([]byte(ok(t, "inspect", name)), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return got[0].ID
}

// gone reports whether nothing is left of container id: no directory, no
// cgroup in any hierarchy.
func gone(id string) bool {
	if _, err := os.Stat(filepath.Join(root, "containers", id)); err == nil {
		return false
	}
	for _, d := range cgroupDirs(id) {
		if _, err := os.Stat(d); err == nil {
			return false
		}
	}
	return true
}

// eventually polls cond for up to d and reports whether it came true.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(scaled(d))
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
