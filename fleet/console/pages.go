package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// overview is the fleet at a glance: counts, groups by a label, versions
// per app and one page of devices.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	f, err := parseFilter(q.Get("q"), q.Get("status"))
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	s, err := c.fleet.get(r.Context())
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	by := q.Get("by")
	if !q.Has("by") {
		by = defaultGroupBy(s)
	}
	page, _ := strconv.Atoi(q.Get("page"))
	o := summarize(s, f, by, page, c.cfg.PageSize)
	o.Age = c.cfg.Now().Sub(s.at)
	data := map[string]any{"Title": "Fleet", "O": o, "Self": r.URL.Path + "?" + q.Encode()}
	if isFragment(r) {
		c.render(w, http.StatusOK, "overview#live", v, data)
		return
	}
	c.render(w, http.StatusOK, "overview", v, data)
}

// pageURL is the overview's URL for another page, the filter kept.
func pageURL(f filter, by string, page int) string {
	q := url.Values{}
	if f.Query != "" {
		q.Set("q", f.Query)
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	q.Set("by", by)
	q.Set("page", strconv.Itoa(page))
	return "/ui/?" + q.Encode()
}

// device is one device's page; logs, when given, is a log tail just
// fetched (or why not).
func (c *Console) device(w http.ResponseWriter, r *http.Request, v *viewer) {
	c.devicePage(w, r, v, http.StatusOK, nil)
}

type logTail struct {
	App, Container string
	Lines          int
	Output         string
	Error          string
}

func (c *Console) devicePage(w http.ResponseWriter, r *http.Request, v *viewer, code int, logs *logTail) {
	d, err := c.cfg.Controller.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	slices.Reverse(d.Events) // newest first, as on the events page
	data := map[string]any{"Title": "Device " + d.ID, "D": d, "Logs": logs, "Msg": r.URL.Query().Get("msg")}
	if logs == nil {
		data["Logs"] = &logTail{Lines: 100}
	}
	c.render(w, code, "device", v, data)
}

// labelDevice sets ("k=v, k2=v2") and removes ("k3, k4") labels.
func (c *Console) labelDevice(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	set, err := api.ParseSelector(strings.ReplaceAll(strings.TrimSpace(r.PostFormValue("set")), " ", ","))
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	var remove []string
	for _, k := range strings.FieldsFunc(r.PostFormValue("remove"), func(r rune) bool { return r == ',' || r == ' ' }) {
		remove = append(remove, k)
	}
	remove = append(remove, r.PostForm["drop"]...)
	if len(set) == 0 && len(remove) == 0 {
		c.fail(w, r, v, fmt.Errorf("label device %s: no label to set or remove: %w", id, errdefs.ErrInvalidArgument))
		return
	}
	if _, err := c.cfg.Controller.LabelDevice(r.Context(), v.caller, id, set, remove); err != nil {
		c.fail(w, r, v, err)
		return
	}
	http.Redirect(w, r, "/ui/devices/"+url.PathEscape(id)+"?msg=labels+saved", http.StatusSeeOther)
}

// deviceLogs asks the device for a log tail and shows the device page with
// it, or with why not (offline, no answer).
func (c *Console) deviceLogs(w http.ResponseWriter, r *http.Request, v *viewer) {
	lt := &logTail{App: r.PostFormValue("app"), Container: r.PostFormValue("container"), Lines: api.DefaultLogLines}
	if n, err := strconv.Atoi(r.PostFormValue("lines")); err == nil {
		lt.Lines = n
	}
	switch {
	case lt.App == "":
		lt.Error = "Name an app."
	case lt.Lines < 1 || lt.Lines > api.MaxLogLines:
		lt.Error = fmt.Sprintf("Lines: between 1 and %d.", api.MaxLogLines)
	default:
		res, err := c.cfg.Controller.Logs(r.Context(), v.caller, r.PathValue("id"), lt.App, lt.Container, lt.Lines)
		switch {
		case errdefs.IsUnavailable(err):
			lt.Error = "The device cannot be asked now: " + err.Error() + ". Logs are fetched from the device itself, which must be online."
		case err != nil:
			lt.Error = err.Error()
		case !res.OK:
			lt.Error = "The device refused: " + res.Error
		default:
			lt.Output = res.Output
			if lt.Output == "" {
				lt.Output = "(no output)"
			}
		}
	}
	c.devicePage(w, r, v, http.StatusOK, lt)
}

// confirmRestart says what a restart does before it is done.
func (c *Console) confirmRestart(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, app := r.PathValue("id"), r.URL.Query().Get("app")
	if app == "" {
		c.fail(w, r, v, fmt.Errorf("restart on device %s: no app given: %w", id, errdefs.ErrInvalidArgument))
		return
	}
	c.render(w, http.StatusOK, "confirm", v, map[string]any{
		"Title":  "Restart " + app + " on " + id,
		"What":   fmt.Sprintf("Restart every container of app %s on device %s. Its containers stop and start again at once; the app is unavailable meanwhile. The device must be online.", app, id),
		"Action": "/ui/devices/" + url.PathEscape(id) + "/restart",
		"Fields": map[string]string{"app": app},
		"Button": "Restart " + app,
		"Back":   "/ui/devices/" + url.PathEscape(id),
	})
}

func (c *Console) restart(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, app := r.PathValue("id"), r.PostFormValue("app")
	if app == "" {
		c.fail(w, r, v, fmt.Errorf("restart on device %s: no app given: %w", id, errdefs.ErrInvalidArgument))
		return
	}
	res, err := c.cfg.Controller.Restart(r.Context(), v.caller, id, app, "")
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	msg := "restart of " + app + " done"
	if !res.OK {
		msg = "the device refused the restart of " + app + ": " + res.Error
	}
	http.Redirect(w, r, "/ui/devices/"+url.PathEscape(id)+"?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

// apps lists the apps.
func (c *Console) apps(w http.ResponseWriter, r *http.Request, v *viewer) {
	apps, err := c.cfg.Controller.Apps(r.Context())
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	c.render(w, http.StatusOK, "apps", v, map[string]any{"Title": "Apps", "Apps": apps})
}

// maxExplain bounds the devices the explain view lists.
const maxExplain = 200

// app is an app's page: its revisions and a diff of two, placement's
// explanation and its rollout (live).
func (c *Console) app(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx, name, q := r.Context(), r.PathValue("app"), r.URL.Query()
	a, err := c.cfg.Controller.App(ctx, name)
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	hist, err := c.cfg.Controller.AppHistory(ctx, name)
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	slices.Reverse(hist) // newest first
	data := map[string]any{"Title": "App " + name, "A": a, "History": hist, "Msg": q.Get("msg")}

	// The diff of two revisions (default: the previous one and the
	// current one).
	from, to := uint64(0), a.Revision
	if len(hist) > 1 {
		for _, h := range hist {
			if h.Revision < a.Revision {
				from = h.Revision
				break
			}
		}
	}
	if n, err := strconv.ParseUint(q.Get("from"), 10, 64); err == nil {
		from = n
	}
	if n, err := strconv.ParseUint(q.Get("to"), 10, 64); err == nil {
		to = n
	}
	data["From"], data["To"] = from, to
	if from != 0 && from != to {
		var fa, ta []string
		for _, h := range hist {
			if h.Revision == from {
				fa = specLines(h.Spec)
			}
			if h.Revision == to {
				ta = specLines(h.Spec)
			}
		}
		if fa == nil || ta == nil {
			data["DiffError"] = fmt.Sprintf("app %s has no revision %d or %d", name, from, to)
		} else {
			data["Diff"] = diffLines(fa, ta)
		}
	}

	// Placement's explanation: one device, or the first maxExplain.
	dev := strings.TrimSpace(q.Get("device"))
	ex, err := c.cfg.Controller.Explain(ctx, name, dev)
	if err != nil {
		data["ExplainError"] = err.Error()
	} else {
		chosen := 0
		for _, d := range ex.Devices {
			if d.Chosen {
				chosen++
			}
		}
		data["Chosen"], data["Considered"], data["ExplainDevice"] = chosen, len(ex.Devices), dev
		if len(ex.Devices) > maxExplain {
			data["ExplainMore"] = len(ex.Devices) - maxExplain
			ex.Devices = ex.Devices[:maxExplain]
		}
		data["Explain"] = ex
	}
	c.addRollout(r, data, name)
	c.render(w, http.StatusOK, "app", v, data)
}

// addRollout puts the app's summary and its rollout (or that it has
// none) into data: the live part of the app's page.
func (c *Console) addRollout(r *http.Request, data map[string]any, app string) {
	if a, err := c.cfg.Controller.App(r.Context(), app); err == nil {
		data["A"] = a
	}
	ro, err := c.cfg.Controller.Rollout(r.Context(), app)
	switch {
	case errdefs.IsNotFound(err):
		data["NoRollout"] = true
	case err != nil:
		data["RolloutError"] = err.Error()
	default:
		data["R"] = ro
		data["Commands"] = commandsFor(ro.Phase)
	}
	data["App"] = app
}

// rolloutFragment is the rollout part of the app page, for console.js.
func (c *Console) rolloutFragment(w http.ResponseWriter, r *http.Request, v *viewer) {
	data := map[string]any{}
	c.addRollout(r, data, r.PathValue("app"))
	c.render(w, http.StatusOK, "app#rollout", v, data)
}

// commandsFor are the rollout commands that apply in a phase.
func commandsFor(phase string) []string {
	switch phase {
	case "progressing":
		return []string{"pause", "abort", "undo"}
	case "rolling-back":
		return []string{"pause", "abort"}
	case "paused":
		return []string{"resume", "abort", "undo"}
	case "succeeded", "aborted":
		return []string{"undo"}
	}
	return nil
}

// what says what a rollout command will do, for the confirmation page.
func what(cmd string, ro api.RolloutView) string {
	to, from := ro.To, ro.From
	switch cmd {
	case "pause":
		return fmt.Sprintf("Pause the rollout of %s to %s: no further device is sent a new document until it is resumed. Devices already changed keep what they have.", ro.App, to)
	case "resume":
		return fmt.Sprintf("Resume the rollout of %s to %s: waves go on where they stopped.", ro.App, to)
	case "abort":
		return fmt.Sprintf("Abort the rollout of %s to %s: it stops for good. Devices already changed keep %s, the others keep %s; nothing is rolled back.", ro.App, to, to, from)
	case "undo":
		if from == "" {
			return fmt.Sprintf("Undo the rollout of %s to %s: every device it reached is sent the state from before (the app is removed from them), wave by wave.", ro.App, to)
		}
		return fmt.Sprintf("Undo the rollout of %s to %s: every device it reached goes back to %s, wave by wave.", ro.App, to, from)
	}
	return ""
}

// confirmRollout is the step before a rollout command or applying an
// older revision: it says what will happen.
func (c *Console) confirmRollout(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx, app, q := r.Context(), r.PathValue("app"), r.URL.Query()
	cmd := q.Get("do")
	data := map[string]any{"Action": "/ui/apps/" + url.PathEscape(app) + "/rollout", "Back": "/ui/apps/" + url.PathEscape(app)}
	switch {
	case slices.Contains(api.RolloutCommands, cmd):
		ro, err := c.cfg.Controller.Rollout(ctx, app)
		if err != nil {
			c.fail(w, r, v, err)
			return
		}
		data["Title"] = strings.ToUpper(cmd[:1]) + cmd[1:] + " the rollout of " + app
		data["What"] = what(cmd, ro)
		data["Fields"] = map[string]string{"do": cmd}
		data["Button"] = strings.ToUpper(cmd[:1]) + cmd[1:]
	case cmd == "apply":
		rev, err := strconv.ParseUint(q.Get("revision"), 10, 64)
		if err != nil {
			c.fail(w, r, v, fmt.Errorf("apply a revision of %s: revision %q is not a number: %w", app, q.Get("revision"), errdefs.ErrInvalidArgument))
			return
		}
		a, err := c.cfg.Controller.App(ctx, app)
		if err != nil {
			c.fail(w, r, v, err)
			return
		}
		spec, err := revisionSpec(r, c.cfg.Controller, app, rev)
		if err != nil {
			c.fail(w, r, v, err)
			return
		}
		data["Title"] = fmt.Sprintf("Apply revision %d of %s", rev, app)
		data["What"] = fmt.Sprintf("Apply revision %d (version %s) of %s again: it becomes a new revision and rolls out to the devices placement gives the app, in the waves of its rollout policy, replacing revision %d (version %s).",
			rev, spec.Version, app, a.Revision, a.Version)
		data["Fields"] = map[string]string{"do": "apply", "revision": strconv.FormatUint(rev, 10)}
		data["Button"] = fmt.Sprintf("Roll out revision %d", rev)
	default:
		c.fail(w, r, v, fmt.Errorf("rollout action %q: want one of %s or apply: %w", cmd, strings.Join(api.RolloutCommands, ", "), errdefs.ErrInvalidArgument))
		return
	}
	c.render(w, http.StatusOK, "confirm", v, data)
}

// revisionSpec is one stored revision of an app.
func revisionSpec(r *http.Request, ctrl api.Controller, app string, rev uint64) (api.AppRevisionView, error) {
	hist, err := ctrl.AppHistory(r.Context(), app)
	if err != nil {
		return api.AppRevisionView{}, err
	}
	for _, h := range hist {
		if h.Revision == rev {
			return h, nil
		}
	}
	return api.AppRevisionView{}, fmt.Errorf("app %s has no revision %d: %w", app, rev, errdefs.ErrNotFound)
}

// rolloutAction runs a confirmed rollout command, or applies an older
// revision's spec again (images by digest, as stored).
func (c *Console) rolloutAction(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx, app := r.Context(), r.PathValue("app")
	cmd := r.PostFormValue("do")
	msg := ""
	switch {
	case slices.Contains(api.RolloutCommands, cmd):
		if _, err := c.cfg.Controller.RolloutCommand(ctx, v.caller, app, cmd); err != nil {
			c.fail(w, r, v, err)
			return
		}
		msg = "rollout " + cmd + " done"
	case cmd == "apply":
		rev, err := strconv.ParseUint(r.PostFormValue("revision"), 10, 64)
		if err != nil {
			c.fail(w, r, v, fmt.Errorf("apply a revision of %s: revision %q is not a number: %w", app, r.PostFormValue("revision"), errdefs.ErrInvalidArgument))
			return
		}
		h, err := revisionSpec(r, c.cfg.Controller, app, rev)
		if err != nil {
			c.fail(w, r, v, err)
			return
		}
		spec, err := json.Marshal(h.Spec)
		if err != nil {
			c.fail(w, r, v, fmt.Errorf("apply revision %d of %s: %w", rev, app, err))
			return
		}
		av, err := c.cfg.Controller.Apply(ctx, v.caller, spec)
		if err != nil {
			c.fail(w, r, v, err)
			return
		}
		msg = fmt.Sprintf("revision %d applied as revision %d", rev, av.Revision)
	default:
		c.fail(w, r, v, fmt.Errorf("rollout action %q: want one of %s or apply: %w", cmd, strings.Join(api.RolloutCommands, ", "), errdefs.ErrInvalidArgument))
		return
	}
	http.Redirect(w, r, "/ui/apps/"+url.PathEscape(app)+"?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

// maxFeed is how many events and audit entries a page shows.
const maxFeed = 200

// events is the fleet's events, filtered by device, app and kind; newest
// first.
func (c *Console) events(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	f := api.EventFilter{Device: strings.TrimSpace(q.Get("device")), App: strings.TrimSpace(q.Get("app")), Kind: strings.TrimSpace(q.Get("kind")), Limit: maxFeed}
	evs, err := c.cfg.Controller.Events(r.Context(), f)
	data := map[string]any{"Title": "Events", "F": f}
	if err != nil && !errdefs.IsInvalidArgument(err) {
		c.fail(w, r, v, err)
		return
	}
	if err != nil {
		data["Error"] = err.Error()
	}
	slices.Reverse(evs)
	data["Events"] = evs
	self := url.Values{"device": {f.Device}, "app": {f.App}, "kind": {f.Kind}, "fragment": {"1"}}
	data["Live"] = "/ui/events?" + self.Encode()
	if isFragment(r) {
		c.render(w, http.StatusOK, "events#live", v, data)
		return
	}
	c.render(w, http.StatusOK, "events", v, data)
}

// audit is the audit log (F-12), newest first, a page at a time.
func (c *Console) audit(w http.ResponseWriter, r *http.Request, v *viewer) {
	// The store lists forward from a sequence number: find the newest
	// page by walking (the log is append-only and numbered from 1).
	before, _ := strconv.ParseUint(r.URL.Query().Get("before"), 10, 64)
	entries, err := c.auditPage(r, before)
	if err != nil {
		c.fail(w, r, v, err)
		return
	}
	data := map[string]any{"Title": "Audit log", "Entries": entries}
	if n := len(entries); n > 0 && entries[n-1].Seq > 1 {
		data["Older"] = entries[n-1].Seq
	}
	c.render(w, http.StatusOK, "audit", v, data)
}

// auditPage is up to maxFeed entries with Seq < before (0: the newest),
// newest first.
func (c *Console) auditPage(r *http.Request, before uint64) ([]store.AuditEntry, error) {
	var all []store.AuditEntry
	after := uint64(0)
	if before > maxFeed {
		after = before - maxFeed - 1
	}
	for {
		es, err := c.cfg.Controller.Audit(r.Context(), after, api.MaxPage)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if before == 0 || e.Seq < before {
				all = append(all, e)
			}
		}
		if len(all) > maxFeed {
			all = all[len(all)-maxFeed:]
		}
		if len(es) < api.MaxPage || (before != 0 && es[len(es)-1].Seq >= before) {
			break
		}
		after = es[len(es)-1].Seq
	}
	slices.Reverse(all)
	return all, nil
}
