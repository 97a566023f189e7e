package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/runtime/initproc"
	"github.com/tender-edge/tender/runtime/network"
	"github.com/tender-edge/tender/runtime/nsenter"
	"github.com/tender-edge/tender/runtime/spec"
)

// Images is what the runtime needs of an image store.
type Images interface {
	Get(ref string) (image.Image, error)
	LayerDirs(img image.Image) ([]string, error)
}

// Runtime manages the containers under one root.
type Runtime struct {
	dir    string // ROOT/containers
	top    string // ROOT
	images Images
	log    zerolog.Logger
	// CgroupParent is where container cgroups are made ("/tender").
	CgroupParent string
}

// New opens the container directory under root, creating it 0700.
func New(root string, images Images, log zerolog.Logger) (*Runtime, error) {
	dir := filepath.Join(root, "containers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("container root: %w", err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("container root: %w", err)
	}
	return &Runtime{dir: dir, top: root, images: images, log: log, CgroupParent: "/tender"}, nil
}

// CreateOptions say what to create.
type CreateOptions struct {
	Name       string
	Image      string
	Options    spec.Options
	AutoRemove bool
	StopGrace  time.Duration // default 10s
	Labels     map[string]string
	// NoPivot forces the no-pivot_root way into the container's root
	// (runc's --no-pivot; see initproc.Config.NoPivot).
	NoPivot bool
	// Net attaches a container with Options.Network spec.NetBridge.
	Net *NetOptions
}

// validName is docker's container name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]*,
// kept to 63 bytes so that it also makes a hostname. No regexp: this runs
// on every start of the agent binary's CLI.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Create makes a container from an image: its directories, its spec and
// its config. Nothing runs yet.
func (r *Runtime) Create(ctx context.Context, o CreateOptions) (*Container, error) {
	img, err := r.images.Get(o.Image)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", o.Image, err)
	}
	lowers, err := r.images.LayerDirs(img)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", o.Image, err)
	}
	tr := trace.From(ctx)
	tr.Mark("image-lookup")
	id, err := newID()
	if err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = ShortID(id)
	}
	if !validName(name) {
		return nil, fmt.Errorf("container name %q: want [a-zA-Z0-9][a-zA-Z0-9_.-], at most 63 characters: %w", name, errdefs.ErrInvalidArgument)
	}
	so := o.Options
	if so.Hostname == "" {
		so.Hostname = strings.ReplaceAll(name, "_", "-")
	}
	dir := filepath.Join(r.dir, id)
	var netOpts *NetOptions
	if so.Network == spec.NetBridge {
		netOpts, err = bridgeOptions(o.Net)
		if err != nil {
			return nil, err
		}
		so.NetFiles = [2]string{network.HostsPath(dir), network.ResolvPath(dir)}
	} else if o.Net != nil && len(o.Net.Ports) > 0 {
		return nil, fmt.Errorf("ports are published only with network bridge: %w", errdefs.ErrInvalidArgument)
	}
	s, err := spec.Build(img.Config.Config, so)
	if err != nil {
		return nil, err
	}
	if err := initproc.CheckExecSize(s.Process.Args, s.Process.Env, s.Process.Rlimits); err != nil {
		return nil, err
	}
	grace := o.StopGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	s.Root.Path = filepath.Join(dir, "rootfs")
	c := &Container{
		Config: Config{
			ID: id, Name: name, Image: o.Image, ImageID: img.ID.String(),
			Created: time.Now().UTC(), AutoRemove: o.AutoRemove,
			Spec: s, User: spec.User(img.Config.Config, so), Seccomp: "default",
			Cgroup: r.CgroupParent + "/" + id, StopGrace: grace, Labels: o.Labels, NoPivot: o.NoPivot, Net: netOpts,
			RootMounts: []initproc.Mount{overlay(lowers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))},
		},
		State: State{Status: Created},
	}
	unlock, err := r.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := r.getLocked(name); err == nil {
		return nil, fmt.Errorf("the container name %q is already in use: %w", name, errdefs.ErrConflict)
	}
	r.removeAbandonedLocked()
	// The container is made in a directory List does not look at and
	// renamed into place once whole: a concurrent List sees all of it or
	// nothing.
	tmp := filepath.Join(r.dir, creatingPrefix+id)
	if err := r.makeDir(tmp, c, !o.AutoRemove); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	tr.Mark("create")
	return c, nil
}

// bridgeOptions checks a bridged container's options and fills in the
// default group.
func bridgeOptions(o *NetOptions) (*NetOptions, error) {
	n := &NetOptions{}
	if o != nil {
		*n = *o
	}
	if len(n.Groups) == 0 {
		n.Groups = []string{"default"}
	}
	for _, g := range n.Groups {
		if g == "" || len(g) > 253 {
			return nil, fmt.Errorf("network group %q: want 1 to 253 characters: %w", g, errdefs.ErrInvalidArgument)
		}
	}
	for _, a := range n.Aliases {
		if !validName(a) {
			return nil, fmt.Errorf("network alias %q: want a host name: %w", a, errdefs.ErrInvalidArgument)
		}
	}
	for i, p := range n.Ports {
		if p.HostPort == 0 || p.ContainerPort == 0 || (p.Proto != "tcp" && p.Proto != "udp") {
			return nil, fmt.Errorf("port %s: want host and container ports from 1 to 65535, tcp or udp: %w", p, errdefs.ErrInvalidArgument)
		}
		for _, q := range n.Ports[:i] {
			if p.Overlaps(q) {
				return nil, fmt.Errorf("ports %s and %s publish the same host port: %w", q, p, errdefs.ErrInvalidArgument)
			}
		}
	}
	return n, nil
}

// creatingPrefix names a container directory still being written.
const creatingPrefix = ".creating-"

// removeAbandonedLocked removes the directories of creates that died half
// way (a crash, a power cut): creates hold the lock, so under it none is in
// progress.
func (r *Runtime) removeAbandonedLocked() {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), creatingPrefix) {
			if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
				r.log.Warn().Err(err).Str("dir", e.Name()).Msg("removing an abandoned container directory")
			}
		}
	}
}

// makeDir writes a new container's directory at dir. A container removed
// when it exits does not outlive a power cut anyway: unless durable, its
// files skip the fsync.
func (r *Runtime) makeDir(dir string, c *Container, durable bool) error {
	for _, d := range []string{"upper", "work", "rootfs", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	// The upper dir's mode becomes the container's / mode.
	if err := os.Chmod(filepath.Join(dir, "upper"), 0o755); err != nil {
		return err
	}
	if c.Net != nil {
		// Bound on /etc/hosts and /etc/resolv.conf; written at start.
		for _, f := range []string{"hosts", "resolv.conf"} {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
				return err
			}
		}
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), &c.Config, durable); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "state.json"), &c.State, durable)
}

func overlay(lowers []string, upper, work string) initproc.Mount {
	return initproc.Mount{
		Type: "overlay", Source: "overlay",
		Options: []string{"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work},
	}
}

func newID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("container id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// lock takes the runtime-wide lock that makes names unique.
func (r *Runtime) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.dir, ".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock containers: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock containers: %w", err)
	}
	return func() { f.Close() }, nil
}

// Get finds a container by name, full ID or unique ID prefix.
func (r *Runtime) Get(ref string) (*Container, error) {
	return r.getLocked(ref)
}

func (r *Runtime) getLocked(ref string) (*Container, error) {
	if ref == "" {
		return nil, fmt.Errorf("no such container: empty name: %w", errdefs.ErrNotFound)
	}
	all, err := r.List()
	if err != nil {
		return nil, err
	}
	var byPrefix []*Container
	for _, c := range all {
		if c.Name == ref || c.ID == ref {
			return c, nil
		}
		if len(ref) >= 4 && strings.HasPrefix(c.ID, ref) {
			byPrefix = append(byPrefix, c)
		}
	}
	switch len(byPrefix) {
	case 0:
		return nil, fmt.Errorf("no such container %q: %w", ref, errdefs.ErrNotFound)
	case 1:
		return byPrefix[0], nil
	}
	return nil, fmt.Errorf("%q matches %d containers: give more of the ID: %w", ref, len(byPrefix), errdefs.ErrInvalidArgument)
}

// List returns every container, newest first, with its state refreshed
// against the kernel (a container whose process is gone and whose monitor
// died shows as exited).
func (r *Runtime) List() ([]*Container, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*Container
	for _, e := range ents {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		c, err := r.load(e.Name())
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			r.log.Warn().Err(err).Str("container", e.Name()).Msg("skipping unreadable container")
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

func (r *Runtime) load(id string) (*Container, error) {
	dir := filepath.Join(r.dir, id)
	c := &Container{}
	if err := readJSON(filepath.Join(dir, "config.json"), &c.Config); err != nil {
		return nil, err
	}
	statePath := filepath.Join(dir, "state.json")
	if err := readJSON(statePath, &c.State); err != nil {
		return nil, err
	}
	if !c.State.Status.Valid() {
		return nil, fmt.Errorf("%s: unknown status %q", statePath, c.State.Status)
	}
	if c.State.Status == Running && !alive(c.State.Pid, c.State.PidStart) && !alive(c.State.MonitorPid, c.State.MonitorStart) {
		c.State = lostState(c.State, statePath)
	}
	return c, nil
}

// lostState is what is known of a container recorded as running whose
// process and monitor are both gone (killed with them, or a reboot): it
// exited, when is unknown, and the last record of it is the best bound.
func lostState(st State, statePath string) State {
	st.Status = Exited
	st.ExitCode = -1
	st.Error = "the container's process and its monitor are gone"
	if fi, err := os.Stat(statePath); err == nil {
		st.FinishedAt = fi.ModTime().UTC()
	}
	if st.FinishedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		st.FinishedAt = st.StartedAt
	}
	return st
}

func (r *Runtime) root() string { return r.top }

// Dir is the container's directory.
func (r *Runtime) Dir(c *Container) string { return filepath.Join(r.dir, c.ID) }

// LogDir is where the container's logs are.
func (r *Runtime) LogDir(c *Container) string { return filepath.Join(r.dir, c.ID, "logs") }

func (r *Runtime) saveState(c *Container) error {
	return writeJSON(filepath.Join(r.dir, c.ID, "state.json"), &c.State, !c.AutoRemove)
}

// writeJSON replaces path atomically; durably (fsync before the rename)
// when asked.
func writeJSON(path string, v any, durable bool) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// procStart returns the start time of pid in clock ticks since boot, or
// 0 if it is gone.
func procStart(pid int) uint64 {
	s, err := nsenter.StartTime(pid)
	if err != nil {
		return 0
	}
	return s
}

// alive reports whether pid runs and, when start is not 0, is the same
// process that started at start.
func alive(pid int, start uint64) bool {
	s := procStart(pid)
	if s == 0 {
		return false
	}
	return start == 0 || s == start
}

// Network opens the bridge network of this root (runtime/network).
func (r *Runtime) Network() (*network.Manager, error) { return network.Open(r.top) }

// RepairNetwork frees what the bridge network holds for containers that
// no longer run (leases, veths, rules), and rebuilds the rules of those
// that do: after a crash of the agent or of the monitor. It returns how many
// leases it freed and veths it removed.
func (r *Runtime) RepairNetwork() (freed, removed int, err error) {
	nm, err := r.Network()
	if err != nil {
		return 0, 0, err
	}
	cs, err := r.List()
	if err != nil {
		return 0, 0, err
	}
	live := map[string]bool{}
	for _, c := range cs {
		if c.Net != nil && c.State.Status == Running && alive(c.State.Pid, c.State.PidStart) {
			live[c.ID] = true
		}
	}
	return nm.Repair(func(id string) bool { return live[id] })
}
