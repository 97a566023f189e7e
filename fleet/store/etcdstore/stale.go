package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	gosync "sync"
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
// member's revision.
//
// Each linearizable attempt without a quorum costs the request timeout.
// So once one failed, the store takes the quorum as lost until a member
// reports a leader again: it asks the members' status (a local answer of
// each member, in parallel, bounded by probeTimeout) at most every
// probeEvery. Meanwhile reads that allow it go serializable at once, and
// other reads (token lookups, the broker's password checks, the loop's)
// fail at once as unavailable, as they would have after the timeout.
// Writes are always attempted.

// probeEvery is how often, while the quorum is taken as lost, the
// members are asked whether they have a leader; probeTimeout bounds one
// such ask. A quorum that is back is thus noticed within about
// probeEvery + probeTimeout.
const (
	probeEvery   = time.Second
	probeTimeout = time.Second
)

// quorum is what the store knows of its cluster's quorum.
type quorum struct {
	mu       gosync.Mutex
	lost     bool
	probedAt time.Time
}

// quorumLost says whether reads should not wait for a quorum: one failed
// for lack of it, and no member has reported a leader since.
func (db *DB) quorumLost(ctx context.Context) bool {
	q := &db.quorum
	q.mu.Lock()
	if !q.lost {
		q.mu.Unlock()
		return false
	}
	if time.Since(q.probedAt) < probeEvery {
		q.mu.Unlock()
		return true
	}
	q.probedAt = time.Now()
	q.mu.Unlock()
	if !db.someLeader(ctx) {
		return true
	}
	q.mu.Lock()
	q.lost = false
	q.mu.Unlock()
	return false
}

// lostQuorum notes a read that failed for lack of a quorum.
func (db *DB) lostQuorum() {
	q := &db.quorum
	q.mu.Lock()
	if !q.lost {
		q.lost, q.probedAt = true, time.Now()
	}
	q.mu.Unlock()
}

// someLeader asks every member, in parallel, whether it knows a leader.
func (db *DB) someLeader(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, min(probeTimeout, db.timeout))
	defer cancel()
	eps := db.cfg.Endpoints
	found := make(chan bool, len(eps))
	for _, ep := range eps {
		go func() {
			st, err := db.cli.Status(ctx, ep)
			found <- err == nil && st.Leader != 0
		}()
	}
	for range eps {
		if <-found {
			return true
		}
	}
	return false
}

// errNoLeader is a read refused at once while the quorum is taken as lost.
func (db *DB) errNoLeader(what string) error {
	return fmt.Errorf("etcd %s: %s: no quorum: no member that answers knows a leader (is a majority of the members up?): %w",
		strings.Join(db.cfg.Endpoints, ","), what, errdefs.ErrUnavailable)
}

// staleRead runs read linearizably while the quorum is not taken as
// lost; when that fails for lack of a quorum, it runs read again as
// serializable (answered by a member that is still up) and marks sr stale
// at that member's revision. what names the read in errors.
func staleRead[T any](ctx context.Context, db *DB, sr *store.StaleReads, what string,
	read func(ctx context.Context, serializable bool) (T, error), rev func(T) int64) (T, error) {
	var (
		zero T
		lerr error
	)
	if !db.quorumLost(ctx) {
		tctx, cancel := context.WithTimeout(ctx, db.timeout)
		resp, err := read(tctx, false)
		if err == nil {
			cancel()
			return resp, nil
		}
		lerr = db.wrap(ctx, tctx, what, err)
		cancel()
		if !errdefs.IsUnavailable(lerr) || ctx.Err() != nil {
			return zero, lerr
		}
		db.lostQuorum()
	}
	tctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	resp, err := read(tctx, true)
	if err != nil {
		return zero, db.noMember(lerr, db.wrap(ctx, tctx, "serializable "+what, err))
	}
	sr.Mark(store.Staleness{Reason: store.NoQuorum, Rev: uint64(rev(resp))})
	return resp, nil
}

// staleGet is get for a context that allows stale reads.
func (db *DB) staleGet(ctx context.Context, sr *store.StaleReads, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return staleRead(ctx, db, sr, "read "+key, func(ctx context.Context, ser bool) (*clientv3.GetResponse, error) {
		if ser {
			return db.cli.Get(ctx, key, append(slices.Clone(opts), clientv3.WithSerializable())...)
		}
		return db.cli.Get(ctx, key, opts...)
	}, func(r *clientv3.GetResponse) int64 { return r.Header.Revision })
}

// readTxn is txn, for read-only operations, with a context that allows
// stale reads. A transaction of serializable reads only is answered by the
// member, as a serializable range is.
func (db *DB) readTxn(ctx context.Context, sr *store.StaleReads, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	return staleRead(ctx, db, sr, "transaction", func(ctx context.Context, ser bool) (*clientv3.TxnResponse, error) {
		if ser {
			return db.cli.Txn(ctx).If(cmps...).Then(serializable(then)...).Else(serializable(els)...).Commit()
		}
		return db.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	}, func(r *clientv3.TxnResponse) int64 { return r.Header.Revision })
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
