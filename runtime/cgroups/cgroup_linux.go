package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	cgroupsv3 "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountpoint is where the host mounts its cgroup hierarchies: the v2
// hierarchy itself, or the tmpfs holding one directory per v1 hierarchy.
const mountpoint = "/sys/fs/cgroup"

// Bounded waits of Kill and Delete.
const (
	freezeTimeout = 2 * time.Second
	killTimeout   = 10 * time.Second
	rmdirTimeout  = 2 * time.Second
)

// Detect reports the host's cgroup layout; hybrid is V1.
func Detect() Mode {
	switch cgroupsv3.Mode() {
	case cgroupsv3.Unified:
		return V2
	case cgroupsv3.Legacy, cgroupsv3.Hybrid:
		return V1
	}
	return Unavailable
}

// Cgroup is one container's cgroup: a directory per v1 hierarchy, or one v2
// directory. Its methods are safe for concurrent use (they hold no state
// beyond paths).
type Cgroup struct {
	path string
	mode Mode
	dirs []ctrlDir // v1: one per hierarchy, in containerd's order; v2: one with name ""

	v1 cgroup1.Cgroup
	v2 *cgroup2.Manager
}

type ctrlDir struct {
	name string // v1 hierarchy name ("memory", "systemd"); "" on v2
	dir  string // absolute
}

// Stats is a snapshot of a cgroup's usage. A limit of 0 means unlimited.
type Stats struct {
	MemoryUsage, MemoryLimit, MemoryMaxUsage uint64
	CPUUsageNanos                            uint64
	Pids, PidsLimit                          uint64
	OOMKills                                 uint64
}

// Create makes the cgroup at path (for example "/tender/<id>") and writes
// the limits of res (nil means none). It reads no statistics.
func Create(path string, res *specs.LinuxResources) (*Cgroup, error) {
	if res == nil {
		res = &specs.LinuxResources{}
	}
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	var (
		c   *Cgroup
		err error
	)
	switch m := Detect(); m {
	case V1:
		c, err = createV1(path, res)
	case V2:
		c, err = createV2(mountpoint, path, res)
	default:
		err = fmt.Errorf("no cgroup mount: %w", errdefs.ErrNotImplemented)
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return c, nil
}

// Load returns the existing cgroup at path (after an agent restart). It
// wraps errdefs.ErrNotFound when no directory of it exists.
func Load(path string) (*Cgroup, error) {
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	var (
		c   *Cgroup
		err error
	)
	switch m := Detect(); m {
	case V1:
		c, err = loadV1(path)
	case V2:
		c, err = loadV2(mountpoint, path)
	default:
		err = fmt.Errorf("no cgroup mount: %w", errdefs.ErrNotImplemented)
	}
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	return c, nil
}

func checkPath(path string) error {
	if err := cgroup2.VerifyGroupPath(path); err != nil || path == "/" {
		return fmt.Errorf("cgroup path %q: must be clean, absolute and not the root: %w", path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Path returns the cgroup path given to Create or Load.
func (c *Cgroup) Path() string { return c.path }

// Mode returns the layout the cgroup was made on.
func (c *Cgroup) Mode() Mode { return c.mode }

// Dirs returns the absolute directories of the cgroup: one per v1 hierarchy
// keyed by its name, or the single v2 directory under the key "".
func (c *Cgroup) Dirs() map[string]string {
	m := make(map[string]string, len(c.dirs))
	for _, d := range c.dirs {
		m[d.name] = d.dir
	}
	return m
}

func (c *Cgroup) dir(name string) string {
	for _, d := range c.dirs {
		if d.name == name {
			return d.dir
		}
	}
	return ""
}

// Update writes the limits of res into the cgroup, as Create does (the
// values of Values, in order); a controller they need and the host lacks
// fails with an error wrapping errdefs.ErrNotImplemented. A container's
// pids limit is written this way, right before its workload execs (see
// SplitExec).
func (c *Cgroup) Update(res *specs.LinuxResources) error {
	vals := Values(c.mode, res)
	for _, name := range required(vals) {
		if c.dirOf(name) == "" {
			return fmt.Errorf("update cgroup %s: %s controller: the host has none: %w", c.path, name, errdefs.ErrNotImplemented)
		}
	}
	if c.mode == V1 && c.dir("cpuset") == "" {
		for _, v := range vals {
			if v.Controller == "cpuset" {
				// joinedV1: the container was placed in no cpuset.
				return fmt.Errorf("update cgroup %s: %s: made without a cpuset, it cannot get one later: %w", c.path, v.File, errdefs.ErrNotImplemented)
			}
		}
	}
	if err := writeValues(vals, c.dirOf); err != nil {
		return fmt.Errorf("update cgroup %s: %w", c.path, err)
	}
	if c.mode == V2 && res != nil {
		// v2 device rules are a BPF program, not files: replaced whole.
		if devs := deviceRules(res.Devices); devs != nil {
			if err := setDeviceFilter(c.dirs[0].dir, devs); err != nil {
				return fmt.Errorf("update cgroup %s: %w", c.path, err)
			}
		}
	}
	return nil
}

// dirOf is the directory of controller: its v1 hierarchy's, or on v2 the
// group's when the controller is enabled there.
func (c *Cgroup) dirOf(controller string) string {
	if c.mode != V2 {
		return c.dir(controller)
	}
	dir := c.dir("")
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil || !slices.Contains(strings.Fields(string(b)), controller) {
		return ""
	}
	return dir
}

// Add moves process pid into the cgroup, in every v1 hierarchy.
func (c *Cgroup) Add(pid int) error {
	var err error
	if c.mode == V2 {
		err = c.v2.AddProc(uint64(pid))
	} else {
		err = c.v1.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.path, err)
	}
	return nil
}

// OpenDir opens the cgroup's v2 directory (O_PATH), for a clone straight
// into it (CLONE_INTO_CGROUP: initproc.Hooks.Cgroup). On v1, a directory
// per hierarchy, it returns nil: processes join with Add. The caller
// closes the file.
func (c *Cgroup) OpenDir() (*os.File, error) {
	if c.mode != V2 {
		return nil, nil
	}
	dir := c.dirs[0].dir
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.path, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// Procs returns the sorted ids of the processes in the cgroup (in any v1
// hierarchy; not in nested cgroups).
func (c *Cgroup) Procs() ([]int, error) {
	var all []int
	for _, d := range c.dirs {
		pids, err := readProcs(d.dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("list cgroup %s processes: %w", c.path, err)
		}
		all = append(all, pids...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func readProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s/cgroup.procs: %w", dir, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Stats returns current usage. Controllers missing on the host read as 0.
func (c *Cgroup) Stats() (Stats, error) {
	var (
		s   Stats
		err error
	)
	if c.mode == V2 {
		s, err = c.statsV2()
	} else {
		s, err = c.statsV1()
	}
	if err != nil {
		return Stats{}, fmt.Errorf("read cgroup %s stats: %w", c.path, err)
	}
	return s, nil
}

// OOMKills returns how many processes the kernel OOM killer killed in the
// cgroup. On v1 this needs kernel 4.13 or later (older kernels read 0).
func (c *Cgroup) OOMKills() (uint64, error) {
	var (
		file string
		dir  string
	)
	if c.mode == V2 {
		file, dir = "memory.events", c.dirs[0].dir
	} else {
		file, dir = "memory.oom_control", c.dir("memory")
		if dir == "" {
			return 0, nil
		}
	}
	n, err := readKey(filepath.Join(dir, file), "oom_kill")
	if err != nil {
		return 0, fmt.Errorf("read cgroup %s oom kills: %w", c.path, err)
	}
	return n, nil
}

// Kill sends SIGKILL to every process in the cgroup and waits, for a bounded
// time, until none is left. On v2 it uses cgroup.kill where the kernel has
// it; otherwise it freezes the cgroup, signals every process and thaws, so
// that nothing forks in between.
func (c *Cgroup) Kill() error {
	if err := c.kill(); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *Cgroup) kill() error {
	if c.mode == V2 {
		err := writeFile(filepath.Join(c.dirs[0].dir, "cgroup.kill"), "1")
		if err == nil {
			return c.waitEmpty(killTimeout)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	thaw, err := c.freeze()
	if err != nil {
		return err
	}
	pids, err := c.Procs()
	if err == nil {
		for _, pid := range pids {
			if kerr := unix.Kill(pid, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
				err = fmt.Errorf("signal pid %d: %w", pid, kerr)
				break
			}
		}
	}
	if terr := thaw(); terr != nil {
		err = errors.Join(err, terr)
	}
	if err != nil {
		return err
	}
	return c.waitEmpty(killTimeout)
}

// freeze freezes the cgroup when the host can, waiting a bounded time for
// the freeze to complete (a task stuck in the kernel may never freeze; it
// is then killed unfrozen). It returns the function that thaws.
func (c *Cgroup) freeze() (thaw func() error, err error) {
	noop := func() error { return nil }
	var (
		file, on, off string
		done          func() (bool, error)
	)
	if c.mode == V2 {
		dir := c.dirs[0].dir
		file, on, off = filepath.Join(dir, "cgroup.freeze"), "1", "0"
		done = func() (bool, error) {
			n, err := readKey(filepath.Join(dir, "cgroup.events"), "frozen")
			return n == 1, err
		}
	} else {
		dir := c.dir("freezer")
		if dir == "" {
			return noop, nil
		}
		file, on, off = filepath.Join(dir, "freezer.state"), "FROZEN", "THAWED"
		done = func() (bool, error) {
			b, err := os.ReadFile(file)
			return strings.TrimSpace(string(b)) == "FROZEN", err
		}
	}
	if err := writeFile(file, on); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return noop, nil
		}
		return nil, fmt.Errorf("freeze: %w", err)
	}
	thaw = func() error {
		if err := writeFile(file, off); err != nil {
			return fmt.Errorf("thaw: %w", err)
		}
		return nil
	}
	err = poll(freezeTimeout, func() (bool, error) {
		if c.mode == V1 {
			// v1 advances FREEZING to FROZEN only when asked again.
			if err := writeFile(file, on); err != nil {
				return false, err
			}
		}
		return done()
	})
	if err != nil && !errors.Is(err, errTimeout) {
		return nil, errors.Join(fmt.Errorf("freeze: %w", err), thaw())
	}
	return thaw, nil
}

var errTimeout = errors.New("timed out")

// waitEmpty polls until the cgroup has no process, signalling stragglers
// again on each round.
func (c *Cgroup) waitEmpty(timeout time.Duration) error {
	var left []int
	err := poll(timeout, func() (bool, error) {
		pids, err := c.Procs()
		if err != nil {
			return false, err
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL) // best effort; the next round checks
		}
		left = pids
		return len(pids) == 0, nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("processes %v still running after %s: %w", left, timeout, err)
	}
	return err
}

// poll calls cond with a short, growing interval until it reports true, it
// fails, or timeout passes (errTimeout).
func poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	interval := 200 * time.Microsecond
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(interval)
		interval = min(interval*2, 20*time.Millisecond)
	}
}

// Delete removes every directory of the cgroup. A directory already gone is
// not an error; one that still holds processes is. The parent directory
// (the runtime's "/tender") goes too once it is empty: its last
// container's Delete removes it, and a removal that finds it in use (a
// sibling, or a Create that made it again) leaves it be. A Create racing
// with that removal makes the parent again (mkdirCgroup).
func (c *Cgroup) Delete() error {
	var errs []error
	for i := len(c.dirs) - 1; i >= 0; i-- {
		if err := rmdir(c.dirs[i].dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.path, err)
	}
	if parent := filepath.Dir(c.path); parent != "/" {
		for _, d := range c.dirs {
			// EBUSY or ENOTEMPTY: in use; ENOENT: gone already.
			_ = unix.Rmdir(filepath.Dir(d.dir))
		}
	}
	return nil
}

// mkdirAttempts bounds mkdirCgroup's retries against Deletes that remove
// the parent it has just made; each retry means a sibling's Delete won a
// race, so a handful is plenty.
const mkdirAttempts = 16

// mkdirCgroup makes the cgroup directory dir and its parents, making the
// parents again when a concurrent Delete removed them in between.
func mkdirCgroup(dir string) error {
	var err error
	for range mkdirAttempts {
		if err = os.MkdirAll(dir, 0o755); !parentRace(err) {
			return err
		}
	}
	return err
}

// parentRace reports whether err is what making a cgroup directory gets
// when a sibling's Delete removes the parent at the same time: ENOENT (the
// parent went before the child's mkdir), EEXIST (os.MkdirAll's parent
// mkdir lost to another Create, and the parent went again before its
// check), ENODEV (a control file of the parent opened as it went: v1's
// cpuset copies the parent's cpus and mems).
func parentRace(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrExist) || errors.Is(err, unix.ENODEV)
}

// rmdir removes a cgroup directory, retrying EBUSY for a bounded time (the
// kernel may still be tearing down the last exited task).
func rmdir(dir string) error {
	err := poll(rmdirTimeout, func() (bool, error) {
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return true, nil
		case errors.Is(err, unix.EBUSY):
			// Busy with processes is final; busy with none is the
			// kernel finishing the last exit, worth a retry.
			if pids, perr := readProcs(dir); perr == nil && len(pids) > 0 {
				return false, fmt.Errorf("%w: holds processes %v", err, pids)
			}
			return false, nil
		}
		return false, err
	})
	if err != nil {
		return &os.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}

// writeValues writes vals into the directory that dirOf returns for each
// value's controller. Values of an optional file missing on the host are
// skipped.
func writeValues(vals []Value, dirOf func(controller string) string) error {
	for _, v := range vals {
		dir := dirOf(v.Controller)
		if dir == "" {
			continue // controller not applicable here
		}
		err := writeFile(filepath.Join(dir, v.File), v.Value)
		if err != nil {
			if optional(v.File) && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("set %s to %q: %w", v.File, v.Value, err)
		}
	}
	return nil
}

// writeFile writes an existing control file (never creates one).
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readKey reads the value of key in a "key value" per line file.
func readKey(path, key string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, nil
}

// readUint reads a single-number control file; "max" and values at or
// above 2^62 (v1's "unlimited") read as 0. A missing file reads as 0.
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if n >= 1<<62 {
		return 0, nil
	}
	return n, nil
}

// required reports the controllers that must exist for vals: memory, cpu
// and pids limits are never silently dropped.
func required(vals []Value) []string {
	var out []string
	for _, v := range vals {
		switch v.Controller {
		case "memory", "cpu", "pids":
			if !slices.Contains(out, v.Controller) {
				out = append(out, v.Controller)
			}
		}
	}
	return out
}
