// Package etcdstore is the fleet controller's store in an etcd cluster:
// store.Store for several controllers (HA), behind the same interface and
// conformance suite (fleet/store/storetest) as fleet/store/boltdb. It
// speaks etcd's v3 API (go.etcd.io/etcd/client/v3) and is tested against
// Debian 12's etcd 3.4.
//
// # Revisions
//
// A record's Rev is its key's ModRevision: etcd's store-wide revision of
// the last write, what fleet/store's compare-and-swap wants. Every write
// that can race is one transaction that compares the ModRevision of each
// key it read (0: absent) and writes only if none moved; a lost compare is
// store.Conflict for the caller's expectRev, and is read again and redone
// inside the store where the interface promises an atomic operation
// (Generations.Next, JoinTokens.Consume, APITokens.Revoke, Audit.Append,
// Ingest). So two controllers can never issue the same generation, spend
// one token use twice or break the audit chain.
//
// # Fencing
//
// A write made with a context carrying a store.Fence (the leader's loop:
// generations, the documents it publishes from, rollouts) runs inside an
// outer transaction that first compares the fence key's CreateRevision:
// once the leader's lease ended its key is gone (0) or is another term's,
// and the write is refused with store.ErrDeposed, whatever the inner
// compares say (SECURITY.md F-13). Reads are not fenced.
//
// # Keys
//
// Every key is under the prefix (default /tender/); records are the JSON
// of the fleet/store types, as boltdb writes them, with "rev" 0 (the key's
// ModRevision is the revision). Counters are decimal numbers. Numbers in
// keys are 20 digits, zero-padded, so they sort in numeric order.
//
//	meta/schema            "1"
//	meta/feed              {"seq": last cursor issued, "count": events in feed/}
//	meta/audit             {"seq": entries ever written, "hash": the last one's}
//	devices/<id>           store.Device (the record, no status)
//	status/<id>            store.DeviceStatus (written by Ingest)
//	generations/<id>       highest generation issued or reported; kept when
//	                       the device is deleted
//	apps/<name>            store.App
//	applatest/<name>       highest revision ever stored (never reused)
//	revisions/<name>/<rev> store.AppRevision
//	rollouts/<id>          the rollout document, as is
//	docs/<key>             the controller's document, as is (Store.Docs)
//	jointokens/<id>        store.JoinToken (secret hashed)
//	apitokens/<hash>       store.APIToken
//	feed/<cursor>          store.FeedEvent
//	eventindex/<id>/<seq>  cursor of the device's event seq
//	audit/<seq>            store.AuditEntry
//	election/<lease>       the controllers' campaign (election.go); the
//	                       oldest key leads, its create revision fences
//	members/<id>           store.Member, under the controller's lease
//	sessions/<hash>        store.Session (the console's, by the hash of
//	                       its id), under a lease that ends when it expires
//	purge/<id>             cursors of a deleted device's feed entries still
//	                       to delete (finished by Delete, or by Open after a
//	                       crash)
//
// # Ingest and etcd's limits
//
// etcd refuses a transaction of more than --max-txn-ops operations (128 by
// default in 3.4; comparisons are counted apart, with the same limit) or
// a request over --max-request-bytes (1.5 MiB). Ingest therefore groups a
// batch by device and packs whole devices into as few transactions as fit
// (Config.MaxTxnOps, Config.MaxTxnBytes), committed one after the other.
// A device's messages of one transaction are applied to its status as
// boltdb applies them, and its transaction compares the ModRevision of the
// device's record (not deleted or revoked meanwhile), status, generation
// counter and, when it adds events, meta/feed. A device with more events
// than one transaction holds (about 30 at 128 operations) has them stored
// over several, in sequence order. A 500-message batch of as many devices
// (reports, events and presence alike) is 10 or 11 transactions
// (TestIngest_SplitsBatches logs it).
//
// What that gives:
//
//   - per device, atomic and ordered: a device's status, events and
//     generation mark move together, never half;
//   - across devices, not atomic: an error returned after some
//     transactions committed leaves those devices' messages stored (the
//     error says how many). Ingesting the same batch again is harmless:
//     reports and presence are applied again with the same result, and
//     events already stored are counted as duplicates and dropped;
//   - between controllers (shared subscriptions hand a device's messages
//     to any of them): a transaction that lost to another's write is read
//     and computed again, so no report, event or generation is lost, and
//     the status counters stay exact. meta/feed is the one key all event
//     writers share; its compare serialises them.
//
// Trimming is done as boltdb does it: a device's oldest events past
// Config.DeviceEvents in the transaction that adds new ones; the feed's
// oldest past Config.FeedRetention after the batch, a few dozen per
// transaction (so the feed may pass its retention by one batch for a
// moment). Deleting a device removes its record, status and event index
// in one transaction on its revision and leaves purge/<id> listing its
// feed entries, which Delete then removes in transactions of up to
// MaxTxnOps keys (Open finishes a purge a crash interrupted; until then
// the feed still shows those events).
//
// # Watching devices
//
// WatchDevices (watch.go) watches devices/ and status/ and tells a
// controller the ids any controller wrote, so that its loop reads those
// by id rather than every device at every pass (issue 13); it says when
// its watches are up and when they ended, and the controller then reads
// every device once.
//
// # Running etcd for it
//
// Every ingested report rewrites its device's status key, and etcd keeps
// every revision until it is compacted: run the members with
// --auto-compaction-mode=periodic --auto-compaction-retention=1h (or
// revision), defragment now and then, and size --quota-backend-bytes
// (2 GiB by default) for the fleet: a full store refuses writes with
// errdefs.ErrResourceExhausted. The store never compacts by itself (the
// cluster may hold more than this store).
//
// # Availability
//
// Every request has Config.RequestTimeout (5s): without a quorum, writes
// and reads (linearizable, as the CAS loops need) fail with
// errdefs.ErrUnavailable naming the endpoints, not hang. A read whose
// context allows it (store.WithStaleReads: the API's GETs, never the
// broker's password checks, the token lookups or a read-modify-write
// loop, so a stale device record cannot let a revoked device's password
// through) is then made again serializable, answered by a member that is
// up from what it holds, and marked stale with that member's revision
// (stale.go). Once a read failed for lack of a quorum, the store asks the
// members once a second whether any knows a leader; until one does, reads
// skip the linearizable attempt: those allowed to be stale go to a member
// at once, the others fail at once as unavailable.
package etcdstore
