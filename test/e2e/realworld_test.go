package e2e

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

// TestRun_DistributionLikeImage runs an image shaped like the ones people
// pull: a distribution's /etc/passwd and /etc/group with named users (this
// host's Debian files), a static busybox with its applets as hardlinks and
// absolute symlinks, a setuid binary, and twenty more layers with explicit
// and opaque whiteouts. No registry on the internet is needed: the files
// come from this machine and from Debian's busybox-static package.
func TestRun_DistributionLikeImage(t *testing.T) {
	path := os.Getenv("TENDER_BUSYBOX") // make test fetches Debian's busybox-static
	if path == "" {
		path = "/bin/busybox"
	}
	bb, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no static busybox (make test provides one): %v", err)
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	dir := func(p string, mode int64) ociarchive.File {
		return ociarchive.File{Path: p, Type: tar.TypeDir, Mode: mode}
	}
	base := ociarchive.Layer{
		dir("bin/", 0o755), dir("etc/", 0o755), dir("usr/", 0o755), dir("usr/bin/", 0o755),
		dir("tmp/", 0o1777), dir("var/", 0o755), dir("var/lib/", 0o755), dir("var/lib/app/", 0o755),
		dir("proc/", 0o555), dir("sys/", 0o555), dir("dev/", 0o755), dir("root/", 0o700),
		{Path: "etc/passwd", Data: passwd},
		{Path: "etc/group", Data: group},
		{Path: "etc/os-release", Data: []byte("ID=tender-test\n")},
		{Path: "etc/obsolete.conf", Data: []byte("removed by a later layer\n")},
		{Path: "var/lib/app/old", Data: []byte("hidden by an opaque directory\n")},
		{Path: "bin/busybox", Mode: 0o755, Data: bb},
		{Path: "bin/su", Mode: 0o4755, Data: bb},                                // setuid, as in real images
		{Path: "dev/null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666}, // skipped by the store
	}
	for _, applet := range []string{"sh", "ls", "cat", "id", "stat", "whoami", "head", "env"} {
		base = append(base, ociarchive.File{Path: "bin/" + applet, Type: tar.TypeLink, Linkname: "bin/busybox"})
	}
	base = append(base,
		ociarchive.File{Path: "usr/bin/env", Type: tar.TypeSymlink, Linkname: "/bin/busybox"},
		ociarchive.File{Path: "usr/bin/whoami", Type: tar.TypeSymlink, Linkname: "/bin/busybox"},
	)
	layers := []ociarchive.Layer{base}
	for i := 0; i < 20; i++ {
		layers = append(layers, ociarchive.Layer{
			dir("var/", 0o755), dir("var/lib/", 0o755), dir("var/lib/layers/", 0o755),
			{Path: fmt.Sprintf("var/lib/layers/%02d", i), Data: []byte(fmt.Sprintf("layer %d\n", i))},
		})
	}
	layers = append(layers, ociarchive.Layer{
		dir("etc/", 0o755),
		{Path: "etc/.wh.obsolete.conf"},
		dir("var/", 0o755), dir("var/lib/", 0o755), dir("var/lib/app/", 0o755),
		{Path: "var/lib/app/.wh..wh..opq"},
		{Path: "var/lib/app/new", Data: []byte("after the opaque whiteout\n")},
	})
	archive, err := ociarchive.Single("tender.test/distro:1", ociarchive.Image{
		Arch: runtime.GOARCH, Layers: layers,
		Config: ocispec.ImageConfig{Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin:/bin"}, WorkingDir: "/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "distro.tar")
	if err := os.WriteFile(tarPath, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	ok(t, "load", tarPath)
	t.Cleanup(func() { agent(t, "rmi", "tender.test/distro:1") })

	script := strings.Join([]string{
		"id -un", "whoami", "ls /var/lib/layers",
		"ls /var/lib/app", "ls /etc", "stat -c %a /bin/su", "stat -c %h /bin/busybox",
	}, "; ")
	out := ok(t, "run", "--rm", "--user", "daemon", "tender.test/distro:1", "-c", script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := func(cond bool, what string) {
		t.Helper()
		if !cond {
			t.Errorf("%s; output:\n%s", what, out)
		}
	}
	want(len(lines) >= 2 && lines[0] == "daemon" && lines[1] == "daemon", "the named user daemon from Debian's /etc/passwd")
	want(strings.Contains(out, "\nnew\n") && !strings.Contains(out, "old"), "the opaque whiteout hides the lower directory's files")
	want(!strings.Contains(out, "obsolete.conf") && strings.Contains(out, "os-release"), "the explicit whiteout removes the file")
	want(strings.Contains(out, "\n4755\n"), "the setuid bit is kept")
	want(strings.HasSuffix(strings.TrimSpace(out), "\n9"), "the busybox hardlinks share one inode (9 links)")
	// no_new_privs: the setuid binary gives a non-root user nothing.
	r := agent(t, "run", "--rm", "--user", "daemon", "--entrypoint", "/bin/su", "tender.test/distro:1", "-c", "id -u")
	if strings.TrimSpace(r.stdout) == "0" {
		t.Errorf("setuid su gave root to user daemon: %s", r)
	}
	// even with CAP_MKNOD, a block device made in the container cannot
	// be opened: the device cgroup allows only the minimal /dev.
	r = agent(t, "run", "--rm", "tender.test/distro:1", "-c", "mknod /tmp/sda b 8 0; head -c 16 /tmp/sda && echo READ")
	if strings.Contains(r.stdout, "READ") || r.code == 0 {
		t.Errorf("a block device node was usable in the container: %s", r)
	}
	if !strings.Contains(out, "\n19\n") {
		t.Errorf("not all 21 layers are visible; output:\n%s", out)
	}
}
