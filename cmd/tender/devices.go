package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/internal/quantity"
)

func (c *cli) devicesCmd() *cobra.Command {
	var o, sel string
	var w bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "devices [-l key=value,...] [-o wide|json|yaml] [--watch]",
		Short: "List devices",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			selector, err := api.ParseSelector(sel)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			draw := func() (bool, error) {
				ds, err := cl.Devices(cmd.Context(), selector)
				if err != nil {
					return true, err
				}
				if ok, err := c.emit(o, ds); ok {
					return false, err
				}
				c.deviceTable(ds, o == outWide)
				return false, nil
			}
			if !w {
				_, err := draw()
				return err
			}
			return watch(cmd.Context(), interval, draw)
		},
	}
	outputFlag(cmd, &o, true)
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "only devices with these labels: key=value,key2=value2")
	watchFlags(cmd, &w, &interval)
	return cmd
}

func watchFlags(cmd *cobra.Command, w *bool, interval *time.Duration) {
	cmd.Flags().BoolVarP(w, "watch", "w", false, "draw again every --interval until interrupted")
	cmd.Flags().DurationVar(interval, "interval", 2*time.Second, "how often --watch asks")
}

func (c *cli) deviceTable(ds []api.DeviceView, wide bool) {
	head := []string{"ID", "ONLINE", "HEALTH", "ARCH", "APPS", "LAST SEEN", "LABELS"}
	if wide {
		head = append(head, "KERNEL", "AGENT", "MEMORY", "GENERATION")
	}
	tw := c.table(head...)
	for _, d := range ds {
		online := "no"
		if d.Online {
			online = "yes"
		}
		if d.Revoked {
			online = "revoked"
		}
		var apps []string
		for _, a := range d.Apps {
			apps = append(apps, a.Name+"@"+a.Version)
		}
		cells := []string{d.ID, online, d.Health, d.Facts.Arch, orDash(strings.Join(apps, ",")), age(d.LastSeen), orDash(api.FormatSelector(d.Labels))}
		if wide {
			mem := "-"
			if d.Facts.MemoryBytes > 0 {
				mem = bytesOf(d.MemoryUsed) + "/" + bytesOf(d.Facts.MemoryBytes)
			}
			cells = append(cells, orDash(d.Facts.Kernel), orDash(d.Facts.AgentVersion), mem,
				fmt.Sprintf("%d/%d", d.ObservedGeneration, d.DesiredGeneration))
		}
		row(tw, cells...)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) deviceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device COMMAND",
		Short: "Show, label and remove a device",
		Args:  subcommandOnly,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var o string
	show := &cobra.Command{
		Use:               "show DEVICE [-o json|yaml]",
		Short:             "Show a device: facts, apps, containers, last events",
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			d, err := cl.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, d); ok {
				return err
			}
			c.deviceDetail(d)
			return nil
		},
	}
	outputFlag(show, &o, false)
	label := &cobra.Command{
		Use:   "label DEVICE key=value... key-...",
		Short: "Set labels (key=value) and remove them (key-)",
		Example: `  tender device label gw-1 site=berlin role=gateway
  tender device label gw-1 role-`,
		Args:              rangeArgs(2, 1000),
		ValidArgsFunction: c.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			set, remove, err := parseLabelArgs(args[1:])
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			d, err := cl.LabelDevice(cmd.Context(), args[0], set, remove)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "device %s labeled: %s\n", d.ID, orDash(api.FormatSelector(d.Labels)))
			return nil
		},
	}
	rm := &cobra.Command{
		Use:               "rm DEVICE...",
		Short:             "Revoke devices and forget them",
		Long:              "Revoke devices: their certificates are refused from now on (the CRL is rewritten for external brokers), their retained topics cleared, their records forgotten.",
		Args:              rangeArgs(1, 1000),
		ValidArgsFunction: c.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := cl.RemoveDevice(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintf(c.out, "device %s removed\n", id)
			}
			return nil
		},
	}
	cmd.AddCommand(show, label, rm)
	return cmd
}

// parseLabelArgs splits key=value (set) and key- (remove).
func parseLabelArgs(args []string) (map[string]string, []string, error) {
	set := map[string]string{}
	var remove []string
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && k != "" {
			set[k] = v
			continue
		}
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" && !strings.Contains(k, "=") {
			remove = append(remove, k)
			continue
		}
		return nil, nil, fmt.Errorf("label %q: want key=value to set or key- to remove: %w", a, errdefs.ErrInvalidArgument)
	}
	for _, k := range remove {
		if _, ok := set[k]; ok {
			return nil, nil, fmt.Errorf("label %q both set and removed: %w", k, errdefs.ErrInvalidArgument)
		}
	}
	return set, remove, nil
}

func (c *cli) deviceDetail(d api.DeviceDetail) {
	tw := c.table("ID:", d.ID)
	online := "no"
	if d.Online {
		online = "yes"
	}
	row(tw, "Online:", online+" (last seen "+age(d.LastSeen)+" ago)")
	row(tw, "Health:", d.Health)
	row(tw, "Labels:", orDash(api.FormatSelector(d.Labels)))
	row(tw, "Arch:", d.Facts.Arch)
	row(tw, "Kernel:", orDash(d.Facts.Kernel)+fmt.Sprintf(" (cgroup v%d)", d.Facts.CgroupVersion))
	row(tw, "Agent:", orDash(d.Facts.AgentVersion))
	row(tw, "Memory:", bytesOf(d.MemoryUsed)+" of "+bytesOf(d.Facts.MemoryBytes)+", "+strconv.Itoa(d.Facts.CPUs)+" CPUs")
	row(tw, "Enrolled:", d.EnrolledAt.Format(time.RFC3339))
	row(tw, "Generation:", fmt.Sprintf("observed %d, desired %d", d.ObservedGeneration, d.DesiredGeneration))
	row(tw, "Assigned:", orDash(strings.Join(d.Assigned, ", ")))
	row(tw, "Events:", fmt.Sprintf("seq %d, %d lost (gaps), %d duplicates, %d stale reports",
		d.Status.EventSeq, d.Status.EventGaps, d.Status.EventDuplicates, d.Status.StaleReports))
	if s := d.Status; s.Impersonations > 0 {
		row(tw, "Flagged:", fmt.Sprintf("%d messages in another device's name, dropped (last as %q, %s ago)",
			s.Impersonations, s.ImpersonatedAs, age(s.ImpersonatedAt)))
	}
	if d.Revoked {
		row(tw, "Revoked:", "yes")
	}
	tw.Flush()
	if len(d.Apps) > 0 {
		fmt.Fprintln(c.out, "\nApps:")
		tw = c.table("APP", "VERSION", "STATE", "CONTAINER", "CONTAINER STATE", "HEALTH", "RESTARTS", "MEMORY")
		for _, a := range d.Apps {
			if len(a.Containers) == 0 {
				row(tw, a.Name, a.Version, a.State, "-", "-", "-", "-", "-")
			}
			for _, ct := range a.Containers {
				row(tw, a.Name, a.Version, a.State, ct.Name, string(ct.State), orDash(string(ct.Health)),
					strconv.Itoa(int(ct.Restarts)), bytesOf(ct.MemoryBytes))
			}
		}
		tw.Flush()
	}
	if len(d.Events) > 0 {
		fmt.Fprintln(c.out, "\nEvents:")
		c.eventTable(d.Events)
	}
}

// completeDevices completes device ids (the first argument only).
func (c *cli) completeDevices(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 && cmd.Name() != "rm" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ds, err := cl.Devices(cmd.Context(), nil)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token COMMAND",
		Short: "Create join tokens for enrolling devices",
		Args:  subcommandOnly,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var labels, o string
	var ttl time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create [--labels key=value,...] [--ttl 24h] [--uses 1]",
		Short: "Create a join token (shown once)",
		Long: `Create a join token. It carries the hash of the fleet CA, so a device
enrolling with it trusts the controller on first contact without a CA file.
Devices enrolled with it get its labels. It is shown once.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := api.ParseSelector(labels)
			if err != nil {
				return err
			}
			if ttl <= 0 || uses <= 0 {
				return fmt.Errorf("--ttl %s and --uses %d must be positive: %w", ttl, uses, errdefs.ErrInvalidArgument)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			tok, err := cl.CreateJoinToken(cmd.Context(), api.JoinTokenRequest{Labels: sel, TTL: ttl, Uses: uses})
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, tok); ok {
				return err
			}
			fmt.Fprintf(c.out, "%s\n\nJoin token %s: %d use(s), expires %s, labels %s. It is not shown again.\nOn the device:\n  tender-agent enroll --server %s --token %s\n",
				tok.Token, tok.ID, tok.Uses, tok.Expires.Format(time.RFC3339), orDash(api.FormatSelector(tok.Labels)), cl.Server(), tok.Token)
			return nil
		},
	}
	create.Flags().StringVar(&labels, "labels", "", "labels of the devices enrolled with it: key=value,key2=value2")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	create.Flags().IntVar(&uses, "uses", 1, "how many devices may enroll with it")
	outputFlag(create, &o, false)
	cmd.AddCommand(create)
	return cmd
}

func (c *cli) logsCmd() *cobra.Command {
	var lines int
	cmd := &cobra.Command{
		Use:               "logs DEVICE APP [CONTAINER] [-n N]",
		Short:             "Show the last lines of a container's output, from the device",
		Args:              rangeArgs(2, 3),
		ValidArgsFunction: c.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			req := api.LogsRequest{App: args[1], Lines: lines}
			if len(args) == 3 {
				req.Container = args[2]
			}
			res, err := cl.Logs(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if !res.OK {
				return fmt.Errorf("logs on device %s: %s", args[0], res.Error)
			}
			// The device's output, escaped on a terminal.
			_, err = fmt.Fprint(c.out, res.Output)
			return err
		},
	}
	cmd.Flags().IntVarP(&lines, "lines", "n", api.DefaultLogLines, fmt.Sprintf("how many lines (at most %d)", api.MaxLogLines))
	return cmd
}

func (c *cli) restartCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "restart DEVICE APP [CONTAINER]",
		Short:             "Restart an app (or one of its containers) on a device",
		Args:              rangeArgs(2, 3),
		ValidArgsFunction: c.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			req := api.RestartRequest{App: args[1]}
			if len(args) == 3 {
				req.Container = args[2]
			}
			res, err := cl.Restart(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if !res.OK {
				return fmt.Errorf("restart on device %s: %s", args[0], res.Error)
			}
			fmt.Fprintf(c.out, "%s restarted on %s\n", args[1], args[0])
			return nil
		},
	}
}

// readSpec reads an app spec from a file, or stdin for "-".
func readSpec(path string, stdin func() ([]byte, error)) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("no spec: give -f FILE (or -f - for stdin): %w", errdefs.ErrInvalidArgument)
	}
	if path == "-" {
		return stdin()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, invalid(fmt.Errorf("read spec: %w", err))
	}
	return b, nil
}

// bytesOf formats a byte count ("64Mi").
func bytesOf(n uint64) string { return quantity.DisplayBytes(int64(min(n, 1<<62))) }
