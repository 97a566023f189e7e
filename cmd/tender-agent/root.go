package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Command groups of `tender-agent --help`.
const (
	groupContainers = "containers"
	groupImages     = "images"
	groupApps       = "apps"
)

// newRoot builds the command tree. The global flags are persistent: they
// are accepted before or after the command's name.
func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "tender-agent",
		Short: "Run OCI containers on an edge gateway",
		Long: `Run OCI containers on an edge gateway.

tender-agent runs containers with its own runtime (namespaces, pivot_root,
overlayfs, cgroup v1 and v2 limits) and, as a daemon, converges the device
on the apps it is given by the fleet or by 'tender-agent apply'.`,
		Version:       version,
		SilenceErrors: true, // main prints them, once
		SilenceUsage:  true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.root, "root", defaultRoot, "state directory")
	pf.StringVar(&c.socket, "socket", defaultSocket, "the agent daemon's API socket")
	pf.StringVar(&c.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.AddGroup(
		&cobra.Group{ID: groupContainers, Title: "Containers:"},
		&cobra.Group{ID: groupImages, Title: "Images:"},
		&cobra.Group{ID: groupApps, Title: "The daemon and its apps:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, cmd := range cmds {
			cmd.GroupID = group
			root.AddCommand(cmd)
		}
	}
	add(groupContainers, c.runCmd(), c.psCmd(), c.execCmd(), c.logsCmd(), c.stopCmd(), c.rmCmd(), c.statsCmd(), c.inspectCmd())
	add(groupImages, c.pullCmd(), c.imagesCmd(), c.rmiCmd(), c.loadCmd(), c.saveCmd())
	add(groupApps, c.daemonCmd(), c.applyCmd(), c.appsCmd(), c.appCmd(), c.enrollCmd(), c.checkCmd())
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Show the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(c.stdout, "tender-agent %s\n", version)
			return nil
		},
	})
	root.SetUsageFunc(usage)
	walk(root, func(cmd *cobra.Command) {
		cmd.DisableFlagsInUseLine = true // each Use says [OPTIONS] itself
		cmd.SuggestionsMinimumDistance = 2
		// Errors before a command runs (unknown commands and flags, bad
		// flag values, missing arguments) are usage errors: exit 1.
		cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{Err: err, Path: cmd.CommandPath()} })
		if run := cmd.RunE; run != nil {
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				c.started = true
				// A relative --root is the caller's: the monitor and the
				// container's init run elsewhere and must find the same
				// directory.
				if abs, err := filepath.Abs(c.root); err == nil {
					c.root = abs
				}
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

// Argument checks. Their errors are usage errors (see newRoot).

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%q needs at least %d argument(s): %s", cmd.CommandPath(), n, cmd.UseLine())
		}
		return nil
	}
}

// subcommandOnly is the Args of a command that only groups subcommands:
// an unknown subcommand gets suggestions, as unknown commands do.
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

// flagGroup files flags under a heading of the command's usage.
func flagGroup(fs *pflag.FlagSet, group string, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, "group", []string{group}); err != nil {
			panic(err) // a flag named here that the command does not define
		}
	}
}

// alias adds a hidden flag name that sets the same value as name: old
// spellings keep working without cluttering the usage.
func alias(fs *pflag.FlagSet, name, old string) {
	f := fs.Lookup(name)
	fs.AddFlag(&pflag.Flag{Name: old, Value: f.Value, DefValue: f.DefValue, NoOptDefVal: f.NoOptDefVal, Hidden: true, Usage: "alias of --" + name})
}

// usage prints a command's usage with its flags in their groups (cobra's
// own layout otherwise, without text/template, which would cost the
// binary its dead-code elimination).
func usage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:")
	if c.Runnable() {
		fmt.Fprintf(w, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n  %s COMMAND", c.CommandPath())
	}
	if len(c.Aliases) > 0 {
		fmt.Fprintf(w, "\n\nAliases:\n  %s", c.NameAndAliases())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		printed := map[*cobra.Command]bool{}
		section := func(title string, in func(*cobra.Command) bool) {
			var lines []string
			for _, sub := range c.Commands() {
				if !printed[sub] && in(sub) && (sub.IsAvailableCommand() || sub.Name() == "help") {
					printed[sub] = true
					lines = append(lines, fmt.Sprintf("  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short))
				}
			}
			if len(lines) > 0 {
				fmt.Fprintf(w, "\n\n%s\n%s", title, strings.Join(lines, "\n"))
			}
		}
		for _, g := range c.Groups() {
			section(g.Title, func(sub *cobra.Command) bool { return sub.GroupID == g.ID })
		}
		title := "Commands:"
		if len(c.Groups()) > 0 {
			title = "Other commands:"
		}
		section(title, func(*cobra.Command) bool { return true })
	}
	if c.HasAvailableLocalFlags() {
		printFlagGroups(w, c.LocalFlags())
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(w, "\n\nGlobal options:\n%s", strings.TrimRight(c.InheritedFlags().FlagUsages(), " \n"))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nRun '%s COMMAND --help' for a command's options.", c.CommandPath())
	}
	fmt.Fprintln(w)
	return nil
}

// printFlagGroups prints the flags under their "group" annotation, in the
// order the groups first appear, then the ungrouped ones as "Options".
func printFlagGroups(w io.Writer, fs *pflag.FlagSet) {
	var order []string
	groups := map[string]*pflag.FlagSet{}
	fs.VisitAll(func(f *pflag.Flag) {
		g := "Options"
		if a := f.Annotations["group"]; len(a) > 0 {
			g = a[0]
		}
		if groups[g] == nil {
			groups[g] = pflag.NewFlagSet(g, pflag.ContinueOnError)
			groups[g].SortFlags = false
			order = append(order, g)
		}
		groups[g].AddFlag(f)
	})
	for _, g := range order {
		fmt.Fprintf(w, "\n\n%s:\n%s", g, strings.TrimRight(groups[g].FlagUsages(), " \n"))
	}
}
