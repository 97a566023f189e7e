package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/hostcheck"
	"github.com/tender-edge/tender/runtime/network"
)

func (c *cli) checkCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "check [OPTIONS]",
		Short: "Check that this host can run containers",
		Long: `Check that this host can run containers: the kernel, its namespaces,
overlayfs, cgroups (version, controllers, the v2 device filter), seccomp,
pivot_root or the initramfs fallback, room under --root, the clock and
whether a daemon runs on --root. Each line is OK, WARN or FAIL, with what
to do when it is not OK.

The exit status is 0 when nothing fails (warnings included) and 1 when
something required is missing.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.check(out) },
	}
	outputFlag(cmd.Flags(), &out)
	return cmd
}

func (c *cli) check(out string) error {
	rs := hostcheck.Run(hostcheck.Host{
		Proc: "/proc", Sys: "/sys", Modules: "/lib/modules", StateDir: c.root, Now: time.Now(),
		Statfs: unix.Statfs, ProbeDeviceFilter: cgroups.ProbeDeviceFilter,
		ProbeNftables: network.ProbeIsolated,
	})
	if out == "json" {
		if err := writeJSON(c.stdout, struct {
			Results []hostcheck.Result `json:"results"`
			Failed  bool               `json:"failed"`
		}{rs, hostcheck.Failed(rs)}); err != nil {
			return err
		}
	} else {
		printCheck(c.out, rs)
	}
	if hostcheck.Failed(rs) {
		return exitError{exitBadInput}
	}
	return nil
}

// printCheck prints the results aligned as docker info does, with the fix
// under each line that is not OK, and a count at the end.
func printCheck(w io.Writer, rs []hostcheck.Result) {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Check)+1)
	}
	n := map[hostcheck.Status]int{}
	for _, r := range rs {
		n[r.Status]++
		fmt.Fprintf(w, "%-*s %-4s  %s\n", width, r.Check+":", r.Status, r.Value)
		if r.Fix != "" {
			fmt.Fprintf(w, "%*s  -> %s\n", width+5, "", r.Fix)
		}
	}
	fmt.Fprintf(w, "\n%d OK, %d WARN, %d FAIL\n", n[hostcheck.OK], n[hostcheck.Warn], n[hostcheck.Fail])
	flush(w)
}
