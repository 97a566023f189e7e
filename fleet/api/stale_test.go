package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/store"
)

// staleFake answers status and events as a store without a quorum would:
// it marks the request's StaleReads, if the request allows stale reads.
type staleFake struct {
	*apitest.Fake
	allowed map[string]bool // by route, whether the request allowed them
}

func (f staleFake) Status(ctx context.Context) (api.StatusView, error) {
	f.allowed["status"] = store.StaleReadsOf(ctx) != nil
	store.StaleReadsOf(ctx).Mark(store.Staleness{Reason: store.NoQuorum, Rev: 42})
	return f.Fake.Status(ctx)
}

func (f staleFake) RolloutCommand(ctx context.Context, who api.Caller, app, cmd string) (api.RolloutView, error) {
	f.allowed["rollout command"] = store.StaleReadsOf(ctx) != nil
	return f.Fake.RolloutCommand(ctx, who, app, cmd)
}

// TestServer_StaleAnswersSaySo: a GET answered without the store's quorum
// carries the Tender-Stale header and the stale field, the client hands
// the header to OnStale; a write is never allowed stale reads.
func TestServer_StaleAnswersSaySo(t *testing.T) {
	sf := staleFake{allowed: map[string]bool{}}
	f := newFixture(t, func(c *api.Config) {
		sf.Fake = c.Controller.(*apitest.Fake)
		c.Controller = sf
	})
	var said []string
	cl, err := api.NewClient(api.ClientConfig{Server: f.url, Token: adminToken,
		OnStale: func(method, path, st string) { said = append(said, method+" "+path+": "+st) }})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const want = "no quorum; as of revision 42"
	if st.Stale != want || len(said) != 1 || said[0] != "GET /v1/status: "+want || !sf.allowed["status"] {
		t.Fatalf("stale status: field %q, OnStale %q, allowed %v; want %q", st.Stale, said, sf.allowed, want)
	}
	code, _ := f.call(t, http.MethodPost, "/v1/apps/thermo/rollout/pause", adminToken, nil)
	if code != http.StatusOK || sf.allowed["rollout command"] {
		t.Fatalf("rollout command: %d, stale reads allowed %v; want 200 with none", code, sf.allowed["rollout command"])
	}
	if _, err := cl.Devices(context.Background(), nil); err != nil || len(said) != 1 {
		t.Fatalf("a fresh answer: %v, OnStale called %q", err, said)
	}
}
