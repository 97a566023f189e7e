package e2e

import (
	"archive/tar"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

// an image whose /dev holds symlinks (ptmx, fd, stdin, null, a
// canary) aimed at host paths touches nothing on the host: the runtime's
// own /dev hides it. R-05: an image whose /proc is a symlink is refused.
func TestRun_HostileDevAndProc(t *testing.T) {
	canary := t.TempDir()
	victim := filepath.Join(canary, "victim")
	os.WriteFile(victim, []byte("intact"), 0o644)
	bin, err := os.ReadFile(filepath.Join(filepath.Dir(testImage), "workload"))
	if err != nil {
		t.Skipf("workload binary next to the test image: %v", err)
	}
	base := ociarchive.Workload(bin, goruntime.GOARCH, "")
	sym := func(p, target string) ociarchive.File {
		return ociarchive.File{Path: p, Type: tar.TypeSymlink, Linkname: target}
	}
	evilDev := ociarchive.Layer{
		{Path: "dev/", Type: tar.TypeDir},
		sym("dev/ptmx", victim), sym("dev/fd", canary), sym("dev/stdin", victim),
		sym("dev/null", victim), sym("dev/canary", victim), sym("dev/pts", canary),
	}
	img := base
	img.Layers = append(append([]ociarchive.Layer{}, base.Layers...), evilDev)
	load := func(name string, img ociarchive.Image) {
		archive, err := ociarchive.Single(name, img)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "img.tar")
		os.WriteFile(p, archive, 0o644)
		ok(t, "load", p)
		t.Cleanup(func() { agent(t, "rmi", name) })
	}
	load("tender.test/evildev:1", img)
	// The workload writes through every one of those names.
	for _, p := range []string{"/dev/ptmx", "/dev/stdin", "/dev/null", "/dev/canary", "/dev/fd/x", "/dev/pts/x"} {
		agent(t, "run", "--rm", "tender.test/evildev:1", "write", p, "pwned")
	}
	if b, _ := os.ReadFile(victim); string(b) != "intact" {
		t.Errorf("host file changed through the image's /dev: %q", b)
	}
	if ents, _ := os.ReadDir(canary); len(ents) != 1 {
		t.Errorf("host directory gained files through the image's /dev: %d entries", len(ents))
	}
	// The container's /dev is the runtime's: null is the real device.
	if out := ok(t, "run", "--rm", "tender.test/evildev:1", "cat", "/dev/null"); out != "" {
		t.Errorf("/dev/null reads %q", out)
	}

	// R-05: /proc as a symlink.
	evilProc := base
	evilProc.Layers = append(append([]ociarchive.Layer{}, base.Layers...), ociarchive.Layer{sym("proc", "/")})
	evilProc.Config = ocispec.ImageConfig{Entrypoint: []string{"/workload"}}
	load("tender.test/evilproc:1", evilProc)
	r := agent(t, "run", "--rm", "tender.test/evilproc:1", "id")
	if r.code == 0 || !strings.Contains(r.stderr, "symlink") {
		t.Errorf("a /proc symlink was not refused: %s", r)
	}
}
