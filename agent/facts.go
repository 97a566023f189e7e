package agent

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/sync/wire"
)

// deviceCapacity reads the device's memory and CPUs and the reserve.
func deviceCapacity(cfg Config) (reconcile.Capacity, error) {
	reserve, err := quantity.ParseBytes(cfg.Reserve.Memory)
	if err != nil {
		return reconcile.Capacity{}, err
	}
	return reconcile.Capacity{
		Memory: memTotal(), ReserveMemory: reserve,
		MilliCPU: int64(goruntime.NumCPU()) * 1000, ReserveMilliCPU: int64(cfg.Reserve.CPU * 1000),
	}, nil
}

// memTotal is MemTotal from /proc/meminfo in bytes, or 0 (no check) if it
// cannot be read.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// Facts describe the device for reports.
func (a *Agent) Facts() wire.DeviceFacts { return DeviceFacts(a.version) }

// DeviceFacts describe this device, for reports and enrollment, with the
// agent's version as stamped at build time (or "" for the build info's).
func DeviceFacts(version string) wire.DeviceFacts {
	f := wire.DeviceFacts{Arch: goruntime.GOARCH, MemoryBytes: uint64(memTotal()), CPUs: goruntime.NumCPU(), AgentVersion: agentVersion(version)}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	f.TimeZone = timeZone("/")
	switch cgroups.Detect() {
	case cgroups.V1:
		f.CgroupVersion = 1
	case cgroups.V2:
		f.CgroupVersion = 2
	}
	return f
}

// timeZone is the host's IANA time zone name, read as systemd and Debian
// keep it under root: the target of /etc/localtime (a link into a zoneinfo
// tree), else /etc/timezone. UTC and anything unreadable are "".
func timeZone(root string) string {
	name := ""
	if l, err := os.Readlink(filepath.Join(root, "etc/localtime")); err == nil {
		if _, z, ok := strings.Cut(l, "zoneinfo/"); ok {
			name = z
		}
	}
	if name == "" {
		if b, err := os.ReadFile(filepath.Join(root, "etc/timezone")); err == nil {
			name, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
		}
	}
	name = strings.TrimPrefix(strings.TrimPrefix(name, "posix/"), "right/")
	switch name {
	case "UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal", "GMT", "Etc/GMT":
		return ""
	}
	if len(name) > 64 || strings.ContainsAny(name, " \t") || strings.Contains(name, "..") {
		return ""
	}
	return name
}

// agentVersion is the version stamped by the linker (Deps.Version), or the
// module's version and VCS revision from the build info.
func agentVersion(linked string) string {
	if linked != "" && linked != "dev" {
		return linked
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

// sortedEnv turns an env map into KEY=VALUE entries in a stable order.
func sortedEnv(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
