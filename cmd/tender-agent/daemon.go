package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/agent/daemon"
	"github.com/tender-edge/tender/internal/termsafe"
)

func (c *cli) daemonCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "daemon [--config FILE]",
		Short: "Run the agent: converge the device on its desired apps",
		Long: `Run the agent: converge the device on its desired apps.

The daemon keeps the apps' state in STATE/agent.db, answers the CLI on a
root-only unix socket, and takes its desired state from the fleet (with
fleet: in its config) or from 'tender-agent apply'. --root and --socket,
when given, win over the config file.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.runDaemon(cmd, cfgPath) },
	}
	cmd.Flags().StringVar(&cfgPath, "config", agent.DefaultConfigPath, "agent config file (a missing default file means defaults)")
	return cmd
}

func (c *cli) runDaemon(cmd *cobra.Command, cfgPath string) error {
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		return invalid(err)
	}
	if cmd.Flags().Changed("root") {
		cfg.StateDir = c.root
	}
	if cmd.Flags().Changed("socket") {
		cfg.Socket = c.socket
	}
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || !cmd.Flags().Changed("log-level") {
		lvl = zerolog.InfoLevel // a daemon says what it does
	}
	log := zerolog.New(c.stderr).Level(lvl).With().Timestamp().Str("device", cfg.DeviceID).Logger()
	// An edge daemon is idle most of the time: trade a little GC work for
	// a smaller heap (GOGC in the environment still wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	d, err := daemon.New(cfg, daemon.Deps{Log: log, Version: version})
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Run(cmd.Context())
}

// client connects to the daemon or says how to start it.
func (c *cli) client(ctx context.Context) (*api.Client, error) {
	cl, err := api.Dial(ctx, c.socket)
	switch {
	case errors.Is(err, api.ErrSocketPermission):
		return nil, c.socketDenied()
	case err != nil:
		return nil, fmt.Errorf("%w: start it with 'tender-agent daemon' (socket %s)", api.ErrNoDaemon, c.socket)
	}
	return cl, nil
}

func (c *cli) applyCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Add or update an app from a spec file",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{Err: errors.New("apply needs -f FILE"), Path: cmd.CommandPath()}
			}
			return c.apply(cmd.Context(), file)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "app spec (YAML or JSON); - for standard input")
	return cmd
}

func (c *cli) apply(ctx context.Context, file string) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, 2<<20))
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return invalid(err)
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
	fmt.Fprintf(c.out, "app/%s configured (version %s, revision %s)\n", termsafe.Escape(out["app"]), termsafe.Escape(out["version"]), termsafe.Escape(out["revision"]))
	return nil
}

func (c *cli) appsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "apps [OPTIONS]",
		Short: "List the desired apps and their state",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.apps(cmd.Context(), out)
		},
	}
	outputFlag(cmd.Flags(), &out)
	return cmd
}

func (c *cli) apps(ctx context.Context, out string) error {
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.Apps(ctx)
	if err != nil {
		return err
	}
	if out == "json" {
		return writeJSON(c.stdout, resp)
	}
	tw := c.table("NAME\tVERSION\tDESIRED\tPHASE\tCONTAINERS\tMESSAGE")
	for _, app := range resp.Apps {
		var ctrs []string
		for _, ct := range app.Containers {
			s := ct.Name + ":" + string(ct.State)
			if ct.Restarts > 0 {
				s += fmt.Sprintf("(%d restarts)", ct.Restarts)
			}
			ctrs = append(ctrs, s)
		}
		row(tw, app.Name, dash(app.Version), app.DesiredVersion, string(app.Phase), strings.Join(ctrs, ","), app.Message)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appCmd groups the commands on one app: app rm NAME...
func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Manage an app ('app rm NAME' removes it)",
		Args:  subcommandOnly,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove apps: their containers stop and go",
		Args:    minArgs(1),
		RunE:    func(cmd *cobra.Command, args []string) error { return c.appRm(cmd.Context(), args) },
	})
	return cmd
}

func (c *cli) appRm(ctx context.Context, names []string) error {
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	var errs []error
	for _, name := range names {
		if err := cl.RemoveApp(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(c.out, "app/%s removed\n", termsafe.Escape(name))
	}
	return errors.Join(errs...)
}
