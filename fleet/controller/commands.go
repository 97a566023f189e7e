package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// waiter is a caller waiting for a command's result.
type waiter struct {
	device string
	ch     chan wire.CommandResult
}

// answer hands a command result to its waiting caller; a result for no
// waiting command, or from another device than the command's, is
// dropped.
func (c *Controller) answer(device string, r wire.CommandResult) {
	c.cmdMu.Lock()
	w, ok := c.waiting[r.ID]
	if ok && w.device == device {
		delete(c.waiting, r.ID)
	}
	c.cmdMu.Unlock()
	if !ok || w.device != device {
		c.log.Debug().Str("device", device).Str("command", r.ID).Msg("command result nobody waits for: dropped")
		return
	}
	w.ch <- r
}

// Logs implements api.Controller.
func (c *Controller) Logs(ctx context.Context, who api.Caller, device, app, container string, lines int) (api.CommandResult, error) {
	return c.command(ctx, who, wire.Command{DeviceID: device, Kind: wire.CommandLogs, App: app, Container: container, Lines: lines})
}

// Restart implements api.Controller.
func (c *Controller) Restart(ctx context.Context, who api.Caller, device, app, container string) (api.CommandResult, error) {
	return c.command(ctx, who, wire.Command{DeviceID: device, Kind: wire.CommandRestart, App: app, Container: container})
}

// command signs cmd, publishes it on the device's command topic and waits
// for its result. A device whose presence is offline is refused at once
// (errdefs.ErrUnavailable); one that does not answer within
// CommandTimeout too.
func (c *Controller) command(ctx context.Context, who api.Caller, cmd wire.Command) (api.CommandResult, error) {
	d, err := c.st.Devices.Get(ctx, cmd.DeviceID)
	if err != nil {
		return api.CommandResult{}, err
	}
	if d.Revoked {
		return api.CommandResult{}, fmt.Errorf("device %s is revoked: %w", d.ID, errdefs.ErrFailedPrecondition)
	}
	if d.Status.Presence != wire.Online {
		since := d.Status.PresenceAt
		if since.IsZero() {
			since = d.Status.LastSeen
		}
		if since.IsZero() {
			return api.CommandResult{}, fmt.Errorf("device %s has never connected: %w", d.ID, errdefs.ErrUnavailable)
		}
		return api.CommandResult{}, fmt.Errorf("device %s is offline since %s: %w", d.ID, since.UTC().Format(time.RFC3339), errdefs.ErrUnavailable)
	}
	id, err := sign.NewCommandID(nil)
	if err != nil {
		return api.CommandResult{}, err
	}
	now := c.cfg.Now()
	timeout := min(c.cfg.CommandTimeout, wire.MaxCommandLifetime)
	cmd.ID, cmd.IssuedAt, cmd.ExpiresAt = id, now.UTC(), now.Add(timeout).UTC()
	env, err := sign.SignCommand(c.key, cmd)
	if err != nil {
		return api.CommandResult{}, err // names the bad field, errdefs.ErrInvalidArgument
	}
	payload, err := json.Marshal(env)
	if err != nil {
		return api.CommandResult{}, err
	}
	w := waiter{device: d.ID, ch: make(chan wire.CommandResult, 1)}
	c.cmdMu.Lock()
	c.waiting[id] = w
	c.cmdMu.Unlock()
	defer func() {
		c.cmdMu.Lock()
		delete(c.waiting, id)
		c.cmdMu.Unlock()
	}()
	c.audit(ctx, who.Name, "command "+string(cmd.Kind), "device "+d.ID, who.From, fmt.Sprintf("app %s %s", cmd.App, cmd.Container))
	if err := c.tr.Publish(topic.MustBuild(d.ID, topic.Command), payload, false); err != nil {
		return api.CommandResult{}, fmt.Errorf("send %s command to device %s: %v: %w", cmd.Kind, d.ID, err, errdefs.ErrUnavailable)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-w.ch:
		return api.CommandResult{Device: d.ID, OK: r.OK, Output: r.Output, Error: r.Error}, nil
	case <-t.C:
		return api.CommandResult{}, fmt.Errorf("device %s did not answer the %s command within %s: %w", d.ID, cmd.Kind, timeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		return api.CommandResult{}, ctx.Err()
	}
}
