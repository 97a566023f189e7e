package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/agent/daemon"
)

// daemonCmd: tender-agent daemon [--config FILE]
func (c *cli) daemonCmd(ctx context.Context, args []string) error {
	fs := c.flagSet("daemon", "[--config FILE]")
	cfgPath := fs.String("config", agent.DefaultConfigPath, "agent config file (a missing default file means defaults)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*cfgPath)
	if err != nil {
		return inputError{err}
	}
	// --root and --socket, when given, win over the file.
	if c.root != defaultRoot {
		cfg.StateDir = c.root
	}
	if c.socket != defaultSocket {
		cfg.Socket = c.socket
	}
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "warn" {
		lvl = zerolog.InfoLevel // a daemon says what it does
	}
	log := zerolog.New(c.stderr).Level(lvl).With().Timestamp().Str("device", cfg.DeviceID).Logger()
	// An edge daemon is idle most of the time: trade a little GC work for
	// a smaller heap (GOGC in the environment still wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	d, err := daemon.New(cfg, daemon.Deps{Log: log})
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Run(ctx)
}

// client connects to the daemon or says how to start it.
func (c *cli) client(ctx context.Context) (*api.Client, error) {
	cl, err := api.Dial(ctx, c.socket)
	if errors.Is(err, api.ErrNoDaemon) {
		return nil, fmt.Errorf("%w: start it with 'tender-agent daemon' (socket %s)", api.ErrNoDaemon, c.socket)
	}
	if err != nil {
		return nil, err
	}
	return cl, nil
}

// apply: tender-agent apply -f FILE
func (c *cli) apply(ctx context.Context, args []string) error {
	fs := c.flagSet("apply", "-f FILE")
	file := fs.String("f", "", "app spec (YAML or JSON); - for standard input")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *file == "" {
		fs.Usage()
		return fmt.Errorf("%w: apply needs -f FILE", errUsage)
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, 2<<20))
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	out, err := cl.Apply(ctx, data)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "app/%s configured (version %s, revision %s)\n", out["app"], out["version"], out["revision"])
	return nil
}

// apps: tender-agent apps [-o json]
func (c *cli) apps(ctx context.Context, args []string) error {
	fs := c.flagSet("apps", "[-o json]")
	out := fs.String("o", "table", "output format: table or json")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.Apps(ctx)
	if err != nil {
		return err
	}
	if *out == "json" {
		return writeJSON(c.stdout, resp)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tDESIRED\tPHASE\tCONTAINERS\tMESSAGE")
	for _, app := range resp.Apps {
		var ctrs []string
		for _, ct := range app.Containers {
			s := ct.Name + ":" + string(ct.State)
			if ct.Restarts > 0 {
				s += fmt.Sprintf("(%d restarts)", ct.Restarts)
			}
			ctrs = append(ctrs, s)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", app.Name, dash(app.Version), app.DesiredVersion, app.Phase, strings.Join(ctrs, ","), app.Message)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appCmd: tender-agent app rm NAME
func (c *cli) appCmd(ctx context.Context, args []string) error {
	if len(args) < 2 || (args[0] != "rm" && args[0] != "remove") {
		return fmt.Errorf("%w: usage: tender-agent app rm NAME", errUsage)
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	var errs []error
	for _, name := range args[1:] {
		if err := cl.RemoveApp(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(c.stdout, "app/%s removed\n", name)
	}
	return errors.Join(errs...)
}
