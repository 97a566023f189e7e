package etcdstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
)

// feedMeta is meta/feed: the last cursor issued and the number of events
// in the feed. Every transaction that adds or removes feed entries
// writes it, on its revision.
type feedMeta struct {
	Seq   uint64 `json:"seq"`
	Count uint64 `json:"count"`
}

func decodeFeedMeta(kv *mvccpb.KeyValue) (feedMeta, error) {
	var m feedMeta
	if kv == nil {
		return m, nil
	}
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return m, decodeErr("feed meta", string(kv.Key), err)
	}
	return m, nil
}

func (db *DB) feedKey(cursor uint64) string { return db.k(kFeed, seqKey(cursor)) }
func (db *DB) indexKey(device string, seq uint64) string {
	return db.k(kEventIndex, device, "/", seqKey(seq))
}

type ingester struct{ db *DB }

// pending is what is left to store of one device's messages.
type pending struct {
	id       string
	reports  []store.Report
	presence []store.Presence
	events   []store.Event // in sequence order
}

// maxConflictRounds bounds the rounds of an Ingest that store nothing
// because other writers changed what they read.
const maxConflictRounds = 64

// Ingest stores the batch device by device: all messages of a device in a
// round go into one transaction, on the revisions of the device's record,
// status and generation counter (and of meta/feed when it adds events),
// so no concurrent write of another controller is lost. Devices are
// packed into as few transactions as etcd's limits allow (MaxTxnOps
// operations and comparisons, MaxTxnBytes), committed in order. A
// transaction that loses a race is read again and redone with the
// devices it held. See doc.go for what a failure leaves.
func (s ingester) Ingest(ctx context.Context, b store.Batch) (store.IngestResult, error) {
	evs := slices.Clone(b.Events)
	slices.SortStableFunc(evs, func(x, y store.Event) int {
		return cmp.Or(cmp.Compare(x.Device, y.Device), cmp.Compare(x.Event.Seq, y.Event.Seq))
	})
	byID := map[string]*pending{}
	var order []*pending
	of := func(id string) *pending {
		p := byID[id]
		if p == nil {
			p = &pending{id: id}
			byID[id] = p
			order = append(order, p)
		}
		return p
	}
	for _, r := range b.Reports {
		of(r.Device).reports = append(of(r.Device).reports, r)
	}
	for _, p := range b.Presence {
		of(p.Device).presence = append(of(p.Device).presence, p)
	}
	for _, e := range evs {
		of(e.Device).events = append(of(e.Device).events, e)
	}
	// Devices in id order, as boltdb takes events: the feed's cursors
	// follow it. Unknown devices are named in the order they came.
	rank := map[string]int{}
	for i, p := range order {
		rank[p.id] = i
	}
	slices.SortFunc(order, func(x, y *pending) int { return cmp.Compare(x.id, y.id) })
	var res store.IngestResult
	defer slices.SortFunc(res.Unknown, func(x, y string) int { return cmp.Compare(rank[x], rank[y]) })
	idle := 0
	for len(order) > 0 {
		progress, err := s.round(ctx, &order, &res)
		if err != nil {
			return res, fmt.Errorf("ingest (%d devices' messages stored, %d left): %w", len(byID)-len(order), len(order), err)
		}
		if progress {
			idle = 0
		} else if idle++; idle >= maxConflictRounds {
			return res, fmt.Errorf("ingest: %d rounds lost to concurrent writers, %d devices left: %w", idle, len(order), errdefs.ErrConflict)
		}
	}
	if err := s.db.trimFeed(ctx); err != nil {
		return res, fmt.Errorf("ingest: trim feed: %w", err)
	}
	return res, nil
}

// unit is one device's share of a transaction.
type unit struct {
	p      *pending
	cmps   []clientv3.Cmp
	ops    []clientv3.Op // without the feed entries, added with cursors
	newEvs []store.FeedEvent
	drop   int      // of newEvs, the oldest, trimmed before they are written
	trimFs []uint64 // cursors of stored events trimmed
	bytes  int
	res    store.IngestResult
	rest   []store.Event // events left for the next round
	status *store.DeviceStatus
	statK  string
}

// round reads the pending devices, builds and commits their transactions
// in order, and leaves in *order what is still to do (devices not
// committed, and events held back by the size limits).
func (s ingester) round(ctx context.Context, order *[]*pending, res *store.IngestResult) (bool, error) {
	db := s.db
	// This round goes at most to the first device with more events than
	// a transaction holds: read that far.
	upto := len(*order)
	for i, p := range *order {
		if len(p.events) > db.eventsPerTxn() {
			upto = i + 1
			break
		}
	}
	keys := []string{db.k(kFeedMeta)}
	for _, p := range (*order)[:upto] {
		keys = append(keys, db.k(kDevices, p.id), db.k(kStatus, p.id), db.k(kGenerations, p.id))
	}
	kvs, rev, err := db.getMany(ctx, keys, 0)
	if err != nil {
		return false, err
	}
	metaKV := kvs[db.k(kFeedMeta)]
	meta, err := decodeFeedMeta(metaKV)
	if err != nil {
		return false, err
	}
	var units []*unit
	done := map[*pending]bool{}
	for _, p := range (*order)[:upto] {
		u, err := db.plan(p, kvs, res)
		if err != nil {
			return false, err
		}
		if u == nil {
			done[p] = true // unknown or revoked: skipped, counted
			continue
		}
		units = append(units, u)
		// Over its cap: the device's oldest stored events go, at most as
		// many as it adds now (so the unit fits its transaction).
		if u.status.EventsKept > db.deviceEvents && len(u.newEvs) > 0 {
			n := min(u.status.EventsKept-db.deviceEvents, uint64(len(u.newEvs)))
			resp, err := db.get(ctx, db.k(kEventIndex, p.id, "/"), clientv3.WithPrefix(), clientv3.WithLimit(int64(n)), clientv3.WithRev(rev))
			if err != nil {
				return false, err
			}
			db.trimDevice(u, resp.Kvs)
		}
		if err := u.finish(); err != nil {
			return false, err
		}
		if len(u.rest) > 0 {
			// The device's other events come next round, and the
			// devices after it after them: the feed stays in batch
			// order, as boltdb writes it.
			break
		}
	}
	// Pack and commit in order.
	metaRev := modRev(metaKV)
	progress := false
	i := 0
	for i < len(units) {
		j, txnCmps, txnOps := i, 1, 1 // meta/feed's compare and put
		bytes := 64
		for j < len(units) {
			u := units[j]
			if j > i && (txnCmps+len(u.cmps) > db.maxOps || txnOps+len(u.ops)+2*(len(u.newEvs)-u.drop) > db.maxOps || bytes+u.bytes > db.maxBytes) {
				break
			}
			txnCmps += len(u.cmps)
			txnOps += len(u.ops) + 2*(len(u.newEvs)-u.drop)
			bytes += u.bytes
			j++
		}
		chunk := units[i:j]
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		m := meta
		for _, u := range chunk {
			cmps = append(cmps, u.cmps...)
			ops = append(ops, u.ops...)
			m.Count -= uint64(len(u.trimFs))
			for _, fe := range u.newEvs[u.drop:] {
				m.Seq++
				m.Count++
				fe.Cursor = m.Seq
				v, err := encode("event", fe.Device, fe)
				if err != nil {
					return progress, err
				}
				ops = append(ops, clientv3.OpPut(db.feedKey(fe.Cursor), v),
					clientv3.OpPut(db.indexKey(fe.Device, fe.Event.Seq), strconv.FormatUint(fe.Cursor, 10)))
			}
		}
		if m != meta {
			mv, err := encode("feed meta", "", m)
			if err != nil {
				return progress, err
			}
			cmps = append(cmps, eq(db.k(kFeedMeta), metaRev))
			ops = append(ops, clientv3.OpPut(db.k(kFeedMeta), mv))
		}
		resp, err := db.txn(ctx, cmps, ops, nil)
		if err != nil {
			return progress, err
		}
		if !resp.Succeeded {
			break // someone else wrote what this read: read again
		}
		progress = true
		if m != meta {
			meta, metaRev = m, resp.Header.Revision
		}
		for _, u := range chunk {
			add(res, u.res)
			if len(u.rest) > 0 {
				u.p.reports, u.p.presence, u.p.events = nil, nil, u.rest
			} else {
				done[u.p] = true
			}
		}
		i = j
	}
	// What is left: devices not committed or not planned, and the rest
	// of the events of those that were.
	left := (*order)[:0]
	for _, p := range *order {
		if !done[p] {
			left = append(left, p)
		}
	}
	*order = left
	return progress, nil
}

func add(res *store.IngestResult, r store.IngestResult) {
	res.Reports += r.Reports
	res.StaleReports += r.StaleReports
	res.Events += r.Events
	res.DuplicateEvents += r.DuplicateEvents
	res.Gaps += r.Gaps
	res.Presence += r.Presence
	res.Refused += r.Refused
}

// plan applies a device's pending messages to its status as read (the
// rules of fleet/store/doc.go, as fleet/store/boltdb applies them) and
// returns its unit, or nil for a device not enrolled or revoked (named in
// res.Unknown once).
func (db *DB) plan(p *pending, kvs map[string]*mvccpb.KeyValue, res *store.IngestResult) (*unit, error) {
	dk, sk, gk := db.k(kDevices, p.id), db.k(kStatus, p.id), db.k(kGenerations, p.id)
	dkv := kvs[dk]
	if dkv == nil {
		res.Unknown = append(res.Unknown, p.id)
		return nil, nil
	}
	var d store.Device
	if err := json.Unmarshal(dkv.Value, &d); err != nil {
		return nil, decodeErr("device", p.id, err)
	}
	if d.Revoked {
		res.Unknown = append(res.Unknown, p.id)
		return nil, nil
	}
	st := &store.DeviceStatus{}
	if skv := kvs[sk]; skv != nil {
		if err := json.Unmarshal(skv.Value, st); err != nil {
			return nil, decodeErr("device status", p.id, err)
		}
	}
	gen, err := num(kvs[gk])
	if err != nil {
		return nil, err
	}
	u := &unit{p: p, status: st, statK: sk}
	u.cmps = []clientv3.Cmp{eq(dk, dkv.ModRevision), eq(sk, modRev(kvs[sk]))}
	newGen := gen
	for _, r := range p.reports {
		if obs, ok := store.ApplyReport(st, r, &u.res); ok && obs > newGen {
			newGen = obs
		}
	}
	for _, pr := range p.presence {
		store.ApplyPresence(st, pr, &u.res)
	}
	// Events, as many as one transaction holds with the device's other
	// writes (status, generation, meta/feed) and their trims.
	maxEvents := db.eventsPerTxn()
	budget := db.maxBytes / 2
	for i, e := range p.events {
		if len(u.newEvs) >= maxEvents || budget <= 0 {
			u.rest = p.events[i:]
			break
		}
		if !store.ApplyEvent(st, e, &u.res) {
			continue
		}
		st.EventsKept++
		fe := store.FeedEvent{Device: e.Device, Received: e.Received, Event: e.Event}
		u.newEvs = append(u.newEvs, fe)
		n := eventSize(fe)
		budget -= n
		u.bytes += n
	}
	if newGen != gen {
		u.cmps = append(u.cmps, eq(gk, modRev(kvs[gk])))
		u.ops = append(u.ops, clientv3.OpPut(gk, strconv.FormatUint(newGen, 10)))
	}
	// The status is written last (finishStatus), after the trims.
	return u, nil
}

// eventsPerTxn is how many new events of one device a transaction takes
// with the device's other writes (status, generation, meta/feed): each
// costs a feed and an index put, and may trim one stored event (two
// deletes).
func (db *DB) eventsPerTxn() int { return max((db.maxOps-4)/4, 1) }

// eventSize is about what an event costs in a request: its feed entry and
// index entry, keys included.
func eventSize(fe store.FeedEvent) int {
	return 300 + len(fe.Device)*2 + len(fe.Event.Reason) + len(fe.Event.App) + len(fe.Event.Container) + len(fe.Event.Kind)
}

// trimDevice drops the device's oldest events past DeviceEvents, as
// fleet/store/boltdb does one at a time: first the stored ones (oldest
// index entries, read at the round's revision), then the oldest of this
// round, which are never written.
func (db *DB) trimDevice(u *unit, oldest []*mvccpb.KeyValue) {
	st := u.status
	for _, kv := range oldest {
		if st.EventsKept <= db.deviceEvents {
			break
		}
		c, err := num(kv)
		if err != nil {
			continue // a damaged index entry: left for the operator, not trimmed
		}
		u.trimFs = append(u.trimFs, c)
		u.ops = append(u.ops, clientv3.OpDelete(string(kv.Key)), clientv3.OpDelete(db.feedKey(c)))
		st.EventsKept--
	}
	for st.EventsKept > db.deviceEvents && u.drop < len(u.newEvs) {
		u.drop++
		st.EventsKept--
	}
}

// finish adds the status put to every unit; called once the trims are
// known.
func (u *unit) finish() error {
	v, err := encode("device status", u.p.id, u.status)
	if err != nil {
		return err
	}
	u.ops = append(u.ops, clientv3.OpPut(u.statK, v))
	u.bytes += len(u.statK) + len(v)
	return nil
}

// trimFeed drops the oldest events of the feed past FeedRetention, a few
// dozen per transaction: each on the revisions of meta/feed, of the feed
// entry, of its index entry and of its device's status (EventsKept goes
// down).
func (db *DB) trimFeed(ctx context.Context) error {
	per := max((db.maxOps-2)/3, 1)
	for {
		resp, err := db.get(ctx, db.k(kFeedMeta))
		if err != nil {
			return err
		}
		var metaKV *mvccpb.KeyValue
		if len(resp.Kvs) > 0 {
			metaKV = resp.Kvs[0]
		}
		meta, err := decodeFeedMeta(metaKV)
		if err != nil {
			return err
		}
		if meta.Count <= db.feedCap {
			return nil
		}
		rev := resp.Header.Revision
		n := int(min(uint64(per), meta.Count-db.feedCap))
		fp := db.k(kFeed)
		var olds []*mvccpb.KeyValue
		if err := db.rangeAt(ctx, fp, prefixEnd(fp), n, rev, func(kv *mvccpb.KeyValue) error {
			olds = append(olds, kv)
			return nil
		}); err != nil {
			return err
		}
		if len(olds) == 0 { // the count is off: nothing to trim
			meta.Count = 0
		}
		var fes []store.FeedEvent
		var keys []string
		for _, kv := range olds {
			var fe store.FeedEvent
			if err := json.Unmarshal(kv.Value, &fe); err != nil {
				return decodeErr("event", string(kv.Key), err)
			}
			fes = append(fes, fe)
			keys = append(keys, db.indexKey(fe.Device, fe.Event.Seq), db.k(kStatus, fe.Device))
		}
		kvs, _, err := db.getMany(ctx, keys, rev)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{eq(db.k(kFeedMeta), modRev(metaKV))}
		var ops []clientv3.Op
		status := map[string]*store.DeviceStatus{}
		var statusOrder []string
		for i, fe := range fes {
			cmps = append(cmps, eq(string(olds[i].Key), olds[i].ModRevision))
			ops = append(ops, clientv3.OpDelete(string(olds[i].Key)))
			meta.Count--
			ik, sk := db.indexKey(fe.Device, fe.Event.Seq), db.k(kStatus, fe.Device)
			ikv := kvs[ik]
			if c, err := num(ikv); err != nil || ikv == nil || c != fe.Cursor {
				continue // the device was deleted (its feed entries wait for their purge)
			}
			cmps = append(cmps, eq(ik, ikv.ModRevision))
			ops = append(ops, clientv3.OpDelete(ik))
			skv := kvs[sk]
			if skv == nil {
				continue
			}
			st := status[sk]
			if st == nil {
				st = &store.DeviceStatus{}
				if err := json.Unmarshal(skv.Value, st); err != nil {
					return decodeErr("device status", fe.Device, err)
				}
				status[sk] = st
				statusOrder = append(statusOrder, sk)
				cmps = append(cmps, eq(sk, skv.ModRevision))
			}
			if st.EventsKept > 0 {
				st.EventsKept--
			}
		}
		for _, sk := range statusOrder {
			v, err := encode("device status", strings.TrimPrefix(sk, db.k(kStatus)), status[sk])
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(sk, v))
		}
		mv, err := encode("feed meta", "", meta)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(db.k(kFeedMeta), mv))
		if _, err := db.txn(ctx, cmps, ops, nil); err != nil {
			return err
		}
		// Lost or won, read again: the loop ends when the count is in.
	}
}

// purge deletes the feed entries listed at purge key pk (a deleted
// device's), a few dozen per transaction on the revisions of the list,
// of meta/feed and of the entries (one trimmed meanwhile is not counted
// twice), then the list.
func (db *DB) purge(ctx context.Context, pk string) error {
	per := max(db.maxOps-4, 1)
	for {
		resp, err := db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(pk), clientv3.OpGet(db.k(kFeedMeta))}, nil)
		if err != nil {
			return err
		}
		pkv, metaKV := first(resp, 0), first(resp, 1)
		if pkv == nil {
			return nil
		}
		var cursors []uint64
		if err := json.Unmarshal(pkv.Value, &cursors); err != nil {
			return decodeErr("purge list", string(pkv.Key), err)
		}
		meta, err := decodeFeedMeta(metaKV)
		if err != nil {
			return err
		}
		now, rest := cursors[:min(per, len(cursors))], cursors[min(per, len(cursors)):]
		keys := make([]string, len(now))
		for i, c := range now {
			keys[i] = db.feedKey(c)
		}
		kvs, _, err := db.getMany(ctx, keys, resp.Header.Revision)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{eq(pk, pkv.ModRevision), eq(db.k(kFeedMeta), modRev(metaKV))}
		var ops []clientv3.Op
		for _, k := range keys {
			kv := kvs[k]
			cmps = append(cmps, eq(k, modRev(kv)))
			if kv != nil {
				ops = append(ops, clientv3.OpDelete(k))
				meta.Count = max(meta.Count, 1) - 1
			}
		}
		if len(rest) > 0 {
			v, err := encode("purge list", string(pkv.Key), rest)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(pk, v))
		} else {
			ops = append(ops, clientv3.OpDelete(pk))
		}
		mv, err := encode("feed meta", "", meta)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(db.k(kFeedMeta), mv))
		if _, err := db.txn(ctx, cmps, ops, nil); err != nil {
			return err
		}
	}
}

// finishPurges finishes the device deletions a crashed controller left.
func (db *DB) finishPurges(ctx context.Context) error {
	p := db.k(kPurge)
	var pks []string
	if err := db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		pks = append(pks, string(kv.Key))
		return nil
	}); err != nil {
		return err
	}
	for _, pk := range pks {
		if err := db.purge(ctx, pk); err != nil {
			return fmt.Errorf("finish deleting the events of device %s: %w", strings.TrimPrefix(pk, p), err)
		}
	}
	return nil
}

// Events.

type events struct{ db *DB }

func decodeEvent(kv *mvccpb.KeyValue) (store.FeedEvent, error) {
	var fe store.FeedEvent
	if err := json.Unmarshal(kv.Value, &fe); err != nil {
		return fe, decodeErr("event", string(kv.Key), err)
	}
	return fe, nil
}

func (s events) Feed(ctx context.Context, after uint64, limit int) (out []store.FeedEvent, err error) {
	p := s.db.k(kFeed)
	err = s.db.rangeAll(ctx, p+seqKey(after+1), prefixEnd(p), limit, func(kv *mvccpb.KeyValue) error {
		fe, err := decodeEvent(kv)
		out = append(out, fe)
		return err
	})
	return out, err
}

func (s events) Device(ctx context.Context, id string, limit int) ([]store.FeedEvent, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.db.get(ctx, s.db.k(kEventIndex, id, "/"), opts...)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range slices.Backward(resp.Kvs) {
		c, err := num(kv)
		if err != nil {
			return nil, err
		}
		keys = append(keys, s.db.feedKey(c))
	}
	kvs, _, err := s.db.getMany(ctx, keys, resp.Header.Revision)
	if err != nil {
		return nil, err
	}
	var out []store.FeedEvent
	for _, k := range keys {
		kv := kvs[k]
		if kv == nil {
			return nil, fmt.Errorf("event %s of device %q is indexed but not stored: %w", k, id, store.ErrCorrupt)
		}
		fe, err := decodeEvent(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, fe)
	}
	return out, nil
}
