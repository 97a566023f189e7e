package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// readDevices brings the loop's copy of the devices up to date: every
// device from the store at the first pass, every Config.Resync, when
// asked (changes.markAll) and when more than a quarter changed; otherwise
// only those marked changed since the last pass (ingest, enrollment, the
// API mark them after their write; with several controllers, the store's
// watch marks what the others wrote). A pass at 10,000 devices thus
// decodes the few hundred that reported, not every device and its full
// report.
func (c *Controller) readDevices(ctx context.Context, lp *loop, now time.Time) error {
	ids, removed, all := c.changes.take()
	for id := range removed {
		// After any publish of the previous pass: none comes after this.
		delete(lp.given, id)
		delete(lp.dirty, id)
		if err := c.pub.Forget(ctx, id); err != nil {
			c.log.Warn().Err(err).Str("device", id).Msg("forget desired state of removed device")
		}
	}
	return c.refreshDevices(ctx, lp, now, ids, all)
}

// refreshDevices reads ids, or every device when all (or when a read of
// every device is due), into lp.
func (c *Controller) refreshDevices(ctx context.Context, lp *loop, now time.Time, ids map[string]struct{}, all bool) error {
	if all || lp.devs == nil || !now.Before(lp.resyncAt) || len(ids) > max(len(lp.devs)/4, 64) {
		devs, err := c.st.Devices.List(ctx)
		if err != nil {
			c.changes.mark(keys(ids)...)
			if all {
				c.changes.markAll()
			}
			return fmt.Errorf("list devices: %w", err)
		}
		lp.devs = make(map[string]*store.Device, len(devs))
		lp.byID = make(map[string]*store.Device, len(devs))
		for i := range devs {
			lp.setDevice(loopDevice(devs[i]))
		}
		lp.resyncAt = now.Add(c.cfg.Resync)
	} else {
		for id := range ids {
			d, err := c.st.Devices.Get(ctx, id)
			switch {
			case errdefs.IsNotFound(err):
				delete(lp.devs, id)
				delete(lp.byID, id)
			case err != nil:
				c.changes.mark(keys(ids)...) // read again next pass
				return fmt.Errorf("read device %s: %w", id, err)
			default:
				lp.setDevice(loopDevice(d))
			}
		}
	}
	// What a device gone from the store was given goes with it (removed
	// while the controller was down).
	for id := range lp.given {
		if lp.devs[id] == nil {
			delete(lp.given, id)
			delete(lp.dirty, id)
		}
	}
	return nil
}

func (lp *loop) setDevice(d *store.Device) {
	lp.devs[d.ID] = d
	if d.Revoked {
		delete(lp.byID, d.ID)
	} else {
		lp.byID[d.ID] = d
	}
}

func keys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// loopDevice is d with only what the loop reads (placement, rollout
// observations, running counts): its labels, facts, presence and, of its
// last report, the generation, the facts and each app's name, version
// and state. Container details, messages and credentials are left out.
// A field the loop starts to read must be kept here.
func loopDevice(d store.Device) *store.Device {
	out := &store.Device{ID: d.ID, Labels: d.Labels, Facts: d.Facts, Revoked: d.Revoked, Rev: d.Rev, Status: store.DeviceStatus{
		Presence: d.Status.Presence, PresenceAt: d.Status.PresenceAt, LastSeen: d.Status.LastSeen, ReportedAt: d.Status.ReportedAt,
	}}
	if r := d.Status.Report; r != nil {
		t := &wire.Reported{Schema: r.Schema, DeviceID: r.DeviceID, ObservedGeneration: r.ObservedGeneration, Device: r.Device, Time: r.Time,
			Apps: make([]wire.AppStatus, len(r.Apps))}
		for i, a := range r.Apps {
			t.Apps[i] = wire.AppStatus{Name: a.Name, Version: a.Version, State: a.State}
		}
		out.Status.Report = t
	}
	return out
}
