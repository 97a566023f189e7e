package cgroups

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeV2 lays out a plain directory tree that looks like a v2 mount for
// the files createV2 touches: the root's cgroup.controllers, the
// subtree_control files of the ancestors and, when files is not nil, the
// control files of the group itself.
func fakeV2(t *testing.T, controllers, group string, files []string) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "cgroup.controllers"), controllers)
	write(filepath.Join(root, "cgroup.subtree_control"), "")
	for d := filepath.Dir(group); d != "/"; d = filepath.Dir(d) {
		write(filepath.Join(root, d, "cgroup.subtree_control"), "")
	}
	for _, f := range files {
		write(filepath.Join(root, group, f), "")
	}
	return root
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

var v2Res = &specs.LinuxResources{
	Memory: &specs.LinuxMemory{Limit: i64(32 << 20)},
	CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0-1", Mems: "0"},
	Pids:   &specs.LinuxPids{Limit: i64(64)},
}

var v2Files = []string{"cgroup.procs", "cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems", "memory.max", "memory.swap.max", "memory.oom.group", "pids.max"}

func TestCreateV2_WritesValuesAndEnablesControllers(t *testing.T) {
	const group = "/tender/c1"
	root := fakeV2(t, "cpuset cpu io memory hugetlb pids rdma", group, v2Files)
	c, err := createV2(root, group, v2Res)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode() != V2 || c.Dirs()[""] != filepath.Join(root, group) {
		t.Errorf("mode %v dirs %v", c.Mode(), c.Dirs())
	}
	for _, v := range Values(V2, v2Res) {
		if got := readTrim(t, filepath.Join(root, group, v.File)); got != v.Value {
			t.Errorf("%s = %q, want %q", v.File, got, v.Value)
		}
	}
	for _, d := range []string{root, filepath.Join(root, "tender")} {
		if got, want := readTrim(t, filepath.Join(d, "cgroup.subtree_control")), "+cpu +cpuset +memory +pids"; got != want {
			t.Errorf("%s/cgroup.subtree_control = %q, want %q", d, got, want)
		}
	}
	l, err := loadV2(root, group)
	if err != nil {
		t.Fatal(err)
	}
	if l.Dirs()[""] != c.Dirs()[""] {
		t.Errorf("load found %v, want %v", l.Dirs(), c.Dirs())
	}
	if _, err := loadV2(root, "/tender/nope"); !errdefs.IsNotFound(err) {
		t.Errorf("load missing: %v, want ErrNotFound", err)
	}
}

func TestCreateV2_SkipsMissingSwapFileAndOptionalController(t *testing.T) {
	const group = "/c2"
	// No memory.swap.max (swap accounting off) and no cpuset controller.
	root := fakeV2(t, "cpu memory pids", group, []string{"cgroup.procs", "cpu.weight", "cpu.max", "memory.max", "pids.max"})
	if _, err := createV2(root, group, v2Res); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(root, group, "memory.max")); got != "33554432" {
		t.Errorf("memory.max = %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, group, "cpuset.cpus")); !os.IsNotExist(err) {
		t.Errorf("cpuset.cpus written without a cpuset controller: %v", err)
	}
	if got := readTrim(t, filepath.Join(root, "cgroup.subtree_control")); got != "+cpu +memory +pids" {
		t.Errorf("subtree_control = %q", got)
	}
}

func TestCreateV2_RequiredControllerMissing(t *testing.T) {
	for _, tt := range []struct {
		missing string
		res     *specs.LinuxResources
	}{
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1 << 20)}}},
		{"pids", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(10)}}},
		{"cpu", &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(100)}}},
	} {
		t.Run(tt.missing, func(t *testing.T) {
			var have []string
			for _, c := range []string{"cpu", "memory", "pids"} {
				if c != tt.missing {
					have = append(have, c)
				}
			}
			const group = "/c3"
			root := fakeV2(t, strings.Join(have, " "), group, nil)
			_, err := createV2(root, group, tt.res)
			if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), tt.missing) {
				t.Fatalf("err = %v, want ErrNotImplemented naming %s", err, tt.missing)
			}
			if _, err := os.Stat(filepath.Join(root, group)); !os.IsNotExist(err) {
				t.Errorf("group directory left behind: %v", err)
			}
		})
	}
}

// TestValuesV2_MatchContainerd checks that Values(V2) is what containerd's
// own cgroup2.ToResources + NewManager write for the same (swap-off,
// period-defaulted) spec.
func TestValuesV2_MatchContainerd(t *testing.T) {
	const group = "/tender/c4"
	for _, res := range []*specs.LinuxResources{
		v2Res,
		{CPU: &specs.LinuxCPU{Quota: i64(20000)}},
		{CPU: &specs.LinuxCPU{Shares: u64(2048), Cpus: "1"}},
		{Memory: &specs.LinuxMemory{Limit: i64(1 << 30), Reservation: i64(1 << 29)}},
	} {
		root := fakeV2(t, "cpuset cpu memory pids", group, nil)
		spec := *res
		if m := res.Memory; m != nil && m.Limit != nil {
			mm := *m
			mm.Swap = m.Limit // memory+swap == memory: swap off
			spec.Memory = &mm
		}
		if c := res.CPU; c != nil && c.Quota != nil && c.Period == nil {
			cc := *c
			cc.Period = u64(defaultPeriod)
			spec.CPU = &cc
		}
		if _, err := cgroup2.NewManager(root, group, cgroup2.ToResources(&spec)); err != nil {
			t.Fatal(err)
		}
		// memory.oom.group is ours, not containerd's.
		vals := slices.DeleteFunc(Values(V2, res), func(v Value) bool { return v.File == "memory.oom.group" })
		written, err := os.ReadDir(filepath.Join(root, group))
		if err != nil {
			t.Fatal(err)
		}
		if len(written) != len(vals) {
			t.Errorf("containerd wrote %d files, Values has %d: %v", len(written), len(vals), written)
		}
		for _, v := range vals {
			if got := readTrim(t, filepath.Join(root, group, v.File)); got != v.Value {
				t.Errorf("containerd wrote %s = %q, Values says %q", v.File, got, v.Value)
			}
		}
	}
}

// On v2 the pids controller is enabled at Create even without a limit, so
// that Update can write pids.max right before the workload execs; a group
// without the controller says so.
func TestUpdate_PidsLimitV2(t *testing.T) {
	const group = "/tender/c2"
	root := fakeV2(t, "cpu memory pids", group, []string{"cgroup.procs", "pids.max", "memory.max", "memory.swap.max"})
	atCreate, atExec := SplitExec(v2Res)
	if atCreate.Pids != nil || atExec.Pids == nil || *atExec.Pids.Limit != 64 || v2Res.Pids == nil {
		t.Fatalf("SplitExec = %+v, %+v", atCreate, atExec)
	}
	c, err := createV2(root, group, &specs.LinuxResources{Memory: v2Res.Memory})
	if err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(root, "tender", "cgroup.subtree_control")); !strings.Contains(got, "+pids") {
		t.Errorf("subtree_control = %q, want pids enabled", got)
	}
	if err := c.Update(atExec); !errdefs.IsNotImplemented(err) {
		t.Errorf("update of a group without pids: %v, want ErrNotImplemented", err)
	}
	// The kernel lists the enabled controllers in the group's own file.
	if err := os.WriteFile(filepath.Join(root, group, "cgroup.controllers"), []byte("memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(atExec); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(root, group, "pids.max")); got != "64" {
		t.Errorf("pids.max = %q, want 64", got)
	}
}
