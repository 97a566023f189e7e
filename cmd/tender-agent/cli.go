package main

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/internal/termsafe"
	"github.com/tender-edge/tender/internal/trace"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/runtime/logs"
	"github.com/tender-edge/tender/runtime/network"
	"github.com/tender-edge/tender/runtime/spec"
)

const (
	defaultRoot   = "/var/lib/tender"
	defaultSocket = "/run/tender/agent.sock"
)

// cli is the command line's state: the global flags and where output goes.
type cli struct {
	root     string
	socket   string
	logLevel string

	stdout, stderr io.Writer
	// out is stdout for messages and tables: control characters escaped
	// when it is a terminal (termsafe). Data (save -o -, exec, a
	// foreground run) goes to stdout as it is.
	out io.Writer
	// started is set when a command's RunE begins: errors before it are
	// usage errors.
	started bool
}

func newCLI(stdout, stderr io.Writer) *cli {
	return &cli{root: defaultRoot, socket: defaultSocket, logLevel: "warn", stdout: stdout, stderr: stderr, out: termsafe.For(stdout)}
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

// daemon returns a client of the agent daemon serving this --root, or
// nil when none does. A socket the user may not use is an error: falling
// back to the local store would only fail further on, less clearly.
func (c *cli) daemon(ctx context.Context) (*api.Client, error) {
	cl, err := api.Dial(ctx, c.socket)
	if err != nil {
		if errors.Is(err, api.ErrSocketPermission) {
			return nil, c.socketDenied()
		}
		return nil, nil
	}
	if abs, _ := filepath.Abs(c.root); cl.StateDir != abs {
		cl.Close()
		return nil, nil
	}
	return cl, nil
}

// socketDenied is the error for a user who may not connect to the
// daemon's socket: the daemon runs, the user is not root.
func (c *cli) socketDenied() error {
	return fmt.Errorf("%w (%s): run the command as root", api.ErrSocketPermission, c.socket)
}

func (c *cli) openImages() (imageStore, error) {
	cl, err := c.daemon(context.Background())
	if err != nil {
		return nil, err
	}
	if cl != nil {
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
	st, err := c.openImages() // first: it says when the daemon's socket is not for this user
	if err != nil {
		return nil, nil, err
	}
	rt, err := c.runtime()
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	ctrs, err := rt.List()
	if err != nil {
		st.Close()
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

// runOptions are run's flags.
type runOptions struct {
	name, memory, cpuset, network, user, workdir, entrypoint string
	detach, rm, readOnly, noPivot, trace                     bool
	cpus                                                     float64
	pids                                                     int64
	env, devices, volumes, capDrop, publish, netAlias        []string
	netGroups                                                []string
}

func (c *cli) runCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Run a container from an image",
		Long: `Run a container from an image.

In the foreground (the default) the container's output is shown here and
tender-agent exits with the workload's exit code (128+N for a signal, 137
for an OOM kill). Options stand before the image: what follows it is the
workload's command line.`,
		Example: `  tender-agent run --rm tender.test/workload id
  tender-agent run -d --name web -m 64Mi --cpus 0.5 --pids-limit 32 --net host tender.test/workload serve 127.0.0.1:8080`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return c.run(cmd.Context(), o, args) },
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false) // run IMAGE CMD --flag: --flag is the workload's
	fs.SortFlags = false
	fs.StringVar(&o.name, "name", "", "container name")
	fs.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container ID")
	fs.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	flagGroup(fs, "Container", "name", "detach", "rm")
	fs.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable `K=V` (repeatable)")
	fs.StringVarP(&o.user, "user", "u", "", "user: `NAME|UID[:GID]` (default: the image's)")
	fs.StringVarP(&o.workdir, "workdir", "w", "", "working directory in the container")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's entrypoint")
	flagGroup(fs, "Process", "env", "user", "workdir", "entrypoint")
	fs.StringVarP(&o.memory, "memory", "m", "", "memory limit, e.g. `32Mi` (hard, no swap)")
	fs.Float64Var(&o.cpus, "cpus", 0, "CPU quota in CPUs, e.g. 0.5")
	fs.Int64Var(&o.pids, "pids-limit", 0, "maximum number of processes (alias --pids)")
	fs.StringVar(&o.cpuset, "cpuset-cpus", "", "CPUs to run on, e.g. `0-1` (alias --cpuset)")
	flagGroup(fs, "Resources", "memory", "cpus", "pids-limit", "cpuset-cpus")
	fs.StringVar(&o.network, "network", spec.NetNone, "network: `none|host|bridge` (alias --net)")
	fs.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port (bridge): `[HOSTIP:]HOSTPORT:PORT[/udp]` (repeatable)")
	fs.StringArrayVar(&o.netGroups, "network-group", nil, "bridge: join this `NAME`d group of containers that reach each other by name (repeatable; default: default)")
	fs.StringArrayVar(&o.netAlias, "network-alias", nil, "bridge: another `NAME` peers resolve to this container (repeatable)")
	fs.StringArrayVarP(&o.volumes, "volume", "v", nil, "bind a host path: `/HOST:/CONTAINER[:ro]` (repeatable)")
	fs.StringArrayVar(&o.devices, "device", nil, "pass a host device through, e.g. `/dev/ttyUSB0` (repeatable)")
	fs.BoolVar(&o.readOnly, "read-only", false, "mount the root filesystem read-only")
	fs.StringArrayVar(&o.capDrop, "cap-drop", nil, "drop a `CAP` from the default set (repeatable)")
	fs.BoolVar(&o.noPivot, "no-pivot", false, "enter the root without pivot_root (taken by itself when / is the initramfs)")
	fs.BoolVar(&o.trace, "trace", false, "print the phases of the start and their durations to stderr (also TENDER_TRACE=1)")
	_ = fs.MarkHidden("trace")
	flagGroup(fs, "Isolation", "network", "publish", "network-group", "network-alias", "volume", "device", "read-only", "cap-drop", "no-pivot")
	alias(fs, "pids-limit", "pids")
	alias(fs, "cpuset-cpus", "cpuset")
	alias(fs, "network", "net")
	return cmd
}

func (c *cli) run(ctx context.Context, ro runOptions, args []string) error {
	if _, _, _, ok := reconcile.ParseName(ro.name); ok {
		return fmt.Errorf("container name %q: names of the form APP.CONTAINER.<8 hex digits> are reserved for the daemon's apps: %w",
			ro.name, errdefs.ErrInvalidArgument)
	}
	o := spec.Options{
		Args: args[1:], Env: ro.env, User: ro.user, Workdir: ro.workdir, CPUs: ro.cpus, Pids: ro.pids,
		Cpuset: ro.cpuset, Network: ro.network, ReadOnly: ro.readOnly, CapDrop: ro.capDrop,
	}
	if ro.entrypoint != "" {
		o.Entrypoint = []string{ro.entrypoint}
	}
	if ro.memory != "" {
		var err error
		if o.Memory, err = quantity.ParseBytes(ro.memory); err != nil {
			return invalid(fmt.Errorf("--memory: %w", err))
		}
	}
	for _, v := range ro.volumes {
		vol, err := parseVolume(v)
		if err != nil {
			return err
		}
		o.Volumes = append(o.Volumes, vol)
	}
	for _, d := range ro.devices {
		dev, err := container.HostDevice(d)
		if err != nil {
			return invalid(err)
		}
		o.Devices = append(o.Devices, dev)
	}
	var netOpts *container.NetOptions
	if len(ro.publish) > 0 || len(ro.netGroups) > 0 || len(ro.netAlias) > 0 {
		if ro.network != spec.NetBridge {
			return invalid(fmt.Errorf("--publish, --network-group and --network-alias need --net bridge"))
		}
		ports, err := network.ParsePorts(ro.publish)
		if err != nil {
			return err
		}
		netOpts = &container.NetOptions{Groups: ro.netGroups, Aliases: ro.netAlias, Ports: ports}
	}
	tr := trace.FromEnv("cli")
	if ro.trace && tr == nil {
		tr = trace.New("cli")
	}
	if tr != nil {
		defer func() { trace.Print(c.stderr, tr.Phases()) }()
		ctx = trace.With(ctx, tr)
	}
	rt, st, err := c.openAll()
	if err != nil {
		return err
	}
	tr.Mark("state-open")
	ctr, err := rt.Create(ctx, container.CreateOptions{Name: ro.name, Image: args[0], Options: o, AutoRemove: ro.rm, NoPivot: ro.noPivot, Net: netOpts})
	st.Close() // the image store is not needed once the container exists
	if err != nil {
		return err
	}
	if ro.detach {
		if _, err := rt.StartDetachedContext(ctx, ctr.ID); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, ctr.ID)
		return nil
	}
	return c.foreground(trace.With(context.Background(), tr), rt, ctr)
}

// foreground runs the container attached to this terminal: its output is
// copied here (and to its logs), signals are passed on, and the command
// exits with the workload's exit code.
// ctx carries a trace.Recorder, if any; it does not bound the run.
func (c *cli) foreground(ctx context.Context, rt *container.Runtime, ctr *container.Container) error {
	m, err := rt.Start(ctx, ctr.ID, container.IO{Stdout: c.stdout, Stderr: c.stderr})
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
		fmt.Fprintf(c.stderr, "tender-agent: container %s was killed: out of memory (limit %s)\n", termsafe.Escape(ctr.Name), memLimit(ctr))
	}
	if st.ExitCode != 0 {
		return exitError{st.ExitCode}
	}
	return nil
}

func memLimit(ctr *container.Container) string {
	if r := ctr.Spec.Linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil {
		return quantity.DisplayBytes(*r.Memory.Limit)
	}
	return "none"
}

// parseVolume reads -v /HOST:/CONTAINER[:ro|rw]. The host path must be
// absolute and exist: an empty or relative one would bind whatever the
// current directory is (docker reads a relative one as a named volume,
// which tender-agent has not).
func parseVolume(v string) (spec.Volume, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
		return spec.Volume{}, fmt.Errorf("volume %q: want /HOST:/CONTAINER[:ro]: %w", v, errdefs.ErrInvalidArgument)
	}
	src := parts[0]
	switch {
	case src == "":
		return spec.Volume{}, fmt.Errorf("volume %q: the host path is empty: want /HOST:/CONTAINER[:ro]: %w", v, errdefs.ErrInvalidArgument)
	case !filepath.IsAbs(src):
		return spec.Volume{}, fmt.Errorf("volume %q: the host path %q is not absolute: %w", v, src, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(src); err != nil {
		return spec.Volume{}, fmt.Errorf("volume %q: %v: %w", v, err, errdefs.ErrInvalidArgument)
	}
	return spec.Volume{Source: filepath.Clean(src), Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"}, nil
}

// outputFlag adds -o/--output table|json; another value is a usage error.
func outputFlag(fs *pflag.FlagSet, p *string) {
	*p = "table"
	fs.VarP((*outputValue)(p), "output", "o", "output format: table or json")
}

type outputValue string

func (v *outputValue) String() string { return string(*v) }
func (v *outputValue) Type() string   { return "format" }

func (v *outputValue) Set(s string) error {
	if s != "table" && s != "json" {
		return errors.New("want table or json")
	}
	*v = outputValue(s)
	return nil
}

// table is a tabwriter on c.out; its cells go through termsafe.Escape, so
// no name, version or message can forge a row or drive the terminal.
func (c *cli) table(header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(c.out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

// row writes one table row of escaped cells.
func row(tw io.Writer, cells ...string) {
	for i, s := range cells {
		cells[i] = termsafe.Escape(s)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func (c *cli) psCmd() *cobra.Command {
	var all, quiet, noTrunc bool
	var out string
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List containers",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, shown, err := c.selectContainers(nil, all)
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(c.stdout, shown)
			}
			id := container.ShortID
			if noTrunc {
				id = func(s string) string { return s }
			}
			if quiet {
				for _, ctr := range shown {
					fmt.Fprintln(c.out, id(ctr.ID))
				}
				return nil
			}
			now := time.Now()
			tw := c.table("CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES")
			for _, ctr := range shown {
				ports := ""
				if ctr.Net != nil {
					ports = network.FormatPorts(ctr.Net.Ports)
				}
				row(tw, id(ctr.ID), ctr.Image, quoteCmd(ctr.Spec.Process.Args), ago(now.Sub(ctr.Created))+" ago", status(ctr, now), ports, ctr.Name)
			}
			return tw.Flush()
		},
	}
	fs := cmd.Flags()
	fs.BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only container IDs")
	fs.BoolVar(&noTrunc, "no-trunc", false, "print full container IDs")
	outputFlag(fs, &out)
	return cmd
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

func (c *cli) logsCmd() *cobra.Command {
	var follow, ts, raw bool
	tail := tailValue(-1)
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Show a container's output",
		Long: `Show a container's output.

On a terminal, control characters in the output (escape sequences that
would retitle or clear the terminal, carriage returns that overwrite a
line) are shown escaped, as \x1b; through a pipe, or with --raw, the
bytes are given as they are.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.logs(cmd.Context(), args[0], follow, ts, raw, int(tail))
		},
	}
	fs := cmd.Flags()
	fs.BoolVarP(&follow, "follow", "f", false, "follow the output until the container exits")
	fs.VarP(&tail, "tail", "n", "show only the last N lines, or all")
	fs.BoolVarP(&ts, "timestamps", "t", false, "show timestamps")
	fs.BoolVar(&raw, "raw", false, "write the output as it is, control characters included, even to a terminal")
	return cmd
}

// logs shows the last tail lines (all when tail < 0), then with follow the
// new ones until the container stops.
func (c *cli) logs(ctx context.Context, ref string, follow, ts, raw bool, tail int) error {
	rt, ctr, err := c.lookup(ref)
	if err != nil {
		return err
	}
	stdout, stderr := c.stdout, c.stderr
	if !raw {
		stdout, stderr = termsafe.For(stdout), termsafe.For(stderr)
	}
	defer flush(stdout, stderr)
	print := func(e logs.Entry) error {
		w := stdout
		if e.Stream == "stderr" {
			w = stderr
		}
		if ts {
			fmt.Fprint(w, e.Time.Format(time.RFC3339Nano)+" ")
		}
		if e.Partial {
			_, err := fmt.Fprint(w, e.Text)
			return err
		}
		_, err := fmt.Fprintln(w, e.Text)
		return err
	}
	if !follow {
		if tail == 0 {
			return nil
		}
		entries, err := logs.Tail(rt.LogDir(ctr), "container", max(tail, 0)) // 0: all
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
	err = logs.Follow(fctx, rt.LogDir(ctr), "container", tail, print)
	if errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return nil
	}
	return err
}

// tailValue is logs' --tail: a number of lines, or "all" (negative).
type tailValue int

func (v *tailValue) String() string {
	if *v < 0 {
		return "all"
	}
	return strconv.Itoa(int(*v))
}

func (v *tailValue) Set(s string) error {
	if s == "all" {
		*v = -1
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("want a number of lines or all")
	}
	*v = tailValue(n)
	return nil
}

func (v *tailValue) Type() string { return "N" }

// flush writes out what termsafe writers among ws hold back.
func flush(ws ...io.Writer) {
	for _, w := range ws {
		if f, ok := w.(*termsafe.Writer); ok {
			f.Flush()
		}
	}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%q needs %d argument(s), got %d: %s", cmd.CommandPath(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

// graceValue is stop's -t: whole seconds as docker takes them ("10"), or
// a Go duration ("1500ms"). Unset (negative) means the container's own.
type graceValue time.Duration

func (g *graceValue) String() string {
	if *g < 0 {
		return ""
	}
	return time.Duration(*g).String()
}

func (g *graceValue) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return fmt.Errorf("want 0 or more seconds")
		}
		*g = graceValue(time.Duration(n) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want seconds (10) or a duration (1500ms)")
	}
	*g = graceValue(d)
	return nil
}

func (g *graceValue) Type() string { return "seconds" }

func (c *cli) stopCmd() *cobra.Command {
	grace := graceValue(-1)
	cmd := &cobra.Command{
		Use:   "stop [OPTIONS] CONTAINER...",
		Short: "Stop running containers",
		Args:  minArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rt, err := c.runtime()
			if err != nil {
				return err
			}
			return c.each(args, func(ref string) error { return rt.Stop(ref, time.Duration(grace)) })
		},
	}
	cmd.Flags().VarP(&grace, "time", "t", "time to wait before killing: seconds, or a duration like 1500ms (default: the container's grace, 10s)")
	return cmd
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
		fmt.Fprintln(c.out, name)
	}
	return errors.Join(errs...)
}

func (c *cli) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [OPTIONS] CONTAINER...",
		Short: "Remove containers",
		Args:  minArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rt, err := c.runtime()
			if err != nil {
				return err
			}
			return c.each(args, func(ref string) error { return rt.Delete(ref, force) })
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill and remove a running container")
	return cmd
}

func (c *cli) statsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "stats [OPTIONS] [CONTAINER...]",
		Short: "Show running containers' resource use",
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.stats(cmd.Context(), args, out)
		},
	}
	outputFlag(cmd.Flags(), &out)
	return cmd
}

func (c *cli) stats(ctx context.Context, refs []string, out string) error {
	rt, ctrs, err := c.selectContainers(refs, false)
	if err != nil {
		return err
	}
	// CPU use is a rate: two samples a short interval apart.
	type statsRow struct {
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
	var rows []statsRow
	for _, ctr := range ctrs {
		s, err := rt.Stats(ctr)
		if err != nil {
			continue
		}
		rows = append(rows, statsRow{ID: ctr.ID, Name: ctr.Name, MemUsage: s.MemoryUsage, MemLimit: s.MemoryLimit, Pids: s.Pids,
			CPU: float64(s.CPUUsageNanos-first[ctr.ID]) / float64(interval.Nanoseconds()) * 100})
	}
	if out == "json" {
		return writeJSON(c.stdout, rows)
	}
	tw := c.table("CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tPIDS")
	for _, r := range rows {
		limit := "unlimited"
		if r.MemLimit > 0 && r.MemLimit < 1<<62 {
			limit = quantity.DisplayBytes(int64(r.MemLimit))
		}
		row(tw, container.ShortID(r.ID), r.Name, fmt.Sprintf("%.2f%%", r.CPU), quantity.DisplayBytes(int64(r.MemUsage))+" / "+limit, strconv.FormatUint(r.Pids, 10))
	}
	return tw.Flush()
}

func (c *cli) inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect CONTAINER...",
		Short: "Show containers' configuration and state as JSON",
		Args:  minArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, out, err := c.selectContainers(args, false)
			if err != nil {
				return err
			}
			return writeJSON(c.stdout, out) // JSON escapes control characters itself
		},
	}
}

func (c *cli) imagesCmd() *cobra.Command {
	var out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "images [OPTIONS]",
		Short: "List images ('images prune' removes unused ones)",
		Args:  subcommandOnly,
		RunE: func(*cobra.Command, []string) error {
			return c.images(out, quiet)
		},
	}
	outputFlag(cmd.Flags(), &out)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only image IDs")
	cmd.AddCommand(c.imagesPruneCmd())
	return cmd
}

func (c *cli) images(out string, quiet bool) error {
	st, users, err := c.imagesInUse()
	if err != nil {
		return err
	}
	defer st.Close()
	imgs, err := st.List()
	if err != nil {
		return err
	}
	if out == "json" {
		type imageRow struct {
			image.Image
			UsedBy []string `json:"usedBy"`
		}
		rows := make([]imageRow, len(imgs))
		for i, img := range imgs {
			rows[i] = imageRow{img, users[img.ID.String()]}
		}
		return writeJSON(c.stdout, rows)
	}
	if quiet {
		for _, img := range imgs {
			fmt.Fprintln(c.out, shortDigest(img.ID.String()))
		}
		return nil
	}
	now := time.Now()
	tw := c.table("REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tUSED BY")
	for _, img := range imgs {
		repo, tag := "<none>", "<none>"
		if img.Name != "" {
			repo, tag = splitName(img.Name)
		}
		used := strings.Join(users[img.ID.String()], ",")
		if used == "" {
			used = "-"
		}
		row(tw, repo, tag, shortDigest(img.ID.String()), ago(now.Sub(img.Created))+" ago", quantity.DisplayBytes(img.Size), used)
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

func (c *cli) rmiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rmi IMAGE...",
		Short: "Remove images",
		Args:  minArgs(1),
		RunE:  func(_ *cobra.Command, args []string) error { return c.rmi(args) },
	}
}

func (c *cli) rmi(refs []string) error {
	st, users, err := c.imagesInUse()
	if err != nil {
		return err
	}
	defer st.Close()
	var errs []error
	for _, ref := range refs {
		img, err := st.Get(ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u := users[img.ID.String()]; len(u) > 0 {
			errs = append(errs, fmt.Errorf("image %s is in use by container %s: remove it first: %w", ref, strings.Join(u, ", "), errdefs.ErrFailedPrecondition))
			continue
		}
		if err := st.Remove(ref); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(c.out, "Deleted:", img.Digest)
	}
	return errors.Join(errs...)
}

func (c *cli) loadCmd() *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "load [OPTIONS] [FILE]",
		Short: "Load images from an OCI archive (a file, or standard input)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := in
			if path == "" && len(args) > 0 {
				path = args[0]
			}
			return c.load(cmd.Context(), path)
		},
	}
	cmd.Flags().StringVarP(&in, "input", "i", "", "read from this archive instead of the argument")
	return cmd
}

func (c *cli) load(ctx context.Context, path string) error {
	var r io.Reader = os.Stdin
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return invalid(err)
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
		fmt.Fprintf(c.out, "Loaded image: %s\n", termsafe.Escape(name))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
