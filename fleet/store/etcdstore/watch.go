package etcdstore

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchDevices tells changed the ids of the devices whose record or
// status any controller wrote or deleted, as etcd's watches on devices/
// and status/ deliver them, so that a controller reads only those instead
// of every device at every pass (issue 13). It returns at once and
// watches until ctx ends.
//
// up(true) is called once both watches are in place, from a revision
// read before them: every write after it is then told to changed, and a
// caller that reads every device after up(true) misses none. up(false)
// is called when a watch ends (the member lost its leader, the revision
// was compacted, the connection broke): writes may have been missed
// until the next up(true), which follows once the watches are in place
// again (retried every retry).
func (db *DB) WatchDevices(ctx context.Context, changed func(ids []string), up func(bool)) {
	go func() {
		for {
			db.watchDevices(ctx, changed, up)
			select {
			case <-ctx.Done():
				return
			case <-time.After(watchRetry):
			}
		}
	}()
}

// watchRetry is the pause before the watches are set up again.
const watchRetry = time.Second

func (db *DB) watchDevices(ctx context.Context, changed func(ids []string), up func(bool)) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// The revision the watches start after: the store's current one.
	resp, err := db.get(wctx, db.k(kSchema))
	if err != nil {
		return
	}
	from := resp.Header.Revision + 1
	prefixes := []string{db.k(kDevices), db.k(kStatus)}
	chans := make([]clientv3.WatchChan, len(prefixes))
	for i, p := range prefixes {
		chans[i] = db.cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithCreatedNotify())
	}
	created := 0
	signalled := false
	defer func() {
		if signalled {
			up(false)
		}
	}()
	for {
		var (
			wr clientv3.WatchResponse
			ok bool
			p  string
		)
		select {
		case wr, ok = <-chans[0]:
			p = prefixes[0]
		case wr, ok = <-chans[1]:
			p = prefixes[1]
		}
		if !ok || wr.Canceled || wr.Err() != nil {
			return
		}
		if wr.Created {
			if created++; created == len(prefixes) {
				signalled = true
				up(true)
			}
			continue
		}
		ids := make([]string, 0, len(wr.Events))
		for _, ev := range wr.Events {
			ids = append(ids, strings.TrimPrefix(string(ev.Kv.Key), p))
		}
		if len(ids) > 0 {
			changed(ids)
		}
	}
}
