package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

var _ api.Controller = (*Controller)(nil)

// enrolled records a device that just enrolled, with the labels of its
// token and the facts it sent.
func (c *Controller) enrolled(ctx context.Context, req wire.EnrollRequest, resp wire.EnrollResponse) error {
	serial := ""
	if b, _ := pem.Decode([]byte(resp.Certificate)); b != nil {
		if cert, err := x509.ParseCertificate(b.Bytes); err == nil {
			serial = cert.SerialNumber.Text(16)
		}
	}
	d := store.Device{ID: req.DeviceID, Labels: maps.Clone(resp.Labels), Facts: req.Facts, EnrolledAt: c.cfg.Now(), CertSerial: serial}
	if req.PasswordHash != "" {
		d.PasswordHash, _ = hex.DecodeString(req.PasswordHash) // validated by wire
	}
	old, err := c.st.Devices.Get(ctx, req.DeviceID)
	switch {
	case err == nil:
		// Enrolled again (its old certificate revoked or expired).
		d.Rev, d.Labels = old.Rev, mergeLabels(old.Labels, d.Labels)
		_, err = c.st.Devices.Put(ctx, d, old.Rev)
	case errdefs.IsNotFound(err):
		_, err = c.st.Devices.Put(ctx, d, 0)
	}
	if err != nil {
		return fmt.Errorf("record device %s: %w", req.DeviceID, err)
	}
	c.changes.mark(req.DeviceID)
	c.audit(ctx, "device "+req.DeviceID, "enroll", "device "+req.DeviceID, "", "token "+req.TokenID)
	c.Kick()
	return nil
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// health sums a device's apps up.
func health(d store.Device) string {
	if d.Status.Impersonations > 0 {
		return "flagged" // it spoke in another device's name (F-08)
	}
	r := d.Status.Report
	if r == nil {
		return "unknown"
	}
	h := "ok"
	for _, a := range r.Apps {
		switch a.State {
		case "running":
		case "failing", "rolled-back", "refused":
			return "failing"
		default:
			h = "degraded"
		}
	}
	return h
}

func (c *Controller) deviceView(ctx context.Context, d store.Device) api.DeviceView {
	v := api.DeviceView{ID: d.ID, Labels: d.Labels, Online: d.Status.Presence == wire.Online, LastSeen: d.Status.LastSeen,
		Facts: d.Facts, Health: health(d), Revoked: d.Revoked}
	if r := d.Status.Report; r != nil {
		v.Facts, v.Apps, v.ObservedGeneration = r.Device, r.Apps, r.ObservedGeneration
		for _, a := range r.Apps {
			for _, ct := range a.Containers {
				v.MemoryUsed += ct.MemoryBytes
				v.CPUNanosUsed += ct.CPUNanos
			}
		}
	}
	if s, ok, err := c.pub.Last(ctx, d.ID); err == nil && ok {
		v.DesiredGeneration = s.Generation
	}
	return v
}

// Devices implements api.Controller.
// While the store does not answer, the list this controller read last is
// served (lastView).
func (c *Controller) Devices(ctx context.Context, selector map[string]string) ([]api.DeviceView, error) {
	now := c.cfg.Now()
	if c.last.down(now) {
		return c.devicesFromLast(ctx, selector, nil)
	}
	devs, err := c.st.Devices.List(ctx)
	if c.last.failed(now, err) {
		return c.devicesFromLast(ctx, selector, err)
	}
	if err != nil {
		return nil, err
	}
	out := []api.DeviceView{}
	for _, d := range devs {
		if matches(selector, d.Labels) {
			out = append(out, c.deviceView(ctx, d))
		}
	}
	if _, stale := store.StaleReadsOf(ctx).Stale(); len(selector) == 0 && !stale {
		c.last.setDevices(now, out)
	}
	return out, nil
}

// Device implements api.Controller.
func (c *Controller) Device(ctx context.Context, id string) (api.DeviceDetail, error) {
	d, err := c.st.Devices.Get(ctx, id)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	evs, err := c.st.Events.Device(ctx, id, 20)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	det := api.DeviceDetail{DeviceView: c.deviceView(ctx, d), EnrolledAt: d.EnrolledAt, Report: d.Status.Report, Status: d.Status, Events: evs}
	v, err := c.snapshot(ctx)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	for app, ids := range v.assign {
		if slices.Contains(ids, id) {
			det.Assigned = append(det.Assigned, app)
		}
	}
	slices.Sort(det.Assigned)
	return det, nil
}

// LabelDevice implements api.Controller.
func (c *Controller) LabelDevice(ctx context.Context, who api.Caller, id string, set map[string]string, remove []string) (api.DeviceView, error) {
	for k, v := range set {
		if k == "" || strings.ContainsAny(k+v, "=,\x00\n") {
			return api.DeviceView{}, fmt.Errorf("label %q=%q: keys and values may not hold '=', ',' or control characters: %w", k, v, errdefs.ErrInvalidArgument)
		}
	}
	d, err := store.UpdateDevice(ctx, c.st.Devices, id, func(d *store.Device) error {
		d.Labels = mergeLabels(d.Labels, set)
		for _, k := range remove {
			delete(d.Labels, k)
		}
		return nil
	})
	if err != nil {
		return api.DeviceView{}, c.noQuorum(err)
	}
	c.changes.mark(id)
	c.audit(ctx, who.Name, "device label", "device "+id, who.From, fmt.Sprintf("set %v remove %v", set, remove))
	c.Kick()
	return c.deviceView(ctx, d), nil
}

// RemoveDevice implements api.Controller: it revokes the device's
// certificates (and rewrites the CRL), cuts its session and clears its
// retained topics, then forgets it.
func (c *Controller) RemoveDevice(ctx context.Context, who api.Caller, id string) error {
	d, err := c.st.Devices.Get(ctx, id)
	if err != nil {
		return c.noQuorum(err)
	}
	if _, err := c.en.Revoke(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove device %s: %w", id, err)
	}
	if c.rv != nil {
		c.rv.Disconnect(id)
		if err := c.rv.ClearRetained(id); err != nil {
			c.log.Warn().Err(err).Str("device", id).Msg("clear retained topics of removed device")
		}
	}
	if err := c.st.Devices.Delete(ctx, id, d.Rev); err != nil {
		return fmt.Errorf("remove device %s: %w", id, c.noQuorum(err))
	}
	// The loop forgets what it gave the device at its next pass, and
	// what was published to it again then, after any publish of a pass
	// under way.
	c.changes.markRemoved(id)
	if err := c.pub.Forget(ctx, id); err != nil {
		c.log.Warn().Err(err).Str("device", id).Msg("forget desired state of removed device")
	}
	c.audit(ctx, who.Name, "device rm", "device "+id, who.From, "certificates revoked")
	c.Kick()
	return nil
}

// CreateJoinToken implements api.Controller.
func (c *Controller) CreateJoinToken(ctx context.Context, who api.Caller, req api.JoinTokenRequest) (api.JoinTokenCreated, error) {
	tok, rec, err := c.en.CreateToken(ctx, enroll.TokenOptions{Labels: req.Labels, TTL: req.TTL, Uses: req.Uses})
	if err != nil {
		return api.JoinTokenCreated{}, c.noQuorum(err)
	}
	c.audit(ctx, who.Name, "token create", "token "+rec.ID, who.From, fmt.Sprintf("labels %v, %d uses, expires %s", rec.Labels, rec.UsesLeft, rec.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z")))
	return api.JoinTokenCreated{ID: rec.ID, Token: tok, Labels: rec.Labels, Expires: rec.ExpiresAt, Uses: rec.UsesLeft}, nil
}

// Apply implements api.Controller.
func (c *Controller) Apply(ctx context.Context, who api.Caller, spec []byte) (api.AppView, error) {
	a, err := wire.ParseApp(spec)
	if err != nil {
		return api.AppView{}, err
	}
	// The app as this request found it, before the images are resolved
	// (registry round trips): an apply of the app stored by anyone since
	// makes this one a conflict rather than a revision on top of it.
	cur, err := c.st.Apps.Get(ctx, a.Name)
	found := err == nil
	if err != nil && !errdefs.IsNotFound(err) {
		return api.AppView{}, c.noQuorum(err)
	}
	var arches []string
	if a.Placement != nil {
		arches = a.Placement.Arch
	}
	var errs []error
	for i := range a.Containers {
		ct := &a.Containers[i]
		if strings.Contains(ct.Image, "@sha256:") && c.res == nil {
			continue
		}
		if c.res == nil {
			errs = append(errs, fmt.Errorf("app %s: containers[%d].image %q: name a digest (@sha256:...): this controller resolves no tags: %w", a.Name, i, ct.Image, errdefs.ErrInvalidArgument))
			continue
		}
		ref, err := c.res.Resolve(ctx, ct.Image, arches)
		if err != nil {
			errs = append(errs, fmt.Errorf("app %s: containers[%d].image: %w", a.Name, i, err))
			continue
		}
		ct.Image = ref
	}
	if err := joinErrs(errs); err != nil {
		return api.AppView{}, err
	}
	return c.applyOver(ctx, who, a, cur, found)
}

// applyOver stores spec a as a new revision of the app if the app is
// still as the request found it (cur, or absent if !found); otherwise the
// apply is a conflict that names what changed it.
func (c *Controller) applyOver(ctx context.Context, who api.Caller, a wire.App, cur store.App, found bool) (api.AppView, error) {
	var expect uint64
	if found {
		expect = cur.Rev
		r, err := c.st.Apps.Revision(ctx, a.Name, cur.Current)
		if err != nil {
			return api.AppView{}, c.noQuorum(err)
		}
		if !cur.Deleting && reflect.DeepEqual(normal(r.Spec), normal(a)) {
			return c.App(ctx, a.Name) // unchanged: no new revision
		}
		if cur.Deleting {
			return api.AppView{}, fmt.Errorf("app %s is being removed; `tender rollout undo %s` keeps it, or apply it again once it is gone: %w", a.Name, a.Name, errdefs.ErrFailedPrecondition)
		}
	}
	stored, err := c.st.Apps.Apply(ctx, a, who.Name, expect)
	if errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) {
		return api.AppView{}, c.applyConflict(ctx, a.Name, cur, found, err)
	}
	if err != nil {
		return api.AppView{}, c.noQuorum(err)
	}
	c.audit(ctx, who.Name, "apply", "app "+a.Name, who.From, fmt.Sprintf("revision %d, version %s", stored.Current, a.Version))
	c.Kick()
	return c.App(ctx, a.Name)
}

// applyConflict is the error of an apply that lost its compare-and-swap:
// the app was not as the request found it (cur, found) any more.
func (c *Controller) applyConflict(ctx context.Context, name string, cur store.App, found bool, lost error) error {
	now, err := c.st.Apps.Get(ctx, name)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("app %s changed since you read it: it was removed; apply again: %w", name, errdefs.ErrConflict)
	case err != nil:
		return fmt.Errorf("app %s changed since you read it (%v); apply again: %w", name, lost, errdefs.ErrConflict)
	case !found || now.Latest != cur.Latest:
		if r, err := c.st.Apps.Revision(ctx, name, now.Latest); err == nil {
			return fmt.Errorf("app %s changed since you read it: revision %d (version %s) was applied by %s at %s; apply again: %w",
				name, r.Revision, r.Spec.Version, cmp.Or(r.By, "(unknown)"), r.Created.UTC().Format(time.RFC3339), errdefs.ErrConflict)
		}
		return fmt.Errorf("app %s changed since you read it: revision %d was applied meanwhile; apply again: %w", name, now.Latest, errdefs.ErrConflict)
	case now.Deleting && !cur.Deleting:
		return fmt.Errorf("app %s changed since you read it: it is being removed; apply again once it is gone, or `tender rollout undo %s`: %w", name, name, errdefs.ErrConflict)
	default:
		return fmt.Errorf("app %s changed since you read it: its rollout moved it to revision %d; apply again: %w", name, now.Current, errdefs.ErrConflict)
	}
}

// normal is a spec as JSON would carry it, for comparison.
func normal(a wire.App) any {
	b, _ := json.Marshal(a)
	var v any
	_ = json.Unmarshal(b, &v)
	return v
}

// joinErrs joins errors keeping errdefs categories matchable.
func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	cat := errdefs.ErrInvalidArgument
	for _, e := range errs {
		if !errdefs.IsInvalidArgument(e) {
			return fmt.Errorf("%s: %w", strings.Join(msgs, "; "), e)
		}
	}
	return fmt.Errorf("%s: %w", strings.Join(msgs, "; "), cat)
}

func (c *Controller) appView(ctx context.Context, a store.App, v *snapshot) (api.AppView, error) {
	r, err := c.st.Apps.Revision(ctx, a.Name, a.Current)
	if err != nil {
		return api.AppView{}, err
	}
	av := api.AppView{Name: a.Name, Version: r.Spec.Version, Revision: a.Current, Latest: a.Latest, Deleting: a.Deleting, Spec: r.Spec}
	if v == nil {
		return av, nil
	}
	av.Placed = len(v.assign[a.Name])
	if n, ok := v.running[a.Name]; ok && n.rev == a.Current {
		av.Running = n.n // of the revision the loop saw last: none of a newer one yet
	}
	if v.decision != nil {
		for _, w := range v.decision.Warnings {
			if w.App == a.Name {
				av.Warnings = append(av.Warnings, w.Message)
			}
		}
	}
	if rs, ok := v.rollouts[a.Name]; ok {
		av.Rollout = rs.view.Phase
	}
	if !a.Deleting && !v.seen(a) {
		av.Rollout = PhasePending
	}
	return av, nil
}

// Apps implements api.Controller. While the store does not answer, the
// list this controller read last is served (lastView).
func (c *Controller) Apps(ctx context.Context) ([]api.AppView, error) {
	now := c.cfg.Now()
	if c.last.down(now) {
		return c.appsFromLast(ctx, nil)
	}
	apps, err := c.st.Apps.List(ctx)
	if c.last.failed(now, err) {
		return c.appsFromLast(ctx, err)
	}
	if err != nil {
		return nil, err
	}
	v, err := c.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.AppView{}
	for _, a := range apps {
		av, err := c.appView(ctx, a, v)
		if c.last.failed(now, err) {
			return c.appsFromLast(ctx, err)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, av)
	}
	if _, stale := store.StaleReadsOf(ctx).Stale(); !stale {
		c.last.setApps(now, out)
	}
	return slices.Clone(out), nil
}

// App implements api.Controller; as Apps while the store does not answer.
func (c *Controller) App(ctx context.Context, name string) (api.AppView, error) {
	now := c.cfg.Now()
	if c.last.down(now) {
		return c.appFromLast(ctx, name, nil)
	}
	a, err := c.st.Apps.Get(ctx, name)
	if c.last.failed(now, err) {
		return c.appFromLast(ctx, name, err)
	}
	if err != nil {
		return api.AppView{}, err
	}
	v, err := c.snapshot(ctx)
	if err != nil {
		return api.AppView{}, err
	}
	return c.appView(ctx, a, v)
}

// AppHistory implements api.Controller.
func (c *Controller) AppHistory(ctx context.Context, name string) ([]api.AppRevisionView, error) {
	a, err := c.st.Apps.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	revs, err := c.st.Apps.Revisions(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]api.AppRevisionView, len(revs))
	for i, r := range revs {
		out[i] = api.AppRevisionView{Revision: r.Revision, Version: r.Spec.Version, Created: r.Created, By: r.By, Spec: r.Spec, Current: r.Revision == a.Current}
	}
	return out, nil
}

// RemoveApp implements api.Controller: the app is marked for deletion and
// taken off its devices through a rollout to nothing (its waves, pace and
// windows; at once with now), then forgotten once every device was told.
func (c *Controller) RemoveApp(ctx context.Context, who api.Caller, name string, now bool) (api.AppView, error) {
	a, err := store.UpdateApp(ctx, c.st.Apps, name, func(a *store.App) error {
		a.Deleting = true
		a.DeleteNow = a.DeleteNow || now
		return nil
	})
	if err != nil {
		return api.AppView{}, c.noQuorum(err)
	}
	detail := "through a rollout"
	if now {
		detail = "at once"
	}
	c.audit(ctx, who.Name, "app rm", "app "+name, who.From, detail)
	c.Kick()
	return c.appView(ctx, a, nil)
}

// Explain implements api.Controller.
func (c *Controller) Explain(ctx context.Context, app, device string) (api.ExplainView, error) {
	v, err := c.snapshot(ctx)
	if err != nil {
		return api.ExplainView{}, err
	}
	d := v.decision
	if d == nil {
		return api.ExplainView{}, fmt.Errorf("placement has not run yet; try again: %w", errdefs.ErrUnavailable)
	}
	ev := api.ExplainView{App: app}
	if device != "" {
		r, err := d.ExplainDevice(app, device)
		if err != nil {
			return api.ExplainView{}, err
		}
		ev.Devices = []api.ExplainDevice{{Device: r.Device, Chosen: r.Chosen, Reason: r.Message}}
	} else {
		rs, err := d.Explain(app)
		if err != nil {
			return api.ExplainView{}, err
		}
		for _, r := range rs {
			ev.Devices = append(ev.Devices, api.ExplainDevice{Device: r.Device, Chosen: r.Chosen, Reason: r.Message})
		}
	}
	for _, w := range d.Warnings {
		if w.App == app {
			ev.Warnings = append(ev.Warnings, w.Message)
		}
	}
	return ev, nil
}

// Events implements api.Controller.
func (c *Controller) Events(ctx context.Context, f api.EventFilter) ([]store.FeedEvent, error) {
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	var evs []store.FeedEvent
	var err error
	if f.Device != "" {
		if err := topic.ValidDeviceID(f.Device); err != nil {
			return nil, err
		}
		evs, err = c.st.Events.Device(ctx, f.Device, 1000)
	} else {
		evs, err = c.st.Events.Feed(ctx, f.After, 10*limit)
	}
	if err != nil {
		return nil, err
	}
	out := []store.FeedEvent{}
	for _, e := range evs {
		if e.Cursor <= f.After || f.App != "" && e.Event.App != f.App || f.Kind != "" && string(e.Event.Kind) != f.Kind {
			continue
		}
		out = append(out, e)
	}
	if len(out) > limit {
		if f.After > 0 {
			out = out[:limit]
		} else {
			out = out[len(out)-limit:]
		}
	}
	return out, nil
}

// Audit implements api.Controller.
func (c *Controller) Audit(ctx context.Context, after uint64, limit int) ([]store.AuditEntry, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return c.st.Audit.List(ctx, after, limit)
}

// Status implements api.Controller.
func (c *Controller) Status(ctx context.Context) (api.StatusView, error) {
	v := api.StatusView{Version: c.cfg.Version, Started: c.started, Broker: c.cfg.Broker}
	var err error
	if v.Members, v.Leader, err = c.members(ctx); err != nil {
		return v, err
	}
	devs, err := c.st.Devices.List(ctx)
	if err != nil {
		return v, err
	}
	for _, d := range devs {
		v.Devices++
		if d.Status.Presence == wire.Online {
			v.Online++
		}
	}
	apps, err := c.st.Apps.List(ctx)
	if err != nil {
		return v, err
	}
	v.Apps = len(apps)
	snap, err := c.snapshot(ctx)
	if err != nil {
		return v, err
	}
	for _, r := range snap.rollouts {
		if r.active {
			v.Rollouts++
		}
	}
	return v, nil
}

// CheckPassword implements broker.Passwords for the embedded broker: the
// password fallback of a device that enrolled with one (its sha256 was
// stored, never the password). A revoked or unknown device, or a device
// without a password, is refused; the comparison takes the same time.
func (c *Controller) CheckPassword(device, password string) bool {
	sum := sha256.Sum256([]byte(password))
	want, ok := noPassword[:], false
	if d, err := c.st.Devices.Get(context.Background(), device); err == nil && !d.Revoked && len(d.PasswordHash) == sha256.Size {
		want, ok = d.PasswordHash, true
	}
	return subtle.ConstantTimeCompare(sum[:], want) == 1 && ok
}

// noPassword is compared against when there is no hash to compare with.
var noPassword [sha256.Size]byte
