package fleetsim

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// device is one simulated device: its identity, the last document it
// accepted, what it "runs", and its connection. It owns no goroutine but
// the one of run, which dials and then reads; timers (apply, tick) run
// their functions on short-lived goroutines of the runtime.
type device struct {
	s      *Sim
	i      int
	id     string
	prefix string // tender/v1/devices/ID/

	observed atomic.Uint64 // observedGeneration of the last report sent

	mu       sync.Mutex
	cert     *tls.Certificate
	conn     *Conn
	stopped  bool
	gen      uint64   // last accepted generation
	digest   [32]byte // of the last accepted envelope
	floor    time.Time
	apps     []wire.AppStatus // what runs
	obs      uint64           // generation running, all apps healthy
	issuedAt time.Time        // of obs, while its report is not sent
	seq      uint64           // of the last event
	apply    *time.Timer
	tick     *time.Timer
	nextBeat time.Time
	guard    *sign.ReplayGuard // commands seen; made on the first one
}

func (d *device) topic(k topic.Kind) string { return d.prefix + string(k) }

// run dials, serves and reconnects until the simulation stops.
func (d *device) run(ctx context.Context) {
	attempt := 0
	for {
		if err := d.s.pace.wait(ctx); err != nil {
			return
		}
		c, err := d.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.s.stats.connectError(err)
			d.s.logf("device %s: %v", d.id, err)
			attempt++
			if sleep(ctx, d.s.backoff(attempt)) != nil {
				return
			}
			continue
		}
		attempt = 1
		err = d.serve(c)
		d.s.stats.connected.Add(-1)
		if ctx.Err() != nil {
			return
		}
		d.s.stats.disconnects.Add(1)
		d.s.logf("device %s: connection lost: %v", d.id, err)
		if sleep(ctx, d.s.backoff(attempt)) != nil {
			return
		}
	}
}

// connect dials the broker with the device's credentials and its Last
// Will, subscribes to its desired state and commands, says "online" and
// reports.
func (d *device) connect(ctx context.Context) (*Conn, error) {
	s := d.s
	dl := Dialer{TLS: s.base}
	if s.cfg.CA != nil || s.cfg.Certificate != nil {
		d.mu.Lock()
		cert := d.cert
		d.mu.Unlock()
		if cert == nil {
			issue := s.cfg.Certificate
			if issue == nil {
				issue = func(id string) (tls.Certificate, error) { return s.cfg.CA.Issue(id) }
			}
			c, err := issue(d.id)
			if err != nil {
				return nil, err
			}
			cert = &c
			d.mu.Lock()
			d.cert = cert
			d.mu.Unlock()
		}
		dl.TLS = s.base.Clone()
		dl.TLS.Certificates = []tls.Certificate{*cert}
	}
	o := ConnectOptions{
		ClientID: d.id, KeepAlive: s.cfg.KeepAlive, CleanSession: s.cfg.CleanSession,
		WillTopic: d.topic(topic.Presence), WillPayload: []byte(wire.Offline), WillRetain: true,
	}
	if s.cfg.Password != nil {
		o.Username, o.Password = d.id, s.cfg.Password(d.id)
	}
	c, err := dl.Dial(ctx, s.cfg.Broker, o)
	if err != nil {
		return nil, err
	}
	if err := c.Subscribe(d.topic(topic.Desired), d.topic(topic.Command)); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Publish(d.topic(topic.Presence), []byte(wire.Online), true); err != nil {
		c.Close()
		return nil, err
	}
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		c.Close()
		return nil, context.Canceled
	}
	d.conn = c
	if d.tick == nil {
		d.nextBeat = time.Now().Add(d.s.jittered(s.cfg.Heartbeat))
		d.tick = time.AfterFunc(d.tickEvery(), d.onTick)
	}
	d.mu.Unlock()
	s.stats.connects.Add(1)
	s.noteConnected()
	d.report()
	return c, nil
}

// serve reads the connection until it fails.
func (d *device) serve(c *Conn) error {
	err := c.Serve(d.handle)
	c.Close()
	d.mu.Lock()
	if d.conn == c {
		d.conn = nil
	}
	d.mu.Unlock()
	return err
}

// stop ends the device for good: "offline", DISCONNECT, timers stopped.
func (d *device) stop() {
	d.mu.Lock()
	d.stopped = true
	c := d.conn
	d.conn = nil
	if d.apply != nil {
		d.apply.Stop()
	}
	if d.tick != nil {
		d.tick.Stop()
	}
	d.mu.Unlock()
	if c != nil {
		_ = c.Publish(d.topic(topic.Presence), []byte(wire.Offline), true)
		c.Disconnect()
	}
}

func (d *device) tickEvery() time.Duration {
	e := d.s.cfg.KeepAlive / 2
	if hb := d.s.cfg.Heartbeat; hb > 0 && hb < e {
		e = hb
	}
	return e
}

// jittered spreads a first period over [d/2, d), so heartbeats of devices
// connected together do not beat together.
func (s *Sim) jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// onTick sends the heartbeat report when due, or a PINGREQ when the
// connection was idle for half the keepalive.
func (d *device) onTick() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	c := d.conn
	beat := d.s.cfg.Heartbeat > 0 && !time.Now().Before(d.nextBeat)
	if beat {
		d.nextBeat = time.Now().Add(d.s.cfg.Heartbeat)
	}
	d.tick.Reset(d.tickEvery())
	d.mu.Unlock()
	if c == nil {
		return
	}
	if beat {
		d.report()
		return
	}
	if err := c.Ping(); err != nil {
		c.Close()
	}
}

// handle is called by the read loop for each message.
func (d *device) handle(t string, payload []byte) {
	switch {
	case strings.HasSuffix(t, "/"+string(topic.Desired)):
		d.desired(payload)
	case strings.HasSuffix(t, "/"+string(topic.Command)):
		d.command(payload)
	}
}

// desired verifies a desired document exactly as the agent does and, if
// it is good, applies it after the configured delay. A document it cannot
// verify is counted and answered with nothing.
func (d *device) desired(payload []byte) {
	if len(payload) == 0 {
		return // a retained document cleared
	}
	sum := sha256.Sum256(payload)
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if sum == d.digest {
		return // the retained copy of the document accepted, redelivered
	}
	doc, err := sign.VerifyMessage(d.s.cfg.FleetKey, payload, sign.Expect{
		DeviceID: d.id, LastGeneration: d.gen, Now: now, Floor: d.floor,
	})
	if err != nil {
		d.s.stats.refuse(refusal(err))
		return
	}
	d.s.stats.verified.Add(1)
	d.gen, d.digest = doc.Generation, sum
	if doc.IssuedAt.After(d.floor) {
		d.floor = doc.IssuedAt
	}
	d.eventLocked(wire.Event{Kind: wire.EventAppliedDesired, Generation: doc.Generation})
	if d.apply != nil {
		d.apply.Stop()
	}
	delay := d.s.cfg.ApplyDelay
	if j := d.s.cfg.ApplyJitter; j > 0 {
		delay += time.Duration(rand.Int64N(int64(j)))
	}
	d.apply = time.AfterFunc(delay, func() { d.run1(doc) })
}

// refusal names the reason of a refused document: the sentinel it
// matches, or the error.
func refusal(err error) string {
	for _, r := range []error{
		sign.ErrUnsigned, sign.ErrWrongKey, sign.ErrBadSignature, sign.ErrWrongDevice, sign.ErrStale, sign.ErrExpired,
		wire.ErrTooLarge, wire.ErrMalformed, wire.ErrSchema, wire.ErrUnknownField, wire.ErrGenerationRange,
	} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return err.Error()
}

// run1 makes doc what runs: its apps with every container running and
// healthy, or unhealthy for a version marked bad. All good: the device
// observes the generation. It then sends the events and the report.
func (d *device) run1(doc wire.Desired) {
	now := time.Now()
	d.mu.Lock()
	if d.stopped || doc.Generation != d.gen {
		d.mu.Unlock()
		return // stopped, or superseded by a newer document
	}
	apps := make([]wire.AppStatus, 0, len(doc.Apps))
	good := true
	for _, a := range doc.Apps {
		bad := d.s.cfg.Bad != nil && d.s.cfg.Bad(a.Name, a.Version)
		as := wire.AppStatus{Name: a.Name, Version: a.Version, State: "running", Containers: make([]wire.ContainerStatus, 0, len(a.Containers))}
		st, health, kind := wire.ContainerRunning, wire.HealthHealthy, wire.EventStarted
		if bad {
			good = false
			as.State, as.Message = "verifying", "health check failing"
			st, health, kind = wire.ContainerUnhealthy, wire.HealthUnhealthy, wire.EventUnhealthy
		}
		for _, c := range a.Containers {
			as.Containers = append(as.Containers, wire.ContainerStatus{
				Name: c.Name, Image: c.Image, State: st, Health: health, StartedAt: now,
			})
			d.eventLocked(wire.Event{Kind: kind, App: a.Name, Container: c.Name, Generation: doc.Generation})
		}
		apps = append(apps, as)
	}
	d.apps = apps
	if good {
		d.obs, d.issuedAt = doc.Generation, doc.IssuedAt
	}
	d.mu.Unlock()
	d.report()
}

// eventLocked publishes one event, numbered; lost if not connected (the
// simulator keeps no outbox). d.mu is held.
func (d *device) eventLocked(ev wire.Event) {
	d.seq++
	ev.DeviceID, ev.Seq, ev.Time = d.id, d.seq, time.Now()
	if d.conn == nil {
		return
	}
	b, err := wire.Encode(&ev)
	if err == nil {
		err = d.conn.Publish(d.topic(topic.Events), b, false)
	}
	if err != nil {
		d.s.stats.publishErrors.Add(1)
		return
	}
	d.s.stats.events.Add(1)
}

// report publishes the device's status, retained. The first report of a
// newly observed generation records its latency.
func (d *device) report() {
	d.mu.Lock()
	c := d.conn
	r := wire.Reported{
		DeviceID: d.id, ObservedGeneration: d.obs, Apps: d.apps,
		Device: d.s.cfg.Facts(d.i, d.id), Time: time.Now(),
	}
	if r.Apps == nil {
		r.Apps = []wire.AppStatus{}
	}
	if f := d.s.cfg.Report; f != nil {
		r.Apps = slices.Clone(r.Apps) // d.apps stays as the documents made it
		for i := range r.Apps {
			r.Apps[i].Containers = slices.Clone(r.Apps[i].Containers)
		}
		f(d.i, &r)
	}
	issued := d.issuedAt
	d.mu.Unlock()
	if c == nil {
		return
	}
	b, err := wire.Encode(&r)
	if err == nil {
		err = c.Publish(d.topic(topic.Reported), b, true)
	}
	if err != nil {
		d.s.stats.publishErrors.Add(1)
		return
	}
	d.s.stats.reports.Add(1)
	d.observed.Store(r.ObservedGeneration)
	if !issued.IsZero() {
		d.mu.Lock()
		sent := d.issuedAt.Equal(issued)
		if sent {
			d.issuedAt = time.Time{}
		}
		d.mu.Unlock()
		if sent {
			d.s.stats.mu.Lock()
			d.s.stats.latency = append(d.s.stats.latency, time.Since(issued))
			d.s.stats.mu.Unlock()
		}
	}
}

// command verifies a command as the agent does and answers a good one
// with an empty success; a refused one gets no answer.
func (d *device) command(payload []byte) {
	d.mu.Lock()
	if d.guard == nil {
		d.guard = sign.NewReplayGuard(64)
	}
	g, c, floor := d.guard, d.conn, d.floor
	d.mu.Unlock()
	cmd, err := sign.VerifyCommandMessage(d.s.cfg.FleetKey, payload, sign.CommandExpect{DeviceID: d.id, Now: time.Now(), Floor: floor}, g)
	if err != nil {
		d.s.stats.cmdRefused.Add(1)
		return
	}
	d.s.stats.commands.Add(1)
	if c == nil {
		return
	}
	res := wire.CommandResult{ID: cmd.ID, OK: true}
	if f := d.s.cfg.CommandOutput; f != nil {
		res.Output = f(d.id, cmd)
	}
	b, err := wire.Encode(&res)
	if err == nil {
		err = c.Publish(d.topic(topic.CommandResult), b, false)
	}
	if err != nil {
		d.s.stats.publishErrors.Add(1)
	}
}
