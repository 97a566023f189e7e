package publish

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// DefaultExpiry is how long a desired document is valid. A document is
// published again, with a new generation, once half of it has passed.
const DefaultExpiry = 30 * 24 * time.Hour

// State is what was last published to a device.
type State struct {
	Hash       string    `json:"hash"`
	Generation uint64    `json:"generation"`
	At         time.Time `json:"at"`
}

// States keeps the State of each device.
type States interface {
	// Get returns the device's state; ok false if none.
	Get(ctx context.Context, device string) (s State, ok bool, err error)
	Put(ctx context.Context, device string, s State) error
	Delete(ctx context.Context, device string) error
}

// Transport publishes a message (QoS 1): the embedded broker, or an MQTT
// client of an external one.
type Transport interface {
	Publish(topic string, payload []byte, retained bool) error
}

// Generations issues generations (store.Generations).
type Generations interface {
	Next(ctx context.Context, device string) (uint64, error)
}

// Config configures a Publisher.
type Config struct {
	Key         ed25519.PrivateKey
	FleetID     string
	Generations Generations
	States      States
	Transport   Transport
	// Expiry of the documents (DefaultExpiry when zero).
	Expiry time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Latency, if set, is told how long each publish took, from drawing
	// the generation to the broker's acknowledgement (a metrics
	// histogram's Observe).
	Latency func(time.Duration)
}

// Publisher publishes desired documents. It is safe for concurrent use;
// calls for one device are serialised.
type Publisher struct {
	cfg Config

	mu    sync.Mutex
	cache map[string]State
	locks map[string]*sync.Mutex
}

// Result says what Publish did.
type Result struct {
	// Generation of the device's current document (the new one if
	// Published).
	Generation uint64
	Published  bool
}

// New checks cfg and returns a Publisher.
func New(cfg Config) (*Publisher, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize || cfg.Generations == nil || cfg.States == nil || cfg.Transport == nil {
		return nil, fmt.Errorf("publisher: Key (ed25519), Generations, States and Transport are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultExpiry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Publisher{cfg: cfg, cache: map[string]State{}, locks: map[string]*sync.Mutex{}}, nil
}

// Hash is the content hash of a device's apps: sha256 over their JSON,
// sorted by name.
func Hash(apps []wire.App) (string, error) {
	sorted := slices.Clone(apps)
	if sorted == nil {
		sorted = []wire.App{}
	}
	slices.SortFunc(sorted, func(a, b wire.App) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.Marshal(sorted)
	if err != nil {
		return "", fmt.Errorf("hash desired apps: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func (p *Publisher) lock(device string) func() {
	p.mu.Lock()
	l, ok := p.locks[device]
	if !ok {
		l = &sync.Mutex{}
		p.locks[device] = l
	}
	p.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Last returns what was last published to device.
func (p *Publisher) Last(ctx context.Context, device string) (State, bool, error) {
	p.mu.Lock()
	s, ok := p.cache[device]
	p.mu.Unlock()
	if ok {
		return s, true, nil
	}
	s, ok, err := p.cfg.States.Get(ctx, device)
	if err != nil {
		return State{}, false, fmt.Errorf("read desired state of device %s: %w", device, err)
	}
	if ok {
		p.mu.Lock()
		p.cache[device] = s
		p.mu.Unlock()
	}
	return s, ok, nil
}

// Publish publishes the document of device with apps if its content
// differs from the last one published (or that one is past half its
// lifetime).
func (p *Publisher) Publish(ctx context.Context, device string, apps []wire.App) (Result, error) {
	if err := topic.ValidDeviceID(device); err != nil {
		return Result{}, fmt.Errorf("publish desired state: %w", err)
	}
	unlock := p.lock(device)
	defer unlock()
	hash, err := Hash(apps)
	if err != nil {
		return Result{}, err
	}
	last, ok, err := p.Last(ctx, device)
	if err != nil {
		return Result{}, err
	}
	now := p.cfg.Now()
	if ok && last.Hash == hash && now.Sub(last.At) < p.cfg.Expiry/2 {
		return Result{Generation: last.Generation}, nil
	}
	start := now
	gen, err := p.cfg.Generations.Next(ctx, device)
	if err != nil {
		return Result{}, fmt.Errorf("publish desired state of device %s: generation: %w", device, err)
	}
	if apps == nil {
		apps = []wire.App{}
	}
	env, err := sign.SignDesired(p.cfg.Key, wire.Desired{
		DeviceID: device, FleetID: p.cfg.FleetID, Generation: gen,
		IssuedAt: now.UTC(), ExpiresAt: now.Add(p.cfg.Expiry).UTC(), Apps: apps,
	})
	if err != nil {
		return Result{}, fmt.Errorf("publish desired state of device %s: %w", device, err)
	}
	payload, err := json.Marshal(env)
	if err != nil {
		return Result{}, fmt.Errorf("publish desired state of device %s: encode: %w", device, err)
	}
	if len(payload) > wire.MaxEnvelopeSize {
		return Result{}, fmt.Errorf("desired state of device %s is %d bytes, at most %d fit: fewer or smaller apps: %w",
			device, len(payload), wire.MaxEnvelopeSize, errdefs.ErrResourceExhausted)
	}
	if err := p.cfg.Transport.Publish(topic.MustBuild(device, topic.Desired), payload, true); err != nil {
		return Result{}, fmt.Errorf("publish desired state of device %s generation %d: %w", device, gen, err)
	}
	if p.cfg.Latency != nil {
		p.cfg.Latency(p.cfg.Now().Sub(start))
	}
	st := State{Hash: hash, Generation: gen, At: now}
	if err := p.cfg.States.Put(ctx, device, st); err != nil {
		return Result{}, fmt.Errorf("record desired state of device %s generation %d: %w", device, gen, err)
	}
	p.mu.Lock()
	p.cache[device] = st
	p.mu.Unlock()
	return Result{Generation: gen, Published: true}, nil
}

// Reset drops what the publisher remembers of every device: a controller
// that leads again after another led reads what was published from the
// store, not from its own memory of its last term.
func (p *Publisher) Reset() {
	p.mu.Lock()
	clear(p.cache)
	p.mu.Unlock()
}

// Forget drops what is known of device (it was removed).
func (p *Publisher) Forget(ctx context.Context, device string) error {
	unlock := p.lock(device)
	defer unlock()
	p.mu.Lock()
	delete(p.cache, device)
	p.mu.Unlock()
	if err := p.cfg.States.Delete(ctx, device); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("forget desired state of device %s: %w", device, err)
	}
	return nil
}

// docPrefix is the key prefix of the states in store.Docs.
const docPrefix = "desired/"

// StoreStates keeps states in the store's documents (store.Docs), one
// per device under "desired/<device>".
func StoreStates(docs store.Rollouts) States { return docStates{docs} }

type docStates struct{ docs store.Rollouts }

func (s docStates) Get(ctx context.Context, device string) (State, bool, error) {
	b, err := s.docs.Get(ctx, docPrefix+device)
	if errdefs.IsNotFound(err) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, err
	}
	var st State
	if err := json.Unmarshal(b.Data, &st); err != nil {
		return State{}, false, fmt.Errorf("decode desired state of device %s: %v: %w", device, err, errdefs.ErrDataLoss)
	}
	return st, true, nil
}

func (s docStates) Put(ctx context.Context, device string, st State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for range 8 {
		var rev uint64
		b, err := s.docs.Get(ctx, docPrefix+device)
		switch {
		case err == nil:
			rev = b.Rev
		case !errdefs.IsNotFound(err):
			return err
		}
		_, err = s.docs.Put(ctx, docPrefix+device, data, rev)
		if err == nil || !(errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err)) {
			return err
		}
	}
	return errors.New("store desired state: too many concurrent writers")
}

func (s docStates) Delete(ctx context.Context, device string) error {
	b, err := s.docs.Get(ctx, docPrefix+device)
	if err != nil {
		return err
	}
	return s.docs.Delete(ctx, docPrefix+device, b.Rev)
}
