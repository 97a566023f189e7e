package agent

// The fleet link (issue 5): the agent's MQTT session with its controller.
//
// Generations. The store holds one desired document, written either by a
// local apply (Source "local", its generation bumped by one per edit) or by
// the fleet (Source "fleet"). A fleet document is checked against the last
// fleet generation accepted (kept in the fleetState bucket), never against
// local generations: local edits cannot lock the fleet out. Once accepted, a
// fleet document replaces the whole desired state, whatever local edits or
// recovered state were there; it is stored under store generation
// max(fleet generation, current + 1), recorded next to the fleet
// generation. A later local apply edits on top of it until the next fleet
// document. Reports carry as ObservedGeneration the fleet generation whose
// document the apps have converged on (every app at its desired revision,
// every container running or completed).

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/logs"
	"github.com/tender-edge/tender/sync/clock"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Buckets of the fleet link in the agent's bbolt file, next to the store's "v1".
const (
	fleetOutboxBucket = "fleet/outbox"
	fleetStateBucket  = "fleet/state"
)

// Keys of fleetStateBucket.
var (
	keyFleetTime      = []byte("time")       // clock floor, unix nanoseconds
	keyFleetGen       = []byte("generation") // last fleet generation accepted
	keyFleetStoredGen = []byte("storedgen")  // store generation it was written under
	keyFleetDigest    = []byte("digest")     // sha256 of the accepted envelope
	keyFleetCursor    = []byte("evcursor")   // last store event seq put in the outbox
)

// DefaultHeartbeat is how often a report is sent when nothing changes.
const DefaultHeartbeat = 30 * time.Second

// TestClockOffsetEnv is a TEST HOOK: a Go duration (e.g. "-500000h") added
// to the fleet link's system clock, to play a device that boots in 1970.
// It is read only when set and logged loudly.
const TestClockOffsetEnv = "TENDER_TEST_CLOCK_OFFSET"

// fleetLink connects the agent to its fleet over MQTT.
type fleetLink struct {
	a     *Agent
	id    string
	log   zerolog.Logger
	pub   ed25519.PublicKey
	floor *clock.Floor
	ob    *outbox.Outbox
	cl    *mqttc.Client
	beat  time.Duration
	facts wire.DeviceFacts

	kick    chan struct{}
	desired chan []byte

	mu         sync.Mutex
	lastDigest string // of the last desired envelope received
	lastKey    string // the report's content, minus times and counters, last written
	observed   uint64
}

// newFleetLink prepares the link; it connects nothing.
func newFleetLink(a *Agent, deps Deps) (*fleetLink, error) {
	fc := a.cfg.Fleet
	if err := topic.ValidDeviceID(a.cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("fleet: deviceId: %w", err)
	}
	if fc.PublicKey == "" {
		return nil, errors.New("fleet: publicKey missing: the agent accepts only signed desired state")
	}
	pub, err := sign.ParsePublicKey([]byte(fc.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("fleet: publicKey: %w", err)
	}
	l := &fleetLink{
		a: a, id: a.cfg.DeviceID, pub: pub,
		log:  a.log.With().Str("component", "fleet").Logger(),
		beat: time.Duration(fc.Heartbeat),
		kick: make(chan struct{}, 1), desired: make(chan []byte, 8),
	}
	if l.beat <= 0 {
		l.beat = DefaultHeartbeat
	}
	db := a.db.Bolt()
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(fleetStateBucket))
		return err
	}); err != nil {
		return nil, fmt.Errorf("fleet state: %w", err)
	}
	system := time.Now
	if v := deps.Getenv(TestClockOffsetEnv); v != "" {
		off, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", TestClockOffsetEnv, err)
		}
		l.log.Warn().Dur("offset", off).Msg("TEST HOOK: the fleet link's system clock is shifted")
		system = func() time.Time { return time.Now().Add(off) }
	}
	l.floor, err = clock.New(clock.Options{System: system, Store: floorStore{db}, BuildTime: buildTime()})
	if err != nil {
		return nil, err
	}
	if l.ob, err = outbox.New(db, fleetOutboxBucket, outbox.Limits{}); err != nil {
		return nil, err
	}
	tlsConf, err := fleetTLS(fc)
	if err != nil {
		return nil, err
	}
	l.cl, err = mqttc.New(mqttc.Config{
		Broker: fc.Broker, ClientID: l.id, Username: fc.Username, Password: fc.Password,
		TLS: tlsConf, Time: l.floor.Now,
		PresenceTopic: topic.MustBuild(l.id, topic.Presence),
		Backoff:       backoff(time.Duration(fc.ReconnectMax)),
		Log:           a.log,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	l.facts = deviceFacts()
	l.observed = l.load().observedIfConverged(l, a.Apps())
	return l, nil
}

// backoff paces reconnects: from 1s (or the cap, if lower) doubling up to
// the cap, with full jitter.
func backoff(capd time.Duration) mqttc.Backoff {
	if capd <= 0 {
		capd = mqttc.DefaultBackoffCap
	}
	return mqttc.Backoff{Base: min(mqttc.DefaultBackoffBase, capd/4), Cap: capd}
}

// fleetTLS builds the TLS settings: the CA to trust (system roots if
// none) and the client certificate for mutual TLS. Nil for tcp://.
func fleetTLS(fc FleetConfig) (*tls.Config, error) {
	if strings.HasPrefix(fc.Broker, "tcp://") && fc.CAFile == "" && fc.CertFile == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if fc.CAFile != "" {
		b, err := os.ReadFile(fc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: caFile: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("fleet: caFile %s: no PEM certificate", fc.CAFile)
		}
	}
	if fc.CertFile != "" || fc.KeyFile != "" {
		c, err := tls.LoadX509KeyPair(fc.CertFile, fc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// changed tells the link that a reconcile round ended (status and events
// may have changed). It never blocks; a nil link ignores it.
func (l *fleetLink) changed() {
	if l == nil {
		return
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// run owns the session, the outbox drain and the link's own loop until
// ctx ends. Losing the broker stops none of the agent's work.
func (l *fleetLink) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	desired := topic.MustBuild(l.id, topic.Desired)
	cmd := topic.MustBuild(l.id, topic.Command)
	if err := l.cl.Subscribe(ctx, desired, func(m mqttc.Message) {
		if len(m.Payload) == 0 {
			return // a retained document cleared by the controller
		}
		select {
		case l.desired <- m.Payload:
		case <-ctx.Done():
		}
	}); err != nil {
		return err
	}
	if err := l.cl.Subscribe(ctx, cmd, func(m mqttc.Message) {
		go l.command(ctx, m.Payload)
	}); err != nil {
		return err
	}
	g.Go(func() error { return l.cl.Run(ctx) })
	g.Go(func() error { return mqttc.Drain(ctx, l.cl, l.ob, l.id) })
	g.Go(func() error { return l.loop(ctx) })
	err := g.Wait()
	if perr := l.floor.Persist(); perr != nil {
		l.log.Warn().Err(perr).Msg("persisting the time floor")
	}
	return err
}

func (l *fleetLink) loop(ctx context.Context) error {
	if l.floor.Untrusted() {
		l.log.Warn().Time("floor", l.floor.Now()).Msg("system clock is behind the time floor: untrusted, judging desired state by generation only")
		l.event(wire.Event{Kind: wire.EventClockUntrusted, Reason: "system clock behind the time floor"})
	}
	if err := l.floor.Persist(); err != nil {
		l.log.Warn().Err(err).Msg("persisting the time floor")
	}
	l.sync(true)
	t := time.NewTicker(l.beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p := <-l.desired:
			l.handleDesired(p)
		case <-l.kick:
			l.sync(false)
		case <-t.C:
			if err := l.floor.Persist(); err != nil {
				l.log.Warn().Err(err).Msg("persisting the time floor")
			}
			l.sync(true)
		}
	}
}

// fleetState is what the link keeps in fleetStateBucket.
type fleetState struct {
	gen, storedGen, cursor uint64
	digest                 string
}

func (l *fleetLink) load() fleetState {
	var s fleetState
	_ = l.a.db.Bolt().View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(fleetStateBucket))
		s.gen, s.storedGen, s.cursor = getU64(b, keyFleetGen), getU64(b, keyFleetStoredGen), getU64(b, keyFleetCursor)
		s.digest = string(b.Get(keyFleetDigest))
		return nil
	})
	return s
}

func (l *fleetLink) put(kv map[string][]byte) error {
	return l.a.db.Bolt().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(fleetStateBucket))
		for k, v := range kv {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func u64bytes(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

// handleDesired verifies a desired envelope and, if it is good, makes it
// the desired state. A refusal is an event and a log line; nothing runs
// differently.
func (l *fleetLink) handleDesired(payload []byte) {
	sum := sha256.Sum256(payload)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	l.mu.Lock()
	l.lastDigest = digest
	l.mu.Unlock()
	st := l.load()
	if digest == st.digest {
		// The retained copy of the document already applied, redelivered
		// on (re)subscribe: nothing to do and nothing to report.
		return
	}
	d, err := sign.VerifyMessage(l.pub, payload, sign.Expect{
		DeviceID: l.id, LastGeneration: st.gen, Now: l.floor.Now(), ClockUntrusted: l.floor.Untrusted(),
	})
	if err == nil {
		err = l.accept(d, digest)
	}
	if err != nil {
		reason := rejectReason(err)
		l.log.Warn().Str("reason", reason).Err(err).Str("digest", digest).Msg("desired state rejected")
		ev := wire.Event{Kind: wire.EventRejectedDesired, Reason: reason + ": " + err.Error()}
		if len(ev.Reason) > 1024 {
			ev.Reason = ev.Reason[:1024]
		}
		l.event(ev)
		l.sync(true)
		return
	}
	l.log.Info().Uint64("generation", d.Generation).Int("apps", len(d.Apps)).Msg("desired state from the fleet applied")
	l.event(wire.Event{Kind: wire.EventAppliedDesired, Generation: d.Generation})
	l.a.wake()
	l.sync(true)
}

// accept stores d as the desired state, then records its generation: in
// that order, so a crash in between re-applies the same document.
func (l *fleetLink) accept(d wire.Desired, digest string) error {
	var stored uint64
	err := l.a.db.Update(func(tx *store.Tx) error {
		cur, err := tx.Desired()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		stored = max(d.Generation, cur.Generation+1)
		apps := d.Apps
		if apps == nil {
			apps = []wire.App{}
		}
		return tx.PutDesired(store.Desired{Generation: stored, Source: "fleet", Apps: apps})
	})
	if err != nil {
		return fmt.Errorf("store desired state: %w", err)
	}
	return l.put(map[string][]byte{
		string(keyFleetGen): u64bytes(d.Generation), string(keyFleetStoredGen): u64bytes(stored),
		string(keyFleetDigest): []byte(digest),
	})
}

// rejectReason names why a desired document was refused.
func rejectReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{sign.ErrUnsigned, "unsigned"}, {sign.ErrWrongKey, "wrong-key"}, {sign.ErrBadSignature, "bad-signature"},
		{sign.ErrWrongDevice, "wrong-device"}, {sign.ErrStale, "stale-generation"}, {sign.ErrExpired, "expired"},
		{wire.ErrTooLarge, "oversized"}, {wire.ErrSchema, "unknown-schema"}, {wire.ErrUnknownField, "unknown-field"},
		{wire.ErrMalformed, "malformed"}, {errdefs.ErrInvalidArgument, "invalid"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}

// event puts one event in the outbox.
func (l *fleetLink) event(ev wire.Event) {
	ev.DeviceID = l.id
	if ev.Time.IsZero() {
		ev.Time = l.floor.Now()
	}
	if _, err := l.ob.AddEventFunc(func(seq uint64) ([]byte, error) {
		ev.Seq = seq
		return wire.Encode(&ev)
	}); err != nil {
		l.log.Error().Err(err).Str("kind", string(ev.Kind)).Msg("event lost: outbox")
	}
}

// sync forwards the store's new events to the outbox, in order, and
// writes a report if the status changed (or force, the heartbeat).
func (l *fleetLink) sync(force bool) {
	st := l.load()
	l.forwardEvents(st.cursor)
	apps := l.a.Apps()
	rep := l.report(apps)
	key, _ := json.Marshal(struct {
		A []wire.AppStatus
		G uint64
		C bool
		D uint64
		S string
	}{rep.Apps, rep.ObservedGeneration, rep.ClockUntrusted, rep.DroppedEvents, rep.DesiredDigest})
	l.mu.Lock()
	same := string(key) == l.lastKey
	l.mu.Unlock()
	if same && !force {
		return
	}
	l.withStats(&rep)
	b, err := wire.Encode(&rep)
	if err == nil {
		err = l.ob.PutReport(b)
	}
	if err != nil {
		l.log.Error().Err(err).Msg("report not queued")
		return
	}
	l.mu.Lock()
	l.lastKey = string(key)
	l.mu.Unlock()
}

// forwardEvents copies the store's events after cursor into the outbox.
// The cursor moves after each event is queued; a crash in between may
// send that one event twice (its Seq differs, its content not).
func (l *fleetLink) forwardEvents(cursor uint64) {
	for {
		var evs []store.Event
		if err := l.a.db.View(func(tx *store.Tx) error {
			var err error
			evs, err = tx.Events(cursor, 256)
			return err
		}); err != nil {
			l.log.Error().Err(err).Msg("reading events")
			return
		}
		if len(evs) == 0 {
			return
		}
		for _, e := range evs {
			l.event(wire.Event{Time: e.Time, Kind: wire.EventKind(e.Kind), App: e.App, Reason: e.Message})
			cursor = e.Seq
			if err := l.put(map[string][]byte{string(keyFleetCursor): u64bytes(cursor)}); err != nil {
				l.log.Error().Err(err).Msg("event cursor")
				return
			}
		}
	}
}

// report builds the status report (without resource use).
func (l *fleetLink) report(apps []reconcile.AppStatus) wire.Reported {
	l.mu.Lock()
	obs := l.load().observedIfConverged(l, apps)
	if obs != 0 {
		l.observed = obs
	}
	r := wire.Reported{
		DeviceID: l.id, ObservedGeneration: l.observed, DesiredDigest: l.lastDigest,
		Device: l.facts, ClockUntrusted: l.floor.Untrusted(), Time: l.floor.Now(),
		Apps: []wire.AppStatus{},
	}
	l.mu.Unlock()
	r.DroppedEvents, _ = l.ob.Dropped()
	for _, a := range apps {
		as := wire.AppStatus{Name: a.Name, Version: a.Version, State: string(a.Phase), Message: a.Message, Containers: []wire.ContainerStatus{}}
		for _, c := range a.Containers {
			cs := wire.ContainerStatus{Name: c.Name, State: c.State, Restarts: uint32(c.Restarts),
				Health: l.a.health.statusByName(c.ID)}
			if c.State == reconcile.StateUnhealthy {
				cs.Health = wire.HealthUnhealthy
			}
			as.Containers = append(as.Containers, cs)
		}
		r.Apps = append(r.Apps, as)
	}
	return r
}

// observedIfConverged is the fleet generation if the stored desired state
// is still the fleet's document and every app runs it; 0 otherwise.
func (s fleetState) observedIfConverged(l *fleetLink, apps []reconcile.AppStatus) uint64 {
	if s.gen == 0 {
		return 0
	}
	d, err := l.a.db.Desired()
	if err != nil || d.Source != "fleet" || d.Generation != s.storedGen {
		return 0
	}
	byName := map[string]reconcile.AppStatus{}
	for _, a := range apps {
		byName[a.Name] = a
	}
	for _, app := range d.Apps {
		st, ok := byName[app.Name]
		if !ok || st.Revision != app.Revision() || len(st.Containers) != len(app.Containers) {
			return 0
		}
		for _, c := range st.Containers {
			if c.State != reconcile.StateRunning && c.State != reconcile.StateCompleted {
				return 0
			}
		}
	}
	return s.gen
}

// withStats fills in the image, start time and resource use of each
// running container from the runtime.
func (l *fleetLink) withStats(r *wire.Reported) {
	ctrs, err := l.a.rt.List()
	if err != nil {
		return
	}
	byName := map[string]*container.Container{}
	for _, c := range ctrs {
		byName[c.Name] = c
	}
	apps := l.a.Apps()
	for i := range r.Apps {
		for j := range r.Apps[i].Containers {
			cs := &r.Apps[i].Containers[j]
			c := byName[runtimeName(apps, r.Apps[i].Name, cs.Name)]
			if c == nil {
				continue
			}
			cs.Image, cs.ExitCode, cs.OOMKilled = c.Image, c.State.ExitCode, c.State.OOMKilled
			if c.State.Status != container.Running {
				continue
			}
			cs.StartedAt = c.State.StartedAt
			if s, err := l.a.rt.Stats(c); err == nil {
				cs.CPUNanos, cs.MemoryBytes, cs.MemoryLimit = s.CPUUsageNanos, s.MemoryUsage, s.MemoryLimit
			}
		}
	}
}

func runtimeName(apps []reconcile.AppStatus, app, ctr string) string {
	for _, a := range apps {
		if a.Name != app {
			continue
		}
		for _, c := range a.Containers {
			if c.Name == ctr {
				return c.ID
			}
		}
	}
	return ""
}

// command answers one request from the fleet on cmd/result.
func (l *fleetLink) command(ctx context.Context, payload []byte) {
	c, err := wire.DecodeCommand(payload)
	if err != nil {
		l.log.Warn().Err(err).Msg("command rejected")
		return // no id to answer to
	}
	res := wire.CommandResult{ID: c.ID, OK: true}
	if out, err := l.runCommand(c); err != nil {
		res.OK, res.Error = false, err.Error()
	} else {
		res.Output = out
	}
	b, err := wire.Encode(&res)
	if err != nil {
		// Too long: keep the end of the output.
		res.Output = res.Output[max(0, len(res.Output)-wire.MaxCommandResultSize/2):]
		if b, err = wire.Encode(&res); err != nil {
			return
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.cl.Publish(pctx, topic.MustBuild(l.id, topic.CommandResult), b, false); err != nil {
		l.log.Warn().Err(err).Str("id", c.ID).Msg("command result not sent")
	}
}

func (l *fleetLink) runCommand(c wire.Command) (string, error) {
	ctr, err := l.findContainer(c.App, c.Container)
	if err != nil {
		return "", err
	}
	switch c.Kind {
	case wire.CommandLogs:
		n := c.Lines
		if n == 0 {
			n = 100
		}
		entries, err := logs.Tail(l.a.rt.LogDir(ctr), "container", n)
		if err != nil {
			return "", err
		}
		var sb strings.Builder
		for _, e := range entries {
			sb.WriteString(e.Text)
			sb.WriteByte('\n')
		}
		return sb.String(), nil
	case wire.CommandRestart:
		// Stopped, the container is restarted by the reconcile loop
		// under its restart policy.
		if err := l.a.rt.Stop(ctr.ID, -1); err != nil {
			return "", err
		}
		l.a.wake()
		return "stopped " + ctr.Name, nil
	}
	return "", fmt.Errorf("unknown command %q", c.Kind)
}

// findContainer is the newest container of app (named ctr, or the app's
// only one), running ones first.
func (l *fleetLink) findContainer(app, ctr string) (*container.Container, error) {
	all, err := l.a.rt.List() // newest first
	if err != nil {
		return nil, err
	}
	var found []*container.Container
	for _, c := range all {
		a, n, _, ok := reconcile.ParseName(c.Name)
		if ok && a == app && (ctr == "" || n == ctr) {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no container %q of app %q", ctr, app)
	}
	for _, c := range found {
		if c.State.Status == container.Running {
			return c, nil
		}
	}
	return found[0], nil
}

// floorStore keeps the time floor in fleetStateBucket.
type floorStore struct{ db *bolt.DB }

func (s floorStore) LoadTime() (time.Time, error) {
	var t time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(fleetStateBucket)); b != nil {
			if n := getU64(b, keyFleetTime); n != 0 {
				t = time.Unix(0, int64(n))
			}
		}
		return nil
	})
	return t, err
}

func (s floorStore) SaveTime(t time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(fleetStateBucket)).Put(keyFleetTime, u64bytes(uint64(t.UnixNano())))
	})
}

// buildTime is a time the clock cannot truly be before: the newest of the
// VCS commit time stamped in the binary and the binary's modification time.
func buildTime() time.Time {
	var t time.Time
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				t, _ = time.Parse(time.RFC3339, s.Value)
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}

// deviceFacts describes the device for reports.
func deviceFacts() wire.DeviceFacts {
	f := wire.DeviceFacts{Arch: goruntime.GOARCH, MemoryBytes: uint64(memTotal()), CPUs: goruntime.NumCPU(), AgentVersion: agentVersion()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	switch cgroups.Detect() {
	case cgroups.V1:
		f.CgroupVersion = 1
	case cgroups.V2:
		f.CgroupVersion = 2
	}
	return f
}

func agentVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}
