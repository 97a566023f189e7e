package etcdstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
)

// Import writes a whole store (store.Dump, from another implementation)
// under the prefix, then counts what is there and compares it with the
// dump. The prefix must hold nothing but its schema, unless force: then
// everything under it is deleted first. It is not atomic (a dump is many
// transactions); run it with no controller using the prefix, and again
// with force if it failed.
func (db *DB) Import(ctx context.Context, d *store.Dump, force bool) error {
	resp, err := db.get(ctx, db.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count > 1 { // the schema key Open wrote
		if !force {
			return fmt.Errorf("etcd prefix %s already holds %d keys (a fleet store?): refusing to overwrite it without force: %w", db.prefix, resp.Count, errdefs.ErrAlreadyExists)
		}
		// Everything but the schema (a txn may not delete and put one key).
		if _, err := db.txn(ctx, nil, []clientv3.Op{clientv3.OpDelete(db.prefix, clientv3.WithRange(db.k(kSchema))),
			clientv3.OpDelete(db.k(kSchema)+"\x00", clientv3.WithRange(prefixEnd(db.prefix)))}, nil); err != nil {
			return fmt.Errorf("clear prefix %s: %w", db.prefix, err)
		}
	}
	w := &batchWriter{db: db, ctx: ctx}
	put := func(kind, id, key string, v any) {
		if w.err != nil {
			return
		}
		s, err := encode(kind, id, v)
		if err != nil {
			w.err = err
			return
		}
		w.put(key, s)
	}
	for _, x := range d.Devices {
		x.Rev, x.Status = 0, store.DeviceStatus{}
		put("device", x.ID, db.k(kDevices, x.ID), x)
	}
	for _, id := range slices.Sorted(maps.Keys(d.Status)) {
		put("device status", id, db.k(kStatus, id), d.Status[id])
	}
	for _, id := range slices.Sorted(maps.Keys(d.Generations)) {
		w.put(db.k(kGenerations, id), strconv.FormatUint(d.Generations[id], 10))
	}
	for _, x := range d.Apps {
		x.Rev = 0
		put("app", x.Name, db.k(kApps, x.Name), x)
	}
	for _, name := range slices.Sorted(maps.Keys(d.AppLatest)) {
		w.put(db.k(kAppLatest, name), strconv.FormatUint(d.AppLatest[name], 10))
	}
	for _, name := range slices.Sorted(maps.Keys(d.Revisions)) {
		for _, r := range d.Revisions[name] {
			put("app revision", name, db.k(kRevisions, name, "/", seqKey(r.Revision)), r)
		}
	}
	for _, b := range d.Rollouts {
		w.put(db.k(kRollouts, b.ID), string(b.Data))
	}
	for _, b := range d.Docs {
		w.put(db.k(kDocs, b.ID), string(b.Data))
	}
	for _, x := range d.JoinTokens {
		x.Rev = 0
		put("join token", x.ID, db.k(kJoinTokens, x.ID), x)
	}
	for _, x := range d.APITokens {
		x.Rev = 0
		put("api token", x.Name, db.k(kAPITokens, x.Hash), x)
	}
	for _, fe := range d.Feed {
		put("event", fe.Device, db.feedKey(fe.Cursor), fe)
		w.put(db.indexKey(fe.Device, fe.Event.Seq), strconv.FormatUint(fe.Cursor, 10))
	}
	put("feed meta", "", db.k(kFeedMeta), feedMeta{Seq: d.FeedSeq, Count: uint64(len(d.Feed))})
	for _, e := range d.Audit {
		put("audit entry", strconv.FormatUint(e.Seq, 10), db.k(kAudit, seqKey(e.Seq)), e)
	}
	if d.AuditCount > 0 || len(d.Audit) > 0 {
		var last []byte
		if len(d.Audit) > 0 {
			last = d.Audit[len(d.Audit)-1].Hash
		}
		put("audit meta", "", db.k(kAuditMeta), auditMeta{Seq: d.AuditCount, Hash: last})
	}
	w.flush()
	if w.err != nil {
		return fmt.Errorf("import into %s (%d keys written): %w", db.prefix, w.written, w.err)
	}
	return db.verifyCounts(ctx, d)
}

// verifyCounts counts the keys of every kind under the prefix and
// compares them with the dump's records.
func (db *DB) verifyCounts(ctx context.Context, d *store.Dump) error {
	want := d.Counts()
	spaces := map[string]string{
		"devices": kDevices, "statuses": kStatus, "generations": kGenerations, "apps": kApps,
		"app latest": kAppLatest, "app revisions": kRevisions, "rollouts": kRollouts, "documents": kDocs,
		"join tokens": kJoinTokens, "api tokens": kAPITokens, "events": kFeed, "audit entries": kAudit,
	}
	var bad []string
	for _, kind := range slices.Sorted(maps.Keys(want)) {
		resp, err := db.get(ctx, db.k(spaces[kind]), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if int(resp.Count) != want[kind] {
			bad = append(bad, fmt.Sprintf("%s: %d copied, %d in etcd", kind, want[kind], resp.Count))
		}
	}
	resp, err := db.get(ctx, db.k(kEventIndex), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if int(resp.Count) != len(d.Feed) {
		bad = append(bad, fmt.Sprintf("event index: %d events, %d indexed in etcd (two events of one device with the same seq?)", len(d.Feed), resp.Count))
	}
	if len(bad) > 0 {
		return fmt.Errorf("import into %s: counts differ: %s: %w", db.prefix, strings.Join(bad, "; "), errdefs.ErrDataLoss)
	}
	return nil
}

// batchWriter puts keys in transactions of at most MaxTxnOps puts and
// MaxTxnBytes.
type batchWriter struct {
	db      *DB
	ctx     context.Context
	ops     []clientv3.Op
	keys    map[string]bool // of ops: etcd refuses a key twice in a txn
	bytes   int
	written int
	err     error
}

func (w *batchWriter) put(k, v string) {
	if w.err != nil {
		return
	}
	if len(w.ops) > 0 && (len(w.ops)+1 > w.db.maxOps || w.bytes+len(k)+len(v) > w.db.maxBytes || w.keys[k]) {
		w.flush()
	}
	if w.keys == nil {
		w.keys = map[string]bool{}
	}
	w.keys[k] = true
	w.ops = append(w.ops, clientv3.OpPut(k, v))
	w.bytes += len(k) + len(v) + 16
}

func (w *batchWriter) flush() {
	if w.err != nil || len(w.ops) == 0 {
		return
	}
	if _, err := w.db.txn(w.ctx, nil, w.ops, nil); err != nil {
		w.err = err
		return
	}
	w.written += len(w.ops)
	w.ops, w.bytes = w.ops[:0], 0
	clear(w.keys)
}
