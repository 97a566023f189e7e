package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tender-edge/tender/fleet/store"
)

// Key spaces of the controllers (doc.go).
const (
	kElection = "election/"
	kMembers  = "members/"
)

// DefaultLeaseTTL is the lease of a controller's session: a leader that
// stops renewing it (killed, paused, cut off from etcd) is deposed within
// it.
const DefaultLeaseTTL = 5 * time.Second

// ElectionConfig names this controller to the others.
type ElectionConfig struct {
	// ID is this controller's name, unique among those of the store
	// (tender serve: host name and API address).
	ID string
	// API is the address its API listens on, shown to operators.
	API     string
	Started time.Time
	// LeaseTTL is the session's lease (DefaultLeaseTTL when zero; whole
	// seconds, at least 1).
	LeaseTTL time.Duration
	Log      zerolog.Logger
}

// Election elects one leader among the controllers of a store with
// etcd's concurrency package: each controller holds a session (a lease
// kept alive every third of its TTL), registers itself under
// members/<id> with it, and campaigns under election/. The leader's key
// and its create revision are the fence of its term (store.Fence): a
// lease that ends deletes the key, so the leader's fenced writes are
// refused from then on, before another controller's campaign can win.
type Election struct {
	db  *DB
	cfg ElectionConfig

	mu      gosync.Mutex
	fence   store.Fence
	leading bool
	changes chan struct{}
}

// Elect prepares the election; Run takes part in it.
func (db *DB) Elect(cfg ElectionConfig) (*Election, error) {
	if cfg.ID == "" {
		return nil, fmt.Errorf("election: controller id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("election: lease TTL %v: at least 1s: %w", cfg.LeaseTTL, errdefs.ErrInvalidArgument)
	}
	if cfg.Started.IsZero() {
		cfg.Started = db.now()
	}
	return &Election{db: db, cfg: cfg, changes: make(chan struct{}, 1)}, nil
}

// Leading returns the fence of this controller's term and true while it
// leads. It turns false as soon as the session is known lost; a leader
// paused past its lease may still say true for a moment after it
// resumes, which is what the fence is for.
func (e *Election) Leading() (store.Fence, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fence, e.leading
}

// Changes is signalled when this controller starts or stops leading.
func (e *Election) Changes() <-chan struct{} { return e.changes }

func (e *Election) set(f store.Fence, leading bool) {
	e.mu.Lock()
	e.fence, e.leading = f, leading
	e.mu.Unlock()
	select {
	case e.changes <- struct{}{}:
	default:
	}
}

// Run takes part in the election until ctx ends: a session, the member
// key, a campaign; when the session is lost (etcd unreachable past the
// TTL, the process paused), it stops leading and starts again with a new
// session. On return it resigns, so another controller leads at once.
func (e *Election) Run(ctx context.Context) error {
	for {
		err := e.term(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.cfg.Log.Warn().Err(err).Msg("election: session lost, campaigning again")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// term is one session: register, campaign, lead until the session ends.
func (e *Election) term(ctx context.Context) error {
	ttl := int(max(e.cfg.LeaseTTL.Round(time.Second)/time.Second, 1))
	sess, err := concurrency.NewSession(e.db.cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", classify(err))
	}
	defer func() {
		e.set(store.Fence{}, false)
		// Revoke on the way out: the others need not wait for the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.db.timeout)
		defer cancel()
		_, _ = e.db.cli.Revoke(rctx, sess.Lease())
		_ = sess.Close()
	}()
	m, err := encode("member", e.cfg.ID, store.Member{ID: e.cfg.ID, API: e.cfg.API, Started: e.cfg.Started})
	if err != nil {
		return err
	}
	if _, err := e.db.cli.Put(ctx, e.db.k(kMembers, e.cfg.ID), m, clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("register member %s: %w", e.cfg.ID, classify(err))
	}
	el := concurrency.NewElection(sess, e.db.k(strings.TrimSuffix(kElection, "/"))) // keys election/<lease>
	camp := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { camp <- el.Campaign(cctx, e.cfg.ID) }()
	select {
	case err := <-camp:
		if err != nil {
			return fmt.Errorf("campaign: %w", classify(err))
		}
	case <-sess.Done():
		return fmt.Errorf("lease %x ended while campaigning: %w", sess.Lease(), errdefs.ErrUnavailable)
	}
	f := store.Fence{Key: el.Key(), Rev: el.Rev()}
	e.cfg.Log.Info().Str("id", e.cfg.ID).Str("fence", f.String()).Msg("election: leading")
	e.set(f, true)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-sess.Done():
		e.set(store.Fence{}, false)
		e.cfg.Log.Warn().Str("id", e.cfg.ID).Msg("election: lease lost, no longer leading")
		return fmt.Errorf("lease %x ended: %w", sess.Lease(), errdefs.ErrUnavailable)
	}
}

// Members lists the controllers registered now, the leader marked.
func (db *DB) Members(ctx context.Context) ([]store.Member, error) {
	var out []store.Member
	p := db.k(kMembers)
	err := db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		var m store.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return decodeErr("member", string(kv.Key), err)
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The leader is the campaigner with the oldest key (concurrency's
	// rule): its value is its id.
	resp, err := db.get(ctx, db.k(kElection), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 1 {
		leader := string(resp.Kvs[0].Value)
		for i := range out {
			out[i].Leader = out[i].ID == leader
		}
	}
	slices.SortFunc(out, func(a, b store.Member) int { return a.Started.Compare(b.Started) })
	return out, nil
}

// Members lists the controllers (DB.Members).
func (e *Election) Members(ctx context.Context) ([]store.Member, error) { return e.db.Members(ctx) }
