package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/internal/boltcheck"
	"github.com/tender-edge/tender/sync/wire"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers branch on, each in a category of containerd/errdefs. An
// absent record is errdefs.ErrNotFound.
var (
	// ErrStale: a desired document whose generation is not newer than the
	// stored one.
	ErrStale = fmt.Errorf("stale generation: %w", errdefs.ErrFailedPrecondition)
	// ErrSchema: the file was written by a newer agent with a layout this
	// build does not know. It is not treated as corruption.
	ErrSchema = fmt.Errorf("unsupported state schema: %w", errdefs.ErrFailedPrecondition)
	// ErrLocked: another process (another agent) holds the state file.
	ErrLocked = fmt.Errorf("state file is locked by another process: %w", errdefs.ErrUnavailable)
)

// schemaVersion is the layout this build writes. Version 1 (the first
// release) kept the fleet link's state and outbox in unversioned top-level
// buckets; opening such a file moves them under the schema (migrate).
const schemaVersion = "2"

var (
	bucketV1       = []byte("v1")
	bucketMeta     = []byte("meta")
	bucketDesired  = []byte("desired")
	bucketProgress = []byte("progress")
	bucketEvents   = []byte("events")
	bucketFleet    = []byte("fleet")
	keySchema      = []byte("schema")
	keyDropped     = []byte("events.dropped")
	keyDoc         = []byte("doc")
)

// Options tune Open; nil means the defaults.
type Options struct {
	// EventCap is the number of events kept; default 10000.
	EventCap int
	// LockTimeout bounds the wait for the file lock held by another
	// process; default 2s. A timeout is an error, not corruption.
	LockTimeout time.Duration
	// Now stamps the name of a file set aside; default time.Now.
	Now func() time.Time
}

// Recovery reports a state file that could not be used.
type Recovery struct {
	Path  string // where the bad file now is
	Cause error  // what was wrong with it
}

func (r *Recovery) String() string {
	return fmt.Sprintf("state file corrupt (%v): kept aside as %s, started empty", r.Cause, r.Path)
}

// DB is the agent's state.
type DB struct {
	bolt     *bolt.DB
	path     string
	eventCap int
	// Recovered is non-nil when Open found the file corrupt, moved it
	// aside and started with an empty state.
	Recovered *Recovery
}

// Desired is the desired document last accepted. Its Generation is the
// store's own counter, one more per accepted document whatever its source;
// the fleet's generations are kept apart in FleetState, so neither can
// lock the other out.
type Desired struct {
	Generation uint64     `json:"generation"`
	Source     Source     `json:"source"`
	Apps       []wire.App `json:"apps"`
}

// Source says where the desired document came from.
type Source string

// Sources of a desired document.
const (
	SourceLocal     Source = "local"     // tender-agent apply / app rm
	SourceFleet     Source = "fleet"     // a signed document from the controller
	SourceRecovered Source = "recovered" // rebuilt from the containers after the state file was lost
)

// Event is one entry of the event log.
type Event struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	App     string         `json:"app,omitempty"`
	Kind    wire.EventKind `json:"kind"`
	Message string         `json:"message,omitempty"`
}

// Open opens or creates the state file at path (mode 0600, its directory
// 0700). A corrupt or truncated file is set aside and replaced; see
// DB.Recovered.
func Open(path string, opts *Options) (*DB, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.EventCap <= 0 {
		o.EventCap = 10000
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	db := &DB{path: path, eventCap: o.EventCap}
	b, err := openChecked(path, o.LockTimeout)
	if err != nil {
		var ce *corruptError
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w (another tender-agent daemon on the same state?)", path, ErrLocked)
		}
		if !errors.As(err, &ce) {
			return nil, err
		}
		aside, rerr := setAside(path, o.Now())
		if rerr != nil {
			return nil, fmt.Errorf("%w; set aside: %v", err, rerr)
		}
		db.Recovered = &Recovery{Path: aside, Cause: ce.err}
		if b, err = openChecked(path, o.LockTimeout); err != nil {
			return nil, fmt.Errorf("fresh state file: %w", err)
		}
	}
	db.bolt = b
	return db, nil
}

type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }

// openChecked opens path and proves it readable (internal/boltcheck: every
// key walked, tx.Check, and our records decoded), turning a damaged file
// into a *corruptError, then creates the buckets of a new file and
// migrates an old one.
func openChecked(path string, timeout time.Duration) (*bolt.DB, error) {
	b, err := boltcheck.Open(path, boltcheck.Options{LockTimeout: timeout, MaxDepth: 8, Verify: verify})
	var ce *boltcheck.CorruptError
	var se *schemaError
	switch {
	case errors.As(err, &ce):
		return nil, &corruptError{ce.Err}
	case errors.As(err, &se):
		return nil, fmt.Errorf("%w: version %s", ErrSchema, se.v)
	case errors.Is(err, berrors.ErrTimeout), errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("open %s: %w", path, err)
	case err != nil:
		return nil, &corruptError{fmt.Errorf("check: %w", err)}
	}
	if err := create(b); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// verify decodes our records of an existing file.
func verify(tx *bolt.Tx) error {
	if tx.Bucket(bucketV1) == nil {
		return nil
	}
	t := &Tx{tx: tx}
	if s := t.meta().Get(keySchema); s != nil && string(s) != schemaVersion && string(s) != "1" {
		return &schemaError{string(s)}
	}
	if _, err := t.Desired(); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	_, err := t.Progress()
	return err
}

// create makes the buckets of a new file and moves an old file's into the
// current schema.
func create(b *bolt.DB) error {
	if err := b.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		for _, n := range [][]byte{bucketMeta, bucketDesired, bucketProgress, bucketEvents, bucketFleet} {
			if _, err := v1.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		if err := migrate(tx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		return v1.Bucket(bucketMeta).Put(keySchema, []byte(schemaVersion))
	}); err != nil {
		return fmt.Errorf("create buckets: %w", err)
	}
	return nil
}

type schemaError struct{ v string }

func (e *schemaError) Error() string { return "schema " + e.v }

// setAside renames the bad file to "<path>.corrupt-<unix>" (with a
// counter if that exists) and syncs the directory.
func setAside(path string, now time.Time) (string, error) {
	base := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.%d", base, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return aside, nil
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Path is the state file's path.
func (db *DB) Path() string { return db.path }

// Bolt exposes the bbolt handle for tests and checks.
func (db *DB) Bolt() *bolt.DB { return db.bolt }

// View runs fn in a read transaction.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, cap: db.eventCap}) })
}

// Update runs fn in one write transaction, committed (and fsynced) if fn
// returns nil.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, cap: db.eventCap}) })
}

// Desired returns the stored desired document, errdefs.ErrNotFound if none.
func (db *DB) Desired() (d Desired, err error) {
	err = db.View(func(tx *Tx) error { d, err = tx.Desired(); return err })
	return d, err
}

// Progress returns the per-app progress.
func (db *DB) Progress() (m map[string]reconcile.Progress, err error) {
	err = db.View(func(tx *Tx) error { m, err = tx.Progress(); return err })
	return m, err
}

// Commit stores a reconcile decision's progress and events, stamped at
// now, in one transaction.
func (db *DB) Commit(progress map[string]reconcile.Progress, events []reconcile.Event, now time.Time) error {
	return db.Update(func(tx *Tx) error {
		if err := tx.PutProgress(progress); err != nil {
			return err
		}
		evs := make([]Event, len(events))
		for i, e := range events {
			evs[i] = Event{Time: now, App: e.App, Kind: wire.EventKind(e.Kind), Message: e.Reason}
		}
		_, err := tx.AppendEvents(evs...)
		return err
	})
}

// Tx is a transaction on the state.
type Tx struct {
	tx  *bolt.Tx
	cap int
}

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(bucketV1).Bucket(name) }
func (t *Tx) meta() *bolt.Bucket              { return t.bucket(bucketMeta) }

// Desired returns the stored desired document, errdefs.ErrNotFound if none.
func (t *Tx) Desired() (Desired, error) {
	var d Desired
	b := t.bucket(bucketDesired)
	v := b.Get(keyDoc)
	if v == nil {
		return d, fmt.Errorf("desired state: %w", errdefs.ErrNotFound)
	}
	if err := json.Unmarshal(v, &d); err != nil {
		return Desired{}, fmt.Errorf("decode desired: %w", err)
	}
	return d, nil
}

// PutDesired stores d if its generation is newer than the stored one;
// otherwise it returns ErrStale.
func (t *Tx) PutDesired(d Desired) error {
	cur, err := t.Desired()
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if err == nil && d.Generation <= cur.Generation {
		return fmt.Errorf("%w: generation %d, have %d", ErrStale, d.Generation, cur.Generation)
	}
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode desired: %w", err)
	}
	return t.bucket(bucketDesired).Put(keyDoc, v)
}

// Progress returns the per-app progress.
func (t *Tx) Progress() (map[string]reconcile.Progress, error) {
	m := map[string]reconcile.Progress{}
	err := t.bucket(bucketProgress).ForEach(func(k, v []byte) error {
		var p reconcile.Progress
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode progress of %s: %w", k, err)
		}
		m[string(k)] = p
		return nil
	})
	return m, err
}

// PutProgress replaces the whole per-app progress with m.
func (t *Tx) PutProgress(m map[string]reconcile.Progress) error {
	b := t.bucket(bucketProgress)
	var stale [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		if _, ok := m[string(k)]; !ok {
			stale = append(stale, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for app, p := range m {
		v, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode progress of %s: %w", app, err)
		}
		if err := b.Put([]byte(app), v); err != nil {
			return fmt.Errorf("put progress of %s: %w", app, err)
		}
	}
	return nil
}

// AppendEvents adds events (their Seq is assigned) and drops the oldest
// past the cap, counting them. It returns the last sequence number.
func (t *Tx) AppendEvents(evs ...Event) (uint64, error) {
	b := t.bucket(bucketEvents)
	var seq uint64
	for _, e := range evs {
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return 0, err
		}
		e.Seq = seq
		v, err := json.Marshal(e)
		if err != nil {
			return 0, fmt.Errorf("encode event: %w", err)
		}
		if err := b.Put(u64(seq), v); err != nil {
			return 0, err
		}
	}
	if len(evs) == 0 {
		return b.Sequence(), nil
	}
	c := b.Cursor()
	k, _ := c.First()
	if k == nil {
		return seq, nil
	}
	over := int64(seq-binary.BigEndian.Uint64(k)+1) - int64(t.cap)
	if over <= 0 {
		return seq, nil
	}
	for n := over; n > 0; n-- {
		if k, _ := c.First(); k == nil {
			break
		}
		if err := c.Delete(); err != nil {
			return 0, err
		}
	}
	if err := t.addDropped(uint64(over)); err != nil {
		return 0, err
	}
	return seq, nil
}

func (t *Tx) addDropped(n uint64) error {
	m := t.meta()
	var cur uint64
	if v := m.Get(keyDropped); len(v) == 8 {
		cur = binary.BigEndian.Uint64(v)
	}
	return m.Put(keyDropped, u64(cur+n))
}

// Events returns up to limit events with Seq > after, oldest first.
func (t *Tx) Events(after uint64, limit int) ([]Event, error) {
	var out []Event
	c := t.bucket(bucketEvents).Cursor()
	for k, v := c.Seek(u64(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Dropped is the number of events dropped by the cap so far.
func (t *Tx) Dropped() uint64 {
	if v := t.meta().Get(keyDropped); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func isNotFound(err error) bool { return errdefs.IsNotFound(err) }
