package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/fleet/api"
)

func (c *cli) applyCmd() *cobra.Command {
	var file, o string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply an app spec (YAML or JSON): a new revision, rolled out as its rollout says",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := readSpec(file, func() ([]byte, error) { return io.ReadAll(io.LimitReader(os.Stdin, api.MaxSpecBytes+1)) })
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			a, err := cl.Apply(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, a); ok {
				return err
			}
			fmt.Fprintf(c.out, "app %s: version %s, revision %d; placed on %d device(s)\n", a.Name, a.Version, a.Revision, a.Placed)
			for _, w := range a.Warnings {
				fmt.Fprintf(c.out, "warning: %s\n", w)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the spec file, - for stdin")
	cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	outputFlag(cmd, &o, false)
	return cmd
}

func (c *cli) appsCmd() *cobra.Command {
	var o string
	var w bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "apps [-o wide|json|yaml] [--watch]",
		Short: "List apps",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			draw := func() (bool, error) {
				as, err := cl.Apps(cmd.Context())
				if err != nil {
					return true, err
				}
				if ok, err := c.emit(o, as); ok {
					return false, err
				}
				head := []string{"NAME", "VERSION", "REVISION", "PLACED", "RUNNING", "ROLLOUT"}
				if o == outWide {
					head = append(head, "LATEST", "CONTAINERS", "WARNINGS")
				}
				tw := c.table(head...)
				for _, a := range as {
					ro := orDash(a.Rollout)
					if a.Deleting {
						ro += " (deleting)"
					}
					cells := []string{a.Name, a.Version, strconv.FormatUint(a.Revision, 10), strconv.Itoa(a.Placed), strconv.Itoa(a.Running), ro}
					if o == outWide {
						var cs []string
						for _, ct := range a.Spec.Containers {
							cs = append(cs, ct.Name+"="+ct.Image)
						}
						cells = append(cells, strconv.FormatUint(a.Latest, 10), orDash(strings.Join(cs, ",")), orDash(strings.Join(a.Warnings, "; ")))
					}
					row(tw, cells...)
				}
				return false, tw.Flush()
			}
			if !w {
				_, err := draw()
				return err
			}
			return watch(cmd.Context(), interval, draw)
		},
	}
	outputFlag(cmd, &o, true)
	watchFlags(cmd, &w, &interval)
	return cmd
}

func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app COMMAND",
		Short: "Show, explain and remove an app; its revisions",
		Args:  subcommandOnly,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var oShow, oHist, oExplain string
	show := &cobra.Command{
		Use:               "show APP [-o json|yaml]",
		Short:             "Show an app and its spec",
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			a, err := cl.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if ok, err := c.emit(oShow, a); ok {
				return err
			}
			tw := c.table("Name:", a.Name)
			row(tw, "Version:", a.Version)
			row(tw, "Revision:", fmt.Sprintf("%d (latest %d)", a.Revision, a.Latest))
			row(tw, "Placed:", fmt.Sprintf("%d device(s), %d running it", a.Placed, a.Running))
			row(tw, "Rollout:", orDash(a.Rollout))
			if a.Deleting {
				row(tw, "Deleting:", "yes")
			}
			for _, w := range a.Warnings {
				row(tw, "Warning:", w)
			}
			tw.Flush()
			fmt.Fprintln(c.out, "\nContainers:")
			tw = c.table("NAME", "IMAGE", "RESTART", "NETWORK")
			for _, ct := range a.Spec.Containers {
				row(tw, ct.Name, ct.Image, orDash(ct.Restart), orDash(ct.Network))
			}
			return tw.Flush()
		},
	}
	outputFlag(show, &oShow, false)
	history := &cobra.Command{
		Use:               "history APP [-o json|yaml]",
		Short:             "List an app's revisions",
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			hs, err := cl.AppHistory(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if ok, err := c.emit(oHist, hs); ok {
				return err
			}
			tw := c.table("REVISION", "VERSION", "CREATED", "BY", "CURRENT")
			for _, h := range hs {
				cur := ""
				if h.Current {
					cur = "*"
				}
				row(tw, strconv.FormatUint(h.Revision, 10), h.Version, h.Created.Format(time.RFC3339), h.By, cur)
			}
			return tw.Flush()
		},
	}
	outputFlag(history, &oHist, false)
	var rmNow bool
	rm := &cobra.Command{
		Use:   "rm APP [--now]",
		Short: "Remove an app from every device, through a rollout, then forget it",
		Long: `Remove an app from every device, then forget it.

The removal is a rollout like any change: the app's waves, maxUnavailable,
pace and maintenance windows apply; "tender rollout status APP" follows it
and "tender rollout undo APP" keeps the app. --now takes it off every device
at once.`,
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			a, err := cl.RemoveApp(cmd.Context(), args[0], rmNow)
			if err != nil {
				return err
			}
			how := "in waves (tender rollout status " + a.Name + ")"
			if rmNow {
				how = "at once"
			}
			fmt.Fprintf(c.out, "app %s is being removed from its %d device(s) %s\n", a.Name, a.Placed, how)
			return nil
		},
	}
	rm.Flags().BoolVar(&rmNow, "now", false, "remove it from every device at once, not through a rollout")
	explain := &cobra.Command{
		Use:               "explain APP [DEVICE] [-o json|yaml]",
		Short:             "Say, device by device, why the app is or is not placed there",
		Args:              rangeArgs(1, 2),
		ValidArgsFunction: c.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			dev := ""
			if len(args) == 2 {
				dev = args[1]
			}
			ex, err := cl.Explain(cmd.Context(), args[0], dev)
			if err != nil {
				return err
			}
			if ok, err := c.emit(oExplain, ex); ok {
				return err
			}
			tw := c.table("DEVICE", "CHOSEN", "REASON")
			for _, d := range ex.Devices {
				chosen := "no"
				if d.Chosen {
					chosen = "yes"
				}
				row(tw, d.Device, chosen, d.Reason)
			}
			tw.Flush()
			for _, w := range ex.Warnings {
				fmt.Fprintf(c.out, "warning: %s\n", w)
			}
			return nil
		},
	}
	outputFlag(explain, &oExplain, false)
	cmd.AddCommand(show, history, rm, explain)
	return cmd
}

// completeApps completes app names (the first argument only).
func (c *cli) completeApps(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		if cmd.Name() == "explain" && len(args) == 1 {
			return c.completeDevices(cmd, nil, "")
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	as, err := cl.Apps(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, a := range as {
		names = append(names, a.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
