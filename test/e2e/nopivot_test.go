package e2e

import (
	"strings"
	"testing"
)

// noPivot makes agent() add --no-pivot to every run (TestNoPivot sets it
// while it runs other tests again).
var noPivot bool

// TestNoPivot runs the identity, hardening and escape tests again with the
// no-pivot fallback forced (run --no-pivot): the fallback is what runs on
// a gateway whose / is the initramfs, and this host's / is not, so it would
// never run here otherwise.
func TestNoPivot(t *testing.T) {
	noPivot = true
	defer func() { noPivot = false }()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Identity", TestRun_Identity},
		{"Hardening", TestRun_Hardening},
		{"Clone3", TestSecurity_Clone3},
		{"MaskedAndReadonlyPaths", TestSecurity_MaskedAndReadonlyPaths},
		{"HostileDevAndProc", TestRun_HostileDevAndProc},
		{"VolumesAndReadOnly", TestRun_VolumesAndReadOnly},
		{"BadVolumes", TestRun_BadVolumes},
		{"VolumeTargetRace", TestRun_VolumeTargetRace},
		{"MemoryLimit", TestRun_MemoryLimit},
		{"Mounts", testNoPivotMounts},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// testNoPivotMounts: the container sees its own mounts only, the same set
// with and without pivot_root.
func testNoPivotMounts(t *testing.T) {
	points := func(out string) []string {
		var p []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				p = append(p, f[1])
			}
		}
		return p
	}
	noPivot = false
	pivoted := points(ok(t, "run", "--rm", image, "mounts"))
	noPivot = true
	moved := points(ok(t, "run", "--rm", image, "mounts"))
	if strings.Join(pivoted, " ") != strings.Join(moved, " ") {
		t.Errorf("mount points differ:\npivot_root: %v\nno pivot:   %v", pivoted, moved)
	}
	for _, p := range moved {
		if strings.HasPrefix(p, "/var/lib") || strings.HasPrefix(p, "/tmp/") || p == "/mnt" {
			t.Errorf("host mount point %s visible in the container", p)
		}
	}
}
