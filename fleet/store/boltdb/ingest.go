package boltdb

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"slices"

	"github.com/tender-edge/tender/fleet/store"
)

type ingester struct{ db *DB }

// bigBatch is the size from which Ingest commits at once rather than
// waiting MaxBatchDelay for concurrent callers to join.
const bigBatch = 64

// Ingest writes a batch in one transaction: one fsync for many reports.
// Small batches share their transaction with concurrent calls (bbolt's
// Batch).
func (s ingester) Ingest(ctx context.Context, b store.Batch) (res store.IngestResult, err error) {
	// Events of one device in sequence order, so a batch that holds them
	// out of order does not count the late ones as duplicates.
	evs := slices.Clone(b.Events)
	slices.SortStableFunc(evs, func(x, y store.Event) int {
		return cmp.Or(cmp.Compare(x.Device, y.Device), cmp.Compare(x.Event.Seq, y.Event.Seq))
	})
	run := s.db.batch // small: share a commit with concurrent callers
	if len(b.Reports)+len(b.Events)+len(b.Presence) >= bigBatch {
		run = s.db.update // big enough: commit now
	}
	err = run(ctx, func(t *tx) error {
		res = store.IngestResult{} // Batch may run this again alone
		in := &ingestTx{tx: t, res: &res, status: map[string]*store.DeviceStatus{}, known: map[string]bool{}}
		if err := in.run(b, evs); err != nil {
			return err
		}
		return in.flush()
	})
	if err != nil {
		return store.IngestResult{}, err
	}
	return res, nil
}

type ingestTx struct {
	*tx
	res      *store.IngestResult
	status   map[string]*store.DeviceStatus // read and changed in this batch
	known    map[string]bool                // enrolled and not revoked
	feedSize uint64
}

func (in *ingestTx) run(b store.Batch, evs []store.Event) error {
	in.feedSize = getU64(in.b(bucketMeta).Get(keyFeedCount))
	for _, r := range b.Reports {
		st, err := in.enrolled(r.Device)
		if err != nil {
			return err
		}
		if st == nil {
			continue
		}
		obs, ok := store.ApplyReport(st, r, in.res)
		if !ok {
			continue
		}
		g := in.b(bucketGenerations)
		if obs > getU64(g.Get([]byte(r.Device))) {
			if err := g.Put([]byte(r.Device), u64(obs)); err != nil {
				return err
			}
		}
	}
	for _, p := range b.Presence {
		st, err := in.enrolled(p.Device)
		if err != nil {
			return err
		}
		if st == nil {
			continue
		}
		store.ApplyPresence(st, p, in.res)
	}
	for _, e := range evs {
		st, err := in.enrolled(e.Device)
		if err != nil {
			return err
		}
		if st == nil {
			continue
		}
		if !store.ApplyEvent(st, e, in.res) {
			continue
		}
		if err := in.addEvent(st, e); err != nil {
			return err
		}
	}
	return in.trimFeed()
}

// enrolled returns the status of an enrolled, unrevoked device, or nil
// (and the device counted as unknown).
func (in *ingestTx) enrolled(id string) (*store.DeviceStatus, error) {
	if ok, decided := in.known[id]; decided {
		if !ok {
			return nil, nil
		}
		return in.status[id], nil
	}
	var d store.Device
	ok, err := in.getJSON(bucketDevices, id, "device", &d)
	if err != nil {
		return nil, err
	}
	if !ok || d.Revoked {
		in.known[id] = false
		in.res.Unknown = append(in.res.Unknown, id)
		return nil, nil
	}
	in.known[id] = true
	return in.statusOf(id)
}

// statusOf returns device id's status for this batch to change, read
// once.
func (in *ingestTx) statusOf(id string) (*store.DeviceStatus, error) {
	if st, ok := in.status[id]; ok {
		return st, nil
	}
	st := &store.DeviceStatus{}
	if _, err := in.getJSON(bucketStatus, id, "device status", st); err != nil {
		return nil, err
	}
	in.status[id] = st
	return st, nil
}

func eventKey(device string, seq uint64) []byte {
	k := make([]byte, 0, len(device)+9)
	k = append(append(k, device...), 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func (in *ingestTx) addEvent(st *store.DeviceStatus, e store.Event) error {
	feed := in.b(bucketFeed)
	cur, err := feed.NextSequence()
	if err != nil {
		return err
	}
	fe := store.FeedEvent{Cursor: cur, Device: e.Device, Received: e.Received, Event: e.Event}
	if err := in.putJSON(bucketFeed, u64(cur), "event", fe); err != nil {
		return err
	}
	if err := in.b(bucketEventIndex).Put(eventKey(e.Device, e.Event.Seq), u64(cur)); err != nil {
		return err
	}
	st.EventsKept++
	in.feedSize++
	if st.EventsKept <= in.db.deviceEvents {
		return nil
	}
	// The device's oldest event goes.
	prefix := append([]byte(e.Device), 0)
	c := in.b(bucketEventIndex).Cursor()
	k, v := c.Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil
	}
	if err := feed.Delete(v); err != nil {
		return err
	}
	if err := c.Delete(); err != nil {
		return err
	}
	st.EventsKept--
	in.feedSize--
	return nil
}

// trimFeed drops the oldest events of the feed past its retention.
func (in *ingestTx) trimFeed() error {
	c := in.b(bucketFeed).Cursor()
	for in.feedSize > in.db.feedCap {
		k, v := c.First()
		if k == nil {
			in.feedSize = 0
			break
		}
		var fe store.FeedEvent
		if err := json.Unmarshal(v, &fe); err != nil {
			return decodeErr("event", "", err)
		}
		if err := c.Delete(); err != nil {
			return err
		}
		in.feedSize--
		if err := in.b(bucketEventIndex).Delete(eventKey(fe.Device, fe.Event.Seq)); err != nil {
			return err
		}
		if _, cached := in.status[fe.Device]; !cached && in.b(bucketStatus).Get([]byte(fe.Device)) == nil {
			continue // cannot be: a device's events go with it
		}
		st, err := in.statusOf(fe.Device)
		if err != nil {
			return err
		}
		if st.EventsKept > 0 {
			st.EventsKept--
		}
	}
	return in.b(bucketMeta).Put(keyFeedCount, u64(in.feedSize))
}

func (in *ingestTx) flush() error {
	for id, st := range in.status {
		if err := in.putJSON(bucketStatus, []byte(id), "device status", st); err != nil {
			return err
		}
	}
	return nil
}

// deleteDeviceEvents removes every event of device id.
func (t *tx) deleteDeviceEvents(id string) error {
	prefix := append([]byte(id), 0)
	feed := t.b(bucketFeed)
	c := t.b(bucketEventIndex).Cursor()
	var n uint64
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Seek(prefix) {
		if err := feed.Delete(v); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
		n++
	}
	m := t.b(bucketMeta)
	count := getU64(m.Get(keyFeedCount))
	return m.Put(keyFeedCount, u64(count-min(n, count)))
}

// Events.

type events struct{ db *DB }

func (s events) Feed(ctx context.Context, after uint64, limit int) (out []store.FeedEvent, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		c := t.b(bucketFeed).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			var fe store.FeedEvent
			if err := json.Unmarshal(v, &fe); err != nil {
				return decodeErr("event", "", err)
			}
			out = append(out, fe)
		}
		return nil
	})
	return out, err
}

func (s events) Device(ctx context.Context, id string, limit int) (out []store.FeedEvent, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		prefix := append([]byte(id), 0)
		feed := t.b(bucketFeed)
		c := t.b(bucketEventIndex).Cursor()
		// Seek past the prefix, then walk back.
		k, v := c.Seek(append([]byte(id), 1))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var fe store.FeedEvent
			if err := json.Unmarshal(feed.Get(v), &fe); err != nil {
				return decodeErr("event", id, err)
			}
			out = append(out, fe)
		}
		slices.Reverse(out)
		return nil
	})
	return out, err
}
