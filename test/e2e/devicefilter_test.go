package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// R-11 with a block device the machine really has: the host reads its
// first sector, a container that makes a node of the same numbers (it has
// CAP_MKNOD) cannot open it. On cgroup v1 the devices controller refuses
// it, on v2 the device eBPF program; either way the error is EPERM. (A
// node of a device the machine lacks fails with ENXIO whatever the filter
// does, so TestRun_DistributionLikeImage's /dev/sda proves nothing in a
// guest without one.)
func TestRun_DeviceFilterRefusesBlockDevice(t *testing.T) {
	bb := busybox(t)
	dev, nums := readableBlockDevice(t)
	script := fmt.Sprintf("mknod /tmp/blk b %s && echo made; /bin/busybox head -c 512 /tmp/blk >/dev/null && echo READ", strings.Replace(nums, ":", " ", 1))
	r := agent(t, "run", "--rm", bb, script)
	out := r.stdout + r.stderr
	t.Logf("%s (%s) in the container: %s", dev, nums, strings.TrimSpace(out))
	if strings.Contains(out, "READ") {
		t.Fatalf("the container read block device %s (%s): %s", dev, nums, r)
	}
	if !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("block device %s (%s): want EPERM from the device filter, got %s", dev, nums, r)
	}
}

// readableBlockDevice returns a block device of this machine with data on
// it that the test (root on the host) can read, and its major:minor: a
// disk of the machine, or else a loop device over a temporary file (where
// the machine's own device cgroup hides its disks).
func readableBlockDevice(t *testing.T) (string, string) {
	t.Helper()
	if dev, nums := firstReadableBlockDevice(); dev != "" {
		return dev, nums
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("tender!\n"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("no readable block device on this machine and no loop device: losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	nums, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(loop), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	return loop, strings.TrimSpace(string(nums))
}

func firstReadableBlockDevice() (string, string) {
	ents, _ := filepath.Glob("/sys/class/block/*")
	for _, e := range ents {
		size, err := os.ReadFile(filepath.Join(e, "size"))
		if err != nil || strings.TrimSpace(string(size)) == "0" {
			continue
		}
		nums, err := os.ReadFile(filepath.Join(e, "dev"))
		if err != nil {
			continue
		}
		dev := filepath.Join("/dev", filepath.Base(e))
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		n, err := f.Read(make([]byte, 512))
		f.Close()
		if err == nil && n == 512 {
			return dev, strings.TrimSpace(string(nums))
		}
	}
	return "", ""
}
