package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// storeDownFor is how long, after the store did not answer a read, the
// API serves reads from lastView without asking the store again (each ask
// costs the store's request timeout, 5 s for etcd).
const storeDownFor = 10 * time.Second

// lastView is what this controller's API last read of the devices and the
// apps. While the store does not answer (an etcd store without a quorum)
// the API's reads are served from it, as of the time it was read; writes
// fail (noQuorum). Only the unfiltered lists are kept: a selector filters
// the kept list.
type lastView struct {
	mu        sync.Mutex
	devices   []api.DeviceView // nil: never read
	devicesAt time.Time
	apps      []api.AppView
	appsAt    time.Time
	downUntil time.Time
}

// down reports whether the store failed to answer within storeDownFor.
func (l *lastView) down(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.downUntil)
}

// failed notes err of a read: an unavailable store is not asked again for
// storeDownFor. It reports whether err was that.
func (l *lastView) failed(now time.Time, err error) bool {
	if !errdefs.IsUnavailable(err) {
		return false
	}
	l.mu.Lock()
	l.downUntil = now.Add(storeDownFor)
	l.mu.Unlock()
	return true
}

func (l *lastView) setDevices(now time.Time, v []api.DeviceView) {
	l.mu.Lock()
	l.devices, l.devicesAt, l.downUntil = v, now, time.Time{}
	l.mu.Unlock()
}

func (l *lastView) setApps(now time.Time, v []api.AppView) {
	l.mu.Lock()
	l.apps, l.appsAt, l.downUntil = v, now, time.Time{}
	l.mu.Unlock()
}

func (l *lastView) lastDevices() ([]api.DeviceView, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devices, l.devicesAt, l.devices != nil
}

func (l *lastView) lastApps() ([]api.AppView, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.apps, l.appsAt, l.apps != nil
}

// storeName names the store in errors: "etcd" or "bbolt".
func (c *Controller) storeName() string {
	if c.cfg.StoreName != "" {
		return c.cfg.StoreName
	}
	return "bbolt"
}

// noQuorum is the error of a write the store did not answer (err is
// errdefs.ErrUnavailable); any other error is returned as it is.
func (c *Controller) noQuorum(err error) error {
	if err == nil || !errdefs.IsUnavailable(err) {
		return err
	}
	c.last.failed(c.cfg.Now(), err)
	return fmt.Errorf("the fleet store (%s) has no quorum: %v; reads are served from this controller's last view: %w",
		c.storeName(), err, errdefs.ErrUnavailable)
}

// noView is the error of a read the store did not answer and no earlier
// read of this controller can stand in for.
func (c *Controller) noView(err error, what string) error {
	if err == nil {
		err = fmt.Errorf("it did not answer a moment ago")
	}
	return fmt.Errorf("the fleet store (%s) has no quorum: %v; this controller read no %s before, so has no last view to serve: %w",
		c.storeName(), err, what, errdefs.ErrUnavailable)
}

// devicesFromLast is Devices served from the last view.
func (c *Controller) devicesFromLast(ctx context.Context, selector map[string]string, err error) ([]api.DeviceView, error) {
	all, at, ok := c.last.lastDevices()
	if !ok {
		return nil, c.noView(err, "devices")
	}
	store.StaleReadsOf(ctx).Mark(store.Staleness{Reason: store.NoQuorum, At: at})
	c.log.Warn().Err(err).Time("as_of", at).Msg("the store does not answer: devices served from this controller's last view")
	out := []api.DeviceView{}
	for _, d := range all {
		if matches(selector, d.Labels) {
			out = append(out, d)
		}
	}
	return out, nil
}

// appsFromLast is Apps served from the last view.
func (c *Controller) appsFromLast(ctx context.Context, err error) ([]api.AppView, error) {
	all, at, ok := c.last.lastApps()
	if !ok {
		return nil, c.noView(err, "apps")
	}
	store.StaleReadsOf(ctx).Mark(store.Staleness{Reason: store.NoQuorum, At: at})
	c.log.Warn().Err(err).Time("as_of", at).Msg("the store does not answer: apps served from this controller's last view")
	return slices.Clone(all), nil
}

// appFromLast is App served from the last view.
func (c *Controller) appFromLast(ctx context.Context, name string, err error) (api.AppView, error) {
	all, at, ok := c.last.lastApps()
	if !ok {
		return api.AppView{}, c.noView(err, "apps")
	}
	for _, a := range all {
		if a.Name == name {
			store.StaleReadsOf(ctx).Mark(store.Staleness{Reason: store.NoQuorum, At: at})
			return a, nil
		}
	}
	return api.AppView{}, fmt.Errorf("no app %q in this controller's last view (the fleet store does not answer): %w", name, errdefs.ErrNotFound)
}
