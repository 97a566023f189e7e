package fleetsim

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// PublisherConfig describes the test controller's connection.
type PublisherConfig struct {
	Broker string
	// TLS for ssl:// brokers: roots, and the controller's client
	// certificate where the broker wants one.
	TLS                *tls.Config
	ClientID           string // default "controller"
	Username, Password string
	// Key signs the desired documents.
	Key ed25519.PrivateKey
}

// Publisher is a stand-in for the controller until `tender serve`
// exists: it signs desired documents and publishes them retained, and
// reads every device's reports (decoded with the wire's strict decoder)
// to tell when the fleet converged.
type Publisher struct {
	c   *Conn
	key ed25519.PrivateKey

	mu       sync.Mutex
	observed map[string]uint64 // device → observedGeneration of its last report
	last     map[string]wire.Reported
	changed  chan struct{} // closed and replaced on every report
	reports  atomic.Int64
	invalid  atomic.Int64 // reports that do not decode, or on a topic not their device's
	events   atomic.Int64
	done     chan struct{}
	err      error
}

// DialPublisher connects and subscribes to every device's reports and
// events.
func DialPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("publisher: signing key of %d bytes, want %d: %w", len(cfg.Key), ed25519.PrivateKeySize, errdefs.ErrInvalidArgument)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "controller"
	}
	c, err := Dialer{TLS: cfg.TLS}.Dial(ctx, cfg.Broker, ConnectOptions{
		ClientID: cfg.ClientID, Username: cfg.Username, Password: cfg.Password,
		KeepAlive: 60 * time.Second, CleanSession: true,
	})
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	rep, _ := topic.AllDevices(topic.Reported)
	ev, _ := topic.AllDevices(topic.Events)
	if err := c.Subscribe(rep, ev); err != nil {
		c.Close()
		return nil, fmt.Errorf("publisher: subscribe: %w", err)
	}
	p := &Publisher{c: c, key: cfg.Key, observed: map[string]uint64{}, last: map[string]wire.Reported{}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		err := c.Serve(p.handle)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	go func() { // keepalive
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				_ = c.Ping()
			}
		}
	}()
	return p, nil
}

func (p *Publisher) handle(t string, payload []byte) {
	id, kind, err := topic.Parse(t)
	if err != nil {
		p.invalid.Add(1)
		return
	}
	switch kind {
	case topic.Events:
		if ev, err := wire.DecodeEvent(payload); err != nil || ev.DeviceID != id {
			p.invalid.Add(1)
			return
		}
		p.events.Add(1)
	case topic.Reported:
		r, err := wire.DecodeReported(payload)
		if err != nil || r.DeviceID != id {
			p.invalid.Add(1)
			return
		}
		p.reports.Add(1)
		p.mu.Lock()
		p.observed[id] = r.ObservedGeneration
		p.last[id] = r
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// Doc is a desired document for device id at generation gen, issued now
// and valid for a day.
func Doc(id string, gen uint64, apps ...wire.App) wire.Desired {
	now := time.Now()
	if apps == nil {
		apps = []wire.App{}
	}
	return wire.Desired{DeviceID: id, Generation: gen, IssuedAt: now, ExpiresAt: now.Add(24 * time.Hour), Apps: apps}
}

// Publish signs d and publishes it retained on its device's desired topic.
func (p *Publisher) Publish(d wire.Desired) error {
	env, err := sign.SignDesired(p.key, d)
	if err != nil {
		return err
	}
	b, err := wire.Encode(&env)
	if err != nil {
		return err
	}
	return p.PublishRaw(d.DeviceID, b)
}

// PublishRaw publishes payload retained on device id's desired topic, as
// it is: a forgery, a replay, junk.
func (p *Publisher) PublishRaw(id string, payload []byte) error {
	t, err := topic.Build(id, topic.Desired)
	if err != nil {
		return err
	}
	if err := p.c.Publish(t, payload, true); err != nil {
		return fmt.Errorf("publish desired state of %s: %w", id, err)
	}
	return nil
}

// Observed is how many of ids last reported generation gen or newer.
func (p *Publisher) Observed(ids []string, gen uint64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, id := range ids {
		if p.observed[id] >= gen {
			n++
		}
	}
	return n
}

// ObservedOf is the generation id last reported (0: none, or no report).
func (p *Publisher) ObservedOf(id string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.observed[id]
}

// Report is the last report of device id.
func (p *Publisher) Report(id string) (wire.Reported, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.last[id]
	return r, ok
}

// WaitObserved waits until every device of ids reported generation gen or
// newer, ctx ends, or the connection fails.
func (p *Publisher) WaitObserved(ctx context.Context, ids []string, gen uint64) error {
	return p.Wait(ctx, func() bool { return p.Observed(ids, gen) == len(ids) }, func() string {
		return fmt.Sprintf("%d of %d devices on generation %d", p.Observed(ids, gen), len(ids), gen)
	})
}

// Wait waits until cond holds, checking it after every report, or ctx
// ends, or the connection fails; the error says what what() says.
func (p *Publisher) Wait(ctx context.Context, cond func() bool, what func() string) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-p.done:
			return fmt.Errorf("publisher: connection lost: %s: %w", what(), p.Err())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what(), ctx.Err())
		}
	}
}

// Counts are the reports and events received, and the messages that did
// not decode or named another device.
func (p *Publisher) Counts() (reports, events, invalid int64) {
	return p.reports.Load(), p.events.Load(), p.invalid.Load()
}

// Err is why the connection ended (nil while it is up).
func (p *Publisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close disconnects.
func (p *Publisher) Close() {
	p.c.Disconnect()
	<-p.done
}
