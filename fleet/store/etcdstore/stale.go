package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
)

// Reads without a quorum (store.WithStaleReads). A read whose context
// allows it is first made as every read is, linearizable; if that fails
// as unavailable (no quorum: the members that are up elect no leader), it
// is made again serializable, answered by whichever member is up from
// what it holds, and the request's StaleReads is marked with that
// member's revision. For noQuorumFor after such a failure, reads that
// allow it go serializable at once (each linearizable attempt costs the
// request timeout); a read that does not allow it never goes there.

// noQuorumFor is how long, after a linearizable read failed for lack of a
// quorum, the reads that may be stale skip the linearizable attempt. It
// is also, at most, how long after the quorum is back such reads are
// still answered (and marked) stale.
const noQuorumFor = 5 * time.Second

// quorumLost says whether a linearizable read failed for lack of a quorum
// within noQuorumFor.
func (db *DB) quorumLost() bool { return time.Now().UnixNano() < db.noQuorumUntil.Load() }

func (db *DB) lostQuorum() { db.noQuorumUntil.Store(time.Now().Add(noQuorumFor).UnixNano()) }

// staleGet is get for a context that allows stale reads.
func (db *DB) staleGet(ctx context.Context, sr *store.StaleReads, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	var lerr error
	if !db.quorumLost() {
		tctx, cancel := context.WithTimeout(ctx, db.timeout)
		resp, err := db.cli.Get(tctx, key, opts...)
		if err == nil {
			cancel()
			return resp, nil
		}
		lerr = db.wrap(ctx, tctx, "read "+key, err)
		cancel()
		if !errdefs.IsUnavailable(lerr) || ctx.Err() != nil {
			return nil, lerr
		}
		db.lostQuorum()
	}
	tctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	resp, err := db.cli.Get(tctx, key, append(slices.Clone(opts), clientv3.WithSerializable())...)
	if err != nil {
		return nil, db.noMember(lerr, db.wrap(ctx, tctx, "serializable read "+key, err))
	}
	sr.Mark(store.Staleness{Reason: store.NoQuorum, Rev: uint64(resp.Header.Revision)})
	return resp, nil
}

// readTxn is txn, for read-only operations, with a context that allows
// stale reads.
func (db *DB) readTxn(ctx context.Context, sr *store.StaleReads, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	var lerr error
	if !db.quorumLost() {
		tctx, cancel := context.WithTimeout(ctx, db.timeout)
		resp, err := db.cli.Txn(tctx).If(cmps...).Then(then...).Else(els...).Commit()
		if err == nil {
			cancel()
			return resp, nil
		}
		lerr = db.wrap(ctx, tctx, "transaction", err)
		cancel()
		if !errdefs.IsUnavailable(lerr) || ctx.Err() != nil {
			return nil, lerr
		}
		db.lostQuorum()
	}
	// A transaction of serializable reads only is answered by the
	// member, as a serializable range is.
	tctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	resp, err := db.cli.Txn(tctx).If(cmps...).Then(serializable(then)...).Else(serializable(els)...).Commit()
	if err != nil {
		return nil, db.noMember(lerr, db.wrap(ctx, tctx, "serializable transaction", err))
	}
	sr.Mark(store.Staleness{Reason: store.NoQuorum, Rev: uint64(resp.Header.Revision)})
	return resp, nil
}

// serializable returns copies of read operations made serializable.
func serializable(ops []clientv3.Op) []clientv3.Op {
	out := slices.Clone(ops)
	for i := range out {
		clientv3.WithSerializable()(&out[i])
	}
	return out
}

// noMember is the error of a read neither the quorum (lerr, nil if it
// was not asked) nor any member (serr) answered.
func (db *DB) noMember(lerr, serr error) error {
	if lerr == nil {
		return serr
	}
	return fmt.Errorf("%w; and no member answered a serializable read either: %v", lerr, serr)
}
