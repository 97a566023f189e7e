package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/containerd/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
)

// Console sessions: sessions/<hash> under a lease of the session's
// lifetime, so etcd drops it when it expires (Get also checks Expires:
// a lease may outlive its TTL by a little).

type sessions struct{ db *DB }

var _ store.Sessions = sessions{}

// Create implements store.Sessions: one lease grant, then the key put
// under it if absent.
func (s sessions) Create(ctx context.Context, ss store.Session) (store.Session, error) {
	if ss.Hash == "" || ss.TokenHash == "" {
		return store.Session{}, invalid("session needs a hash and a token hash")
	}
	life := ss.Expires.Sub(ss.Created)
	if life <= 0 {
		return store.Session{}, invalid("session expires (%s) before it is created (%s)", ss.Expires, ss.Created)
	}
	v, err := encode("session", "", ss)
	if err != nil {
		return store.Session{}, err
	}
	ttl := int64(math.Ceil(life.Seconds())) + 1
	lctx, cancel := context.WithTimeout(ctx, s.db.timeout)
	lease, err := s.db.cli.Grant(lctx, ttl)
	if err != nil {
		err = s.db.wrap(ctx, lctx, "grant session lease", err)
		cancel()
		return store.Session{}, err
	}
	cancel()
	k := s.db.k(kSessions, ss.Hash)
	resp, err := s.db.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(k, v, clientv3.WithLease(lease.ID))}, nil)
	if err != nil {
		return store.Session{}, err
	}
	if !resp.Succeeded {
		return store.Session{}, fmt.Errorf("session: its hash is taken: %w", errdefs.ErrAlreadyExists)
	}
	return ss, nil
}

// Get implements store.Sessions.
func (s sessions) Get(ctx context.Context, hash string, now time.Time) (store.Session, error) {
	resp, err := s.db.get(ctx, s.db.k(kSessions, hash))
	if err != nil {
		return store.Session{}, err
	}
	var ss store.Session
	if len(resp.Kvs) == 1 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &ss); err != nil {
			return store.Session{}, decodeErr("session", string(resp.Kvs[0].Key), err)
		}
	}
	if len(resp.Kvs) == 0 || !now.Before(ss.Expires) {
		return store.Session{}, fmt.Errorf("no such session, or it expired: %w", errdefs.ErrNotFound) // the hash is not echoed
	}
	return ss, nil
}

// Delete implements store.Sessions. The lease is left to expire.
func (s sessions) Delete(ctx context.Context, hash string) error {
	_, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpDelete(s.db.k(kSessions, hash))}, nil)
	return err
}
