package cgroups

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hybridV2 returns the hybrid host's cgroup2 mount, where v2 groups can be
// made for real (without controllers), or skips.
func hybridV2(t *testing.T) string {
	t.Helper()
	needV1(t)
	root := filepath.Join(mountpoint, "unified")
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skip("no hybrid cgroup2 mount")
	}
	return root
}

// parentDirs are the directories of parent in every v1 hierarchy and in
// the hybrid cgroup2 mount (those that exist).
func parentDirs(parent string) []string {
	var out []string
	ents, _ := os.ReadDir(mountpoint)
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(mountpoint, e.Name(), parent))
		}
	}
	return out
}

func existing(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// testParent is a unique parent for the test's cgroups ("/tender" in
// production), removed at the end whatever happened.
func testParent(t *testing.T) string {
	t.Helper()
	p := testPath(t)
	t.Cleanup(func() {
		for _, d := range existing(parentDirs(p)) {
			if err := unix.Rmdir(d); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return p
}

// The last container's Delete removes the runtime's parent cgroup; an
// earlier one leaves it to its siblings. On v1 in every hierarchy, and on
// a real cgroup2 mount.
func TestDelete_RemovesEmptyParent(t *testing.T) {
	needV1(t)
	for _, mode := range []string{"v1", "v2"} {
		t.Run(mode, func(t *testing.T) {
			parent := testParent(t)
			create := func(p string) (*Cgroup, error) { return Create(p, nil) }
			if mode == "v2" {
				root := hybridV2(t)
				create = func(p string) (*Cgroup, error) { return createV2(root, p, &specs.LinuxResources{}) }
			}
			c1, err := create(parent + "/c1")
			if err != nil {
				t.Fatal(err)
			}
			c2, err := create(parent + "/c2")
			if err != nil {
				t.Fatal(err)
			}
			var dirs []string
			for _, d := range c1.Dirs() {
				dirs = append(dirs, filepath.Dir(d))
			}
			if err := c1.Delete(); err != nil {
				t.Fatal(err)
			}
			if got := existing(dirs); len(got) != len(dirs) {
				t.Fatalf("after the first of two Deletes the parent is left in %d of %d places", len(got), len(dirs))
			}
			if err := c2.Delete(); err != nil {
				t.Fatal(err)
			}
			if got := existing(dirs); len(got) > 0 {
				t.Errorf("after the last Delete the parent is still there: %v", got)
			}
		})
	}
}

// Creates and Deletes race under one parent: a Create whose parent a
// sibling's Delete just removed makes it again. Every Create succeeds and
// the parent is gone at the end.
func TestCreateDelete_RaceOnParent(t *testing.T) {
	needV1(t)
	for _, mode := range []string{"v1", "v2"} {
		t.Run(mode, func(t *testing.T) {
			parent := testParent(t)
			create := func(p string) (*Cgroup, error) { return Create(p, nil) }
			if mode == "v2" {
				root := hybridV2(t)
				create = func(p string) (*Cgroup, error) { return createV2(root, p, &specs.LinuxResources{}) }
			}
			const workers, rounds = 4, 40
			var wg sync.WaitGroup
			errs := make(chan error, workers*rounds)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						c, err := create(fmt.Sprintf("%s/c%d-%d", parent, w, i))
						if err != nil {
							errs <- err
							continue
						}
						if err := c.Delete(); err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := existing(parentDirs(parent)); len(got) > 0 {
				t.Errorf("the parent outlived its last container: %v", got)
			}
		})
	}
}

// On v2 the device rules are a BPF program: an Update replaces it (one
// program attached, whatever the number of updates), and the new rules
// alone apply, widening as well as narrowing (with programs added on top,
// a device is allowed only if every one of them allows it).
func TestUpdate_ReplacesDeviceFilterV2(t *testing.T) {
	root := hybridV2(t)
	path := testParent(t) + "/c"
	allow := func(minor int64) *specs.LinuxResources {
		return &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{dev(true, "c", i64(1), i64(minor), "rwm")}}
	}
	c, err := createV2(root, path, allow(3)) // /dev/null
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Kill(); err != nil {
			t.Error(err)
		}
		if err := c.Delete(); err != nil {
			t.Error(err)
		}
	})
	for i := 0; i < 5; i++ {
		if err := c.Update(allow(5)); err != nil { // /dev/zero
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(c.Dirs()[""], unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	progs, err := deviceFilters(fd)
	if err != nil {
		t.Fatal(err)
	}
	if len(progs) != 1 {
		t.Errorf("%d device programs attached after 5 updates, want 1: %v", len(progs), progs)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=open", "TENDER_CGROUPS_TEST_OPEN=/dev/null /dev/zero")
	var out strings.Builder
	cmd.Stdout = &out
	in, done := start(t, cmd)
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "/dev/null denied\n/dev/zero ok\n"; got != want {
		t.Errorf("child printed %q, want %q (the last rules only)", got, want)
	}
}
