package storetest

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// FillIDs are the device ids Fill uses, gw-gone included (deleted, its
// generation mark kept).
var FillIDs = []string{"gw-0", "gw-1", "gw-2", "gw-3", "gw-gone"}

// Fill writes some of everything through the store's interface, for
// tests that copy a store (tender store migrate): devices with labels,
// statuses, events (with a gap and a duplicate) and generations, one
// revoked and one deleted; apps with revisions, one deleted and applied
// again; rollouts, documents, join and API tokens; an audit log.
func Fill(t *testing.T, s store.Store, clock *Clock) {
	t.Helper()
	e := &env{s: s, clock: clock, ctx: t.Context()}
	for i, id := range FillIDs {
		d := enroll(t, e, id, map[string]string{"site": "s" + strconv.Itoa(i%2)})
		b := store.Batch{Reports: []store.Report{{Device: id, Received: clock.Now(), Report: report(id, uint64(10+i), clock.Now())}},
			Presence: []store.Presence{{Device: id, Received: clock.Now(), Presence: wire.Online}}}
		for seq := uint64(1); seq <= uint64(3+i); seq++ {
			if seq != 2 {
				b.Events = append(b.Events, event(id, seq))
			}
		}
		b.Events = append(b.Events, event(id, 1))
		must(s.Ingest.Ingest(e.ctx, b))(t)
		must(s.Generations.Next(e.ctx, id))(t)
		clock.Advance(time.Second)
		switch id {
		case "gw-2":
			must(store.UpdateDevice(e.ctx, s.Devices, id, func(d *store.Device) error { d.Revoked, d.RevokedAt = true, clock.Now(); return nil }))(t)
		case "gw-gone":
			if err := s.Devices.Delete(e.ctx, id, must(s.Devices.Get(e.ctx, id))(t).Rev); err != nil {
				t.Fatal(err)
			}
		}
		_ = d
	}
	for _, name := range []string{"thermo", "web", "old"} {
		a := must(s.Apps.Apply(e.ctx, spec(name, "1"), "admin", 0))(t)
		a = must(s.Apps.Apply(e.ctx, spec(name, "2"), "alice", a.Rev))(t)
		if name == "old" {
			if err := s.Apps.Delete(e.ctx, name, a.Rev); err != nil {
				t.Fatal(err)
			}
		}
		if name == "web" {
			a.Current = 1
			must(s.Apps.Put(e.ctx, a, a.Rev))(t)
		}
	}
	must(s.Rollouts.Put(e.ctx, "thermo-2", []byte(`{"wave":1}`), 0))(t)
	must(s.Docs.Put(e.ctx, "assign/thermo", []byte(`["gw-0"]`), 0))(t)
	must(s.Docs.Put(e.ctx, "hash/gw-0", []byte{0, 1, 2, 0xff}, 0))(t)
	must(s.JoinTokens.Create(e.ctx, store.JoinToken{ID: "j1", SecretHash: []byte("h"), Labels: map[string]string{"site": "s1"},
		Created: clock.Now(), Expires: clock.Now().Add(time.Hour), UsesLeft: 3}))(t)
	must(s.JoinTokens.Consume(e.ctx, "j1", clock.Now(), nil))(t)
	must(s.APITokens.Create(e.ctx, store.APIToken{Hash: "h-admin", Name: "admin", Role: store.RoleAdmin, Created: clock.Now()}))(t)
	must(s.APITokens.Create(e.ctx, store.APIToken{Hash: "h-ro", Name: "viewer", Role: store.RoleReadOnly, Created: clock.Now()}))(t)
	must(s.APITokens.Revoke(e.ctx, "h-ro", clock.Now()))(t)
	for i := range 5 {
		must(s.Audit.Append(e.ctx, store.AuditEntry{Who: "admin", Action: "apply", Target: "app thermo", Detail: strconv.Itoa(i)}))(t)
	}
}

// Equal fails the test if a and b hold different records (their
// revisions aside): what a copy must keep.
func Equal(t *testing.T, a, b store.Store) {
	t.Helper()
	ctx := t.Context()
	same := func(what string, x, y any) {
		t.Helper()
		jx, _ := json.Marshal(x)
		jy, _ := json.Marshal(y)
		if string(jx) != string(jy) {
			t.Errorf("%s differ:\n%s\n%s", what, jx, jy)
		}
	}
	devs := func(s store.Store) (out []any) {
		for _, d := range must(s.Devices.List(ctx))(t) {
			d.Rev = 0
			out = append(out, d, d.Status)
		}
		return out
	}
	same("devices", devs(a), devs(b))
	for _, id := range FillIDs {
		same("generation of "+id, must(a.Generations.Last(ctx, id))(t), must(b.Generations.Last(ctx, id))(t))
		same("events of "+id, must(a.Events.Device(ctx, id, 0))(t), must(b.Events.Device(ctx, id, 0))(t))
	}
	apps := func(s store.Store) (out []any) {
		for _, x := range must(s.Apps.List(ctx))(t) {
			x.Rev = 0
			out = append(out, x, must(s.Apps.Revisions(ctx, x.Name))(t))
		}
		return out
	}
	same("apps", apps(a), apps(b))
	blobs := func(l []store.Blob) []store.Blob {
		for i := range l {
			l[i].Rev = 0
		}
		return l
	}
	same("rollouts", blobs(must(a.Rollouts.List(ctx))(t)), blobs(must(b.Rollouts.List(ctx))(t)))
	same("documents", blobs(must(a.Docs.List(ctx))(t)), blobs(must(b.Docs.List(ctx))(t)))
	jts := func(s store.Store) []store.JoinToken {
		l := must(s.JoinTokens.List(ctx))(t)
		for i := range l {
			l[i].Rev = 0
		}
		return l
	}
	same("join tokens", jts(a), jts(b))
	ats := func(s store.Store) []store.APIToken {
		l := must(s.APITokens.List(ctx))(t)
		for i := range l {
			l[i].Rev = 0
		}
		return l
	}
	same("api tokens", ats(a), ats(b))
	same("feed", must(a.Events.Feed(ctx, 0, 0))(t), must(b.Events.Feed(ctx, 0, 0))(t))
	same("audit", must(a.Audit.List(ctx, 0, 0))(t), must(b.Audit.List(ctx, 0, 0))(t))
	if err := b.Audit.Verify(ctx); err != nil {
		t.Errorf("audit of the copy: %v", err)
	}
}
