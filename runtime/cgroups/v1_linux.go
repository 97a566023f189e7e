package cgroups

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// createV1 makes the directories with containerd's cgroup1 (which also
// fills cpuset.cpus and cpuset.mems from the parent, so that the cpuset
// hierarchy accepts tasks) and then writes Values itself: containerd's v1
// writers cannot skip a missing memsw file nor order device rules after a
// deny-all.
func createV1(path string, res *specs.LinuxResources) (*Cgroup, error) {
	subs, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("list v1 hierarchies: %w", err)
	}
	subs = joinedV1(subs, res)
	dirs := dirsV1(subs, path)
	vals := valuesV1(res)
	c := &Cgroup{path: path, mode: V1, dirs: dirs}
	for _, name := range required(vals) {
		if c.dir(name) == "" {
			return nil, fmt.Errorf("%s controller: the host has none: %w", name, errdefs.ErrNotImplemented)
		}
	}
	// A Delete of the last sibling may remove the parent while it is made
	// (see parentRace): make it again.
	var cg cgroup1.Cgroup
	for range mkdirAttempts {
		cg, err = cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{},
			cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }))
		if !parentRace(err) {
			break
		}
	}
	if err != nil {
		return nil, cleanup(c, fmt.Errorf("make v1 directories: %w", err))
	}
	c.v1 = cg
	if err := writeValues(vals, c.dir); err != nil {
		return nil, cleanup(c, err)
	}
	return c, nil
}

// joinedV1 keeps the hierarchies a container is placed in: each costs a
// cgroup.procs write at start that waits on the kernel (issue 15). Kept:
// memory (limits, OOM counter, stats), cpu and cpuacct (quota, stats),
// pids, devices (the device allowlist: security), freezer (Kill freezes
// first), name=systemd (systemd tracks processes by it), and cpuset only
// when res asks for cpus or mems. Left out: blkio, net_cls, net_prio,
// perf_event, hugetlb, rdma and any other: Tender sets nothing there, and
// the container stays in the agent's cgroup of those.
func joinedV1(subs []cgroup1.Subsystem, res *specs.LinuxResources) []cgroup1.Subsystem {
	cpuset := res != nil && res.CPU != nil && (res.CPU.Cpus != "" || res.CPU.Mems != "")
	var out []cgroup1.Subsystem
	for _, s := range subs {
		switch s.Name() {
		case cgroup1.Memory, cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Pids, cgroup1.Devices, cgroup1.Freezer, cgroup1.SystemdDbus:
			out = append(out, s)
		case cgroup1.Cpuset:
			if cpuset {
				out = append(out, s)
			}
		}
	}
	return out
}

func loadV1(path string) (*Cgroup, error) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("no such cgroup: %w", errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &Cgroup{path: path, mode: V1, dirs: dirsV1(cg.Subsystems(), path), v1: cg}, nil
}

type pather interface {
	Path(string) string
}

func dirsV1(subs []cgroup1.Subsystem, path string) []ctrlDir {
	var dirs []ctrlDir
	for _, s := range subs {
		if p, ok := s.(pather); ok {
			dirs = append(dirs, ctrlDir{name: string(s.Name()), dir: p.Path(path)})
		}
	}
	return dirs
}

// cleanup removes what a failed Create made and returns err, with the
// cleanup failure if any.
func cleanup(c *Cgroup, err error) error {
	if derr := c.Delete(); derr != nil {
		return fmt.Errorf("%w; cleanup also failed: %v", err, derr)
	}
	return err
}

func (c *Cgroup) statsV1() (Stats, error) {
	var s Stats
	read := func(dst *uint64, controller, file string) error {
		dir := c.dir(controller)
		if dir == "" {
			return nil
		}
		n, err := readUint(filepath.Join(dir, file))
		*dst = n
		return err
	}
	for _, r := range []struct {
		dst              *uint64
		controller, file string
	}{
		{&s.MemoryUsage, "memory", "memory.usage_in_bytes"},
		{&s.MemoryLimit, "memory", "memory.limit_in_bytes"},
		{&s.MemoryMaxUsage, "memory", "memory.max_usage_in_bytes"},
		{&s.CPUUsageNanos, "cpuacct", "cpuacct.usage"},
		{&s.Pids, "pids", "pids.current"},
		{&s.PidsLimit, "pids", "pids.max"},
	} {
		if err := read(r.dst, r.controller, r.file); err != nil {
			return Stats{}, err
		}
	}
	n, err := c.OOMKills()
	if err != nil {
		return Stats{}, err
	}
	s.OOMKills = n
	return s, nil
}
