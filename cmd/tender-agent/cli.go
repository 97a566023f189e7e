package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/runtime/logs"
	"github.com/tender-edge/tender/runtime/spec"
)

const (
	defaultRoot   = "/var/lib/tender"
	defaultSocket = "/run/tender/agent.sock"
)

type globals struct {
	root     string
	socket   string
	logLevel string
}

// parse takes the global options that stand before the command.
func (g *globals) parse(args []string) ([]string, error) {
	fs := flag.NewFlagSet("tender-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.flags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return fs.Args(), nil
}

func (g *globals) flags(fs *flag.FlagSet) {
	fs.StringVar(&g.root, "root", g.root, "state directory")
	fs.StringVar(&g.socket, "socket", g.socket, "the agent daemon's API socket")
	fs.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
}

type cli struct {
	globals
	stdout, stderr io.Writer
}

// flagSet is a command's flag set; it also takes the global options, so
// they may stand after the command too.
func (c *cli) flagSet(name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: tender-agent %s %s\n\nOptions:\n", name, args)
		fs.PrintDefaults()
	}
	c.globals.flags(fs)
	return fs
}

func (c *cli) parse(fs *flag.FlagSet, args []string, min int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitError{0}
		}
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() < min {
		fs.Usage()
		return nil, fmt.Errorf("%w: %s needs at least %d argument(s)", errUsage, fs.Name(), min)
	}
	return fs.Args(), nil
}

func (c *cli) logger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil {
		lvl = zerolog.WarnLevel
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: c.stderr, NoColor: true}).Level(lvl).With().Timestamp().Logger()
}

// imageStore is what the CLI needs of images: the local store, or the
// daemon's through its API while it runs (it holds the store open).
type imageStore interface {
	Get(ref string) (image.Image, error)
	LayerDirs(img image.Image) ([]string, error)
	List() ([]image.Image, error)
	Load(ctx context.Context, r io.Reader) ([]image.Image, error)
	Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error)
	Remove(ref string) error
	Prune(keep map[digest.Digest]bool) ([]image.Image, int64, error)
	Save(ctx context.Context, ref string, w io.Writer) error
	Close() error
}

// daemon returns a client of the agent daemon serving this --root, or nil.
func (c *cli) daemon(ctx context.Context) *agent.Client {
	cl, err := agent.Dial(ctx, c.socket)
	if err != nil {
		return nil
	}
	if abs, _ := filepath.Abs(c.root); cl.StateDir != abs {
		cl.Close()
		return nil
	}
	return cl
}

func (c *cli) openImages() (imageStore, error) {
	if cl := c.daemon(context.Background()); cl != nil {
		return cl, nil
	}
	if err := os.MkdirAll(c.root, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return image.Open(filepath.Join(c.root, "images"), image.Options{Log: c.logger(), KeepLayerBlobs: true})
}

// openAll opens the image store and the runtime; close releases the store.
func (c *cli) openAll() (*container.Runtime, imageStore, error) {
	st, err := c.openImages()
	if err != nil {
		return nil, nil, err
	}
	rt, err := container.New(c.root, st, c.logger())
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return rt, st, nil
}

// imagesInUse opens the image store and maps image IDs to the containers
// that use them.
func (c *cli) imagesInUse() (imageStore, map[string][]string, error) {
	rt, err := c.runtime()
	if err != nil {
		return nil, nil, err
	}
	ctrs, err := rt.List()
	if err != nil {
		return nil, nil, err
	}
	st, err := c.openImages()
	if err != nil {
		return nil, nil, err
	}
	return st, usersByImage(ctrs), nil
}

// selectContainers is the containers named by refs, in order; with no
// refs, every running container, or every container when all is set.
func (c *cli) selectContainers(refs []string, all bool) (*container.Runtime, []*container.Container, error) {
	rt, err := c.runtime()
	if err != nil {
		return nil, nil, err
	}
	var out []*container.Container
	if len(refs) > 0 {
		for _, ref := range refs {
			ctr, err := rt.Get(ref)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, ctr)
		}
		return rt, out, nil
	}
	list, err := rt.List()
	if err != nil {
		return nil, nil, err
	}
	for _, ctr := range list {
		if all || ctr.State.Status == container.Running {
			out = append(out, ctr)
		}
	}
	return rt, out, nil
}

// lookup finds a container by name or ID.
func (c *cli) lookup(ref string) (*container.Runtime, *container.Container, error) {
	rt, ctrs, err := c.selectContainers([]string{ref}, false)
	if err != nil {
		return nil, nil, err
	}
	return rt, ctrs[0], nil
}

func (c *cli) runtime() (*container.Runtime, error) {
	return container.New(c.root, nil, c.logger())
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func (c *cli) run(ctx context.Context, args []string) error {
	fs := c.flagSet("run", "[OPTIONS] IMAGE [ARGS...]")
	var (
		name     = fs.String("name", "", "container name")
		detach   = fs.Bool("d", false, "run in the background and print the container ID")
		rm       = fs.Bool("rm", false, "remove the container when it exits")
		memory   = fs.String("memory", "", "memory limit, e.g. 32Mi (no swap)")
		cpus     = fs.Float64("cpus", 0, "CPU quota in CPUs, e.g. 0.5")
		pids     = fs.Int64("pids", 0, "maximum number of processes")
		cpuset   = fs.String("cpuset", "", "CPUs to run on, e.g. 0-1")
		network  = fs.String("net", spec.NetNone, "network: none or host")
		user     = fs.String("user", "", "user: name, uid, name:group or uid:gid")
		workdir  = fs.String("workdir", "", "working directory in the container")
		ep       = fs.String("entrypoint", "", "replace the image's entrypoint")
		readOnly = fs.Bool("read-only", false, "mount the root filesystem read-only")
		env      listFlag
		devices  listFlag
		volumes  listFlag
		capDrop  listFlag
	)
	fs.Var(&env, "e", "set an environment variable K=V (repeatable)")
	fs.Var(&devices, "device", "pass a host device through, e.g. /dev/ttyUSB0 (repeatable)")
	fs.Var(&volumes, "v", "bind a host path: HOST:CONTAINER[:ro] (repeatable)")
	fs.Var(&capDrop, "cap-drop", "drop a capability from the default set (repeatable)")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	o := spec.Options{
		Args: rest[1:], Env: env, User: *user, Workdir: *workdir, CPUs: *cpus, Pids: *pids,
		Cpuset: *cpuset, Network: *network, ReadOnly: *readOnly, CapDrop: capDrop,
	}
	if *ep != "" {
		o.Entrypoint = []string{*ep}
	}
	if *memory != "" {
		if o.Memory, err = spec.ParseBytes(*memory); err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
	}
	for _, v := range volumes {
		vol, err := parseVolume(v)
		if err != nil {
			return err
		}
		o.Volumes = append(o.Volumes, vol)
	}
	for _, d := range devices {
		dev, err := container.HostDevice(d)
		if err != nil {
			return err
		}
		o.Devices = append(o.Devices, dev)
	}
	rt, st, err := c.openAll()
	if err != nil {
		return err
	}
	ctr, err := rt.Create(ctx, container.CreateOptions{Name: *name, Image: rest[0], Options: o, AutoRemove: *rm})
	st.Close() // the image store is not needed once the container exists
	if err != nil {
		return err
	}
	if *detach {
		if _, err := rt.StartDetached(ctr.ID); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, ctr.ID)
		return nil
	}
	return c.foreground(rt, ctr)
}

// foreground runs the container attached to this terminal: its output is
// copied here (and to its logs), signals are passed on, and the command
// exits with the workload's exit code.
func (c *cli) foreground(rt *container.Runtime, ctr *container.Container) error {
	m, err := rt.Start(context.Background(), ctr.ID, container.IO{Stdout: c.stdout, Stderr: c.stderr})
	if err != nil {
		if ctr.AutoRemove {
			_ = rt.Delete(ctr.ID, true)
		}
		return err
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = m.Signal(s)
			case <-done:
				return
			}
		}
	}()
	st, err := m.Wait()
	signal.Stop(sigs)
	close(done)
	if err != nil {
		return err
	}
	if st.OOMKilled {
		fmt.Fprintf(c.stderr, "tender-agent: container %s was killed: out of memory (limit %s)\n", ctr.Name, memLimit(ctr))
	}
	if st.ExitCode != 0 {
		return exitError{st.ExitCode}
	}
	return nil
}

func memLimit(ctr *container.Container) string {
	if r := ctr.Spec.Linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil {
		return spec.FormatBytes(*r.Memory.Limit)
	}
	return "none"
}

func parseVolume(v string) (spec.Volume, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
		return spec.Volume{}, fmt.Errorf("%w: volume %q: want HOST:CONTAINER[:ro]", errdefs.ErrInvalidArgument, v)
	}
	// An empty or relative host path is refused by spec.Build, not resolved.
	src := parts[0]
	if _, err := os.Stat(src); filepath.IsAbs(src) && err != nil {
		return spec.Volume{}, fmt.Errorf("%w: volume %q: %v", errdefs.ErrInvalidArgument, v, err)
	}
	return spec.Volume{Source: src, Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"}, nil
}

func (c *cli) ps(args []string) error {
	fs := c.flagSet("ps", "[OPTIONS]")
	all := fs.Bool("a", false, "show all containers (default shows just running)")
	out := fs.String("o", "table", "output format: table or json")
	quiet := fs.Bool("q", false, "print only container IDs")
	noTrunc := fs.Bool("no-trunc", false, "print full container IDs")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	_, shown, err := c.selectContainers(nil, *all)
	if err != nil {
		return err
	}
	if *out == "json" {
		return writeJSON(c.stdout, shown)
	}
	id := container.ShortID
	if *noTrunc {
		id = func(s string) string { return s }
	}
	if *quiet {
		for _, ctr := range shown {
			fmt.Fprintln(c.stdout, id(ctr.ID))
		}
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tNAMES")
	for _, ctr := range shown {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\n", id(ctr.ID), ctr.Image,
			quoteCmd(ctr.Spec.Process.Args), ago(now.Sub(ctr.Created)), status(ctr, now), ctr.Name)
	}
	return tw.Flush()
}

func quoteCmd(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 20 {
		s = s[:19] + "…"
	}
	return strconv.Quote(s)
}

func status(ctr *container.Container, now time.Time) string {
	switch ctr.State.Status {
	case container.Running:
		return "Up " + ago(now.Sub(ctr.State.StartedAt))
	case container.Exited:
		s := fmt.Sprintf("Exited (%d) %s ago", ctr.State.ExitCode, ago(now.Sub(ctr.State.FinishedAt)))
		if ctr.State.OOMKilled {
			s += " (OOMKilled)"
		}
		return s
	}
	return "Created"
}

// ago prints a duration the way docker does: "3 seconds", "2 minutes".
func ago(d time.Duration) string {
	unit := func(n int, u string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", u)
		}
		return fmt.Sprintf("%d %ss", n, u)
	}
	switch {
	case d < time.Second:
		return "Less than a second"
	case d < time.Minute:
		return unit(int(d.Seconds()), "second")
	case d < time.Hour:
		return unit(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return unit(int(d.Hours()), "hour")
	}
	return unit(int(d.Hours()/24), "day")
}

func (c *cli) logs(ctx context.Context, args []string) error {
	fs := c.flagSet("logs", "[OPTIONS] CONTAINER")
	follow := fs.Bool("f", false, "follow the output until the container exits")
	tail := fs.Int("tail", 0, "show only the last N lines (0: all)")
	ts := fs.Bool("t", false, "show timestamps")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	rt, ctr, err := c.lookup(rest[0])
	if err != nil {
		return err
	}
	print := func(e logs.Entry) error {
		w := c.stdout
		if e.Stream == "stderr" {
			w = c.stderr
		}
		if *ts {
			fmt.Fprint(w, e.Time.Format(time.RFC3339Nano)+" ")
		}
		if e.Partial {
			_, err := fmt.Fprint(w, e.Text)
			return err
		}
		_, err := fmt.Fprintln(w, e.Text)
		return err
	}
	if !*follow {
		entries, err := logs.Tail(rt.LogDir(ctr), "container", *tail)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := print(e); err != nil {
				return err
			}
		}
		return nil
	}
	// Follow until the container stops, as docker logs -f does.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-t.C:
				cur, err := rt.Get(ctr.ID)
				if err != nil || cur.State.Status != container.Running {
					// One more beat lets the last lines be read.
					time.Sleep(300 * time.Millisecond)
					cancel()
					return
				}
			}
		}
	}()
	err = logs.Follow(fctx, rt.LogDir(ctr), "container", *tail, print)
	if errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return nil
	}
	return err
}

func (c *cli) stop(args []string) error {
	fs := c.flagSet("stop", "[OPTIONS] CONTAINER...")
	grace := fs.Duration("t", -1, "seconds to wait before killing (default: the container's grace, 10s)")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	return c.each(rest, func(ref string) error { return rt.Stop(ref, *grace) })
}

// each runs fn for every name, printing the names it succeeded for, as
// docker does, and returns every failure.
func (c *cli) each(names []string, fn func(string) error) error {
	var errs []error
	for _, name := range names {
		if err := fn(name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(c.stdout, name)
	}
	return errors.Join(errs...)
}

func (c *cli) rm(args []string) error {
	fs := c.flagSet("rm", "[OPTIONS] CONTAINER...")
	force := fs.Bool("f", false, "kill and remove a running container")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	return c.each(rest, func(ref string) error { return rt.Delete(ref, *force) })
}

func (c *cli) stats(ctx context.Context, args []string) error {
	fs := c.flagSet("stats", "[OPTIONS] [CONTAINER...]")
	out := fs.String("o", "table", "output format: table or json")
	rest, err := c.parse(fs, args, 0)
	if err != nil {
		return err
	}
	rt, ctrs, err := c.selectContainers(rest, false)
	if err != nil {
		return err
	}
	// CPU use is a rate: two samples a short interval apart.
	type row struct {
		ID       string  `json:"id"`
		Name     string  `json:"name"`
		CPU      float64 `json:"cpuPercent"`
		MemUsage uint64  `json:"memoryUsage"`
		MemLimit uint64  `json:"memoryLimit"`
		Pids     uint64  `json:"pids"`
	}
	first := map[string]uint64{}
	for _, ctr := range ctrs {
		if s, err := rt.Stats(ctr); err == nil {
			first[ctr.ID] = s.CPUUsageNanos
		}
	}
	const interval = 500 * time.Millisecond
	select {
	case <-time.After(interval):
	case <-ctx.Done():
		return ctx.Err()
	}
	var rows []row
	for _, ctr := range ctrs {
		s, err := rt.Stats(ctr)
		if err != nil {
			continue
		}
		rows = append(rows, row{ID: ctr.ID, Name: ctr.Name, MemUsage: s.MemoryUsage, MemLimit: s.MemoryLimit, Pids: s.Pids,
			CPU: float64(s.CPUUsageNanos-first[ctr.ID]) / float64(interval.Nanoseconds()) * 100})
	}
	if *out == "json" {
		return writeJSON(c.stdout, rows)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tPIDS")
	for _, r := range rows {
		limit := "unlimited"
		if r.MemLimit > 0 && r.MemLimit < 1<<62 {
			limit = spec.FormatBytes(int64(r.MemLimit))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s / %s\t%d\n", container.ShortID(r.ID), r.Name, r.CPU, spec.FormatBytes(int64(r.MemUsage)), limit, r.Pids)
	}
	return tw.Flush()
}

func (c *cli) inspect(args []string) error {
	fs := c.flagSet("inspect", "CONTAINER...")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	_, out, err := c.selectContainers(rest, false)
	if err != nil {
		return err
	}
	return writeJSON(c.stdout, out)
}

func (c *cli) images(args []string) error {
	fs := c.flagSet("images", "[OPTIONS]")
	out := fs.String("o", "table", "output format: table or json")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	st, users, err := c.imagesInUse()
	if err != nil {
		return err
	}
	defer st.Close()
	imgs, err := st.List()
	if err != nil {
		return err
	}
	if *out == "json" {
		type row struct {
			image.Image
			UsedBy []string `json:"usedBy"`
		}
		rows := make([]row, len(imgs))
		for i, img := range imgs {
			rows[i] = row{img, users[img.ID.String()]}
		}
		return writeJSON(c.stdout, rows)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tUSED BY")
	for _, img := range imgs {
		repo, tag := "<none>", "<none>"
		if img.Name != "" {
			repo, tag = splitName(img.Name)
		}
		used := strings.Join(users[img.ID.String()], ",")
		if used == "" {
			used = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\n", repo, tag, shortDigest(img.ID.String()), ago(now.Sub(img.Created)), spec.FormatBytes(img.Size), used)
	}
	return tw.Flush()
}

func splitName(n string) (string, string) {
	if i := strings.LastIndexByte(n, ':'); i > strings.LastIndexByte(n, '/') {
		return n[:i], n[i+1:]
	}
	return n, "<none>"
}

func shortDigest(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

func (c *cli) rmi(args []string) error {
	fs := c.flagSet("rmi", "IMAGE...")
	rest, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	st, users, err := c.imagesInUse()
	if err != nil {
		return err
	}
	defer st.Close()
	var errs []error
	for _, ref := range rest {
		img, err := st.Get(ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u := users[img.ID.String()]; len(u) > 0 {
			errs = append(errs, fmt.Errorf("image %s is in use by container %s: remove it first", ref, strings.Join(u, ", ")))
			continue
		}
		if err := st.Remove(ref); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(c.stdout, "Deleted:", img.Digest)
	}
	return errors.Join(errs...)
}

func (c *cli) load(ctx context.Context, args []string) error {
	fs := c.flagSet("load", "[-i] FILE")
	in := fs.String("i", "", "read from this archive instead of the argument")
	rest, err := c.parse(fs, args, 0)
	if err != nil {
		return err
	}
	path := *in
	if path == "" && len(rest) > 0 {
		path = rest[0]
	}
	var r io.Reader = os.Stdin
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	st, err := c.openImages()
	if err != nil {
		return err
	}
	defer st.Close()
	imgs, err := st.Load(ctx, r)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		name := img.Name
		if name == "" {
			name = img.Digest.String()
		}
		fmt.Fprintf(c.stdout, "Loaded image: %s\n", name)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
