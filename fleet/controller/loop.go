package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/placement"
	"github.com/tender-edge/tender/fleet/rollout"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// stateKey is the store.Docs key of the loop's persisted state.
const stateKey = "controller/state"

// persisted is the loop's state kept in the store: placement's current
// assignments, and what each device was given (app → the store revision
// its desired document carries). Rollouts are kept apart, one per app in
// store.Rollouts.
type persisted struct {
	Assignments placement.Assignments        `json:"assignments"`
	Given       map[string]map[string]uint64 `json:"given"`
}

// loop is the state the loop goroutine owns.
type loop struct {
	assign    placement.Assignments
	given     map[string]map[string]uint64
	stateRev  uint64
	stateData []byte
	rollouts  map[string]*ro // by app
	dirty     map[string]bool
	specs     map[specKey]wire.App
	decision  *placement.Decision
	// zones caches the time zones devices report, loaded once each (nil:
	// unknown to this controller's tz database).
	zones map[string]*time.Location

	// devs is every device in the store as the loop last read it,
	// trimmed to what it uses (loopDevice); byID the unrevoked ones,
	// which it places and publishes to. Both nil until the first read.
	devs     map[string]*store.Device
	byID     map[string]*store.Device
	resyncAt time.Time // next read of every device
	// cmdsRead says the stored rollout commands were read once (at the
	// first pass; later when the API stores one).
	cmdsRead bool
}

type specKey struct {
	app string
	rev uint64
}

// ro is a rollout with the store revision and the bytes of its last
// write.
type ro struct {
	r    *rollout.Rollout
	rev  uint64
	data []byte
	// applied is the sequence number of the last stored command applied
	// (rolloutcmd.go).
	applied uint64
}

func revStr(r uint64) string {
	if r == 0 {
		return ""
	}
	return strconv.FormatUint(r, 10)
}

func revNum(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// loadLoop reads the loop's state back from the store: a restarted
// controller resumes its rollouts where they were.
func (c *Controller) loadLoop(ctx context.Context) (*loop, error) {
	lp := &loop{given: map[string]map[string]uint64{}, rollouts: map[string]*ro{}, dirty: map[string]bool{}, specs: map[specKey]wire.App{}}
	b, err := c.st.Docs.Get(ctx, stateKey)
	switch {
	case err == nil:
		var p persisted
		if err := json.Unmarshal(b.Data, &p); err != nil {
			return nil, fmt.Errorf("controller state: %v: %w", err, errdefs.ErrDataLoss)
		}
		lp.assign, lp.stateRev, lp.stateData = p.Assignments, b.Rev, b.Data
		if p.Given != nil {
			lp.given = p.Given
		}
	case !errdefs.IsNotFound(err):
		return nil, fmt.Errorf("controller state: %w", err)
	}
	blobs, err := c.st.Rollouts.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("controller: rollouts: %w", err)
	}
	for _, bl := range blobs {
		var r rollout.Rollout
		if err := json.Unmarshal(bl.Data, &r); err != nil {
			return nil, fmt.Errorf("rollout %s: %v: %w", bl.ID, err, errdefs.ErrDataLoss)
		}
		lp.rollouts[bl.ID] = &ro{r: &r, rev: bl.Rev, data: bl.Data}
	}
	for d := range lp.given {
		lp.dirty[d] = true // the publisher skips what it published already
	}
	return lp, nil
}

// run is the loop: a pass at every tick and kick. Nothing else runs on
// it: the API reads what each pass publishes (snapshot) and stores what
// it changes, then kicks.
func (c *Controller) run(ctx context.Context, lp *loop) error {
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	var lead <-chan struct{}
	if c.ld != nil {
		lead = c.ld.Changes()
	}
	c.turn(ctx, &lp)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-c.kick:
		case <-lead:
		}
		c.turn(ctx, &lp)
	}
}

// spec returns revision rev of app (cached: revisions never change).
func (c *Controller) spec(ctx context.Context, lp *loop, app string, rev uint64) (wire.App, error) {
	k := specKey{app, rev}
	if s, ok := lp.specs[k]; ok {
		return s, nil
	}
	r, err := c.st.Apps.Revision(ctx, app, rev)
	if err != nil {
		return wire.App{}, err
	}
	lp.specs[k] = r.Spec
	return r.Spec, nil
}

// told is a set-desired action to confirm to its rollout with the
// generation that carried it.
type told struct {
	r        *ro
	dev, rev string
}

// pass is one turn of the loop: place, start rollouts, feed and step
// them, publish what changed, persist.
func (c *Controller) pass(ctx context.Context, lp *loop) {
	now := c.cfg.Now()
	if err := c.readDevices(ctx, lp, now); err != nil {
		c.log.Error().Err(err).Msg("loop: read devices")
		return
	}
	apps, err := c.st.Apps.List(ctx)
	if err != nil {
		c.log.Error().Err(err).Msg("loop: list apps")
		return
	}
	commands := c.takeCommands(ctx, lp)
	byID := lp.byID
	pdevs, online := placementDevices(byID)
	current, specs, err := c.appSpecs(ctx, lp, apps)
	if err != nil {
		c.log.Error().Err(err).Msg("loop: read app revisions")
		return
	}
	dec, err := placement.Place(placement.Request{Apps: specs, Devices: pdevs, Current: lp.assign, Reserve: c.cfg.Reserve, Grace: c.cfg.Grace, Now: now})
	if err != nil {
		c.log.Error().Err(err).Msg("loop: placement")
		return
	}
	lp.decision, lp.assign = &dec, dec.Assignments

	for _, a := range apps {
		s, _ := c.spec(ctx, lp, a.Name, a.Current)
		if a.Deleting {
			c.removeApp(ctx, lp, a, s, now)
			continue
		}
		c.reconcileApp(ctx, lp, a, s, dec.Assignments[a.Name], now)
	}
	for dev, m := range lp.given {
		for app := range m {
			if _, ok := current[app]; !ok {
				delete(m, app)
				lp.dirty[dev] = true
			}
		}
	}

	// Feed and step every rollout, finished ones too: stragglers that
	// come back still get their version.
	var tolds []told
	for name, r := range lp.rollouts {
		a, ok := current[name]
		if !ok || a.Deleting && r.r.Spec.To != "" {
			continue
		}
		assigned := setOf(dec.Assignments[name])
		if a.Deleting {
			// A removal: its devices are no longer assigned (placement
			// leaves a deleting app out); they are the rollout's own.
			for _, d := range r.r.Devices {
				assigned[d.ID] = true
			}
		}
		versions := c.versions(ctx, lp, name, r.r)
		for _, d := range r.r.Devices {
			dev := byID[d.ID]
			if dev == nil {
				_ = r.r.Observe(d.ID, rollout.Observation{})
				continue
			}
			_ = r.r.Observe(d.ID, observe(dev.Status, name, r.r, versions, lp.given[d.ID][name]))
		}
		for _, act := range r.r.Step(rollout.Input{Now: now, Locations: c.locations(lp, r.r)}) {
			switch act.Kind {
			case rollout.ActSetDesired:
				if !assigned[act.Device] || byID[act.Device] == nil {
					continue
				}
				c.give(lp, act.Device, name, revNum(act.Revision))
				tolds = append(tolds, told{r: r, dev: act.Device, rev: act.Revision})
			default:
				c.rolloutEvent(ctx, name, r.r, act)
			}
		}
	}

	gens := c.publishDirty(ctx, lp)
	for _, t := range tolds {
		if g, ok := gens[t.dev]; ok {
			t.r.r.Published(t.dev, t.rev, g)
		}
	}

	saved := map[string]bool{}
	for name, r := range lp.rollouts {
		if a, ok := current[name]; !ok || a.Deleting && r.r.Spec.To != "" {
			continue
		}
		saved[name] = c.saveRollout(ctx, name, r)
	}
	c.saveState(ctx, lp)
	c.finishDeletes(ctx, lp, apps)
	c.doneCommands(ctx, commands, saved)
	c.publishView(ctx, lp, current)

	if c.met.Fleet != nil {
		phases := map[string]int{}
		for _, p := range []rollout.Phase{rollout.PhaseProgressing, rollout.PhaseSucceeded, rollout.PhaseRollingBack, rollout.PhaseRolledBack, rollout.PhaseAborted} {
			phases[string(p)] = 0
		}
		phases["paused"] = 0
		for _, r := range lp.rollouts {
			phases[phaseOf(r.r)]++
		}
		c.met.Fleet(len(byID), online, phases)
	}
}

func phaseOf(r *rollout.Rollout) string {
	if r.Paused {
		return "paused"
	}
	return string(r.Phase)
}

func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// give sets what device dev is to run of app (0: nothing).
func (c *Controller) give(lp *loop, dev, app string, rev uint64) {
	m := lp.given[dev]
	if rev == 0 {
		if _, ok := m[app]; ok {
			delete(m, app)
			lp.dirty[dev] = true
		}
		return
	}
	if m == nil {
		m = map[string]uint64{}
		lp.given[dev] = m
	}
	if m[app] != rev {
		m[app] = rev
		lp.dirty[dev] = true
	}
}

// reconcileApp starts a rollout when the app's current revision differs
// from what its assigned devices were given, and gives or takes the app
// directly to devices newly assigned or unassigned outside a rollout.
func (c *Controller) reconcileApp(ctx context.Context, lp *loop, a store.App, spec wire.App, ids []string, now time.Time) {
	cur := revStr(a.Current)
	assigned := setOf(ids)
	r := lp.rollouts[a.Name]
	if r == nil || r.r.Spec.To != cur {
		need := false
		for _, id := range ids {
			if lp.given[id][a.Name] != a.Current {
				need = true
				break
			}
		}
		from := c.commonGiven(lp, a.Name)
		if r != nil {
			from = r.r.Target
		}
		if need && from != cur && len(ids) > 0 {
			if nr, err := c.startRollout(lp, a.Name, spec, from, cur, ids, now); err != nil {
				c.log.Error().Err(err).Str("app", a.Name).Msg("rollout refused: devices get the version at once")
			} else {
				r = nr
				c.audit(ctx, "controller", "rollout start", "app "+a.Name, "", fmt.Sprintf("revision %s to %s (version %s) on %d devices", orNone(from), cur, spec.Version, len(ids)))
			}
		}
	}
	target := a.Current
	inRollout := map[string]bool{}
	if r != nil && r.r.Spec.To == cur {
		target = revNum(r.r.Target)
		for _, d := range r.r.Devices {
			inRollout[d.ID] = true
		}
	}
	for _, id := range ids {
		if !inRollout[id] {
			c.give(lp, id, a.Name, target)
		}
	}
	for dev, m := range lp.given {
		if _, ok := m[a.Name]; ok && !assigned[dev] {
			c.give(lp, dev, a.Name, 0)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// commonGiven is the revision of app most devices were given ("" if
// none): where a rollout starts from when the app has none yet.
func (c *Controller) commonGiven(lp *loop, app string) string {
	count := map[uint64]int{}
	for _, m := range lp.given {
		if r, ok := m[app]; ok {
			count[r]++
		}
	}
	best, n := uint64(0), 0
	for r, k := range count {
		if k > n || k == n && r > best {
			best, n = r, k
		}
	}
	return revStr(best)
}

// removeApp takes an app being deleted off its devices: through a rollout
// to "" (the app's waves, pace and windows, so a fleet is not emptied at
// once), or at once when the operator asked for that, nothing runs it or
// no rollout can be made.
func (c *Controller) removeApp(ctx context.Context, lp *loop, a store.App, spec wire.App, now time.Time) {
	r := lp.rollouts[a.Name]
	if r != nil && r.r.Spec.To == "" && r.r.Phase != rollout.PhaseRolledBack && !a.DeleteNow {
		return // underway (or aborted: `app rm --now` or `rollout undo` settles it)
	}
	var ids []string
	for dev, m := range lp.given {
		if _, ok := m[a.Name]; ok {
			ids = append(ids, dev)
		}
	}
	from := c.commonGiven(lp, a.Name)
	if r != nil && r.r.Target != "" {
		from = r.r.Target
	}
	if a.DeleteNow || len(ids) == 0 || from == "" {
		c.removeEverywhere(lp, a.Name)
		return
	}
	slices.Sort(ids)
	if _, err := c.startRollout(lp, a.Name, spec, from, "", ids, now); err != nil {
		c.log.Error().Err(err).Str("app", a.Name).Msg("removal rollout refused: the app is removed at once")
		c.removeEverywhere(lp, a.Name)
		return
	}
	c.audit(ctx, "controller", "rollout start", "app "+a.Name, "", fmt.Sprintf("removal of revision %s from %d devices", from, len(ids)))
}

// startRollout replaces app's rollout with one from revision from to to
// ("": a removal) over the devices ids, in that order, with the spec's
// rollout policy and each device's labels and time zone. The new rollout
// takes over the store record (and its revision) of the one it replaces.
func (c *Controller) startRollout(lp *loop, app string, spec wire.App, from, to string, ids []string, now time.Time) (*ro, error) {
	devices := make([]rollout.Device, len(ids))
	for i, id := range ids {
		devices[i] = rollout.Device{ID: id}
		if d := lp.devs[id]; d != nil {
			devices[i].Labels, devices[i].Zone = d.Labels, factsOf(d).TimeZone
		}
	}
	rs := rollout.Spec{App: app, From: from, To: to, Devices: devices}
	rs.FromWire(spec.Rollout)
	nr, err := rollout.New(rs, now)
	if err != nil {
		return nil, err
	}
	r := &ro{r: nr}
	if prev := lp.rollouts[app]; prev != nil {
		r.rev = prev.rev
	}
	lp.rollouts[app] = r
	return r, nil
}

// removeEverywhere takes app off every device.
func (c *Controller) removeEverywhere(lp *loop, app string) {
	for dev := range lp.given {
		c.give(lp, dev, app, 0)
	}
}

// finishDeletes forgets the apps being deleted once no device is given
// them any more and every device concerned was published to.
func (c *Controller) finishDeletes(ctx context.Context, lp *loop, apps []store.App) {
	for _, a := range apps {
		if !a.Deleting {
			continue
		}
		if r := lp.rollouts[a.Name]; r != nil && r.r.Spec.To == "" && !a.DeleteNow {
			switch r.r.Phase {
			case rollout.PhaseSucceeded:
				// Every online device dropped it; those offline get
				// the document without it when they come back.
				c.removeEverywhere(lp, a.Name)
			case rollout.PhaseRolledBack:
				c.cancelRemoval(ctx, a, r)
				continue
			default:
				continue
			}
		}
		pending := false
		for dev, m := range lp.given {
			if _, ok := m[a.Name]; ok || lp.dirty[dev] {
				pending = true
				break
			}
		}
		if pending {
			continue
		}
		if r := lp.rollouts[a.Name]; r != nil {
			if r.rev != 0 {
				if err := c.st.Rollouts.Delete(ctx, a.Name, r.rev); err != nil && !errdefs.IsNotFound(err) {
					c.log.Error().Err(err).Str("app", a.Name).Msg("delete rollout")
					continue
				}
			}
			delete(lp.rollouts, a.Name)
		}
		if err := c.st.Apps.Delete(ctx, a.Name, a.Rev); err != nil {
			c.log.Error().Err(err).Str("app", a.Name).Msg("delete app")
			continue
		}
		delete(lp.assign, a.Name)
		c.audit(ctx, "controller", "app removed", "app "+a.Name, "", "removed from every device")
	}
}

// cancelRemoval keeps an app whose removal was rolled back (undone, or
// devices failed to drop it): the devices run it again at the revision the
// removal started from, which becomes the app's current one (not the
// revision it had last been applied with, which may be one rolled back),
// and the app is no longer being deleted.
func (c *Controller) cancelRemoval(ctx context.Context, a store.App, r *ro) {
	_, err := store.UpdateApp(ctx, c.st.Apps, a.Name, func(a *store.App) error {
		a.Deleting, a.DeleteNow = false, false
		if from := revNum(r.r.Spec.From); from != 0 {
			a.Current = from
		}
		return nil
	})
	if err != nil {
		c.log.Error().Err(err).Str("app", a.Name).Msg("keep app after its removal was rolled back")
		return
	}
	c.saveRollout(ctx, a.Name, r)
	c.audit(ctx, "controller", "app kept", "app "+a.Name, "", "its removal was rolled back: "+r.r.Reason)
}

// desiredApps are the apps device dev is to run, by name.
func (c *Controller) desiredApps(ctx context.Context, lp *loop, dev string) []wire.App {
	m := lp.given[dev]
	names := slices.Sorted(maps.Keys(m))
	out := make([]wire.App, 0, len(names))
	for _, n := range names {
		s, err := c.spec(ctx, lp, n, m[n])
		if err != nil {
			c.log.Error().Err(err).Str("app", n).Str("device", dev).Msg("desired app revision unreadable: left out")
			continue
		}
		s.Rollout = s.Rollout.ForDevice()
		out = append(out, s)
	}
	if len(m) == 0 {
		delete(lp.given, dev)
	}
	return out
}

// saveRollout stores r if it changed; it reports whether the store holds
// r as it is.
func (c *Controller) saveRollout(ctx context.Context, name string, r *ro) bool {
	data, err := json.Marshal(r.r)
	if err != nil {
		c.log.Error().Err(err).Str("app", name).Msg("encode rollout")
		return false
	}
	if bytes.Equal(data, r.data) {
		return true
	}
	b, err := c.st.Rollouts.Put(ctx, name, data, r.rev)
	if err != nil {
		c.refusedByFence(err)
		c.log.Error().Err(err).Str("app", name).Msg("store rollout")
		return false
	}
	r.rev, r.data = b.Rev, data
	return true
}

func (c *Controller) saveState(ctx context.Context, lp *loop) {
	data, err := json.Marshal(persisted{Assignments: lp.assign, Given: lp.given})
	if err != nil {
		c.log.Error().Err(err).Msg("encode controller state")
		return
	}
	if bytes.Equal(data, lp.stateData) {
		return
	}
	b, err := c.st.Docs.Put(ctx, stateKey, data, lp.stateRev)
	if err != nil {
		c.refusedByFence(err)
		c.log.Error().Err(err).Msg("store controller state")
		return
	}
	lp.stateRev, lp.stateData = b.Rev, data
}

// rolloutEvent records a rollout's event in the audit log.
func (c *Controller) rolloutEvent(ctx context.Context, app string, r *rollout.Rollout, a rollout.Action) {
	action := "rollout " + string(a.Kind)
	if a.Kind == rollout.ActEvent {
		action = "rollout " + string(a.Event)
	}
	detail := a.Reason
	if a.Wave > 0 {
		detail = fmt.Sprintf("wave %d: %s", a.Wave, detail)
	}
	if a.Device != "" {
		detail = "device " + a.Device + ": " + detail
	}
	c.log.Info().Str("app", app).Str("to", r.Spec.To).Str("action", action).Str("detail", detail).Msg("rollout")
	c.audit(ctx, "controller", action, "app "+app, "", detail)
}

// audit appends to the audit log; a failure is logged.
func (c *Controller) audit(ctx context.Context, who, action, target, from, detail string) {
	if _, err := c.st.Audit.Append(context.WithoutCancel(ctx), store.AuditEntry{Time: c.cfg.Now(), Who: who, Action: action, Target: target, From: from, Detail: detail}); err != nil {
		c.log.Error().Err(err).Str("action", action).Msg("audit log append")
	}
}

// versions maps the rollout's From and To revisions to their versions.
func (c *Controller) versions(ctx context.Context, lp *loop, app string, r *rollout.Rollout) map[string]string {
	v := map[string]string{}
	for _, rev := range []string{r.Spec.From, r.Spec.To} {
		if rev == "" {
			continue
		}
		if s, err := c.spec(ctx, lp, app, revNum(rev)); err == nil {
			v[rev] = s.Version
		}
	}
	return v
}

// observe is what the rollout of app learns from a device's status. The
// device reports versions, not revisions: the version is matched to the
// rollout's From and To; if both have the same version, the device runs
// what it was given once it reports having converged on it.
func observe(st store.DeviceStatus, app string, r *rollout.Rollout, versions map[string]string, given uint64) rollout.Observation {
	o := rollout.Observation{Online: st.Presence == wire.Online, Since: st.PresenceAt}
	rep := st.Report
	if rep == nil {
		return o
	}
	o.Generation = rep.ObservedGeneration
	var as *wire.AppStatus
	for i := range rep.Apps {
		if rep.Apps[i].Name == app {
			as = &rep.Apps[i]
		}
	}
	if as == nil {
		return o
	}
	from, to := r.Spec.From, r.Spec.To
	onFrom := from != "" && versions[from] == as.Version
	onTo := versions[to] == as.Version
	switch {
	case onTo && !onFrom:
		o.Revision = to
	case onFrom && !onTo:
		o.Revision = from
	case onTo && onFrom:
		o.Revision = from
		if revStr(given) == to && rep.ObservedGeneration > 0 {
			d := deviceIn(r, rep.DeviceID)
			if d != nil && d.Generation != 0 && rep.ObservedGeneration >= d.Generation {
				o.Revision = to
			}
		}
	default:
		o.Revision = "version " + as.Version
	}
	switch as.State {
	case "running":
		o.Health = rollout.HealthHealthy
	case "verifying", "pulling":
		o.Health = rollout.HealthStarting
	case "degraded":
		o.Health = rollout.HealthCrashLoop
	case "failing", "refused":
		o.Health = rollout.HealthUnhealthy
	case "rolled-back":
		o.Health = rollout.HealthRolledBack
	case "update-deferred":
		o.Deferred = true
	}
	return o
}

func deviceIn(r *rollout.Rollout, id string) *rollout.DeviceStatus {
	for i := range r.Devices {
		if r.Devices[i].ID == id {
			return &r.Devices[i]
		}
	}
	return nil
}

// factsOf is what a device last said of itself: its report's facts, else
// those it enrolled with.
func factsOf(d *store.Device) wire.DeviceFacts {
	if d.Status.Report != nil {
		return d.Status.Report.Device
	}
	return d.Facts
}

// locations are the time zones of r's devices that have maintenance
// windows, loaded from the tz database (embedded in cmd/tender) once each.
// A zone the database does not know stays out: the rollout core holds those
// devices and says why.
func (c *Controller) locations(lp *loop, r *rollout.Rollout) map[string]*time.Location {
	if len(r.Spec.Windows) == 0 {
		return nil
	}
	if lp.zones == nil {
		lp.zones = map[string]*time.Location{}
	}
	out := map[string]*time.Location{}
	for _, d := range r.Devices {
		if d.Zone == "" {
			continue
		}
		loc, ok := lp.zones[d.Zone]
		if !ok {
			var err error
			if loc, err = time.LoadLocation(d.Zone); err != nil {
				c.log.Warn().Err(err).Str("device", d.ID).Str("zone", d.Zone).Msg("device time zone unknown: its maintenance windows never open")
				loc = nil
			}
			lp.zones[d.Zone] = loc
		}
		if loc != nil {
			out[d.Zone] = loc
		}
	}
	return out
}

// placementDevices are the devices as placement sees them, and how many
// are online.
func placementDevices(byID map[string]*store.Device) ([]placement.Device, int) {
	pdevs := make([]placement.Device, 0, len(byID))
	online := 0
	for _, d := range byID {
		on := d.Status.Presence == wire.Online
		if on {
			online++
		}
		pdevs = append(pdevs, placement.Device{ID: d.ID, Labels: d.Labels, Online: on, LastSeen: d.Status.LastSeen}.WithFacts(factsOf(d)))
	}
	return pdevs, online
}

// appSpecs are the apps by name and the current specs of those not being
// deleted, which placement places.
func (c *Controller) appSpecs(ctx context.Context, lp *loop, apps []store.App) (map[string]store.App, []wire.App, error) {
	current := make(map[string]store.App, len(apps))
	var specs []wire.App
	for _, a := range apps {
		current[a.Name] = a
		if a.Deleting {
			continue
		}
		s, err := c.spec(ctx, lp, a.Name, a.Current)
		if err != nil {
			return nil, nil, fmt.Errorf("app %s revision %d: %w", a.Name, a.Current, err)
		}
		specs = append(specs, s)
	}
	return current, specs, nil
}
