package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/containerd/errdefs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tender-edge/tender/fleet/store"
)

// schemaVersion is the layout this build writes (see doc.go).
const schemaVersion = "1"

// DefaultPrefix is where the store's keys live unless Config.Prefix says
// otherwise.
const DefaultPrefix = "/tender/"

// Key spaces under the prefix (doc.go).
const (
	kMeta        = "meta/"
	kSchema      = "meta/schema"
	kFeedMeta    = "meta/feed"
	kAuditMeta   = "meta/audit"
	kDevices     = "devices/"
	kStatus      = "status/"
	kGenerations = "generations/"
	kApps        = "apps/"
	kAppLatest   = "applatest/"
	kRevisions   = "revisions/"
	kRollouts    = "rollouts/"
	kDocs        = "docs/"
	kJoinTokens  = "jointokens/"
	kAPITokens   = "apitokens/"
	kFeed        = "feed/"
	kEventIndex  = "eventindex/"
	kAudit       = "audit/"
	kPurge       = "purge/"
	kSessions    = "sessions/"
)

// Config says which etcd cluster to use and tunes the store. Endpoints is
// required; everything else has a default.
type Config struct {
	// Endpoints are the members' client addresses (host:port).
	Endpoints []string
	// TLS, if set, is used to reach the members (etcds://).
	TLS *tls.Config
	// Prefix is where the keys live; default DefaultPrefix. Several
	// fleets can share a cluster under different prefixes.
	Prefix string
	// Now is the store's clock (generation floor, app revision and audit
	// times); default time.Now.
	Now func() time.Time
	// RequestTimeout bounds every request to etcd, retries included;
	// past it the call fails with errdefs.ErrUnavailable. Default 5s.
	RequestTimeout time.Duration
	// DialTimeout bounds Open's first contact; default RequestTimeout.
	DialTimeout time.Duration
	// FeedRetention is the number of events kept over all devices;
	// default 1,000,000. DeviceEvents is the number kept per device;
	// default 1000. As in fleet/store/boltdb.
	FeedRetention int
	DeviceEvents  int
	// MaxTxnOps is the most operations (and the most comparisons) one
	// transaction may hold: etcd's --max-txn-ops, 128 by default.
	MaxTxnOps int
	// MaxTxnBytes bounds the keys and values of one transaction; default
	// 1 MiB, below etcd's --max-request-bytes (1.5 MiB by default) with
	// room for the request's framing.
	MaxTxnBytes int
}

// DB is the fleet store in an etcd cluster.
type DB struct {
	cli          *clientv3.Client
	cfg          Config
	prefix       string
	now          func() time.Time
	timeout      time.Duration
	feedCap      uint64
	deviceEvents uint64
	maxOps       int
	maxBytes     int
	// gens remembers the generation counters this store wrote or read
	// (device id → genSeen), so that Next is usually one round trip; a
	// stale entry costs one more.
	gens gosync.Map
	// quorum says whether reads wait for a quorum (stale.go).
	quorum quorum
}

// Open connects to the cluster, checks the store's schema under the
// prefix (writing it into an empty prefix) and finishes any device
// deletion a crashed controller left half done. A cluster that does not
// answer within the dial timeout is errdefs.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcd store: no endpoints: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = cfg.RequestTimeout
	}
	if cfg.FeedRetention <= 0 {
		cfg.FeedRetention = 1_000_000
	}
	if cfg.DeviceEvents <= 0 {
		cfg.DeviceEvents = 1000
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = 128
	}
	if cfg.MaxTxnOps < 8 {
		return nil, fmt.Errorf("etcd store: MaxTxnOps %d: want at least 8: %w", cfg.MaxTxnOps, errdefs.ErrInvalidArgument)
	}
	if cfg.MaxTxnBytes <= 0 {
		cfg.MaxTxnBytes = 1 << 20
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: cfg.DialTimeout,
		Logger:      zap.NewNop(), // errors come back to the caller, classified
		// A member that stops answering is noticed within seconds and
		// the client moves to another.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store %s: %w", strings.Join(cfg.Endpoints, ","), classify(err))
	}
	db := &DB{cli: cli, cfg: cfg, prefix: cfg.Prefix, now: cfg.Now, timeout: cfg.RequestTimeout,
		feedCap: uint64(cfg.FeedRetention), deviceEvents: uint64(cfg.DeviceEvents),
		maxOps: cfg.MaxTxnOps, maxBytes: cfg.MaxTxnBytes}
	if err := db.init(ctx); err != nil {
		_ = cli.Close()
		if errdefs.IsUnavailable(err) && ctx.Err() == nil {
			// gRPC hides why it could not connect behind the timeout:
			// say what each member does when dialled.
			err = fmt.Errorf("%w; %s", err, diagnose(cfg.Endpoints, cfg.TLS, min(cfg.DialTimeout, 2*time.Second)))
		}
		return nil, fmt.Errorf("etcd store under %s: %w", cfg.Prefix, err)
	}
	return db, nil
}

// init writes the schema into an empty prefix and refuses one of another
// schema; then it finishes pending purges.
func (db *DB) init(ctx context.Context) error {
	resp, err := db.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(db.k(kSchema)), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(db.k(kSchema), schemaVersion)},
		[]clientv3.Op{clientv3.OpGet(db.k(kSchema))})
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 {
			v := string(kvs[0].Value)
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				return fmt.Errorf("schema key %q holds %q: %w", db.k(kSchema), v, store.ErrCorrupt)
			}
			if v != schemaVersion {
				return fmt.Errorf("%w: version %s, this build knows %s (a newer tender wrote it)", store.ErrSchema, v, schemaVersion)
			}
		}
	}
	return db.finishPurges(ctx)
}

// Store returns the store's parts as a store.Store.
func (db *DB) Store() store.Store {
	return store.Store{
		Devices:     devices{db},
		Ingest:      ingester{db},
		Apps:        apps{db},
		Rollouts:    blobs{db, kRollouts, "rollout"},
		JoinTokens:  joinTokens{db},
		APITokens:   apiTokens{db},
		Events:      events{db},
		Audit:       audit{db},
		Generations: generations{db},
		Docs:        blobs{db, kDocs, "document"},
		Sessions:    sessions{db},
		Close:       db.Close,
	}
}

// Close closes the connections.
func (db *DB) Close() error { return db.cli.Close() }

// Client exposes the etcd client for tests and tools.
func (db *DB) Client() *clientv3.Client { return db.cli }

// Prefix is where the store's keys live.
func (db *DB) Prefix() string { return db.prefix }

func (db *DB) k(parts ...string) string { return db.prefix + strings.Join(parts, "") }

// seqKey is a number as a key part that sorts in numeric order.
func seqKey(n uint64) string { return fmt.Sprintf("%020d", n) }

// prefixEnd is the first key after every key starting with p.
func prefixEnd(p string) string { return clientv3.GetPrefixRangeEnd(p) }

// txn runs one transaction within the request timeout.
func (db *DB) txn(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	if f := store.FenceOf(ctx); !f.IsZero() && writes(then, els) {
		return db.fenced(ctx, tctx, f, cmps, then, els)
	}
	ro := !writes(then, els)
	if sr := store.StaleReadsOf(ctx); sr != nil && ro {
		return db.readTxn(ctx, sr, cmps, then, els)
	}
	if ro && db.quorumLost(ctx) {
		return nil, db.errNoLeader("transaction")
	}
	resp, err := db.cli.Txn(tctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		err = db.wrap(ctx, tctx, "transaction", err)
		if ro && errdefs.IsUnavailable(err) {
			db.lostQuorum()
		}
		return nil, err
	}
	return resp, nil
}

// writes says whether any of the operations writes.
func writes(ops ...[]clientv3.Op) bool {
	for _, l := range ops {
		for _, op := range l {
			if op.IsPut() || op.IsDelete() || op.IsTxn() {
				return true
			}
		}
	}
	return false
}

// fenced runs the transaction inside one that first compares the fence's
// key's create revision (0 once its lease ended and the key went): a
// deposed leader's write is refused with store.ErrDeposed, and never
// mistaken for a lost compare-and-swap (which callers retry). The inner
// transaction's result is returned as if it had run alone.
func (db *DB) fenced(ctx, tctx context.Context, f store.Fence, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := db.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Rev)).
		Then(clientv3.OpTxn(cmps, then, els)).Else(clientv3.OpGet(f.Key)).Commit()
	if err != nil {
		return nil, db.wrap(ctx, tctx, "fenced transaction", err)
	}
	if !resp.Succeeded {
		holder := "nobody (the lease ended)"
		if kv := first(resp, 0); kv != nil {
			holder = fmt.Sprintf("a term begun at revision %d", kv.CreateRevision)
		}
		return nil, fmt.Errorf("write fenced by %s refused: the key is held by %s: %w", f, holder, store.ErrDeposed)
	}
	inner := (*clientv3.TxnResponse)(resp.Responses[0].GetResponseTxn())
	if inner == nil {
		return nil, fmt.Errorf("fenced transaction: no inner response: %w", errdefs.ErrUnknown)
	}
	inner.Header = resp.Header
	return inner, nil
}

// get reads within the request timeout (linearizable unless opts say).
func (db *DB) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if sr := store.StaleReadsOf(ctx); sr != nil {
		return db.staleGet(ctx, sr, key, opts...)
	}
	if db.quorumLost(ctx) {
		return nil, db.errNoLeader("read " + key)
	}
	tctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	resp, err := db.cli.Get(tctx, key, opts...)
	if err != nil {
		err = db.wrap(ctx, tctx, "read "+key, err)
		if errdefs.IsUnavailable(err) {
			db.lostQuorum()
		}
		return nil, err
	}
	return resp, nil
}

// getMany reads keys at one revision (rev 0: the current one), in
// transactions of at most MaxTxnOps reads. Absent keys are absent from
// the map.
func (db *DB) getMany(ctx context.Context, keys []string, rev int64) (map[string]*mvccpb.KeyValue, int64, error) {
	out := make(map[string]*mvccpb.KeyValue, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), db.maxOps)
		ops := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			if rev > 0 {
				ops[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
			} else {
				ops[i] = clientv3.OpGet(k)
			}
		}
		resp, err := db.txn(ctx, nil, ops, nil)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				out[string(kv.Key)] = kv
			}
		}
		keys = keys[n:]
	}
	return out, rev, nil
}

// rangeAll calls fn for every key in [from, end) in key order, reading
// pages of 1000 at the revision of the first page; limit > 0 stops after
// that many.
func (db *DB) rangeAll(ctx context.Context, from, end string, limit int, fn func(kv *mvccpb.KeyValue) error) error {
	return db.rangeAt(ctx, from, end, limit, 0, fn)
}

// rangeAt is rangeAll at revision rev (0: the current one).
func (db *DB) rangeAt(ctx context.Context, from, end string, limit int, rev int64, fn func(kv *mvccpb.KeyValue) error) error {
	const page = 1000
	n := 0
	for {
		want := page
		if limit > 0 {
			want = min(page, limit-n)
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(want))}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := db.get(ctx, from, opts...)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
			n++
		}
		if !resp.More || len(resp.Kvs) == 0 || (limit > 0 && n >= limit) {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// wrap classifies an error of the etcd client by errdefs category,
// naming the cluster. The caller's own cancellation stays as it is.
// A request that ran out of its own timeout is ErrUnavailable whatever
// the client made of it (gRPC sometimes reports it as code Unknown).
func (db *DB) wrap(ctx, tctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if dl, _ := tctx.Deadline(); tctx.Err() != nil || !time.Now().Before(dl) {
		err = fmt.Errorf("no answer within %v (is a majority of the members up?): %v: %w", db.timeout, err, errdefs.ErrUnavailable)
	} else {
		err = classify(err)
	}
	return fmt.Errorf("etcd %s: %s: %w", strings.Join(db.cfg.Endpoints, ","), what, err)
}

// classify keeps err's text and adds the errdefs category it falls in.
func classify(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer in time (is a majority of the members up?): %v: %w", err, errdefs.ErrUnavailable)
	}
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	var cat error
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		cat = errdefs.ErrUnavailable
	case codes.ResourceExhausted:
		cat = errdefs.ErrResourceExhausted
	case codes.InvalidArgument, codes.OutOfRange:
		cat = errdefs.ErrInvalidArgument
	case codes.PermissionDenied:
		cat = errdefs.ErrPermissionDenied
	case codes.Unauthenticated:
		cat = errdefs.ErrUnauthenticated
	case codes.FailedPrecondition:
		cat = errdefs.ErrFailedPrecondition
	case codes.Canceled:
		cat = context.Canceled
	default:
		cat = errdefs.ErrUnknown
	}
	return fmt.Errorf("%v: %w", err, cat)
}

func decodeErr(kind, key string, err error) error {
	return fmt.Errorf("decode %s %q: %v: %w", kind, key, err, store.ErrCorrupt)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

func encode(kind, id string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s %q: %w", kind, id, err)
	}
	return string(b), nil
}

// num decodes a counter (a decimal JSON number); absent is 0.
func num(kv *mvccpb.KeyValue) (uint64, error) {
	if kv == nil {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(kv.Value), 10, 64)
	if err != nil {
		return 0, decodeErr("counter", string(kv.Key), err)
	}
	return n, nil
}

func modRev(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.ModRevision
}

// first is the first key-value of the i-th response of a transaction.
func first(resp *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	if i >= len(resp.Responses) {
		return nil
	}
	if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

func eq(key string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

// Endpoints are the members the store was opened with.
func (db *DB) Endpoints() []string { return slices.Clone(db.cfg.Endpoints) }

// diagnose dials each endpoint (TCP, then the TLS handshake and the
// server's first bytes) and says what happened, for an error message.
func diagnose(endpoints []string, tc *tls.Config, timeout time.Duration) string {
	var out []string
	for _, ep := range endpoints {
		out = append(out, ep+": "+probe(ep, tc, timeout))
	}
	return strings.Join(out, "; ")
}

func probe(ep string, tc *tls.Config, timeout time.Duration) string {
	conn, err := net.DialTimeout("tcp", ep, timeout)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if tc == nil {
		return "accepts connections"
	}
	c := tc.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(ep)
	}
	c.NextProtos = []string{"h2"}
	tconn := tls.Client(conn, c)
	if err := tconn.Handshake(); err != nil {
		return "TLS: " + err.Error()
	}
	// A server that refuses the client's certificate says so after the
	// handshake (TLS 1.3); one that accepts sends its HTTP/2 settings.
	var b [1]byte
	if _, err := tconn.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return "TLS: " + err.Error()
	}
	return "TLS handshake done"
}
