package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

func (c *cli) eventsCmd() *cobra.Command {
	var o string
	var f api.EventFilter
	var follow bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "events [--device D] [--app A] [--kind K] [-f]",
		Short: "Show the fleet's events, oldest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			first := true
			return watch(cmd.Context(), interval, func() (bool, error) {
				evs, err := cl.Events(cmd.Context(), f)
				if err != nil {
					return true, err
				}
				if len(evs) > 0 {
					f.After = evs[len(evs)-1].Cursor
				}
				switch ok, err := c.emit(o, evs); {
				case ok && err != nil:
					return true, err
				case !ok && (len(evs) > 0 || first):
					c.eventTable(evs, first)
				}
				first = false
				// Without -f: one page. With it: on after the last cursor.
				return !follow, nil
			})
		},
	}
	cmd.Flags().StringVar(&f.Device, "device", "", "only this device's events")
	cmd.Flags().StringVar(&f.App, "app", "", "only this app's events")
	cmd.Flags().StringVar(&f.Kind, "kind", "", "only events of this kind (started, exited, unhealthy, rolled-back, ...)")
	cmd.Flags().Uint64Var(&f.After, "after", 0, "only events after this cursor")
	cmd.Flags().IntVar(&f.Limit, "limit", 0, fmt.Sprintf("at most this many per request (default %d)", api.DefaultPage))
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --follow asks")
	outputFlag(cmd, &o, false)
	return cmd
}

// eventTable draws events; the header only with header set (a follow
// adds rows under the first page's).
func (c *cli) eventTable(evs []store.FeedEvent, header ...bool) {
	tw := c.table()
	if len(header) == 0 || header[0] {
		tw = c.table("CURSOR", "TIME", "DEVICE", "KIND", "APP", "CONTAINER", "REASON")
	}
	for _, e := range evs {
		row(tw, strconv.FormatUint(e.Cursor, 10), e.Event.Time.Format(time.RFC3339), e.Device, string(e.Event.Kind),
			orDash(e.Event.App), orDash(e.Event.Container), orDash(e.Event.Reason))
	}
	tw.Flush()
}

func (c *cli) auditCmd() *cobra.Command {
	var o string
	var after uint64
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--after SEQ] [--limit N]",
		Short: "Show the audit log: who changed what, when, from where",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			es, err := cl.Audit(cmd.Context(), after, limit)
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, es); ok {
				return err
			}
			tw := c.table("SEQ", "TIME", "WHO", "ACTION", "TARGET", "FROM", "DETAIL")
			for _, e := range es {
				row(tw, strconv.FormatUint(e.Seq, 10), e.Time.Format(time.RFC3339), e.Who, e.Action, orDash(e.Target), orDash(e.From), orDash(e.Detail))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "only entries after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("at most this many (default %d, at most %d)", api.DefaultPage, api.MaxPage))
	outputFlag(cmd, &o, false)
	return cmd
}

func (c *cli) statusCmd() *cobra.Command {
	var o string
	cmd := &cobra.Command{
		Use:   "status [-o json|yaml]",
		Short: "Show the controller's state",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			s, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, s); ok {
				return err
			}
			tw := c.table("Server:", cl.Server())
			row(tw, "Version:", s.Version)
			row(tw, "Started:", s.Started.Format(time.RFC3339)+" ("+age(s.Started)+" ago)")
			row(tw, "Leader:", s.Leader)
			for i, m := range s.Members {
				label := ""
				if i == 0 {
					label = "Members:"
				}
				var what []string
				if m.Leader {
					what = append(what, "leader")
				}
				if m.Self {
					what = append(what, "answered")
				}
				desc := m.ID + "  api " + m.API + "  up " + age(m.Started)
				if len(what) > 0 {
					desc += "  (" + strings.Join(what, ", ") + ")"
				}
				row(tw, label, desc)
			}
			row(tw, "Broker:", s.Broker)
			row(tw, "Devices:", fmt.Sprintf("%d (%d online)", s.Devices, s.Online))
			row(tw, "Apps:", strconv.Itoa(s.Apps))
			row(tw, "Rollouts:", fmt.Sprintf("%d in progress", s.Rollouts))
			return tw.Flush()
		},
	}
	outputFlag(cmd, &o, false)
	return cmd
}
