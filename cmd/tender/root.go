package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/internal/termsafe"
)

// cli holds the global flags and the outputs of one run.
type cli struct {
	server     string
	ca         string
	configPath string
	getenv     func(string) string

	stdout, stderr io.Writer
	// out is stdout for tables and messages: control characters escaped
	// when it is a terminal (termsafe).
	out     io.Writer
	started bool // a command's RunE was reached: errors are no usage errors
	// staleSaid is the last stale mark warned of (warnStale).
	staleSaid string
}

func newCLI(stdout, stderr io.Writer, getenv func(string) string) *cli {
	return &cli{stdout: stdout, stderr: stderr, out: termsafe.For(stdout), getenv: getenv}
}

// Command groups of `tender --help`.
const (
	groupFleet = "fleet"
	groupApps  = "apps"
	groupOps   = "ops"
)

// newRoot builds the command tree.
func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "tender",
		Short: "Run and drive a fleet of edge gateways",
		Long: `Run and drive a fleet of edge gateways.

'tender serve' runs the fleet controller; every other command is a client of
its API. The controller's address comes from --server or TENDER_SERVER, the
token from TENDER_TOKEN, either (and the CA) from ~/.config/tender/config.yaml:

  server: https://controller.example:8443
  token: ...
  caFile: ca.crt

Exit codes: 0 done; 1 bad input, unknown name or request refused; 3 the
controller is not reachable; 4 the token is missing, wrong, revoked or may
not do this (or the server is not trusted); 125 the controller failed.`,
		Version:       version,
		SilenceErrors: true, // main prints them, once
		SilenceUsage:  true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", "", "the controller's URL, https://HOST:PORT (env TENDER_SERVER)")
	pf.StringVar(&c.ca, "ca", "", "PEM file of the CA of the controller's certificate: the fleet CA (env TENDER_CA)")
	pf.StringVar(&c.configPath, "config", "", "config file (default ~/.config/tender/config.yaml; env TENDER_CONFIG)")
	root.AddGroup(
		&cobra.Group{ID: groupFleet, Title: "Devices:"},
		&cobra.Group{ID: groupApps, Title: "Apps and rollouts:"},
		&cobra.Group{ID: groupOps, Title: "The controller:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, cmd := range cmds {
			cmd.GroupID = group
			root.AddCommand(cmd)
		}
	}
	add(groupFleet, c.devicesCmd(), c.deviceCmd(), c.tokenCmd(), c.logsCmd(), c.restartCmd())
	add(groupApps, c.applyCmd(), c.appsCmd(), c.appCmd(), c.rolloutCmd())
	add(groupOps, c.eventsCmd(), c.auditCmd(), c.statusCmd(), c.apiTokenCmd())
	root.AddCommand(serveCmd())
	root.AddCommand(storeCmd())
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Show the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(c.stdout, "tender %s\n", version)
			return nil
		},
	})
	walk(root, func(cmd *cobra.Command) {
		cmd.SuggestionsMinimumDistance = 2
		cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{Err: err, Path: cmd.CommandPath()} })
		if run := cmd.RunE; run != nil {
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				c.started = true
				return run(cmd, args)
			}
		}
	})
	return root
}

func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, sub := range cmd.Commands() {
		walk(sub, fn)
	}
}

// client makes the API client from the flags, the environment and the
// config file (in that order of precedence).
func (c *cli) client() (*api.Client, error) {
	path, explicit := c.configPath, c.configPath != ""
	if !explicit {
		if path = c.getenv("TENDER_CONFIG"); path != "" {
			explicit = true
		} else {
			path = defaultConfigPath(c.getenv)
		}
	}
	fc, err := loadConfig(path, explicit)
	if err != nil {
		return nil, err
	}
	cfg := api.ClientConfig{
		Server: first(c.server, c.getenv("TENDER_SERVER"), fc.Server),
		Token:  first(c.getenv("TENDER_TOKEN"), fc.Token),
		CAFile: first(c.ca, c.getenv("TENDER_CA"), fc.CAFile),
	}
	if cfg.Token == "" {
		return nil, invalid(fmt.Errorf("no API token: set TENDER_TOKEN or token in %s", path))
	}
	cfg.OnStale = c.warnStale
	return api.NewClient(cfg)
}

// warnStale says on stderr, in one line, that an answer may be stale
// (the controller's store has no quorum); stdout stays as it is. A
// command that asks again (--watch) says it again only when it changes.
func (c *cli) warnStale(_, _, stale string) {
	if stale == c.staleSaid {
		return
	}
	c.staleSaid = stale
	fmt.Fprintf(c.stderr, "tender: warning: this answer may be stale: the fleet store has %s\n", termsafe.Escape(stale))
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Argument checks. Their errors are usage errors (see run).

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("%q: %d argument(s) given: usage: %s", cmd.CommandPath(), len(args), cmd.UseLine())
		}
		return nil
	}
}

func exactArgs(n int) cobra.PositionalArgs { return rangeArgs(n, n) }

// subcommandOnly is the Args of a command that only groups subcommands.
func subcommandOnly(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return fmt.Errorf("%s", msg)
}

// Output formats of -o.
const (
	outTable = ""
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
)

// outputFlag adds -o to cmd.
func outputFlag(cmd *cobra.Command, o *string, wide bool) {
	formats := "json|yaml"
	if wide {
		formats = "wide|json|yaml"
	}
	cmd.Flags().StringVarP(o, "output", "o", "", "output format: "+formats)
	cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return strings.Split(formats, "|"), cobra.ShellCompDirectiveNoFileComp
	})
	pre := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		switch *o {
		case outTable, outJSON, outYAML:
		case outWide:
			if !wide {
				return usageError{Err: fmt.Errorf("-o wide: %s has no wide output; use json or yaml", cmd.CommandPath()), Path: cmd.CommandPath()}
			}
		default:
			return usageError{Err: fmt.Errorf("-o %q: want %s", *o, formats), Path: cmd.CommandPath()}
		}
		if pre != nil {
			return pre(cmd, args)
		}
		return nil
	}
}

// emit writes v as JSON or YAML if o asks for it, and reports whether it
// did (else the caller draws its table).
func (c *cli) emit(o string, v any) (bool, error) {
	switch o {
	case outJSON:
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return true, enc.Encode(v)
	case outYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = c.stdout.Write(b)
		return true, err
	}
	return false, nil
}

// table is a tabwriter on c.out; its cells go through termsafe.Escape, so
// no name, label, version or message from a device can forge a row or
// drive the terminal.
func (c *cli) table(header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(c.out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

// row writes one table row of escaped cells.
func row(tw io.Writer, cells ...string) {
	for i, s := range cells {
		cells[i] = termsafe.Escape(s)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// watch runs draw now and then every interval until ctx ends or draw
// says it is done; a draw that fails ends it with the error.
func watch(ctx context.Context, interval time.Duration, draw func() (done bool, err error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := draw()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return nil // the operator stopped watching
		case <-t.C:
		}
	}
}

// age is how long ago t was, kubectl's way (45s, 3m, 5h, 2d); "-" for
// never.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d.Seconds()), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
