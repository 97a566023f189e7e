// Package reconcile decides what the agent must do next. It is pure: Plan
// takes a snapshot (desired apps, observed containers, persisted progress,
// the time) and returns actions as data, the progress to persist, events
// and statuses. It performs no I/O and reads no clock.
//
// Per app, with D the desired version, C the confirmed one and T the one
// being verified (all in Progress):
//
//	D == C                      run D; restart per policy          → running | degraded
//	D == T                      run D; healthy for healthyFor      → C = D, running
//	                            crash-loop, exit under "never",
//	                            or not confirmed by the deadline  → rolled-back (run C)
//	                            (no C: keep restarting)            → failing
//	D rolled back before        run C                              → rolled-back
//	D new, images missing       pull; keep running T or C          → pulling
//	D new, lock held            keep running T or C                → update-deferred
//	D new, images present       remove old containers, start D;
//	                            T = D since now                    → verifying
//
// The rollout deadline is TargetSince + healthyFor + the longest health
// startPeriod + Policy.RolloutGrace. Restarts back off from BackoffBase
// doubling to BackoffCap and never stop; a run of ResetAfter resets them.
// Admission counts the requests (memory, cpu) of desired apps against
// Capacity minus the reserve; apps that already run are counted first.
package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/sync/wire"
)

// Plan decides the next actions. It is deterministic for the same Input.
func Plan(in Input) Decision {
	pl := &planner{
		in:       in,
		pol:      in.Policy.withDefaults(),
		obs:      map[string]map[string]Observed{},
		pulled:   map[string]bool{},
		keep:     map[string]bool{},
		progress: map[string]Progress{},
	}
	for _, o := range in.Observed {
		app, _, _, ok := ParseName(o.Name)
		if !ok {
			continue
		}
		if pl.obs[app] == nil {
			pl.obs[app] = map[string]Observed{}
		}
		pl.obs[app][o.Name] = o
	}

	desired := map[string]bool{}
	for _, d := range in.Desired {
		desired[d.Name] = true
	}
	// Apps no longer desired: remove their containers, forget them.
	var gone []string
	for app := range pl.obs {
		if !desired[app] {
			gone = append(gone, app)
		}
	}
	for app := range in.Progress {
		if !desired[app] && pl.obs[app] == nil {
			gone = append(gone, app)
		}
	}
	sort.Strings(gone)
	for _, app := range gone {
		for _, name := range sortedNames(pl.obs[app]) {
			pl.act(Action{Kind: KindRemove, App: app, Name: name, Reason: fmt.Sprintf("app %s is no longer desired", app)})
		}
		if _, had := in.Progress[app]; had {
			pl.events = append(pl.events, Event{App: app, Kind: PhaseRemoved, Reason: fmt.Sprintf("app %s is no longer desired", app)})
		}
	}

	// Admission order: apps that already run (or are being rolled out)
	// first, then new ones, each in desired order.
	order := make([]int, 0, len(in.Desired))
	for pass := 0; pass < 2; pass++ {
		for i, d := range in.Desired {
			p := in.Progress[d.Name]
			established := p.Confirmed != nil || p.Target != nil || len(pl.obs[d.Name]) > 0
			if established == (pass == 0) {
				order = append(order, i)
			}
		}
	}
	statuses := make([]AppStatus, len(in.Desired))
	for _, i := range order {
		statuses[i] = pl.app(in.Desired[i])
	}

	keep := make([]string, 0, len(pl.keep))
	for img := range pl.keep {
		keep = append(keep, img)
	}
	sort.Strings(keep)
	return Decision{
		Actions:    pl.actions,
		Progress:   pl.progress,
		Events:     pl.events,
		Apps:       statuses,
		KeepImages: keep,
		Wake:       pl.wake,
	}
}

type planner struct {
	in       Input
	pol      Policy
	obs      map[string]map[string]Observed // app → runtime name → container
	pulled   map[string]bool
	keep     map[string]bool
	progress map[string]Progress
	actions  []Action
	events   []Event
	wake     time.Time
	usedMem  int64
	usedCPU  int64
}

func (pl *planner) act(a Action) { pl.actions = append(pl.actions, a) }

func (pl *planner) wakeAt(t time.Time) {
	if !t.After(pl.in.Now) {
		t = pl.in.Now
	}
	if pl.wake.IsZero() || t.Before(pl.wake) {
		pl.wake = t
	}
}

func (pl *planner) keepImages(a *wire.App) {
	if a == nil {
		return
	}
	for _, c := range a.Containers {
		pl.keep[c.Image] = true
	}
}

// admit checks the app's requests against what is left and, if they fit,
// counts them. It returns the refusal message otherwise.
func (pl *planner) admit(a wire.App) string {
	if why := pl.in.Refused[a.Name]; why != "" {
		return why
	}
	mem, cpu := a.Requests()
	c := pl.in.Capacity
	if c.Memory > 0 && mem > 0 {
		free := c.Memory - c.ReserveMemory - pl.usedMem
		if mem > free {
			return fmt.Sprintf("app %s needs %s memory, %s free of %s (reserve %s)",
				a.Name, quantity.FormatBytes(mem), quantity.FormatBytes(max(free, 0)), quantity.FormatBytes(c.Memory), quantity.FormatBytes(c.ReserveMemory))
		}
	}
	if c.MilliCPU > 0 && cpu > 0 {
		free := c.MilliCPU - c.ReserveMilliCPU - pl.usedCPU
		if cpu > free {
			return fmt.Sprintf("app %s needs %dm cpu, %dm free of %dm (reserve %dm)",
				a.Name, cpu, max(free, 0), c.MilliCPU, c.ReserveMilliCPU)
		}
	}
	pl.usedMem += mem
	pl.usedCPU += cpu
	return ""
}

func (pl *planner) count(a *wire.App) {
	mem, cpu := a.Requests()
	pl.usedMem += mem
	pl.usedCPU += cpu
}

// app plans one desired app and returns its status.
func (pl *planner) app(d wire.App) AppStatus {
	now := pl.in.Now
	p := cloneProgress(pl.in.Progress[d.Name])
	dRev := d.Revision()
	st := AppStatus{Name: d.Name, DesiredVersion: d.Version, DesiredRevision: dRev}
	if p.RolledBack != nil && p.RolledBack.Revision != dRev {
		p.RolledBack = nil // the desired version changed: a new attempt
	}
	cur := p.Target
	if cur == nil {
		cur = p.Confirmed
	}
	pl.keepImages(p.Confirmed)
	pl.keepImages(p.Target)

	var phase Phase
	var msg string
	finish := func() AppStatus {
		if phase != p.Phase {
			pl.events = append(pl.events, Event{App: d.Name, Kind: phase, Reason: msg})
			p.Phase = phase
		}
		st.Phase, st.Message = phase, msg
		pl.progress[d.Name] = p
		return st
	}

	// Admission. A version that does not fit is refused; the running one,
	// if any, keeps running.
	if refusal := pl.admit(d); refusal != "" {
		phase, msg = PhaseRefused, refusal
		if cur == nil {
			pl.removeAll(d.Name, refusal)
			return finish()
		}
		pl.count(cur)
		if cur.Revision() != dRev {
			msg = fmt.Sprintf("update to version %s refused: %s", d.Version, refusal)
		}
		r := pl.run(&p, cur, "")
		st.Version, st.Revision, st.Containers = cur.Version, cur.Revision(), r.containers
		return finish()
	}
	pl.keepImages(&d)

	switch {
	case p.RolledBack != nil && p.Confirmed != nil:
		p.Target = nil
		r := pl.run(&p, p.Confirmed, "")
		phase = PhaseRolledBack
		msg = fmt.Sprintf("version %s rolled back to %s: %s", p.RolledBack.Version, p.Confirmed.Version, p.RolledBack.Reason)
		st.Version, st.Revision, st.Containers = p.Confirmed.Version, p.Confirmed.Revision(), r.containers

	case p.Confirmed != nil && p.Confirmed.Revision() == dRev:
		p.Confirmed, p.Target = &d, nil
		r := pl.run(&p, &d, "")
		phase, msg = PhaseRunning, ""
		if r.trouble != "" {
			phase, msg = PhaseDegraded, r.trouble
		}
		st.Version, st.Revision, st.Containers = d.Version, dRev, r.containers

	case p.Target != nil && p.Target.Revision() == dRev:
		p.Target = &d
		phase, msg = pl.verify(&p, &d, &st)

	default: // a version not yet running here
		missing := pl.missingImages(&d)
		locked := pl.in.Locked[d.Name] && !d.UpdateOverride
		switch {
		case len(missing) > 0:
			for _, img := range missing {
				pl.pull(d.Name, img, fmt.Sprintf("version %s needs it", d.Version))
			}
			phase, msg = PhasePulling, fmt.Sprintf("pulling %s for version %s", strings.Join(missing, ", "), d.Version)
		case cur != nil && locked:
			phase, msg = PhaseDeferred, fmt.Sprintf("update to version %s waits for the update lock of app %s", d.Version, d.Name)
		default:
			p.Target, p.TargetSince, p.Restarts = &d, now, nil
			phase, msg = pl.verify(&p, &d, &st)
			return finish()
		}
		if cur != nil {
			r := pl.run(&p, cur, "")
			st.Version, st.Revision, st.Containers = cur.Version, cur.Revision(), r.containers
		}
	}
	return finish()
}

// verify runs the version being rolled out and confirms it or rolls it back.
func (pl *planner) verify(p *Progress, d *wire.App, st *AppStatus) (Phase, string) {
	now := pl.in.Now
	from := "nothing"
	if p.Confirmed != nil {
		from = "version " + p.Confirmed.Version
	}
	r := pl.run(p, d, fmt.Sprintf("update from %s to version %s", from, d.Version))
	st.Version, st.Revision, st.Containers = d.Version, d.Revision(), r.containers

	healthyFor := d.HealthyFor()
	deadline := p.TargetSince.Add(healthyFor + maxStartPeriod(d) + pl.pol.RolloutGrace)
	var reason string
	switch {
	case r.fatal != "":
		reason = r.fatal
	case r.ok && !now.Before(r.okSince.Add(healthyFor)):
		p.Confirmed, p.Target, p.TargetSince = d, nil, time.Time{}
		return PhaseRunning, fmt.Sprintf("version %s confirmed: healthy for %s", d.Version, healthyFor)
	case !now.Before(deadline):
		if r.ok {
			reason = fmt.Sprintf("healthy only since %s, not for %s within %s", r.okSince.UTC().Format(time.RFC3339), healthyFor, deadline.Sub(p.TargetSince))
		} else {
			reason = fmt.Sprintf("not healthy within %s: %s", deadline.Sub(p.TargetSince), r.notOK)
		}
	default:
		if r.ok {
			pl.wakeAt(r.okSince.Add(healthyFor))
		}
		pl.wakeAt(deadline)
		return PhaseVerifying, fmt.Sprintf("version %s must stay healthy for %s", d.Version, healthyFor)
	}
	if p.Confirmed == nil {
		return PhaseFailing, fmt.Sprintf("version %s: %s; no previous version to roll back to", d.Version, reason)
	}
	// Roll back: forget the new version's containers and run the confirmed one.
	p.RolledBack = &RolledBack{Revision: d.Revision(), Version: d.Version, Reason: reason, At: now}
	p.Target, p.TargetSince, p.Restarts = nil, time.Time{}, nil
	back := pl.run(p, p.Confirmed, fmt.Sprintf("rollback from version %s to %s", d.Version, p.Confirmed.Version))
	st.Version, st.Revision, st.Containers = p.Confirmed.Version, p.Confirmed.Revision(), back.containers
	return PhaseRolledBack, fmt.Sprintf("version %s rolled back to %s: %s", d.Version, p.Confirmed.Version, reason)
}

func maxStartPeriod(a *wire.App) time.Duration {
	var m time.Duration
	for _, c := range a.Containers {
		if c.Health != nil && c.Health.StartPeriod.Duration > m {
			m = c.Health.StartPeriod.Duration
		}
	}
	return m
}

func (pl *planner) missingImages(a *wire.App) []string {
	var out []string
	for _, c := range a.Containers {
		if !pl.in.Images[c.Image] && !slices.Contains(out, c.Image) {
			out = append(out, c.Image)
		}
	}
	return out
}

func (pl *planner) pull(app, img, why string) {
	if pl.pulled[img] {
		return
	}
	pl.pulled[img] = true
	pl.act(Action{Kind: KindPull, App: app, Image: img, Reason: fmt.Sprintf("image %s is not in the local store: %s", img, why)})
}

func (pl *planner) removeAll(app, why string) {
	for _, name := range sortedNames(pl.obs[app]) {
		pl.act(Action{Kind: KindRemove, App: app, Name: name, Reason: why})
	}
}

// runResult sums up the containers of one revision.
type runResult struct {
	containers []ContainerStatus
	ok         bool      // every container healthy (or running, without a check) or completed
	okSince    time.Time // since when all are
	notOK      string    // which are not, for messages
	fatal      string    // a container that cannot become healthy by itself, or crash-loops
	trouble    string    // crash-looping or exited containers, for PhaseDegraded
}

// run makes the containers of revision a run: removes the app's other
// containers, starts missing ones, restarts failed ones per policy.
// why, if set, is the reason given for removals and first starts.
func (pl *planner) run(p *Progress, a *wire.App, why string) runResult {
	rev := a.Revision()
	want := map[string]bool{}
	for _, c := range a.Containers {
		want[ContainerName(a.Name, c.Name, rev)] = true
	}
	pl.removeOthers(p, a, want, why)

	res := runResult{ok: true}
	var notOK, fatal, trouble []string
	for i := range a.Containers {
		c := &a.Containers[i]
		cr := pl.container(p, a, c, rev, why)
		if cr.fatal != "" {
			fatal = append(fatal, cr.fatal)
		}
		if cr.trouble != "" {
			trouble = append(trouble, cr.trouble)
		}
		cs := cr.status
		if cr.okSince.IsZero() {
			res.ok = false
			d := string(cs.State)
			if cs.Message != "" {
				d += ": " + cs.Message
			}
			notOK = append(notOK, fmt.Sprintf("container %s %s", c.Name, d))
		} else if cr.okSince.After(res.okSince) {
			res.okSince = cr.okSince
		}
		res.containers = append(res.containers, cs)
	}
	res.notOK = strings.Join(notOK, "; ")
	res.fatal = strings.Join(fatal, "; ")
	res.trouble = strings.Join(trouble, "; ")
	if !res.ok {
		res.okSince = time.Time{}
	}
	return res
}

// removeOthers removes the app's containers that are not in want, and
// forgets their restart logs.
func (pl *planner) removeOthers(p *Progress, a *wire.App, want map[string]bool, why string) {
	for _, name := range sortedNames(pl.obs[a.Name]) {
		if !want[name] {
			reason := why
			if reason == "" {
				reason = fmt.Sprintf("not part of version %s of app %s", a.Version, a.Name)
			}
			pl.act(Action{Kind: KindRemove, App: a.Name, Name: name, Reason: reason})
		}
	}
	for name := range p.Restarts {
		if !want[name] {
			delete(p.Restarts, name)
		}
	}
}

// containerResult is one container's part of a runResult.
type containerResult struct {
	status  ContainerStatus
	okSince time.Time // zero unless running healthy (or without a check) or completed
	fatal   string    // it cannot become healthy by itself, or crash-loops
	trouble string    // crash-looping or exited, for PhaseDegraded
}

// container plans one container of revision rev of a: start it if it is
// missing, leave it if it runs, restart it per policy if it failed.
func (pl *planner) container(p *Progress, a *wire.App, c *wire.Container, rev, why string) containerResult {
	name := ContainerName(a.Name, c.Name, rev)
	var r containerResult
	cs := &r.status
	*cs = ContainerStatus{Name: c.Name, ID: name}
	o, found := pl.obs[a.Name][name]
	cs.Restarts = p.Restarts[name].Streak

	// failedAt and failure are set when the container has failed and the
	// policy restarts it.
	var failedAt time.Time
	var failure string
	switch {
	case found && o.RestartRequested && o.Status != StatusCreated:
		// An operator's restart: now, and not a failure.
		pl.act(Action{Kind: KindRestart, App: a.Name, Name: name, Revision: rev, Spec: c,
			Reason: fmt.Sprintf("container %s: restart requested", c.Name)})
		cs.State = StateStarting

	case !found || o.Status == StatusCreated:
		cs.State = StateStarting
		if !pl.in.Images[c.Image] {
			pl.pull(a.Name, c.Image, fmt.Sprintf("container %s of version %s", c.Name, a.Version))
			cs.Message = "waiting for image " + c.Image
			break
		}
		reason := why
		if reason == "" {
			reason = fmt.Sprintf("container %s of version %s is not running", c.Name, a.Version)
		}
		pl.act(Action{Kind: KindStart, App: a.Name, Name: name, Revision: rev, Spec: c, Reason: reason})

	case o.Status == StatusRunning:
		switch {
		case c.Health == nil:
			cs.State, r.okSince = StateRunning, o.StartedAt
		case o.Health == HealthHealthy:
			cs.State, r.okSince = StateRunning, o.HealthSince
		case o.Health == HealthUnhealthy:
			cs.State = StateUnhealthy
			if c.RestartPolicy() != wire.RestartNever {
				failedAt, failure = o.HealthSince, "unhealthy"
			}
		default:
			cs.State = StateStarting
		}

	default: // exited
		failed := o.ExitCode != 0 || o.OOMKilled
		how := fmt.Sprintf("exited with code %d", o.ExitCode)
		if o.OOMKilled {
			how += " (OOM-killed)"
		}
		switch {
		case c.RestartPolicy() == wire.RestartNever && failed:
			cs.State, cs.Message = StateExited, how
			r.fatal = fmt.Sprintf("container %s %s and its restart policy is never", c.Name, how)
			r.trouble = fmt.Sprintf("container %s %s", c.Name, how)
		case c.RestartPolicy() != wire.RestartAlways && !failed:
			cs.State, r.okSince = StateCompleted, o.FinishedAt
		default:
			failedAt, failure = o.FinishedAt, how
		}
	}

	log := p.Restarts[name]
	if !failedAt.IsZero() || failure != "" {
		log = pl.restart(p, a, c, name, rev, o, failedAt, failure, cs)
	}
	if log.Streak >= pl.pol.CrashLoopRestarts {
		cs.State = StateCrashLoop
		msg := fmt.Sprintf("container %s is crash-looping: %d restarts without a run of %s", c.Name, log.Streak, pl.pol.ResetAfter)
		if cs.Message != "" {
			msg += ", last " + cs.Message
		}
		r.fatal = joinNonEmpty(r.fatal, msg)
		r.trouble = joinNonEmpty(r.trouble, msg)
	}
	return r
}

// restart decides on a failed container: restart it now if its backoff
// has passed (counting the restart), else wait. It updates cs and the
// container's restart log in p, and returns the log.
func (pl *planner) restart(p *Progress, a *wire.App, c *wire.Container, name, rev string, o Observed, failedAt time.Time, failure string, cs *ContainerStatus) RestartLog {
	now := pl.in.Now
	log := p.Restarts[name]
	cs.Message = failure
	streak := log.Streak
	if !o.StartedAt.IsZero() && failedAt.Sub(o.StartedAt) >= pl.pol.ResetAfter {
		streak = 0
	}
	due := failedAt.Add(pl.backoff(streak))
	if !now.Before(due) {
		pl.act(Action{Kind: KindRestart, App: a.Name, Name: name, Revision: rev, Spec: c,
			Reason: fmt.Sprintf("container %s %s; restart %d after %s", c.Name, failure, streak+1, pl.backoff(streak))})
		log.Streak = streak + 1
		log.Times = append(pl.recent(log.Times), now)
		if n := 2 * pl.pol.CrashLoopRestarts; len(log.Times) > n {
			log.Times = log.Times[len(log.Times)-n:]
		}
		cs.State = StateStarting
		cs.NextRestart = time.Time{}
	} else {
		cs.State, cs.NextRestart = StateBackoff, due
		pl.wakeAt(due)
	}
	cs.Restarts = log.Streak
	if p.Restarts == nil {
		p.Restarts = map[string]RestartLog{}
	}
	p.Restarts[name] = log
	return log
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// backoff is the delay before restart number streak+1.
func (pl *planner) backoff(streak int) time.Duration {
	d := pl.pol.BackoffBase
	for i := 0; i < streak && d < pl.pol.BackoffCap; i++ {
		d *= 2
	}
	return min(d, pl.pol.BackoffCap)
}

// recent keeps the times within the crash-loop window.
func (pl *planner) recent(ts []time.Time) []time.Time {
	cut := pl.in.Now.Add(-pl.pol.CrashLoopWindow)
	var out []time.Time
	for _, t := range ts {
		if t.After(cut) {
			out = append(out, t)
		}
	}
	return out
}

func sortedNames(m map[string]Observed) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// cloneProgress copies what Plan modifies so the Input stays untouched.
func cloneProgress(p Progress) Progress {
	if p.Restarts != nil {
		m := make(map[string]RestartLog, len(p.Restarts))
		for k, v := range p.Restarts {
			v.Times = slices.Clone(v.Times)
			m[k] = v
		}
		p.Restarts = m
	}
	if p.RolledBack != nil {
		rb := *p.RolledBack
		p.RolledBack = &rb
	}
	return p
}
