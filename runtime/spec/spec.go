// Package spec turns an image's config and the operator's options into an
// OCI runtime spec. It is pure: no I/O, no clock, no environment; anything
// the host must be asked (device numbers) comes in through Options.
package spec

import (
	"fmt"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tender-edge/tender/internal/mountpath"
)

// Network modes.
const (
	NetNone = "none" // a private network namespace with only lo
	NetHost = "host" // the host's network namespace
	// NetBridge is a private network namespace with a veth on the
	// runtime's bridge (runtime/network); the runtime binds the files
	// named by Options.NetFiles on /etc/hosts and /etc/resolv.conf.
	NetBridge = "bridge"
)

// Volume is a host path bound into the container.
type Volume struct {
	Source   string `json:"source"` // absolute host path
	Target   string `json:"target"` // absolute path in the container
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Device is a host device node passed through; its numbers are read from
// the host by the caller.
type Device struct {
	Path         string // path on the host and in the container
	Type         string // "c" or "b"
	Major, Minor int64
	FileMode     uint32
	UID, GID     uint32
}

// Options are the operator's choices for one container.
type Options struct {
	Hostname   string
	Entrypoint []string // replaces the image's entrypoint when set
	Args       []string // replaces the image's cmd when set
	Env        []string // KEY=VALUE, override the image's
	User       string   // "name", "uid", "uid:gid", "name:group"; "" = image's user
	Workdir    string
	Memory     int64   // bytes; 0 = unlimited
	CPUs       float64 // CPUs of quota; 0 = unlimited
	Pids       int64   // 0 = unlimited
	Cpuset     string  // "0", "0-1,3"
	Network    string  // NetNone (default), NetHost or NetBridge
	// NetFiles, with NetBridge: the host files bound on /etc/hosts and
	// /etc/resolv.conf (written by the runtime when the container starts).
	NetFiles [2]string
	ReadOnly bool
	Devices  []Device
	Volumes  []Volume
	CapDrop  []string // narrows the default set
}

// MinMemory is the smallest memory limit accepted: below it a Go or libc
// program cannot even start, and the result is a confusing OOM loop.
const MinMemory = 6 << 20

// CPUPeriod is the CFS period used for CPU quotas, in microseconds.
const CPUPeriod = 100000

// DefaultCaps is Docker's default capability set.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// MaskedPaths are hidden from the container (SECURITY.md §1.3).
var MaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

// ReadonlyPaths are visible but not writable.
var ReadonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

func u32(v uint32) *uint32 { return &v }

// defaultDevices are the nodes of the container's minimal /dev.
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0, FileMode: fm(0o666), UID: u32(0), GID: u32(0)},
}

func fm(m uint32) *fs.FileMode { v := fs.FileMode(m); return &v }

// Build returns the runtime spec for a container of img under o. The
// root path is left empty: the runtime fills it in.
func Build(img ocispec.ImageConfig, o Options) (*specs.Spec, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	args := img.Entrypoint
	cmd := img.Cmd
	if len(o.Entrypoint) > 0 {
		args, cmd = o.Entrypoint, nil
	}
	if len(o.Args) > 0 {
		cmd = o.Args
	}
	args = append(append([]string{}, args...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: the image has no entrypoint or cmd and none was given: %w", errdefs.ErrInvalidArgument)
	}
	cwd := img.WorkingDir
	if o.Workdir != "" {
		cwd = o.Workdir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %q is not absolute: %w", cwd, errdefs.ErrInvalidArgument)
	}
	user := img.User
	if o.User != "" {
		user = o.User
	}
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	caps, err := capSet(o.CapDrop)
	if err != nil {
		return nil, err
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: o.Hostname,
		Root:     &specs.Root{Readonly: o.ReadOnly},
		Process: &specs.Process{
			Args: args,
			Env:  mergeEnv(img.Env, o.Env),
			Cwd:  path.Clean(cwd),
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}, // runc's default (SECURITY.md §1.3)
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
			},
			Resources:     resources(o),
			MaskedPaths:   append([]string{}, MaskedPaths...),
			ReadonlyPaths: append([]string{}, ReadonlyPaths...),
			Devices:       append([]specs.LinuxDevice{}, defaultDevices...),
		},
	}
	if o.Network != NetHost {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	if o.Network == NetBridge {
		for i, dst := range []string{"/etc/hosts", "/etc/resolv.conf"} {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: o.NetFiles[i],
				Options: []string{"bind", "rprivate", "nosuid", "nodev", "noexec"}})
		}
	}
	for _, v := range o.Volumes {
		opts := []string{"rbind", "rprivate", "nosuid", "nodev"}
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: path.Clean(v.Target), Type: "bind", Source: v.Source, Options: opts})
	}
	for _, d := range o.Devices {
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{
			Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor,
			FileMode: fm(d.FileMode), UID: u32(d.UID), GID: u32(d.GID),
		})
	}
	if uid, gid, ok := numericUser(user); ok {
		s.Process.User = specs.User{UID: uid, GID: gid}
	}
	return s, nil
}

// User returns the user the container runs as when it must be looked up
// by name inside the container ("" when Build set numeric IDs).
func User(img ocispec.ImageConfig, o Options) string {
	u := img.User
	if o.User != "" {
		u = o.User
	}
	if _, _, ok := numericUser(u); ok {
		return ""
	}
	return u
}

func resources(o Options) *specs.LinuxResources {
	r := &specs.LinuxResources{Devices: deviceRules(o.Devices)}
	if o.Memory > 0 {
		m := o.Memory
		swap := o.Memory // memory+swap equal to memory: no swap
		var swappiness uint64
		r.Memory = &specs.LinuxMemory{Limit: &m, Swap: &swap, Swappiness: &swappiness}
	}
	if o.CPUs > 0 || o.Cpuset != "" {
		r.CPU = &specs.LinuxCPU{Cpus: o.Cpuset}
		if o.CPUs > 0 {
			q := int64(math.Round(o.CPUs * CPUPeriod))
			p := uint64(CPUPeriod)
			r.CPU.Quota, r.CPU.Period = &q, &p
		}
	}
	if o.Pids > 0 {
		r.Pids = &specs.LinuxPids{Limit: &o.Pids}
	}
	return r
}

// deviceRules are the device cgroup rules: deny everything, then allow the
// minimal /dev, the pty multiplexer and pts, and the passed-through devices.
func deviceRules(extra []Device) []specs.LinuxDeviceCgroup {
	i := func(v int64) *int64 { return &v }
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	for _, d := range defaultDevices {
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i(d.Major), Minor: i(d.Minor), Access: "rwm"})
	}
	rules = append(rules,
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i(5), Minor: i(2), Access: "rwm"},  // /dev/ptmx
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i(136), Minor: nil, Access: "rwm"}, // /dev/pts/*
	)
	for _, d := range extra {
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: i(d.Major), Minor: i(d.Minor), Access: "rwm"})
	}
	return rules
}

func (o Options) validate() error {
	if o.Memory < 0 || (o.Memory > 0 && o.Memory < MinMemory) {
		return fmt.Errorf("memory limit %d bytes is below the minimum of %d (6Mi): %w", o.Memory, MinMemory, errdefs.ErrInvalidArgument)
	}
	if o.CPUs < 0 || o.CPUs > 1024 || math.IsNaN(o.CPUs) {
		return fmt.Errorf("cpus %v out of range (0 < cpus <= 1024): %w", o.CPUs, errdefs.ErrInvalidArgument)
	}
	if o.CPUs > 0 && o.CPUs*CPUPeriod < 1000 {
		return fmt.Errorf("cpus %v is below the minimum of 0.01: %w", o.CPUs, errdefs.ErrInvalidArgument)
	}
	if o.Pids < 0 {
		return fmt.Errorf("pids limit %d is negative: %w", o.Pids, errdefs.ErrInvalidArgument)
	}
	if o.Cpuset != "" {
		if err := validateCpuset(o.Cpuset); err != nil {
			return err
		}
	}
	switch o.Network {
	case "", NetNone, NetHost:
	case NetBridge:
		for _, f := range o.NetFiles {
			if !path.IsAbs(f) {
				return fmt.Errorf("network bridge: the hosts and resolv.conf files must be absolute paths: %w", errdefs.ErrInvalidArgument)
			}
		}
	default:
		return fmt.Errorf("network %q: want host, none or bridge: %w", o.Network, errdefs.ErrInvalidArgument)
	}
	if len(o.Hostname) > 64 {
		return fmt.Errorf("hostname longer than 64 bytes: %w", errdefs.ErrInvalidArgument)
	}
	for _, e := range o.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsRune(e, 0) {
			return fmt.Errorf("environment entry %q: want KEY=VALUE: %w", e, errdefs.ErrInvalidArgument)
		}
	}
	for _, v := range o.Volumes {
		if err := validateVolume(v); err != nil {
			return err
		}
	}
	for _, d := range o.Devices {
		if d.Type != "c" && d.Type != "b" {
			return fmt.Errorf("device %s is not a character or block device: %w", d.Path, errdefs.ErrInvalidArgument)
		}
		if !strings.HasPrefix(path.Clean(d.Path), "/dev/") {
			return fmt.Errorf("device %s is not under /dev: %w", d.Path, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// validateVolume checks a bind: its host path absolute and clean (an empty
// or relative one would be resolved against whatever directory the agent
// runs in), its container path absolute and not one the runtime manages.
func validateVolume(v Volume) error {
	if v.Source == "" || !path.IsAbs(v.Source) || path.Clean(v.Source) != v.Source {
		return fmt.Errorf("volume %s:%s: the host path %q must be absolute and clean, like /srv/data: %w",
			v.Source, v.Target, v.Source, errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(v.Target) {
		return fmt.Errorf("volume %s:%s: the container path %q must be absolute: %w", v.Source, v.Target, v.Target, errdefs.ErrInvalidArgument)
	}
	if reason, reserved := mountpath.ReservedPath(v.Target); reserved {
		return fmt.Errorf("volume %s:%s: %s: %w", v.Source, v.Target, reason, errdefs.ErrInvalidArgument)
	}
	return nil
}

func validateCpuset(s string) error {
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || b < a {
			return fmt.Errorf("cpuset %q: want a list like 0-1,3: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ValidateUser checks a user string's syntax and numeric ranges:
// IDs must be in [0, 2^31).
func ValidateUser(u string) error {
	if u == "" {
		return nil
	}
	name, group, _ := strings.Cut(u, ":")
	for _, part := range []string{name, group} {
		if part == "" {
			continue
		}
		if isDigits(part) || strings.HasPrefix(part, "-") || strings.HasPrefix(part, "+") {
			if _, err := parseID(part); err != nil {
				return fmt.Errorf("user %q: %v: %w", u, err, errdefs.ErrInvalidArgument)
			}
			continue
		}
		if strings.ContainsAny(part, "/\x00\n ") {
			return fmt.Errorf("user %q: bad name %q: %w", u, part, errdefs.ErrInvalidArgument)
		}
	}
	if name == "" {
		return fmt.Errorf("user %q: empty user name: %w", u, errdefs.ErrInvalidArgument)
	}
	return nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("id %s out of range [0, 2147483647]", s)
	}
	return uint32(n), nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// numericUser reports the IDs of "uid" or "uid:gid" (gid defaults to uid's
// 0 group as Docker does when only a uid is given... Docker uses gid 0).
func numericUser(u string) (uid, gid uint32, ok bool) {
	if u == "" {
		return 0, 0, true
	}
	name, group, hasGroup := strings.Cut(u, ":")
	if !isDigits(name) || (hasGroup && !isDigits(group)) {
		return 0, 0, false
	}
	uid, err := parseID(name)
	if err != nil {
		return 0, 0, false
	}
	if hasGroup {
		if gid, err = parseID(group); err != nil {
			return 0, 0, false
		}
	}
	return uid, gid, true
}

func mergeEnv(base, over []string) []string {
	idx := map[string]int{}
	var out []string
	for _, list := range [][]string{base, over} {
		for _, e := range list {
			k, _, _ := strings.Cut(e, "=")
			if i, ok := idx[k]; ok {
				out[i] = e
				continue
			}
			idx[k] = len(out)
			out = append(out, e)
		}
	}
	if _, ok := idx["PATH"]; !ok {
		out = append(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return out
}

func capSet(drop []string) ([]string, error) {
	dropped := map[string]bool{}
	for _, d := range drop {
		c := strings.ToUpper(d)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if c == "CAP_ALL" {
			return []string{}, nil
		}
		known := false
		for _, k := range DefaultCaps {
			known = known || k == c
		}
		if !known {
			return nil, fmt.Errorf("cap-drop %s: not in the default set: %w", d, errdefs.ErrInvalidArgument)
		}
		dropped[c] = true
	}
	var out []string
	for _, c := range DefaultCaps {
		if !dropped[c] {
			out = append(out, c)
		}
	}
	return out, nil
}
