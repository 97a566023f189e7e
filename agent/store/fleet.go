package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/wire"
)

// OutboxBucket is the top-level bucket of the fleet link's outbox; its
// layout is sync/outbox's.
const OutboxBucket = "v1/outbox"

// The first release's unversioned buckets, moved by migrate.
var (
	legacyFleetState  = []byte("fleet/state")
	legacyFleetOutbox = []byte("fleet/outbox")
)

// Keys of v1/fleet (the same names and encodings as the first release's
// fleet/state bucket, so migrate copies them as they are).
var (
	keyFleetTime      = []byte("time")       // clock floor, unix nanoseconds
	keyFleetGen       = []byte("generation") // last fleet generation accepted
	keyFleetStoredGen = []byte("storedgen")  // store generation it was stored under
	keyFleetDigest    = []byte("digest")     // sha256 of the accepted envelope
	keyFleetCursor    = []byte("evcursor")   // last store event put in the outbox
	keyFleetCommands  = []byte("commands")   // the command replay guard, opaque
)

// FleetState is what the fleet link keeps across restarts.
type FleetState struct {
	// Generation is the last fleet generation accepted (0: none yet).
	Generation uint64
	// StoredGeneration is the store generation the document of Generation
	// was written under: while the stored desired document still has it,
	// the device runs the fleet's document.
	StoredGeneration uint64
	// Digest is the sha256 of the accepted envelope ("sha256:…").
	Digest string
	// EventCursor is the last event of the log put in the outbox.
	EventCursor uint64
}

// FleetState reads the fleet link's state.
func (db *DB) FleetState() (s FleetState, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketV1).Bucket(bucketFleet)
		s = FleetState{
			Generation: getU64(b, keyFleetGen), StoredGeneration: getU64(b, keyFleetStoredGen),
			Digest: string(b.Get(keyFleetDigest)), EventCursor: getU64(b, keyFleetCursor),
		}
		return nil
	})
	return s, err
}

// AcceptFleetDesired makes apps, from the fleet document of generation gen
// with envelope digest, the desired state, in one transaction with the
// record of gen: a crash leaves either both or neither. It returns the
// store generation the document got.
func (db *DB) AcceptFleetDesired(gen uint64, digest string, apps []wire.App) (stored uint64, err error) {
	if apps == nil {
		apps = []wire.App{}
	}
	err = db.Update(func(tx *Tx) error {
		cur, err := tx.Desired()
		if err != nil && !isNotFound(err) {
			return err
		}
		stored = cur.Generation + 1
		if err := tx.PutDesired(Desired{Generation: stored, Source: SourceFleet, Apps: apps}); err != nil {
			return err
		}
		b := tx.bucket(bucketFleet)
		for _, kv := range []struct {
			k, v []byte
		}{{keyFleetGen, u64(gen)}, {keyFleetStoredGen, u64(stored)}, {keyFleetDigest, []byte(digest)}} {
			if err := b.Put(kv.k, kv.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store desired state: %w", err)
	}
	return stored, nil
}

// SetEventCursor records the last event of the log put in the outbox.
func (db *DB) SetEventCursor(seq uint64) error {
	return db.putFleet(keyFleetCursor, u64(seq))
}

// CommandGuard is the fleet link's command replay guard as it saved it.
func (db *DB) CommandGuard() (b []byte, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		b = append([]byte(nil), tx.Bucket(bucketV1).Bucket(bucketFleet).Get(keyFleetCommands)...)
		return nil
	})
	return b, err
}

// SetCommandGuard saves the command replay guard.
func (db *DB) SetCommandGuard(b []byte) error { return db.putFleet(keyFleetCommands, b) }

// LoadTime is the saved clock floor (sync/clock's Store).
func (db *DB) LoadTime() (t time.Time, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		if n := getU64(tx.Bucket(bucketV1).Bucket(bucketFleet), keyFleetTime); n != 0 {
			t = time.Unix(0, int64(n))
		}
		return nil
	})
	return t, err
}

// SaveTime saves the clock floor.
func (db *DB) SaveTime(t time.Time) error {
	return db.putFleet(keyFleetTime, u64(uint64(t.UnixNano())))
}

func (db *DB) putFleet(k, v []byte) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).Bucket(bucketFleet).Put(k, v)
	})
}

// Outbox is the fleet link's outbox, kept in this file.
func (db *DB) Outbox(lim outbox.Limits) (*outbox.Outbox, error) {
	return outbox.New(db.bolt, OutboxBucket, lim)
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// migrate moves the first release's fleet buckets under the schema: the
// keys of "fleet/state" into v1/fleet, the outbox "fleet/outbox" to
// OutboxBucket (reports and events not yet sent included). It runs in the
// transaction that opens the file and does nothing on a current file.
func migrate(tx *bolt.Tx) error {
	if old := tx.Bucket(legacyFleetState); old != nil {
		dst := tx.Bucket(bucketV1).Bucket(bucketFleet)
		if err := old.ForEach(func(k, v []byte) error {
			if v == nil {
				return nil
			}
			return dst.Put(k, v)
		}); err != nil {
			return err
		}
		if err := tx.DeleteBucket(legacyFleetState); err != nil {
			return err
		}
	}
	if old := tx.Bucket(legacyFleetOutbox); old != nil {
		if tx.Bucket([]byte(OutboxBucket)) == nil {
			dst, err := tx.CreateBucket([]byte(OutboxBucket))
			if err != nil {
				return err
			}
			if err := copyBucket(dst, old); err != nil {
				return err
			}
		}
		if err := tx.DeleteBucket(legacyFleetOutbox); err != nil {
			return err
		}
	}
	return nil
}

// copyBucket copies src into dst, nested buckets and sequences included.
func copyBucket(dst, src *bolt.Bucket) error {
	if err := dst.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v != nil {
			return dst.Put(k, v)
		}
		sub, err := dst.CreateBucketIfNotExists(k)
		if err != nil {
			return err
		}
		return copyBucket(sub, src.Bucket(k))
	})
}
