package controller_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// fakeDevice answers like an agent: it verifies each desired document
// (signature, device, generation strictly above the last one accepted),
// "runs" its apps at once and reports; a version in bad is rolled back
// by the agent (the previous version runs, state rolled-back); while a
// version is held, the device accepts the document but reports nothing.
// Its accepted generation survives Stop and Start, like an agent's state.
type fakeDevice struct {
	t      *testing.T
	id     string
	broker string
	pub    ed25519.PublicKey

	mu      sync.Mutex
	cl      *mqttc.Client
	cancel  context.CancelFunc
	done    chan struct{}
	lastGen uint64
	gens    []uint64
	running map[string]string // app → version
	states  map[string]string
	bad     map[string]bool
	hold    map[string]bool
	held    *wire.Desired
	refused []error
	seen    map[string]bool // versions ever sent to it
	guard   *sign.ReplayGuard
	holdAll bool                     // hold every document, whatever it carries
	zone    string                   // reported as its time zone
	policy  map[string]*wire.Rollout // app → the rollout policy its document carried
}

func newFakeDevice(t *testing.T, id, broker string, pub ed25519.PublicKey) *fakeDevice {
	return &fakeDevice{t: t, id: id, broker: broker, pub: pub, running: map[string]string{}, states: map[string]string{},
		bad: map[string]bool{}, seen: map[string]bool{}, hold: map[string]bool{}, guard: sign.NewReplayGuard(64), policy: map[string]*wire.Rollout{}}
}

func (f *fakeDevice) Start() {
	cl, err := mqttc.New(mqttc.Config{Broker: "tcp://" + f.broker, ClientID: f.id, PresenceTopic: topic.MustBuild(f.id, topic.Presence), Log: zerolog.Nop()})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.mu.Lock()
	f.cl, f.cancel, f.done = cl, cancel, make(chan struct{})
	done := f.done
	f.mu.Unlock()
	_ = cl.Subscribe(ctx, topic.MustBuild(f.id, topic.Command), f.onCommand)
	_ = cl.Subscribe(ctx, topic.MustBuild(f.id, topic.Desired), f.onDesired)
	go func() { defer close(done); _ = cl.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := cl.WaitConnected(wctx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeDevice) Stop() {
	f.mu.Lock()
	cancel, done := f.cancel, f.done
	f.mu.Unlock()
	cancel()
	<-done
}

func (f *fakeDevice) onDesired(m mqttc.Message) {
	if len(m.Payload) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := sign.VerifyMessage(f.pub, m.Payload, sign.Expect{DeviceID: f.id, LastGeneration: f.lastGen, Now: time.Now()})
	var stale *sign.StaleError
	if errors.As(err, &stale) && stale.Got == stale.Have {
		return // the retained document again, after a reconnect
	}
	if err != nil {
		f.refused = append(f.refused, err)
		return
	}
	f.lastGen = d.Generation
	f.gens = append(f.gens, d.Generation)
	for _, a := range d.Apps {
		f.seen[a.Version] = true
		f.policy[a.Name] = a.Rollout
	}
	for _, a := range d.Apps {
		if f.hold[a.Version] {
			f.held = &d
			return
		}
	}
	if f.holdAll {
		f.held = &d
		return
	}
	f.apply(d)
}

// apply runs document d and reports (f.mu held).
func (f *fakeDevice) apply(d wire.Desired) {
	converged := true
	want := map[string]bool{}
	for _, a := range d.Apps {
		want[a.Name] = true
		if f.bad[a.Version] {
			f.states[a.Name] = "rolled-back"
			converged = false
			continue
		}
		f.running[a.Name], f.states[a.Name] = a.Version, "running"
	}
	for n := range f.running {
		if !want[n] {
			delete(f.running, n)
			delete(f.states, n)
		}
	}
	obs := uint64(0)
	if converged {
		obs = d.Generation
	}
	f.report(obs)
}

func (f *fakeDevice) report(obs uint64) {
	r := wire.Reported{Schema: wire.ReportedSchema, DeviceID: f.id, ObservedGeneration: obs, Time: time.Now(),
		Device: wire.DeviceFacts{Arch: "amd64", MemoryBytes: 1 << 30, CPUs: 2, TimeZone: f.zone}, Apps: []wire.AppStatus{}}
	for n, v := range f.running {
		r.Apps = append(r.Apps, wire.AppStatus{Name: n, Version: v, State: f.states[n], Containers: []wire.ContainerStatus{{Name: "main", State: wire.ContainerRunning}}})
	}
	b, _ := json.Marshal(r)
	cl := f.cl
	go func() { // not on the receive path
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cl.Publish(ctx, topic.MustBuild(f.id, topic.Reported), b, true)
	}()
}

// Release lets a held document run.
func (f *fakeDevice) Release(version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.hold, version)
	f.holdAll = false
	if f.held != nil {
		d := *f.held
		f.held = nil
		f.apply(d)
	}
}

func (f *fakeDevice) onCommand(m mqttc.Message) {
	c, err := sign.VerifyCommandMessage(f.pub, m.Payload, sign.CommandExpect{DeviceID: f.id, Now: time.Now()}, f.guard)
	if err != nil {
		f.mu.Lock()
		f.refused = append(f.refused, err)
		f.mu.Unlock()
		return
	}
	b, _ := json.Marshal(wire.CommandResult{Schema: wire.CommandResultSchema, ID: c.ID, OK: true, Output: "logs of " + c.App})
	f.mu.Lock()
	cl := f.cl
	f.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cl.Publish(ctx, topic.MustBuild(f.id, topic.CommandResult), b, false)
	}()
}

func (f *fakeDevice) Running(app string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running[app]
}

func (f *fakeDevice) Held() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held != nil
}

// Check fails the test if the device refused any document or command
// (a bad signature, another device's, a generation not above the last).
func (f *fakeDevice) Check() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, err := range f.refused {
		f.t.Errorf("device %s refused: %v", f.id, err)
	}
	for i := 1; i < len(f.gens); i++ {
		if f.gens[i] <= f.gens[i-1] {
			f.t.Errorf("device %s: generation %d after %d", f.id, f.gens[i], f.gens[i-1])
		}
	}
}
