package etcdstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Devices.

type devices struct{ db *DB }

// decodeDevice decodes a device record and its status (nil: none); Rev
// is the record key's ModRevision.
func decodeDevice(kv, st *mvccpb.KeyValue) (store.Device, error) {
	var d store.Device
	if err := json.Unmarshal(kv.Value, &d); err != nil {
		return d, decodeErr("device", string(kv.Key), err)
	}
	d.Rev = uint64(kv.ModRevision)
	if st != nil {
		if err := json.Unmarshal(st.Value, &d.Status); err != nil {
			return d, decodeErr("device status", string(st.Key), err)
		}
	}
	return d, nil
}

func (s devices) Get(ctx context.Context, id string) (store.Device, error) {
	resp, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(s.db.k(kDevices, id)), clientv3.OpGet(s.db.k(kStatus, id))}, nil)
	if err != nil {
		return store.Device{}, err
	}
	kv := first(resp, 0)
	if kv == nil {
		return store.Device{}, store.NotFound("device", id)
	}
	return decodeDevice(kv, first(resp, 1))
}

func (s devices) List(ctx context.Context) ([]store.Device, error) {
	// Statuses first, then records at a later revision: a device
	// enrolled in between has no status yet, which is what it has.
	status := map[string]*mvccpb.KeyValue{}
	sp := s.db.k(kStatus)
	if err := s.db.rangeAll(ctx, sp, prefixEnd(sp), 0, func(kv *mvccpb.KeyValue) error {
		status[strings.TrimPrefix(string(kv.Key), sp)] = kv
		return nil
	}); err != nil {
		return nil, err
	}
	var out []store.Device
	dp := s.db.k(kDevices)
	err := s.db.rangeAll(ctx, dp, prefixEnd(dp), 0, func(kv *mvccpb.KeyValue) error {
		d, err := decodeDevice(kv, status[strings.TrimPrefix(string(kv.Key), dp)])
		if err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

func (s devices) Put(ctx context.Context, d store.Device, expectRev uint64) (store.Device, error) {
	if err := topic.ValidDeviceID(d.ID); err != nil {
		return store.Device{}, err
	}
	k := s.db.k(kDevices, d.ID)
	rec := d
	rec.Rev = 0 // the key's ModRevision is the revision
	v, err := encode("device", d.ID, rec)
	if err != nil {
		return store.Device{}, err
	}
	resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, int64(expectRev))},
		[]clientv3.Op{clientv3.OpPut(k, v), clientv3.OpGet(s.db.k(kStatus, d.ID))},
		[]clientv3.Op{clientv3.OpGet(k)})
	if err != nil {
		return store.Device{}, err
	}
	if !resp.Succeeded {
		return store.Device{}, store.Conflict("device", d.ID, expectRev, uint64(modRev(first(resp, 0))))
	}
	d.Rev = uint64(resp.Header.Revision)
	d.Status = store.DeviceStatus{}
	if st := first(resp, 1); st != nil {
		if err := json.Unmarshal(st.Value, &d.Status); err != nil {
			return d, decodeErr("device status", d.ID, err)
		}
	}
	return d, nil
}

// Delete removes the record, the status and the event index in one
// transaction on the record's revision (and the status's, so that no
// event slips in unseen), leaving a purge list of the device's feed
// entries that it then deletes (finishPurges does it after a crash).
func (s devices) Delete(ctx context.Context, id string, expectRev uint64) error {
	dk, sk := s.db.k(kDevices, id), s.db.k(kStatus, id)
	ip := s.db.k(kEventIndex, id, "/")
	for {
		resp, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(dk), clientv3.OpGet(sk), clientv3.OpGet(ip, clientv3.WithPrefix())}, nil)
		if err != nil {
			return err
		}
		dkv := first(resp, 0)
		if dkv == nil {
			return store.NotFound("device", id)
		}
		if uint64(dkv.ModRevision) != expectRev {
			return store.Conflict("device", id, expectRev, uint64(dkv.ModRevision))
		}
		var cursors []uint64
		for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
			c, err := num(kv)
			if err != nil {
				return err
			}
			cursors = append(cursors, c)
		}
		list, err := encode("purge list", id, cursors)
		if err != nil {
			return err
		}
		pk := s.db.k(kPurge, id)
		// A purge left from an earlier deletion of the same id is
		// finished first (the key is one per device).
		if err := s.db.purge(ctx, pk); err != nil {
			return err
		}
		then := []clientv3.Op{clientv3.OpDelete(dk), clientv3.OpDelete(sk), clientv3.OpDelete(ip, clientv3.WithPrefix())}
		if len(cursors) > 0 {
			then = append(then, clientv3.OpPut(pk, list))
		}
		resp, err = s.db.txn(ctx, []clientv3.Cmp{eq(dk, dkv.ModRevision), eq(sk, modRev(first(resp, 1))), eq(pk, 0)}, then, nil)
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			continue // the status (or record) moved: read again
		}
		return s.db.purge(ctx, pk)
	}
}

// Apps.

type apps struct{ db *DB }

func decodeApp(kv *mvccpb.KeyValue) (store.App, error) {
	var a store.App
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return a, decodeErr("app", string(kv.Key), err)
	}
	a.Rev = uint64(kv.ModRevision)
	return a, nil
}

func (s apps) revKey(name string, rev uint64) string {
	return s.db.k(kRevisions, name, "/", seqKey(rev))
}

func (s apps) Get(ctx context.Context, name string) (store.App, error) {
	resp, err := s.db.get(ctx, s.db.k(kApps, name))
	if err != nil {
		return store.App{}, err
	}
	if len(resp.Kvs) == 0 {
		return store.App{}, store.NotFound("app", name)
	}
	return decodeApp(resp.Kvs[0])
}

func (s apps) List(ctx context.Context) (out []store.App, err error) {
	p := s.db.k(kApps)
	err = s.db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		a, err := decodeApp(kv)
		out = append(out, a)
		return err
	})
	return out, err
}

func (s apps) Apply(ctx context.Context, spec wire.App, by string, expectRev uint64) (store.App, error) {
	if !wire.ValidName(spec.Name) {
		return store.App{}, invalid("app name %q: use lower-case letters, digits and '-'", spec.Name)
	}
	now := s.db.now()
	ak, lk := s.db.k(kApps, spec.Name), s.db.k(kAppLatest, spec.Name)
	for {
		resp, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(ak), clientv3.OpGet(lk)}, nil)
		if err != nil {
			return store.App{}, err
		}
		akv, lkv := first(resp, 0), first(resp, 1)
		if uint64(modRev(akv)) != expectRev {
			return store.App{}, store.Conflict("app", spec.Name, expectRev, uint64(modRev(akv)))
		}
		var cur store.App
		if akv != nil {
			if cur, err = decodeApp(akv); err != nil {
				return store.App{}, err
			}
		}
		last, err := num(lkv)
		if err != nil {
			return store.App{}, err
		}
		latest := max(cur.Latest, last) + 1
		r := store.AppRevision{Revision: latest, Spec: spec, Created: now, By: by}
		rv, err := encode("app revision", spec.Name, r)
		if err != nil {
			return store.App{}, err
		}
		a := store.App{Name: spec.Name, Current: latest, Latest: latest}
		av, err := encode("app", spec.Name, a)
		if err != nil {
			return store.App{}, err
		}
		resp, err = s.db.txn(ctx, []clientv3.Cmp{eq(ak, modRev(akv)), eq(lk, modRev(lkv))},
			[]clientv3.Op{clientv3.OpPut(lk, strconv.FormatUint(latest, 10)), clientv3.OpPut(s.revKey(spec.Name, latest), rv), clientv3.OpPut(ak, av)},
			nil)
		if err != nil {
			return store.App{}, err
		}
		if resp.Succeeded {
			a.Rev = uint64(resp.Header.Revision)
			return a, nil
		}
		// Lost: the next read names the winner's revision.
	}
}

func (s apps) Put(ctx context.Context, a store.App, expectRev uint64) (store.App, error) {
	ak, rk := s.db.k(kApps, a.Name), s.revKey(a.Name, a.Current)
	resp, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(ak), clientv3.OpGet(rk, clientv3.WithKeysOnly())}, nil)
	if err != nil {
		return store.App{}, err
	}
	akv := first(resp, 0)
	if akv == nil {
		if expectRev != 0 {
			return store.App{}, store.Conflict("app", a.Name, expectRev, 0)
		}
		return store.App{}, store.NotFound("app", a.Name)
	}
	if uint64(akv.ModRevision) != expectRev {
		return store.App{}, store.Conflict("app", a.Name, expectRev, uint64(akv.ModRevision))
	}
	cur, err := decodeApp(akv)
	if err != nil {
		return store.App{}, err
	}
	if first(resp, 1) == nil {
		return store.App{}, invalid("app %q: current revision %d is not stored (have 1..%d)", a.Name, a.Current, cur.Latest)
	}
	a.Latest, a.Rev = cur.Latest, 0
	av, err := encode("app", a.Name, a)
	if err != nil {
		return store.App{}, err
	}
	resp, err = s.db.txn(ctx, []clientv3.Cmp{eq(ak, akv.ModRevision), clientv3.Compare(clientv3.CreateRevision(rk), ">", 0)},
		[]clientv3.Op{clientv3.OpPut(ak, av)}, []clientv3.Op{clientv3.OpGet(ak)})
	if err != nil {
		return store.App{}, err
	}
	if !resp.Succeeded {
		return store.App{}, store.Conflict("app", a.Name, expectRev, uint64(modRev(first(resp, 0))))
	}
	a.Rev = uint64(resp.Header.Revision)
	return a, nil
}

func (s apps) Revisions(ctx context.Context, name string) ([]store.AppRevision, error) {
	resp, err := s.db.txn(ctx, nil, []clientv3.Op{clientv3.OpGet(s.db.k(kApps, name)),
		clientv3.OpGet(s.db.k(kRevisions, name, "/"), clientv3.WithPrefix())}, nil)
	if err != nil {
		return nil, err
	}
	if first(resp, 0) == nil {
		return nil, store.NotFound("app", name)
	}
	var out []store.AppRevision
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var r store.AppRevision
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, decodeErr("app revision", string(kv.Key), err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (s apps) Revision(ctx context.Context, name string, rev uint64) (r store.AppRevision, err error) {
	resp, err := s.db.get(ctx, s.revKey(name, rev))
	if err != nil {
		return r, err
	}
	if len(resp.Kvs) == 0 {
		return r, store.NotFound("app revision", fmt.Sprintf("%s@%d", name, rev))
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return r, decodeErr("app revision", name, err)
	}
	return r, nil
}

func (s apps) Delete(ctx context.Context, name string, expectRev uint64) error {
	ak := s.db.k(kApps, name)
	resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(ak, int64(expectRev)), clientv3.Compare(clientv3.CreateRevision(ak), ">", 0)},
		[]clientv3.Op{clientv3.OpDelete(ak), clientv3.OpDelete(s.db.k(kRevisions, name, "/"), clientv3.WithPrefix())},
		[]clientv3.Op{clientv3.OpGet(ak)})
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		cur := first(resp, 0)
		if cur == nil {
			return store.NotFound("app", name)
		}
		return store.Conflict("app", name, expectRev, uint64(cur.ModRevision))
	}
	return nil
}

// Rollouts and documents: the value is the document, its Rev the key's
// ModRevision.

type blobs struct {
	db   *DB
	kind string // key space
	name string // what it is called in errors
}

func (s blobs) Get(ctx context.Context, id string) (store.Blob, error) {
	resp, err := s.db.get(ctx, s.db.k(s.kind, id))
	if err != nil {
		return store.Blob{}, err
	}
	if len(resp.Kvs) == 0 {
		return store.Blob{}, store.NotFound(s.name, id)
	}
	return store.Blob{ID: id, Data: resp.Kvs[0].Value, Rev: uint64(resp.Kvs[0].ModRevision)}, nil
}

func (s blobs) List(ctx context.Context) (out []store.Blob, err error) {
	p := s.db.k(s.kind)
	err = s.db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		out = append(out, store.Blob{ID: strings.TrimPrefix(string(kv.Key), p), Data: kv.Value, Rev: uint64(kv.ModRevision)})
		return nil
	})
	return out, err
}

func (s blobs) Put(ctx context.Context, id string, data []byte, expectRev uint64) (store.Blob, error) {
	if id == "" {
		return store.Blob{}, invalid("%s id is empty", s.name)
	}
	k := s.db.k(s.kind, id)
	resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, int64(expectRev))},
		[]clientv3.Op{clientv3.OpPut(k, string(data))}, []clientv3.Op{clientv3.OpGet(k, clientv3.WithKeysOnly())})
	if err != nil {
		return store.Blob{}, err
	}
	if !resp.Succeeded {
		return store.Blob{}, store.Conflict(s.name, id, expectRev, uint64(modRev(first(resp, 0))))
	}
	return store.Blob{ID: id, Data: bytes.Clone(data), Rev: uint64(resp.Header.Revision)}, nil
}

func (s blobs) Delete(ctx context.Context, id string, expectRev uint64) error {
	k := s.db.k(s.kind, id)
	resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, int64(expectRev)), clientv3.Compare(clientv3.CreateRevision(k), ">", 0)},
		[]clientv3.Op{clientv3.OpDelete(k)}, []clientv3.Op{clientv3.OpGet(k, clientv3.WithKeysOnly())})
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		cur := first(resp, 0)
		if cur == nil {
			return store.NotFound(s.name, id)
		}
		return store.Conflict(s.name, id, expectRev, uint64(cur.ModRevision))
	}
	return nil
}

// Join tokens.

type joinTokens struct{ db *DB }

func decodeJoinToken(kv *mvccpb.KeyValue) (store.JoinToken, error) {
	var jt store.JoinToken
	if err := json.Unmarshal(kv.Value, &jt); err != nil {
		return jt, decodeErr("join token", string(kv.Key), err)
	}
	jt.Rev = uint64(kv.ModRevision)
	return jt, nil
}

func (s joinTokens) Create(ctx context.Context, jt store.JoinToken) (store.JoinToken, error) {
	if jt.ID == "" || len(jt.SecretHash) == 0 {
		return jt, invalid("join token needs an id and a secret hash")
	}
	k := s.db.k(kJoinTokens, jt.ID)
	jt.Rev = 0
	v, err := encode("join token", jt.ID, jt)
	if err != nil {
		return jt, err
	}
	resp, err := s.db.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)}, []clientv3.Op{clientv3.OpPut(k, v)}, nil)
	if err != nil {
		return jt, err
	}
	if !resp.Succeeded {
		return store.JoinToken{}, fmt.Errorf("join token %q exists: %w", jt.ID, errdefs.ErrAlreadyExists)
	}
	jt.Rev = uint64(resp.Header.Revision)
	return jt, nil
}

func (s joinTokens) get(ctx context.Context, id string) (store.JoinToken, error) {
	resp, err := s.db.get(ctx, s.db.k(kJoinTokens, id))
	if err != nil {
		return store.JoinToken{}, err
	}
	if len(resp.Kvs) == 0 {
		return store.JoinToken{}, store.NotFound("join token", id)
	}
	return decodeJoinToken(resp.Kvs[0])
}

func (s joinTokens) Get(ctx context.Context, id string) (store.JoinToken, error) {
	return s.get(ctx, id)
}

func (s joinTokens) List(ctx context.Context) (out []store.JoinToken, err error) {
	p := s.db.k(kJoinTokens)
	err = s.db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		jt, err := decodeJoinToken(kv)
		out = append(out, jt)
		return err
	})
	return out, err
}

// Consume spends one use on the token's revision; a lost race reads the
// token again and checks it again.
func (s joinTokens) Consume(ctx context.Context, id string, now time.Time, check func(store.JoinToken) error) (store.JoinToken, error) {
	k := s.db.k(kJoinTokens, id)
	for {
		jt, err := s.get(ctx, id)
		if err != nil {
			return store.JoinToken{}, err
		}
		if check != nil {
			if err := check(jt); err != nil {
				return store.JoinToken{}, err
			}
		}
		if !now.Before(jt.Expires) {
			return store.JoinToken{}, fmt.Errorf("join token %q expired at %s; create a new one: %w", id, jt.Expires.UTC().Format(time.RFC3339), errdefs.ErrFailedPrecondition)
		}
		if jt.UsesLeft <= 0 {
			return store.JoinToken{}, fmt.Errorf("join token %q has been used up; create a new one: %w", id, errdefs.ErrFailedPrecondition)
		}
		rev := jt.Rev
		jt.UsesLeft--
		jt.Rev = 0
		v, err := encode("join token", id, jt)
		if err != nil {
			return store.JoinToken{}, err
		}
		resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, int64(rev))}, []clientv3.Op{clientv3.OpPut(k, v)}, nil)
		if err != nil {
			return store.JoinToken{}, err
		}
		if resp.Succeeded {
			jt.Rev = uint64(resp.Header.Revision)
			return jt, nil
		}
	}
}

func (s joinTokens) Delete(ctx context.Context, id string) error {
	k := s.db.k(kJoinTokens, id)
	resp, err := s.db.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), ">", 0)}, []clientv3.Op{clientv3.OpDelete(k)}, nil)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return store.NotFound("join token", id)
	}
	return nil
}

// API tokens.

type apiTokens struct{ db *DB }

func decodeAPIToken(kv *mvccpb.KeyValue) (store.APIToken, error) {
	var at store.APIToken
	if err := json.Unmarshal(kv.Value, &at); err != nil {
		return at, decodeErr("api token", "", err) // the hash is not echoed
	}
	at.Rev = uint64(kv.ModRevision)
	return at, nil
}

func (s apiTokens) Create(ctx context.Context, at store.APIToken) (store.APIToken, error) {
	if at.Hash == "" || at.Name == "" {
		return at, invalid("api token needs a hash and a name")
	}
	if at.Role != store.RoleAdmin && at.Role != store.RoleReadOnly {
		return at, invalid("api token role %q: want %q or %q", at.Role, store.RoleAdmin, store.RoleReadOnly)
	}
	k := s.db.k(kAPITokens, at.Hash)
	at.Rev = 0
	v, err := encode("api token", at.Name, at)
	if err != nil {
		return at, err
	}
	resp, err := s.db.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)}, []clientv3.Op{clientv3.OpPut(k, v)}, nil)
	if err != nil {
		return at, err
	}
	if !resp.Succeeded {
		return store.APIToken{}, fmt.Errorf("api token %q: its hash is taken: %w", at.Name, errdefs.ErrAlreadyExists)
	}
	at.Rev = uint64(resp.Header.Revision)
	return at, nil
}

func (s apiTokens) Get(ctx context.Context, hash string) (store.APIToken, error) {
	resp, err := s.db.get(ctx, s.db.k(kAPITokens, hash))
	if err != nil {
		return store.APIToken{}, err
	}
	if len(resp.Kvs) == 0 {
		return store.APIToken{}, fmt.Errorf("no such api token: %w", errdefs.ErrNotFound)
	}
	return decodeAPIToken(resp.Kvs[0])
}

func (s apiTokens) List(ctx context.Context) (out []store.APIToken, err error) {
	p := s.db.k(kAPITokens)
	err = s.db.rangeAll(ctx, p, prefixEnd(p), 0, func(kv *mvccpb.KeyValue) error {
		at, err := decodeAPIToken(kv)
		out = append(out, at)
		return err
	})
	return out, err
}

func (s apiTokens) Revoke(ctx context.Context, hash string, at time.Time) (store.APIToken, error) {
	k := s.db.k(kAPITokens, hash)
	for {
		tok, err := s.Get(ctx, hash)
		if err != nil {
			return store.APIToken{}, err
		}
		if tok.Revoked {
			return tok, nil
		}
		rev := tok.Rev
		tok.Revoked, tok.RevokedAt, tok.Rev = true, at, 0
		v, err := encode("api token", tok.Name, tok)
		if err != nil {
			return store.APIToken{}, err
		}
		resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, int64(rev))}, []clientv3.Op{clientv3.OpPut(k, v)}, nil)
		if err != nil {
			return store.APIToken{}, err
		}
		if resp.Succeeded {
			tok.Rev = uint64(resp.Header.Revision)
			return tok, nil
		}
	}
}

// Generations: one counter per device, raised by a transaction on the
// counter's revision, so two controllers never issue the same one.

type generations struct{ db *DB }

// Next is one round trip when the store's memory of the counter (the
// value and ModRevision it last wrote or read; "absent" for a device it
// never saw) is current: the txn writes on that revision or, in its Else,
// reads the counter, and the loop computes again from what it read.
func (s generations) Next(ctx context.Context, id string) (uint64, error) {
	if id == "" {
		return 0, invalid("device id is empty")
	}
	k := s.db.k(kGenerations, id)
	known, _ := s.db.gens.Load(id)
	cur, _ := known.(genSeen)
	for {
		floor := uint64(max(s.db.now().UnixMilli(), 0))
		gen := max(cur.value+1, floor)
		if gen > wire.MaxGeneration {
			return 0, fmt.Errorf("device %q: generation %d would pass the wire's largest %d: %w", id, gen, uint64(wire.MaxGeneration), errdefs.ErrResourceExhausted)
		}
		tr, err := s.db.txn(ctx, []clientv3.Cmp{eq(k, cur.modRev)}, []clientv3.Op{clientv3.OpPut(k, strconv.FormatUint(gen, 10))},
			[]clientv3.Op{clientv3.OpGet(k)})
		if err != nil {
			s.db.gens.Delete(id)
			return 0, err
		}
		if tr.Succeeded {
			s.db.gens.Store(id, genSeen{value: gen, modRev: tr.Header.Revision})
			return gen, nil
		}
		kv := first(tr, 0)
		v, err := num(kv)
		if err != nil {
			return 0, err
		}
		cur = genSeen{value: v, modRev: modRev(kv)}
	}
}

// genSeen is a generation counter as this store last saw it.
type genSeen struct {
	value  uint64
	modRev int64
}

func (s generations) Last(ctx context.Context, id string) (uint64, error) {
	resp, err := s.db.get(ctx, s.db.k(kGenerations, id))
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	return num(resp.Kvs[0])
}

// Audit: entries under their sequence number, and meta/audit holding the
// count ever written and the last hash, both written by the transaction
// that appends on meta/audit's revision.

type audit struct{ db *DB }

type auditMeta struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
}

// meta reads meta/audit: the value, its ModRevision and the store
// revision it was read at.
func (s audit) meta(ctx context.Context) (m auditMeta, modRev, at int64, err error) {
	resp, err := s.db.get(ctx, s.db.k(kAuditMeta))
	if err != nil {
		return m, 0, 0, err
	}
	if len(resp.Kvs) == 0 {
		return m, 0, resp.Header.Revision, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return m, 0, 0, decodeErr("audit meta", kAuditMeta, err)
	}
	return m, resp.Kvs[0].ModRevision, resp.Header.Revision, nil
}

func (s audit) Append(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error) {
	if e.Who == "" || e.Action == "" {
		return e, invalid("audit entry needs who and action")
	}
	if e.Time.IsZero() {
		e.Time = s.db.now()
	}
	mk := s.db.k(kAuditMeta)
	for {
		m, rev, _, err := s.meta(ctx)
		if err != nil {
			return store.AuditEntry{}, err
		}
		e.Seq = m.Seq + 1
		e.Hash = store.AuditHash(m.Hash, e)
		ev, err := encode("audit entry", strconv.FormatUint(e.Seq, 10), e)
		if err != nil {
			return store.AuditEntry{}, err
		}
		mv, err := encode("audit meta", "", auditMeta{Seq: e.Seq, Hash: e.Hash})
		if err != nil {
			return store.AuditEntry{}, err
		}
		resp, err := s.db.txn(ctx, []clientv3.Cmp{eq(mk, rev)},
			[]clientv3.Op{clientv3.OpPut(s.db.k(kAudit, seqKey(e.Seq)), ev), clientv3.OpPut(mk, mv)}, nil)
		if err != nil {
			return store.AuditEntry{}, err
		}
		if resp.Succeeded {
			return e, nil
		}
	}
}

func (s audit) List(ctx context.Context, after uint64, limit int) (out []store.AuditEntry, err error) {
	p := s.db.k(kAudit)
	err = s.db.rangeAll(ctx, p+seqKey(after+1), prefixEnd(p), limit, func(kv *mvccpb.KeyValue) error {
		var e store.AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return decodeErr("audit entry", string(kv.Key), err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func (s audit) Verify(ctx context.Context) error {
	m, _, at, err := s.meta(ctx)
	if err != nil {
		return err
	}
	p := s.db.k(kAudit)
	var prev []byte
	var want uint64 = 1
	// The entries as of the meta read: an append meanwhile is no loss.
	err = s.db.rangeAt(ctx, p, prefixEnd(p), 0, at, func(kv *mvccpb.KeyValue) error {
		var e store.AuditEntry
		key := strings.TrimPrefix(string(kv.Key), p)
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("audit entry %s: %v: %w", key, err, errdefs.ErrDataLoss)
		}
		if key != seqKey(want) || e.Seq != want {
			return fmt.Errorf("audit log: entry %d missing (found %s): %w", want, key, errdefs.ErrDataLoss)
		}
		if !bytes.Equal(e.Hash, store.AuditHash(prev, e)) {
			return fmt.Errorf("audit log: entry %d was altered: %w", e.Seq, errdefs.ErrDataLoss)
		}
		prev = e.Hash
		want++
		return nil
	})
	if err != nil {
		return err
	}
	if want-1 != m.Seq {
		return fmt.Errorf("audit log: %d entries, %d were written: %w", want-1, m.Seq, errdefs.ErrDataLoss)
	}
	return nil
}
