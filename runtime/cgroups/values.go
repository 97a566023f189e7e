package cgroups

import (
	"strconv"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Mode is the cgroup layout of a host.
type Mode int

const (
	// Unavailable means no usable cgroup mount was found.
	Unavailable Mode = iota
	// V1 is the legacy layout, one hierarchy per controller. A hybrid
	// host (v1 plus a cgroup2 mount without controllers) is V1.
	V1
	// V2 is the unified layout: one hierarchy, all controllers.
	V2
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "unavailable"
}

// Value is one control file write: Controller is the v1 hierarchy the file
// lives in (on v2 it names the controller to enable), File the control file
// and Value what is written to it. Values are written in slice order.
type Value struct {
	Controller string
	File       string
	Value      string
}

// defaultPeriod is the kernel's default CFS period in microseconds.
const defaultPeriod = 100000

// Values returns the control files and values that Create writes for res
// on mode m, in order. It performs no I/O. Device rules on v2 are not files
// (they are a BPF program) and so are not part of the result.
func Values(m Mode, res *specs.LinuxResources) []Value {
	if res == nil {
		return nil
	}
	switch m {
	case V1:
		return valuesV1(res)
	case V2:
		return valuesV2(res)
	}
	return nil
}

func valuesV1(res *specs.LinuxResources) []Value {
	var o []Value
	if c := res.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			o = append(o, Value{"cpu", "cpu.shares", strconv.FormatUint(*c.Shares, 10)})
		}
		if quota, period, ok := cpuMax(c); ok {
			o = append(o, Value{"cpu", "cpu.cfs_period_us", strconv.FormatUint(period, 10)})
			o = append(o, Value{"cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)})
		}
		if c.Cpus != "" {
			o = append(o, Value{"cpuset", "cpuset.cpus", c.Cpus})
		}
		if c.Mems != "" {
			o = append(o, Value{"cpuset", "cpuset.mems", c.Mems})
		}
	}
	if l, ok := memoryLimit(res); ok {
		v := strconv.FormatInt(l, 10)
		o = append(o,
			Value{"memory", "memory.limit_in_bytes", v},
			Value{"memory", "memory.memsw.limit_in_bytes", v}, // swap off; optional file
			Value{"memory", "memory.swappiness", "0"},
		)
	}
	if r, ok := memoryReservation(res); ok {
		o = append(o, Value{"memory", "memory.soft_limit_in_bytes", strconv.FormatInt(r, 10)})
	}
	if p, ok := pidsLimit(res); ok {
		o = append(o, Value{"pids", "pids.max", strconv.FormatInt(p, 10)})
	}
	if devs := deviceRules(res.Devices); devs != nil {
		for _, d := range devs {
			file := "devices.deny"
			if d.Allow {
				file = "devices.allow"
			}
			o = append(o, Value{"devices", file, deviceString(d)})
		}
	}
	return o
}

// valuesV2 mirrors cgroup2.ToResources followed by cgroup2.Resources.Values
// (the order and formats containerd writes), after normalising the spec:
// swap off, and a default period when only a quota is given; with a memory
// limit it adds memory.oom.group, which containerd leaves to the caller.
func valuesV2(res *specs.LinuxResources) []Value {
	var o []Value
	if c := res.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			w := cgroup2.ConvertCPUSharesToCgroupV2Value(*c.Shares)
			o = append(o, Value{"cpu", "cpu.weight", strconv.FormatUint(w, 10)})
		}
		if quota, period, ok := cpuMax(c); ok {
			q := "max"
			if quota > 0 {
				q = strconv.FormatInt(quota, 10)
			}
			o = append(o, Value{"cpu", "cpu.max", q + " " + strconv.FormatUint(period, 10)})
		}
		if c.Cpus != "" {
			o = append(o, Value{"cpuset", "cpuset.cpus", c.Cpus})
		}
		if c.Mems != "" {
			o = append(o, Value{"cpuset", "cpuset.mems", c.Mems})
		}
	}
	if l, ok := memoryLimit(res); ok {
		o = append(o,
			Value{"memory", "memory.swap.max", "0"}, // swap off; optional file
			Value{"memory", "memory.max", strconv.FormatInt(l, 10)},
			// An OOM kill takes the whole container, not one of its
			// processes: a half-killed app looks alive and is not (what
			// Kubernetes does on v2). Optional file: Linux 4.19 and later.
			Value{"memory", "memory.oom.group", "1"},
		)
	}
	if r, ok := memoryReservation(res); ok {
		o = append(o, Value{"memory", "memory.low", strconv.FormatInt(r, 10)})
	}
	if p, ok := pidsLimit(res); ok {
		o = append(o, Value{"pids", "pids.max", strconv.FormatInt(p, 10)})
	}
	return o
}

// optional reports whether a control file may be missing on a host (swap
// accounting disabled), in which case its write is skipped.
func optional(file string) bool {
	return file == "memory.memsw.limit_in_bytes" || file == "memory.swap.max" || file == "memory.oom.group"
}

// cpuMax returns the CFS quota and period to write. A quota of -1 means
// unlimited; a missing period is the kernel default.
func cpuMax(c *specs.LinuxCPU) (quota int64, period uint64, ok bool) {
	hasQuota := c.Quota != nil && *c.Quota != 0
	hasPeriod := c.Period != nil && *c.Period != 0
	if !hasQuota && !hasPeriod {
		return 0, 0, false
	}
	quota, period = -1, defaultPeriod
	if hasQuota && *c.Quota > 0 {
		quota = *c.Quota
	}
	if hasPeriod {
		period = *c.Period
	}
	return quota, period, true
}

func memoryLimit(res *specs.LinuxResources) (int64, bool) {
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		return *m.Limit, true
	}
	return 0, false
}

func memoryReservation(res *specs.LinuxResources) (int64, bool) {
	if m := res.Memory; m != nil && m.Reservation != nil && *m.Reservation > 0 {
		return *m.Reservation, true
	}
	return 0, false
}

func pidsLimit(res *specs.LinuxResources) (int64, bool) {
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		return *p.Limit, true
	}
	return 0, false
}

// deviceRules returns the device rules to apply, normalised (type "a" when
// empty, -1 for a wildcard major or minor, "rwm" when no access is given)
// and starting with "deny all". Nil rules mean devices are not controlled.
func deviceRules(rules []specs.LinuxDeviceCgroup) []specs.LinuxDeviceCgroup {
	if len(rules) == 0 {
		return nil
	}
	wild := int64(-1)
	out := []specs.LinuxDeviceCgroup{{Allow: false, Type: "a", Major: &wild, Minor: &wild, Access: "rwm"}}
	for i, r := range rules {
		if r.Type == "" {
			r.Type = "a"
		}
		if r.Access == "" {
			r.Access = "rwm"
		}
		major, minor := wild, wild
		if r.Major != nil {
			major = *r.Major
		}
		if r.Minor != nil {
			minor = *r.Minor
		}
		r.Major, r.Minor = &major, &minor
		if i == 0 && !r.Allow && r.Type == "a" && major < 0 && minor < 0 && r.Access == "rwm" {
			continue // already the leading deny-all
		}
		out = append(out, r)
	}
	return out
}

// deviceString formats a normalised rule for devices.allow / devices.deny.
func deviceString(d specs.LinuxDeviceCgroup) string {
	if d.Type == "a" && *d.Major < 0 && *d.Minor < 0 {
		return "a"
	}
	return d.Type + " " + devNum(*d.Major) + ":" + devNum(*d.Minor) + " " + d.Access
}

func devNum(n int64) string {
	if n < 0 {
		return "*"
	}
	return strconv.FormatInt(n, 10)
}

// SplitExec splits a container's resources into those Create writes and
// those written right before the workload execs (Update): the pids limit.
// The runtime's own set-up runs in the cgroup first (a Go init, whose
// threads count as pids until execve ends them), and a limit meant for the
// workload (pids 1 for a single process) must not break it. res is not
// modified.
func SplitExec(res *specs.LinuxResources) (atCreate, atExec *specs.LinuxResources) {
	if res == nil || res.Pids == nil {
		return res, nil
	}
	c := *res
	c.Pids = nil
	return &c, &specs.LinuxResources{Pids: res.Pids}
}
