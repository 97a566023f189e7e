package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/fleet/api"
)

// donePhases are the phases a rollout does not leave: --watch stops there.
var donePhases = []string{"succeeded", "rolled-back", "aborted"}

func (c *cli) rolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout COMMAND",
		Short: "Watch and steer an app's rollout",
		Args:  subcommandOnly,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var o string
	var w bool
	var interval time.Duration
	status := &cobra.Command{
		Use:   "status APP [--watch] [-o json|yaml]",
		Short: "Show an app's rollout, wave by wave",
		Long: `Show an app's rollout, wave by wave. Each wave's bar: # healthy,
= updated and not yet healthy, x failed, . still to do (pending, updating,
deferred or offline). With --watch it is drawn again when it changes, until
the rollout succeeds, is rolled back or aborted.`,
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeApps,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var last []byte
			draw := func() (bool, error) {
				r, err := cl.Rollout(cmd.Context(), args[0])
				if err != nil {
					return true, err
				}
				done := slices.Contains(donePhases, r.Phase)
				if o != outTable {
					_, err := c.emit(o, r)
					return done, err
				}
				var b bytes.Buffer
				drawRollout(&b, r)
				if !bytes.Equal(b.Bytes(), last) {
					if last != nil {
						fmt.Fprintln(c.out)
					}
					c.out.Write(b.Bytes())
					last = b.Bytes()
				}
				return done, nil
			}
			if !w {
				_, err := draw()
				return err
			}
			return watch(cmd.Context(), interval, draw)
		},
	}
	outputFlag(status, &o, false)
	watchFlags(status, &w, &interval)
	cmd.AddCommand(status)
	for _, verb := range []struct{ name, short string }{
		{"pause", "Pause an app's rollout: no device is sent the new version until resume"},
		{"resume", "Resume a paused rollout"},
		{"abort", "Abort an app's rollout: devices keep what they run now"},
		{"undo", "Roll an app back to its previous revision, devices already updated included"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:               verb.name + " APP",
			Short:             verb.short,
			Args:              exactArgs(1),
			ValidArgsFunction: c.completeApps,
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, err := c.client()
				if err != nil {
					return err
				}
				r, err := cl.RolloutCommand(cmd.Context(), args[0], verb.name)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.out, "rollout of %s: %s\n", args[0], r.Phase)
				return nil
			},
		})
	}
	return cmd
}

// barWidth is the width of a wave's progress bar.
const barWidth = 20

// drawRollout writes a rollout as `rollout status` shows it. Everything
// but the counts comes from specs and devices: escaped (row).
func drawRollout(w io.Writer, r api.RolloutView) {
	to := r.To
	if to == "" {
		to = "(removed)"
	}
	head := fmt.Sprintf("%s: %s -> %s, %s", r.App, orDash(r.From), to, r.Phase)
	if r.Reason != "" {
		head += " (" + r.Reason + ")"
	}
	c := &cli{out: w}
	tw := c.table(head)
	tw.Flush()
	tw = c.table("WAVE", "PROGRESS", "DEVICES", "UPDATED", "HEALTHY", "FAILED", "PENDING", "DEFERRED")
	for _, wv := range r.Waves {
		itoa := strconv.Itoa
		row(tw, fmt.Sprintf("%d/%d", wv.Index+1, len(r.Waves)), bar(wv, barWidth), itoa(wv.Devices), itoa(wv.Updated),
			itoa(wv.Healthy), itoa(wv.Failed+wv.RolledBack), itoa(wv.Pending+wv.Offline+wv.Updating), itoa(wv.Deferred))
	}
	tw.Flush()
}

// bar draws a wave's progress: # healthy, = updated not yet healthy, x
// failed or rolled back, . the rest.
func bar(w api.WaveCounts, width int) string {
	if w.Devices <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	updating := max(w.Updated-w.Healthy, 0)
	segs := []struct {
		n int
		c string
	}{{w.Healthy, "#"}, {updating, "="}, {w.Failed + w.RolledBack, "x"}}
	var b strings.Builder
	b.WriteByte('[')
	drawn, sum := 0, 0
	for _, s := range segs {
		sum += s.n
		upto := min(max(sum*width/w.Devices, drawn), width) // cells covered so far, rounded down
		if s.n > 0 && upto == drawn && drawn < width {
			upto++ // a non-empty part shows at least one cell
		}
		b.WriteString(strings.Repeat(s.c, upto-drawn))
		drawn = upto
	}
	b.WriteString(strings.Repeat(".", width-drawn))
	b.WriteByte(']')
	return b.String()
}
