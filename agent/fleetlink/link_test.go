package fleetlink

// The link against a real broker (mochi, in process) and a real store. The
// agent side is a small stand-in (testAgent): what is tested here is the
// link's own behaviour (verification, coalescing, bounds), not the agent,
// which test/e2e drives whole.

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

type testAgent struct {
	changed chan struct{}
	release chan struct{} // Logs blocks until it is closed
	mu      sync.Mutex
	wakes   int
	inLogs  int
}

func (a *testAgent) Apps() []reconcile.AppStatus          { return nil }
func (a *testAgent) Containers(bool) map[string]Container { return nil }
func (a *testAgent) Changed() <-chan struct{}             { return a.changed }
func (a *testAgent) Facts() wire.DeviceFacts              { return wire.DeviceFacts{Arch: "amd64"} }
func (a *testAgent) Restart(app, ctr string) error        { return nil }
func (a *testAgent) Wake() {
	a.mu.Lock()
	a.wakes++
	a.mu.Unlock()
}
func (a *testAgent) Logs(app, ctr string, n int, w LineWriter) error {
	a.mu.Lock()
	a.inLogs++
	a.mu.Unlock()
	<-a.release
	w("line of " + app)
	return nil
}

type rig struct {
	t       *testing.T
	priv    ed25519.PrivateKey
	db      *store.DB
	agent   *testAgent
	broker  *mqtttest.Mochi
	mu      sync.Mutex
	results []wire.CommandResult
}

func newRig(t *testing.T) *rig {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, priv: priv, agent: &testAgent{changed: make(chan struct{}, 1), release: make(chan struct{})}}
	r.broker = mqtttest.StartMochi(t, "127.0.0.1:0", map[string]mqtttest.Handler{
		topic.MustBuild("gw-1", topic.CommandResult): func(_ string, b []byte) {
			res, err := wire.DecodeCommandResult(b)
			if err != nil {
				t.Errorf("result: %v", err)
				return
			}
			r.mu.Lock()
			r.results = append(r.results, res)
			r.mu.Unlock()
		},
	})
	r.db, err = store.Open(filepath.Join(t.TempDir(), "agent.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.db.Close() })
	l, err := New(Config{DeviceID: "gw-1", Broker: "tcp://" + r.broker.Addr, PublicKey: base64.StdEncoding.EncodeToString(pub),
		ReconnectMax: 200 * time.Millisecond}, r.agent, r.db, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		select {
		case <-r.agent.release:
		default:
			close(r.agent.release)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("link: %v", err)
		}
	})
	waitUntil(t, "the link to connect", func() bool { return l.cl.Connected() })
	return r
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) command(kind wire.CommandKind, app string) string {
	r.t.Helper()
	id, err := sign.NewCommandID(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	now := time.Now()
	env, err := sign.SignCommand(r.priv, wire.Command{DeviceID: "gw-1", ID: id, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Kind: kind, App: app})
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := wire.Encode(env)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.broker.Publish(topic.MustBuild("gw-1", topic.Command), b, false); err != nil {
		r.t.Fatal(err)
	}
	return id
}

func (r *rig) result(id string) (wire.CommandResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.results {
		if res.ID == id {
			return res, true
		}
	}
	return wire.CommandResult{}, false
}

// pendingEvents are the events waiting in the outbox (the broker's
// inline subscriber does not take events, so nothing drains them... the
// drain does publish them; count what was ever queued instead).
func outboxSeq(t *testing.T, db *store.DB) uint64 {
	t.Helper()
	ob, err := db.Outbox(outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := ob.AddEventFunc(func(uint64) ([]byte, error) { return []byte(`{}`), nil })
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// At most maxCommands commands run at once; the next is answered "busy"
// at once, and the ones running finish once they can.
func TestLink_CommandsAreBounded(t *testing.T) {
	r := newRig(t)
	var ids []string
	for range maxCommands {
		ids = append(ids, r.command(wire.CommandLogs, "web"))
	}
	waitUntil(t, "the commands to run", func() bool {
		r.agent.mu.Lock()
		defer r.agent.mu.Unlock()
		return r.agent.inLogs == maxCommands
	})
	extra := r.command(wire.CommandLogs, "web")
	waitUntil(t, "a busy answer", func() bool { _, ok := r.result(extra); return ok })
	if res, _ := r.result(extra); res.OK || !strings.HasPrefix(res.Error, "busy") {
		t.Fatalf("command over the bound: %+v", res)
	}
	close(r.agent.release)
	for _, id := range ids {
		waitUntil(t, "command "+id, func() bool { _, ok := r.result(id); return ok })
		if res, _ := r.result(id); !res.OK || res.Output != "line of web\n" {
			t.Fatalf("command %s: %+v", id, res)
		}
	}
}

// Junk on the desired and command topics costs one event per kind and
// reason in a window, however much there is.
func TestLink_RefusalsAreCoalesced(t *testing.T) {
	r := newRig(t)
	before := outboxSeq(t, r.db)
	for i := range 200 {
		p := []byte(`{"payload":{"junk":` + strings.Repeat("1", i%7+1) + `}}`)
		if err := r.broker.Publish(topic.MustBuild("gw-1", topic.Desired), p, false); err != nil {
			t.Fatal(err)
		}
		if err := r.broker.Publish(topic.MustBuild("gw-1", topic.Command), p, false); err != nil {
			t.Fatal(err)
		}
	}
	// A signed command after the junk is answered: the link got through it.
	id := r.command(wire.CommandRestart, "web")
	waitUntil(t, "the signed command after the junk", func() bool { _, ok := r.result(id); return ok })
	after := outboxSeq(t, r.db)
	if n := after - before - 1; n < 2 || n > 6 {
		t.Fatalf("%d events for 400 junk messages, want one per kind and reason", n)
	}
}
