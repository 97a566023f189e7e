package etcdstore

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/test/etcdtest"
)

var ctx = context.Background()

// one is the 1-member cluster the package's tests share; each test has
// its own prefix.
var (
	one      *etcdtest.Cluster
	prefixes atomic.Int64
)

func cluster(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	if one == nil {
		t.Skipf("%s missing (apt-get install etcd-server)", etcdtest.Bin)
	}
	return one
}

func newPrefix() string { return "/t" + strconv.FormatInt(prefixes.Add(1), 10) + "/" }

// open opens a store on the shared cluster at prefix.
func open(t *testing.T, prefix string, cfg Config) *DB {
	t.Helper()
	cfg.Endpoints = cluster(t).Endpoints()
	cfg.Prefix = prefix
	db, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// dump is every key and value under prefix.
func dump(t *testing.T, cli *clientv3.Client, prefix string) []*mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Kvs
}

func harness() storetest.Harness {
	return storetest.Harness{
		NewLocation: func(t *testing.T) string { cluster(t); return newPrefix() },
		Open: func(t *testing.T, loc string, now func() time.Time) (store.Store, error) {
			db, err := Open(ctx, Config{Endpoints: one.Endpoints(), Prefix: loc, Now: now})
			if err != nil {
				return store.Store{}, err
			}
			return db.Store(), nil
		},
		// A backup is every key under the prefix; a restore deletes the
		// prefix and puts them back (what etcdctl get/put of a prefix,
		// or a cluster snapshot restore, amounts to for the store).
		Backup: func(t *testing.T, loc string) []byte {
			cli := rawClient(t)
			var b []byte
			for _, kv := range dump(t, cli, loc) {
				b = strconv.AppendQuote(b, string(kv.Key))
				b = append(b, ' ')
				b = strconv.AppendQuote(b, string(kv.Value))
				b = append(b, '\n')
			}
			return b
		},
		Restore: func(t *testing.T, loc string, backup []byte) {
			cli := rawClient(t)
			if _, err := cli.Delete(ctx, loc, clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			for line := range splitLines(backup) {
				k, rest, err := unquote(line)
				if err != nil {
					t.Fatal(err)
				}
				v, _, err := unquote(rest[1:])
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
		},
		// A term: a key under a lease, as concurrency.Election makes;
		// revoking the lease ends it.
		Fence: func(t *testing.T, loc string) (store.Fence, func()) {
			cli := rawClient(t)
			l, err := cli.Grant(ctx, 30)
			if err != nil {
				t.Fatal(err)
			}
			k := loc + "election/" + strconv.FormatInt(int64(l.ID), 16)
			r, err := cli.Put(ctx, k, "me", clientv3.WithLease(l.ID))
			if err != nil {
				t.Fatal(err)
			}
			return store.Fence{Key: k, Rev: r.Header.Revision}, func() {
				if _, err := cli.Revoke(ctx, l.ID); err != nil {
					t.Fatal(err)
				}
			}
		},
		// Garbage where the schema is: Open must refuse, not start empty.
		Corrupt: func(t *testing.T, loc string) {
			if _, err := rawClient(t).Put(ctx, loc+kSchema, "\xa5\xa5\xa5"); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, harness()) }
