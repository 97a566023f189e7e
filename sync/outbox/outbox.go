// Package outbox keeps the device's outgoing reports and events on disk
// (bbolt) until the broker has acknowledged them.
//
// Every report and event is written here before it is sent and removed
// only by Ack, after the broker's PUBACK. Reports share one slot: the newest
// supersedes any older one not yet sent. Events keep their order and get a
// sequence number from the outbox, increasing by one per event for the life
// of the database; past the cap (count or bytes) the oldest are dropped and
// counted (Dropped, a cumulative total the agent puts in its reports, so the
// fleet can compute how many it missed).
//
// Pending lists the report first, then events oldest first: the current
// state is worth more to the fleet than history after a long outage, and
// the two kinds go to different topics, whose receivers do not rely on
// their relative order (events carry their Seq, the report is retained).
//
// Schema, under the bucket given to New (default "v1/outbox"):
//
//	meta/   seq       uint64 BE   next event sequence number
//	        dropped   uint64 BE   events dropped at the cap, cumulative
//	        count     uint64 BE   events held
//	        bytes     uint64 BE   payload bytes of events held
//	        reportver uint64 BE   version of the report slot
//	report/ payload   []byte      newest report (absent: none pending)
//	events/ <seq BE>  []byte      event payloads
package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// DefaultBucket is the top-level bucket Open uses.
const DefaultBucket = "v1/outbox"

// Limits bound the events kept; zero fields take the defaults.
type Limits struct {
	MaxEvents int // default 1000
	MaxBytes  int // payload bytes of all events, default 1 MiB
}

// Defaults of Limits.
const (
	DefaultMaxEvents = 1000
	DefaultMaxBytes  = 1 << 20
)

// An event larger than Limits.MaxBytes on its own can never be kept: it is
// refused with errdefs.ErrInvalidArgument.

// Kind tells a report from an event.
type Kind int

// Item kinds.
const (
	Report Kind = iota + 1
	Event
)

func (k Kind) String() string {
	switch k {
	case Report:
		return "report"
	case Event:
		return "event"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Item is one pending message.
type Item struct {
	Kind Kind
	// Seq is the event's sequence number, or the report slot's version
	// (Ack of a superseded report is a no-op).
	Seq     uint64
	Payload []byte
}

// Outbox is the on-disk queue. It is safe for concurrent use.
type Outbox struct {
	db     *bolt.DB
	owned  bool
	bucket []byte
	lim    Limits
	notify chan struct{}
}

var (
	metaB    = []byte("meta")
	reportB  = []byte("report")
	eventsB  = []byte("events")
	kSeq     = []byte("seq")
	kDropped = []byte("dropped")
	kCount   = []byte("count")
	kBytes   = []byte("bytes")
	kRepVer  = []byte("reportver")
	kPayload = []byte("payload")
)

// Open opens (creating if needed) an outbox in its own bbolt file.
func Open(path string, lim Limits) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	o, err := New(db, DefaultBucket, lim)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	o.owned = true
	return o, nil
}

// New keeps the outbox in bucket of an existing database (the agent's
// state). Close does not close a shared database.
func New(db *bolt.DB, bucket string, lim Limits) (*Outbox, error) {
	if lim.MaxEvents <= 0 {
		lim.MaxEvents = DefaultMaxEvents
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	o := &Outbox{db: db, bucket: []byte(bucket), lim: lim, notify: make(chan struct{}, 1)}
	err := db.Update(func(tx *bolt.Tx) error {
		top, err := tx.CreateBucketIfNotExists(o.bucket)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{metaB, reportB, eventsB} {
			if _, err := top.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create outbox buckets: %w", err)
	}
	// Items left from a previous run are pending: wake the first Drain.
	o.signal()
	return o, nil
}

// Close closes the database if Open opened it.
func (o *Outbox) Close() error {
	if o.owned {
		return o.db.Close()
	}
	return nil
}

// Notify returns a channel that receives a value after items were added.
// It has room for one value: a reader that checks Pending after each
// receive misses nothing.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

func (o *Outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

type buckets struct{ meta, report, events *bolt.Bucket }

func (o *Outbox) buckets(tx *bolt.Tx) (buckets, error) {
	top := tx.Bucket(o.bucket)
	if top == nil {
		return buckets{}, fmt.Errorf("bucket %s missing: %w", o.bucket, errdefs.ErrDataLoss)
	}
	return buckets{top.Bucket(metaB), top.Bucket(reportB), top.Bucket(eventsB)}, nil
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put(k, buf[:])
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// PutReport stores payload as the report to send, superseding any report
// not yet acknowledged.
func (o *Outbox) PutReport(payload []byte) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		b, err := o.buckets(tx)
		if err != nil {
			return err
		}
		if err := putU64(b.meta, kRepVer, getU64(b.meta, kRepVer)+1); err != nil {
			return err
		}
		return b.report.Put(kPayload, payload)
	})
	if err != nil {
		return fmt.Errorf("put report in outbox: %w", err)
	}
	o.signal()
	return nil
}

// AddEvent appends an event and returns its sequence number.
func (o *Outbox) AddEvent(payload []byte) (uint64, error) {
	return o.AddEventFunc(func(uint64) ([]byte, error) { return payload, nil })
}

// AddEventFunc appends the event that build makes for the sequence number
// it is given (so the payload can carry its own Seq), in one transaction.
func (o *Outbox) AddEventFunc(build func(seq uint64) ([]byte, error)) (uint64, error) {
	var seq uint64
	err := o.db.Update(func(tx *bolt.Tx) error {
		b, err := o.buckets(tx)
		if err != nil {
			return err
		}
		seq = getU64(b.meta, kSeq) + 1
		payload, err := build(seq)
		if err != nil {
			return err
		}
		if len(payload) > o.lim.MaxBytes {
			return fmt.Errorf("event of %d bytes, larger than the whole outbox (%d): %w", len(payload), o.lim.MaxBytes, errdefs.ErrInvalidArgument)
		}
		count, size, dropped := getU64(b.meta, kCount), getU64(b.meta, kBytes), getU64(b.meta, kDropped)
		c := b.events.Cursor()
		for k, v := c.First(); k != nil && (count+1 > uint64(o.lim.MaxEvents) || size+uint64(len(payload)) > uint64(o.lim.MaxBytes)); k, v = c.First() {
			size -= uint64(len(v))
			count--
			dropped++
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if err := b.events.Put(seqKey(seq), payload); err != nil {
			return err
		}
		for _, kv := range []struct {
			k []byte
			v uint64
		}{{kSeq, seq}, {kCount, count + 1}, {kBytes, size + uint64(len(payload))}, {kDropped, dropped}} {
			if err := putU64(b.meta, kv.k, kv.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("add event to outbox: %w", err)
	}
	o.signal()
	return seq, nil
}

// Pending returns what is waiting to be sent: the report (if any) first,
// then the events oldest first.
func (o *Outbox) Pending() ([]Item, error) {
	var items []Item
	err := o.db.View(func(tx *bolt.Tx) error {
		b, err := o.buckets(tx)
		if err != nil {
			return err
		}
		if p := b.report.Get(kPayload); p != nil {
			items = append(items, Item{Kind: Report, Seq: getU64(b.meta, kRepVer), Payload: append([]byte(nil), p...)})
		}
		return b.events.ForEach(func(k, v []byte) error {
			items = append(items, Item{Kind: Event, Seq: binary.BigEndian.Uint64(k), Payload: append([]byte(nil), v...)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list outbox: %w", err)
	}
	return items, nil
}

// Ack removes an item the broker acknowledged. Acking an item already
// gone (dropped at the cap, acked twice) or a report superseded since
// Pending returned it is a no-op.
func (o *Outbox) Ack(it Item) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		b, err := o.buckets(tx)
		if err != nil {
			return err
		}
		switch it.Kind {
		case Report:
			if getU64(b.meta, kRepVer) != it.Seq {
				return nil
			}
			return b.report.Delete(kPayload)
		case Event:
			v := b.events.Get(seqKey(it.Seq))
			if v == nil {
				return nil
			}
			if err := putU64(b.meta, kCount, getU64(b.meta, kCount)-1); err != nil {
				return err
			}
			if err := putU64(b.meta, kBytes, getU64(b.meta, kBytes)-uint64(len(v))); err != nil {
				return err
			}
			return b.events.Delete(seqKey(it.Seq))
		}
		return fmt.Errorf("unknown item kind %v: %w", it.Kind, errdefs.ErrInvalidArgument)
	})
	if err != nil {
		return fmt.Errorf("ack %s %d: %w", it.Kind, it.Seq, err)
	}
	return nil
}

// Dropped returns how many events were dropped at the cap, in total.
func (o *Outbox) Dropped() (uint64, error) {
	var n uint64
	err := o.db.View(func(tx *bolt.Tx) error {
		b, err := o.buckets(tx)
		if err != nil {
			return err
		}
		n = getU64(b.meta, kDropped)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read outbox drop count: %w", err)
	}
	return n, nil
}
