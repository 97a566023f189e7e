package e2e

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestRun_VolumeTargetRace is R-06 (CVE-2021-30465 and CVE-2024-45310
// class): a racing container swaps a volume target between a directory and
// a symlink out of the container (renameat2 RENAME_EXCHANGE in a tight
// loop) while other containers start with a volume mounted on that target.
// Every start either mounts on the real directory or is refused; no mount
// and no file or directory appears outside the containers.
func TestRun_VolumeTargetRace(t *testing.T) {
	const starts = 200
	shared := t.TempDir()
	if err := os.Mkdir(filepath.Join(shared, "target"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Both an absolute and a climbing escape: they trade places with target.
	if err := os.Symlink("/", filepath.Join(shared, "evil")); err != nil {
		t.Fatal(err)
	}
	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "marker"), []byte("volume"), 0o644)
	hostRoot := listDir(t, "/")
	mountsBefore := hostMounts(t, shared, vol)

	ok(t, "run", "-d", "--name", "racer", "-v", shared+":/data", image, "swap", "/data/target", "/data/evil", "600")
	t.Cleanup(func() { agent(t, "rm", "-f", "racer") })

	started, refused := 0, 0
	for i := 0; i < starts; i++ {
		r := agent(t, "run", "--rm", "-v", shared+":/data", "-v", vol+":/data/target", image, "cat", "/data/target/marker")
		switch {
		case r.code == 0 && r.stdout == "volume":
			started++
		case r.code == 0:
			t.Fatalf("start %d: the volume is not where it should be: %s", i, r)
		default:
			refused++
		}
	}
	t.Logf("%d starts against the racer: %d mounted on the real directory, %d refused", starts, started, refused)
	// The race proves something only if it happened: some starts got
	// through, and the racer was swapping all along.
	if started == 0 {
		t.Errorf("no start succeeded: the race tested nothing but refusals")
	}
	if r := agent(t, "inspect", "racer"); r.code != 0 || !strings.Contains(r.stdout, `"status": "running"`) {
		t.Errorf("the racer is not running at the end: %s", r)
	}
	agent(t, "rm", "-f", "racer")
	if after := hostMounts(t, shared, vol); after != mountsBefore {
		t.Errorf("host mounts changed during the race")
	}
	if now := listDir(t, "/"); strings.Join(now, ",") != strings.Join(hostRoot, ",") {
		t.Errorf("the host's / changed: before %v, after %v", hostRoot, now)
	}
	if got := listDir(t, shared); strings.Join(got, ",") != "evil,target" {
		t.Errorf("the shared volume holds %v, want only evil and target", got)
	}
	if got := listDir(t, vol); strings.Join(got, ",") != "marker" {
		t.Errorf("the mounted volume holds %v", got)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
