package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoad_ArchivesOfOtherTools (issue 9): an image made by umoci, with a
// distribution's device nodes in /dev, copied to an archive by skopeo,
// loads without a warning per device node and runs; so does the image
// written in docker save's legacy layout.
func TestLoad_ArchivesOfOtherTools(t *testing.T) {
	for _, tool := range []string{"umoci", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian package %s; make deps installs it)", tool, tool)
		}
	}
	path := os.Getenv("TENDER_BUSYBOX")
	if path == "" {
		path = "/bin/busybox"
	}
	bb, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no static busybox (make test provides one): %v", err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{"bin/busybox": bb, "etc/motd": []byte("made by umoci\n")}
	for p, b := range files {
		if err := os.WriteFile(filepath.Join(rootfs, p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, app := range []string{"sh", "cat", "ls"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	devs := []struct {
		name         string
		mode         uint32
		major, minor uint32
	}{
		{"null", unix.S_IFCHR, 1, 3}, {"zero", unix.S_IFCHR, 1, 5}, {"full", unix.S_IFCHR, 1, 7},
		{"random", unix.S_IFCHR, 1, 8}, {"urandom", unix.S_IFCHR, 1, 9}, {"tty", unix.S_IFCHR, 5, 0},
		{"console", unix.S_IFCHR, 5, 1}, {"ptmx", unix.S_IFCHR, 5, 2}, {"sda", unix.S_IFBLK, 8, 0},
	}
	for _, d := range devs {
		if err := unix.Mknod(filepath.Join(rootfs, "dev", d.name), d.mode|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			t.Fatal(err)
		}
	}
	layout := filepath.Join(dir, "oci")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("umoci", "init", "--layout", layout)
	run("umoci", "new", "--image", layout+":t")
	run("umoci", "insert", "--image", layout+":t", rootfs, "/")
	run("umoci", "config", "--image", layout+":t", "--config.entrypoint", "/bin/sh")
	archive := filepath.Join(dir, "umoci.tar")
	run("skopeo", "copy", "oci:"+layout+":t", "oci-archive:"+archive+":tender.test/umoci:1")

	r := agent(t, "load", archive)
	if r.code != 0 {
		t.Fatalf("load an archive made by umoci and skopeo: %s", r)
	}
	t.Cleanup(func() { agent(t, "rmi", "tender.test/umoci:1") })
	if strings.Contains(r.stderr, "device") || strings.Contains(r.stderr, "WRN") {
		t.Errorf("load warned about the image's device nodes:\n%s", r.stderr)
	}
	out := ok(t, "run", "--rm", "tender.test/umoci:1", "-c", "cat /etc/motd; ls /dev")
	if !strings.Contains(out, "made by umoci") {
		t.Errorf("the container does not see the image's files:\n%s", out)
	}
	if strings.Contains(out, "sda") {
		t.Errorf("the image's block device node reached the container:\n%s", out)
	}

	// docker save's legacy layout, as skopeo's docker-archive: writes it.
	legacy := filepath.Join(dir, "docker.tar")
	run("skopeo", "copy", "oci:"+layout+":t", "docker-archive:"+legacy+":tender.test/umoci:2")
	ok(t, "load", legacy)
	t.Cleanup(func() { agent(t, "rmi", "tender.test/umoci:2") })
	if out := ok(t, "run", "--rm", "tender.test/umoci:2", "-c", "cat /etc/motd"); !strings.Contains(out, "made by umoci") {
		t.Errorf("the container of the docker save image does not see its files:\n%s", out)
	}
	// Not an image archive at all: bad input, exit 1.
	if r := agent(t, "load", "/etc/passwd"); r.code != 1 {
		t.Errorf("load /etc/passwd: %s\nwant exit 1", r)
	}
}
