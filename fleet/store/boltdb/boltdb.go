package boltdb

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/internal/boltcheck"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// schemaVersion is the layout this build writes (see doc.go).
const schemaVersion = "1"

var (
	bucketV1          = []byte("v1")
	bucketMeta        = []byte("meta")
	bucketDevices     = []byte("devices")
	bucketStatus      = []byte("status")
	bucketGenerations = []byte("generations")
	bucketApps        = []byte("apps")
	bucketAppLatest   = []byte("applatest")
	bucketRevisions   = []byte("revisions")
	bucketRollouts    = []byte("rollouts")
	bucketJoinTokens  = []byte("jointokens")
	bucketAPITokens   = []byte("apitokens")
	bucketFeed        = []byte("feed")
	bucketEventIndex  = []byte("eventindex")
	bucketAudit       = []byte("audit")
	bucketDocs        = []byte("docs")
	bucketSessions    = []byte("sessions")

	keySchema    = []byte("schema")
	keyRev       = []byte("rev")
	keyFeedCount = []byte("feed.count")

	allBuckets = [][]byte{bucketMeta, bucketDevices, bucketStatus, bucketGenerations, bucketApps,
		bucketAppLatest, bucketRevisions, bucketRollouts, bucketJoinTokens, bucketAPITokens,
		bucketFeed, bucketEventIndex, bucketAudit, bucketDocs, bucketSessions}
)

// Options tune Open; nil means the defaults.
type Options struct {
	// Now is the store's clock, read for the generation floor, the
	// creation time of app revisions and audit entries given without a
	// time; default time.Now.
	Now func() time.Time
	// LockTimeout bounds the wait for the file lock held by another
	// process; default 2s.
	LockTimeout time.Duration
	// FeedRetention is the number of events kept over all devices;
	// default 1,000,000. The oldest go first.
	FeedRetention int
	// DeviceEvents is the number of events kept per device; default 1000.
	DeviceEvents int
	// MaxBatchDelay is how long concurrent Ingest and Generations.Next
	// calls wait to be committed together (a lone caller waits it too);
	// default 2ms.
	MaxBatchDelay time.Duration
}

// DB is the controller's store in one bbolt file.
type DB struct {
	bolt         *bolt.DB
	path         string
	now          func() time.Time
	feedCap      uint64
	deviceEvents uint64
}

// Open opens or creates the store at path (mode 0600, its directory 0700
// when created). A damaged file is refused with store.ErrCorrupt and left
// as it is, for the operator to restore a backup; a file held by another
// process with store.ErrLocked.
func Open(path string, opts *Options) (*DB, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.FeedRetention <= 0 {
		o.FeedRetention = 1_000_000
	}
	if o.DeviceEvents <= 0 {
		o.DeviceEvents = 1000
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store dir: %w", err)
	}
	b, err := openChecked(path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("store file mode: %w", err)
	}
	if o.MaxBatchDelay <= 0 {
		o.MaxBatchDelay = 2 * time.Millisecond
	}
	b.MaxBatchDelay = o.MaxBatchDelay
	return &DB{bolt: b, path: path, now: o.Now, feedCap: uint64(o.FeedRetention), deviceEvents: uint64(o.DeviceEvents)}, nil
}

// Store returns the store's parts as a store.Store.
func (db *DB) Store() store.Store {
	return store.Store{
		Devices:     devices{db},
		Ingest:      ingester{db},
		Apps:        apps{db},
		Rollouts:    rollouts{db, bucketRollouts, "rollout"},
		JoinTokens:  joinTokens{db},
		APITokens:   apiTokens{db},
		Events:      events{db},
		Audit:       audit{db},
		Generations: generations{db},
		Docs:        rollouts{db, bucketDocs, "document"},
		Sessions:    sessions{db},
		Close:       db.Close,
	}
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Path is the store file's path.
func (db *DB) Path() string { return db.path }

// Bolt exposes the bbolt handle for tests and checks.
func (db *DB) Bolt() *bolt.DB { return db.bolt }

// Backup writes a consistent copy of the whole store to w, while writes
// go on. Restoring is putting that copy in place of the file before Open.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.bolt.View(func(tx *bolt.Tx) (err error) { n, err = tx.WriteTo(w); return err })
	if err != nil {
		return n, fmt.Errorf("backup store: %w", err)
	}
	return n, nil
}

// openChecked opens path and proves it readable (internal/boltcheck:
// every bucket and key walked, then tx.Check), turning bbolt's panics and
// memory faults on a damaged file into store.ErrCorrupt, then creates the
// buckets of a new file.
func openChecked(path string, timeout time.Duration) (*bolt.DB, error) {
	b, err := boltcheck.Open(path, boltcheck.Options{LockTimeout: timeout, MaxDepth: 4, Verify: verifySchema})
	var ce *boltcheck.CorruptError
	var se *schemaError
	switch {
	case errors.As(err, &ce):
		return nil, fmt.Errorf("open store %s: %v: %w; restore a backup", path, ce.Err, store.ErrCorrupt)
	case errors.As(err, &se):
		return nil, fmt.Errorf("open store %s: %w: version %s, this build knows %s (a newer tender wrote it)", path, store.ErrSchema, se.v, schemaVersion)
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w (is another tender serve running on the same data dir?)", path, store.ErrLocked)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := create(b); err != nil {
		b.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return b, nil
}

type schemaError struct{ v string }

func (e *schemaError) Error() string { return "schema " + e.v }

// verifySchema refuses a file of a schema this build does not know.
func verifySchema(tx *bolt.Tx) error {
	if v1 := tx.Bucket(bucketV1); v1 != nil {
		if m := v1.Bucket(bucketMeta); m != nil {
			if s := m.Get(keySchema); s != nil && string(s) != schemaVersion {
				return &schemaError{string(s)}
			}
		}
	}
	return nil
}

// create makes the buckets of a new file.
func create(b *bolt.DB) error {
	return b.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		for _, n := range allBuckets {
			if _, err := v1.CreateBucketIfNotExists(n); err != nil {
				return fmt.Errorf("create bucket %s: %w", n, err)
			}
		}
		return v1.Bucket(bucketMeta).Put(keySchema, []byte(schemaVersion))
	})
}

// view and update run fn in a transaction after checking ctx.
func (db *DB) view(ctx context.Context, fn func(*tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.bolt.View(func(t *bolt.Tx) error { return fn(&tx{Tx: t, db: db}) })
}

func (db *DB) update(ctx context.Context, fn func(*tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.bolt.Update(func(t *bolt.Tx) error { return fn(&tx{Tx: t, db: db}) })
}

// batch is update through bbolt's Batch: concurrent calls share one
// commit. fn may run more than once and must start from scratch.
func (db *DB) batch(ctx context.Context, fn func(*tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.bolt.Batch(func(t *bolt.Tx) error { return fn(&tx{Tx: t, db: db}) })
}

type tx struct {
	*bolt.Tx
	db *DB
}

func (t *tx) b(name []byte) *bolt.Bucket { return t.Bucket(bucketV1).Bucket(name) }

// nextRev bumps and returns the store's revision, which stamps every
// record written (etcd's ModRevision).
func (t *tx) nextRev() (uint64, error) {
	m := t.b(bucketMeta)
	r := getU64(m.Get(keyRev)) + 1
	return r, m.Put(keyRev, u64(r))
}

func (t *tx) getJSON(bucket []byte, key string, kind string, v any) (bool, error) {
	data := t.b(bucket).Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, decodeErr(kind, key, err)
	}
	return true, nil
}

func (t *tx) putJSON(bucket []byte, key []byte, kind string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %q: %w", kind, key, err)
	}
	if err := t.b(bucket).Put(key, data); err != nil {
		return fmt.Errorf("put %s %q: %w", kind, key, err)
	}
	return nil
}

func decodeErr(kind, key string, err error) error {
	return fmt.Errorf("decode %s %q: %v: %w", kind, key, err, store.ErrCorrupt)
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// checkRev compares a record's revision (0: absent) with the one the
// caller expects.
func checkRev(kind, id string, expect, cur uint64) error {
	if expect == cur {
		return nil
	}
	return store.Conflict(kind, id, expect, cur)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}
