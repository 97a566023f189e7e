package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// createV2 makes the cgroup under root (the v2 mount), enables the needed
// controllers in its ancestors with containerd's cgroup2, writes Values and
// attaches containerd's BPF device filter when res has device rules.
func createV2(root, path string, res *specs.LinuxResources) (*Cgroup, error) {
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("read available controllers: %w", err)
	}
	have := strings.Fields(string(avail))
	vals := valuesV2(res)
	for _, name := range required(vals) {
		if !slices.Contains(have, name) {
			return nil, fmt.Errorf("%s controller: the host has none: %w", name, errdefs.ErrNotImplemented)
		}
	}
	var ctrls []string
	for _, v := range vals {
		if slices.Contains(have, v.Controller) && !slices.Contains(ctrls, v.Controller) {
			ctrls = append(ctrls, v.Controller)
		}
	}
	// pids is enabled even without a limit now: the limit comes later, at
	// exec (SplitExec), and pids.current feeds Stats.
	if slices.Contains(have, "pids") && !slices.Contains(ctrls, "pids") {
		ctrls = append(ctrls, "pids")
	}
	dir := filepath.Join(root, path)
	if err := mkdirCgroup(dir); err != nil {
		return nil, err
	}
	m, err := cgroup2.Load(path, cgroup2.WithMountpoint(root))
	if err != nil {
		return nil, cleanup(&Cgroup{path: path, mode: V2, dirs: []ctrlDir{{dir: dir}}}, err)
	}
	c := &Cgroup{path: path, mode: V2, dirs: []ctrlDir{{dir: dir}}, v2: m}
	if len(ctrls) > 0 {
		if err := m.ToggleControllers(ctrls, cgroup2.Enable); err != nil {
			return nil, cleanup(c, fmt.Errorf("enable controllers: %w", err))
		}
	}
	err = writeValues(vals, func(controller string) string {
		if slices.Contains(ctrls, controller) {
			return dir
		}
		return ""
	})
	if err != nil {
		return nil, cleanup(c, err)
	}
	if devs := deviceRules(res.Devices); devs != nil {
		if err := setDeviceFilter(dir, devs); err != nil {
			return nil, cleanup(c, err)
		}
	}
	return c, nil
}

func loadV2(root, path string) (*Cgroup, error) {
	dir := filepath.Join(root, path)
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no such cgroup: %w", errdefs.ErrNotFound)
		}
		return nil, err
	}
	m, err := cgroup2.Load(path, cgroup2.WithMountpoint(root))
	if err != nil {
		return nil, err
	}
	return &Cgroup{path: path, mode: V2, dirs: []ctrlDir{{dir: dir}}, v2: m}, nil
}

func (c *Cgroup) statsV2() (Stats, error) {
	m, err := c.v2.StatFiltered(cgroup2.StatPids | cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if m.Memory != nil {
		s.MemoryUsage, s.MemoryLimit, s.MemoryMaxUsage = m.Memory.Usage, unlimited(m.Memory.UsageLimit), m.Memory.MaxUsage
	}
	if m.CPU != nil {
		s.CPUUsageNanos = m.CPU.UsageUsec * 1000
	}
	if m.Pids != nil {
		s.Pids, s.PidsLimit = m.Pids.Current, unlimited(m.Pids.Limit)
	}
	if m.MemoryEvents != nil {
		s.OOMKills = m.MemoryEvents.OomKill
	}
	return s, nil
}

// unlimited maps containerd's reading of "max" to 0.
func unlimited(n uint64) uint64 {
	if n >= 1<<62 {
		return 0
	}
	return n
}
