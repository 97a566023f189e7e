// Package apitest has a stand-in for the fleet controller, for the tests
// of the API and of the tender CLI. It is not the controller (that is
// fleet/controller, whose own tests run the real thing): it serves a
// small fixed fleet from memory and records the changes asked of it, so
// that routing, authentication, error mapping and the CLI's output can be
// tested without MQTT and devices.
package apitest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// T0 is the fake fleet's clock.
var T0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// Fake is an api.Controller over a fixed fleet: devices gw-1 (berlin,
// arm64, online), gw-2 (munich, amd64, offline) and gw-3 (berlin, armv7,
// online, whose reported version carries a terminal escape), the app
// thermo at revision 2 with a rollout in its second wave. Every change is
// appended to its audit log with the caller; Err, when set, is returned
// by every method instead.
type Fake struct {
	mu      sync.Mutex
	devices map[string]api.DeviceView
	apps    map[string]api.AppView
	history map[string][]api.AppRevisionView
	rollout map[string]api.RolloutView
	events  []store.FeedEvent
	audit   []store.AuditEntry
	// Err, if set, is every method's answer.
	Err error
	// Calls are the Callers of the changes, in order.
	Calls []api.Caller
	// Tokens, if set, holds the API tokens that CreateAPIToken,
	// APITokens and RevokeAPIToken make, list and revoke: give it the
	// server's Config.Tokens and a token made works at once. Nil: they
	// answer errdefs.ErrNotImplemented.
	Tokens store.APITokens
	made   int
}

// EvilVersion is gw-3's reported app version: it tries to retitle the
// terminal.
const EvilVersion = "1.0\x1b]0;pwned\x07"

// New returns the fake fleet.
func New() *Fake {
	f := &Fake{
		devices: map[string]api.DeviceView{},
		apps:    map[string]api.AppView{},
		history: map[string][]api.AppRevisionView{},
		rollout: map[string]api.RolloutView{},
	}
	dev := func(id, site, arch string, online bool, version string) {
		f.devices[id] = api.DeviceView{
			ID: id, Labels: map[string]string{"site": site}, Online: online, LastSeen: T0,
			Facts:  wire.DeviceFacts{Arch: arch, Kernel: "6.1.0", CgroupVersion: 2, MemoryBytes: 1 << 30, CPUs: 4, AgentVersion: "0.4.0"},
			Apps:   []wire.AppStatus{{Name: "thermo", Version: version, State: "running"}},
			Health: "ok", ObservedGeneration: 7, DesiredGeneration: 7, MemoryUsed: 48 << 20,
		}
	}
	dev("gw-1", "berlin", "arm64", true, "2.0")
	dev("gw-2", "munich", "amd64", false, "1.0")
	dev("gw-3", "berlin", "armv7", true, EvilVersion)
	spec := func(v string) wire.App {
		return wire.App{Name: "thermo", Version: v, Containers: []wire.Container{{Name: "main", Image: "registry.local/thermo:" + v}}}
	}
	f.history["thermo"] = []api.AppRevisionView{
		{Revision: 1, Version: "1.0", Created: T0.Add(-time.Hour), By: "admin", Spec: spec("1.0")},
		{Revision: 2, Version: "2.0", Created: T0, By: "admin", Spec: spec("2.0"), Current: true},
	}
	f.apps["thermo"] = api.AppView{Name: "thermo", Version: "2.0", Revision: 2, Latest: 2, Spec: spec("2.0"), Placed: 3, Running: 1, Rollout: "progressing"}
	f.rollout["thermo"] = api.RolloutView{
		App: "thermo", ID: "thermo-2", From: "1.0 (1)", To: "2.0 (2)", Phase: "progressing", Started: T0,
		Waves: []api.WaveCounts{
			{Index: 0, Devices: 1, Updated: 1, Healthy: 1},
			{Index: 1, Devices: 2, Pending: 1, Offline: 1, Updating: 1, Deferred: 0},
		},
	}
	for i, e := range []struct{ dev, kind, app string }{
		{"gw-1", string(wire.EventAppliedDesired), ""}, {"gw-1", string(wire.EventStarted), "thermo"},
		{"gw-3", string(wire.EventUnhealthy), "thermo"},
	} {
		f.events = append(f.events, store.FeedEvent{Cursor: uint64(i + 1), Device: e.dev, Received: T0,
			Event: wire.Event{Schema: 1, DeviceID: e.dev, Seq: uint64(i + 1), Time: T0, Kind: wire.EventKind(e.kind), App: e.app}})
	}
	return f
}

func (f *Fake) record(who api.Caller, action, target string) {
	f.Calls = append(f.Calls, who)
	f.audit = append(f.audit, store.AuditEntry{Seq: uint64(len(f.audit) + 1), Time: T0, Who: who.Name, Action: action, Target: target, From: who.From})
}

// Lock takes the fake's lock for a test that reads its fields.
func (f *Fake) Lock() func() { f.mu.Lock(); return f.mu.Unlock }

func (f *Fake) device(id string) (api.DeviceView, error) {
	d, ok := f.devices[id]
	if !ok {
		return d, fmt.Errorf("no device %q: %w", id, errdefs.ErrNotFound)
	}
	return d, nil
}

func (f *Fake) app(name string) (api.AppView, error) {
	a, ok := f.apps[name]
	if !ok {
		return a, fmt.Errorf("no app %q: %w", name, errdefs.ErrNotFound)
	}
	return a, nil
}

func (f *Fake) Devices(_ context.Context, sel map[string]string) ([]api.DeviceView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []api.DeviceView
	for _, id := range slices.Sorted(maps.Keys(f.devices)) {
		d := f.devices[id]
		match := true
		for k, v := range sel {
			match = match && d.Labels[k] == v
		}
		if match {
			out = append(out, d)
		}
	}
	return out, nil
}

func (f *Fake) Device(_ context.Context, id string) (api.DeviceDetail, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.DeviceDetail{}, f.Err
	}
	d, err := f.device(id)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	var evs []store.FeedEvent
	for _, e := range f.events {
		if e.Device == id {
			evs = append(evs, e)
		}
	}
	return api.DeviceDetail{DeviceView: d, EnrolledAt: T0.Add(-24 * time.Hour), Events: evs, Assigned: []string{"thermo"},
		Status: store.DeviceStatus{EventSeq: 9, EventGaps: 2}}, nil
}

func (f *Fake) LabelDevice(_ context.Context, who api.Caller, id string, set map[string]string, remove []string) (api.DeviceView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.DeviceView{}, f.Err
	}
	d, err := f.device(id)
	if err != nil {
		return d, err
	}
	labels := maps.Clone(d.Labels)
	maps.Copy(labels, set)
	for _, k := range remove {
		delete(labels, k)
	}
	d.Labels = labels
	f.devices[id] = d
	f.record(who, "device label", "device "+id)
	return d, nil
}

func (f *Fake) RemoveDevice(_ context.Context, who api.Caller, id string) error {
	defer f.Lock()()
	if f.Err != nil {
		return f.Err
	}
	if _, err := f.device(id); err != nil {
		return err
	}
	delete(f.devices, id)
	f.record(who, "device rm", "device "+id)
	return nil
}

func (f *Fake) CreateJoinToken(_ context.Context, who api.Caller, req api.JoinTokenRequest) (api.JoinTokenCreated, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.JoinTokenCreated{}, f.Err
	}
	ttl, uses := req.TTL, req.Uses
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	if uses == 0 {
		uses = 1
	}
	f.record(who, "token create", "")
	return api.JoinTokenCreated{ID: "tok1", Token: "tok1.secret.cahash", Labels: req.Labels, Expires: T0.Add(ttl), Uses: uses}, nil
}

func (f *Fake) Apply(_ context.Context, who api.Caller, spec []byte) (api.AppView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.AppView{}, f.Err
	}
	var app wire.App
	if err := yaml.UnmarshalStrict(spec, &app); err != nil {
		return api.AppView{}, fmt.Errorf("app spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var missing []string
	if app.Name == "" {
		missing = append(missing, "name: required")
	}
	if app.Version == "" {
		missing = append(missing, "version: required")
	}
	if len(missing) > 0 {
		return api.AppView{}, fmt.Errorf("app spec: %s: %w", strings.Join(missing, "; "), errdefs.ErrInvalidArgument)
	}
	a := f.apps[app.Name]
	a.Name, a.Version, a.Spec = app.Name, app.Version, app
	a.Latest++
	a.Revision = a.Latest
	f.apps[app.Name] = a
	f.history[app.Name] = append(f.history[app.Name], api.AppRevisionView{Revision: a.Revision, Version: a.Version, Created: T0, By: who.Name, Spec: app, Current: true})
	f.record(who, "apply", "app "+app.Name)
	return a, nil
}

func (f *Fake) Apps(context.Context) ([]api.AppView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []api.AppView
	for _, n := range slices.Sorted(maps.Keys(f.apps)) {
		out = append(out, f.apps[n])
	}
	return out, nil
}

func (f *Fake) App(_ context.Context, name string) (api.AppView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.AppView{}, f.Err
	}
	return f.app(name)
}

func (f *Fake) AppHistory(_ context.Context, name string) ([]api.AppRevisionView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return nil, f.Err
	}
	if _, err := f.app(name); err != nil {
		return nil, err
	}
	return f.history[name], nil
}

func (f *Fake) RemoveApp(_ context.Context, who api.Caller, name string, _ bool) (api.AppView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.AppView{}, f.Err
	}
	a, err := f.app(name)
	if err != nil {
		return a, err
	}
	a.Deleting = true
	f.apps[name] = a
	f.record(who, "app rm", "app "+name)
	return a, nil
}

func (f *Fake) Explain(_ context.Context, app, device string) (api.ExplainView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.ExplainView{}, f.Err
	}
	if _, err := f.app(app); err != nil {
		return api.ExplainView{}, err
	}
	all := []api.ExplainDevice{
		{Device: "gw-1", Chosen: true, Reason: "selector and arch match, memory: needs 64Mi, 900Mi free"},
		{Device: "gw-2", Chosen: false, Reason: "selector: site=munich, want site=berlin"},
		{Device: "gw-3", Chosen: false, Reason: "arch armv7 not in [arm64 amd64]"},
	}
	v := api.ExplainView{App: app}
	for _, d := range all {
		if device == "" || d.Device == device {
			v.Devices = append(v.Devices, d)
		}
	}
	if device != "" && len(v.Devices) == 0 {
		return v, fmt.Errorf("no device %q: %w", device, errdefs.ErrNotFound)
	}
	return v, nil
}

func (f *Fake) Rollout(_ context.Context, app string) (api.RolloutView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.RolloutView{}, f.Err
	}
	r, ok := f.rollout[app]
	if !ok {
		return r, fmt.Errorf("no rollout of app %q: %w", app, errdefs.ErrNotFound)
	}
	return r, nil
}

func (f *Fake) RolloutCommand(_ context.Context, who api.Caller, app, command string) (api.RolloutView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.RolloutView{}, f.Err
	}
	r, ok := f.rollout[app]
	if !ok {
		return r, fmt.Errorf("no rollout of app %q: %w", app, errdefs.ErrNotFound)
	}
	switch command {
	case "pause":
		if r.Phase != "progressing" {
			return r, fmt.Errorf("rollout of %s is %s, not progressing: %w", app, r.Phase, errdefs.ErrFailedPrecondition)
		}
		r.Phase = "paused"
	case "resume":
		r.Phase = "progressing"
	case "abort":
		r.Phase = "aborted"
	case "undo":
		r.Phase = "rolling-back"
	}
	f.rollout[app] = r
	f.record(who, "rollout "+command, "app "+app)
	return r, nil
}

func (f *Fake) Logs(_ context.Context, who api.Caller, device, app, container string, lines int) (api.CommandResult, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.CommandResult{}, f.Err
	}
	d, err := f.device(device)
	if err != nil {
		return api.CommandResult{}, err
	}
	if !d.Online {
		return api.CommandResult{}, fmt.Errorf("device %s is offline: %w", device, errdefs.ErrUnavailable)
	}
	var b strings.Builder
	for i := range min(lines, 3) {
		fmt.Fprintf(&b, "%s/%s line %d\n", app, cmpOr(container, "main"), i+1)
	}
	b.WriteString("evil \x1b[2J line\n")
	f.record(who, "logs", "device "+device)
	return api.CommandResult{Device: device, OK: true, Output: b.String()}, nil
}

func (f *Fake) Restart(_ context.Context, who api.Caller, device, app, container string) (api.CommandResult, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.CommandResult{}, f.Err
	}
	d, err := f.device(device)
	if err != nil {
		return api.CommandResult{}, err
	}
	if !d.Online {
		return api.CommandResult{}, fmt.Errorf("device %s is offline: %w", device, errdefs.ErrUnavailable)
	}
	f.record(who, "restart", "device "+device+" app "+app)
	return api.CommandResult{Device: device, OK: true}, nil
}

func (f *Fake) Events(_ context.Context, flt api.EventFilter) ([]store.FeedEvent, error) {
	defer f.Lock()()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []store.FeedEvent
	for _, e := range f.events {
		if e.Cursor <= flt.After || (flt.Device != "" && e.Device != flt.Device) ||
			(flt.App != "" && e.Event.App != flt.App) || (flt.Kind != "" && string(e.Event.Kind) != flt.Kind) {
			continue
		}
		if flt.Limit > 0 && len(out) == flt.Limit {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// AddEvent appends an event to the feed (a device speaking).
func (f *Fake) AddEvent(device string, kind wire.EventKind, app string) {
	defer f.Lock()()
	c := uint64(len(f.events) + 1)
	f.events = append(f.events, store.FeedEvent{Cursor: c, Device: device, Received: T0,
		Event: wire.Event{Schema: 1, DeviceID: device, Seq: c, Time: T0, Kind: kind, App: app}})
}

// SetRollout replaces an app's rollout.
func (f *Fake) SetRollout(r api.RolloutView) {
	defer f.Lock()()
	f.rollout[r.App] = r
}

func (f *Fake) Audit(_ context.Context, after uint64, limit int) ([]store.AuditEntry, error) {
	defer f.Lock()()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []store.AuditEntry
	for _, e := range f.audit {
		if e.Seq > after && (limit <= 0 || len(out) < limit) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *Fake) Status(context.Context) (api.StatusView, error) {
	defer f.Lock()()
	if f.Err != nil {
		return api.StatusView{}, f.Err
	}
	online := 0
	for _, d := range f.devices {
		if d.Online {
			online++
		}
	}
	return api.StatusView{Version: "test", Started: T0, Leader: "self", Broker: "embedded",
		Devices: len(f.devices), Online: online, Apps: len(f.apps), Rollouts: 1}, nil
}

// CreateAPIToken makes a token with a predictable value, FakeTokenValue.
func (f *Fake) CreateAPIToken(ctx context.Context, who api.Caller, req api.APITokenRequest) (api.APITokenCreated, error) {
	defer f.Lock()()
	if err := f.tokensErr(); err != nil {
		return api.APITokenCreated{}, err
	}
	if err := api.ValidAPITokenName(req.Name); err != nil {
		return api.APITokenCreated{}, err
	}
	if req.Role != store.RoleAdmin && req.Role != store.RoleReadOnly {
		return api.APITokenCreated{}, fmt.Errorf("role %q: %w", req.Role, errdefs.ErrInvalidArgument)
	}
	all, err := f.Tokens.List(ctx)
	if err != nil {
		return api.APITokenCreated{}, err
	}
	for _, t := range all {
		if t.Name == req.Name && !t.Revoked {
			return api.APITokenCreated{}, fmt.Errorf("api token %s exists: %w", req.Name, errdefs.ErrAlreadyExists)
		}
	}
	f.made++
	value := FakeTokenValue(req.Name, f.made)
	t, err := f.Tokens.Create(ctx, store.APIToken{Hash: api.TokenHash(value), Name: req.Name, Role: req.Role, Created: T0})
	if err != nil {
		return api.APITokenCreated{}, err
	}
	f.record(who, "api-token create", "api-token "+req.Name)
	return api.APITokenCreated{Token: value, APITokenView: api.APITokenView{Name: t.Name, Role: t.Role, Created: t.Created}}, nil
}

// FakeTokenValue is the value of the n-th token the fake makes.
func FakeTokenValue(name string, n int) string { return fmt.Sprintf("tdra_fake_%s_%d", name, n) }

func (f *Fake) tokensErr() error {
	switch {
	case f.Err != nil:
		return f.Err
	case f.Tokens == nil:
		return fmt.Errorf("api tokens: the fake has no token store: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

func (f *Fake) APITokens(ctx context.Context) ([]api.APITokenView, error) {
	defer f.Lock()()
	if err := f.tokensErr(); err != nil {
		return nil, err
	}
	all, err := f.Tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []api.APITokenView
	for _, t := range all {
		out = append(out, api.APITokenView{Name: t.Name, Role: t.Role, Created: t.Created, Revoked: t.Revoked, RevokedAt: t.RevokedAt})
	}
	slices.SortStableFunc(out, func(a, b api.APITokenView) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RevokeAPIToken refuses to revoke the last admin token, as the
// controller does.
func (f *Fake) RevokeAPIToken(ctx context.Context, who api.Caller, name string) (api.APITokenRevoked, error) {
	defer f.Lock()()
	if err := f.tokensErr(); err != nil {
		return api.APITokenRevoked{}, err
	}
	all, err := f.Tokens.List(ctx)
	if err != nil {
		return api.APITokenRevoked{}, err
	}
	var target *store.APIToken
	admins := 0
	for i, t := range all {
		if !t.Revoked && t.Role == store.RoleAdmin {
			admins++
		}
		if !t.Revoked && t.Name == name {
			target = &all[i]
		}
	}
	switch {
	case target == nil:
		return api.APITokenRevoked{}, fmt.Errorf("no api token %s: %w", name, errdefs.ErrNotFound)
	case target.Role == store.RoleAdmin && admins <= 1:
		return api.APITokenRevoked{}, fmt.Errorf("api token %s: revoking it would leave no admin token: %w", name, errdefs.ErrFailedPrecondition)
	}
	t, err := f.Tokens.Revoke(ctx, target.Hash, T0)
	if err != nil {
		return api.APITokenRevoked{}, err
	}
	f.record(who, "api-token rm", "api-token "+name)
	return api.APITokenRevoked{APITokenView: api.APITokenView{Name: t.Name, Role: t.Role, Created: t.Created, Revoked: true, RevokedAt: t.RevokedAt},
		Self: who.Name == name}, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var _ api.Controller = (*Fake)(nil)
