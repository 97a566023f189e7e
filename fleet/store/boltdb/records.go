package boltdb

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Devices.

type devices struct{ db *DB }

func (t *tx) device(id string) (store.Device, bool, error) {
	var d store.Device
	ok, err := t.getJSON(bucketDevices, id, "device", &d)
	if err != nil || !ok {
		return store.Device{}, ok, err
	}
	if _, err := t.getJSON(bucketStatus, id, "device status", &d.Status); err != nil {
		return store.Device{}, true, err
	}
	return d, true, nil
}

func (s devices) Get(ctx context.Context, id string) (d store.Device, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		var ok bool
		if d, ok, err = t.device(id); err == nil && !ok {
			err = store.NotFound("device", id)
		}
		return err
	})
	return d, err
}

func (s devices) List(ctx context.Context) (out []store.Device, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		st := t.b(bucketStatus)
		return t.b(bucketDevices).ForEach(func(k, v []byte) error {
			var d store.Device
			if err := json.Unmarshal(v, &d); err != nil {
				return decodeErr("device", string(k), err)
			}
			if sv := st.Get(k); sv != nil {
				if err := json.Unmarshal(sv, &d.Status); err != nil {
					return decodeErr("device status", string(k), err)
				}
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

func (s devices) Put(ctx context.Context, d store.Device, expectRev uint64) (out store.Device, err error) {
	if err := topic.ValidDeviceID(d.ID); err != nil {
		return out, err
	}
	err = s.db.update(ctx, func(t *tx) error {
		cur, _, err := t.device(d.ID)
		if err != nil {
			return err
		}
		if err := checkRev("device", d.ID, expectRev, cur.Rev); err != nil {
			return err
		}
		if d.Rev, err = t.nextRev(); err != nil {
			return err
		}
		if err := t.putJSON(bucketDevices, []byte(d.ID), "device", d); err != nil {
			return err
		}
		d.Status = cur.Status
		out = d
		return nil
	})
	return out, err
}

func (s devices) Delete(ctx context.Context, id string, expectRev uint64) error {
	return s.db.update(ctx, func(t *tx) error {
		cur, ok, err := t.device(id)
		if err != nil {
			return err
		}
		if !ok {
			return store.NotFound("device", id)
		}
		if err := checkRev("device", id, expectRev, cur.Rev); err != nil {
			return err
		}
		if _, err := t.nextRev(); err != nil {
			return err
		}
		if err := t.deleteDeviceEvents(id); err != nil {
			return err
		}
		if err := t.b(bucketStatus).Delete([]byte(id)); err != nil {
			return err
		}
		return t.b(bucketDevices).Delete([]byte(id))
	})
}

// Apps.

type apps struct{ db *DB }

func revisionKey(name string, rev uint64) []byte {
	k := make([]byte, 0, len(name)+9)
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, rev)
}

func (t *tx) app(name string) (store.App, error) {
	var a store.App
	ok, err := t.getJSON(bucketApps, name, "app", &a)
	if err == nil && !ok {
		err = store.NotFound("app", name)
	}
	return a, err
}

func (s apps) Get(ctx context.Context, name string) (a store.App, err error) {
	err = s.db.view(ctx, func(t *tx) error { a, err = t.app(name); return err })
	return a, err
}

func (s apps) List(ctx context.Context) (out []store.App, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		return t.b(bucketApps).ForEach(func(k, v []byte) error {
			var a store.App
			if err := json.Unmarshal(v, &a); err != nil {
				return decodeErr("app", string(k), err)
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

func (s apps) Apply(ctx context.Context, spec wire.App, by string, expectRev uint64) (out store.App, err error) {
	if !wire.ValidName(spec.Name) {
		return out, invalid("app name %q: use lower-case letters, digits and '-'", spec.Name)
	}
	now := s.db.now()
	err = s.db.update(ctx, func(t *tx) error {
		cur, err := t.app(spec.Name)
		if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		if err := checkRev("app", spec.Name, expectRev, cur.Rev); err != nil {
			return err
		}
		latest := max(cur.Latest, getU64(t.b(bucketAppLatest).Get([]byte(spec.Name)))) + 1
		if err := t.b(bucketAppLatest).Put([]byte(spec.Name), u64(latest)); err != nil {
			return err
		}
		r := store.AppRevision{Revision: latest, Spec: spec, Created: now, By: by}
		if err := t.putJSON(bucketRevisions, revisionKey(spec.Name, latest), "app revision", r); err != nil {
			return err
		}
		a := store.App{Name: spec.Name, Current: latest, Latest: latest}
		if a.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = a
		return t.putJSON(bucketApps, []byte(a.Name), "app", a)
	})
	return out, err
}

func (s apps) Put(ctx context.Context, a store.App, expectRev uint64) (out store.App, err error) {
	err = s.db.update(ctx, func(t *tx) error {
		cur, err := t.app(a.Name)
		if err != nil {
			if errdefs.IsNotFound(err) && expectRev != 0 {
				return store.Conflict("app", a.Name, expectRev, 0)
			}
			return err
		}
		if err := checkRev("app", a.Name, expectRev, cur.Rev); err != nil {
			return err
		}
		if t.b(bucketRevisions).Get(revisionKey(a.Name, a.Current)) == nil {
			return invalid("app %q: current revision %d is not stored (have 1..%d)", a.Name, a.Current, cur.Latest)
		}
		a.Latest = cur.Latest
		if a.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = a
		return t.putJSON(bucketApps, []byte(a.Name), "app", a)
	})
	return out, err
}

func (s apps) Revisions(ctx context.Context, name string) (out []store.AppRevision, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		if _, err := t.app(name); err != nil {
			return err
		}
		prefix := append([]byte(name), 0)
		c := t.b(bucketRevisions).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r store.AppRevision
			if err := json.Unmarshal(v, &r); err != nil {
				return decodeErr("app revision", string(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

func (s apps) Revision(ctx context.Context, name string, rev uint64) (r store.AppRevision, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		v := t.b(bucketRevisions).Get(revisionKey(name, rev))
		if v == nil {
			return store.NotFound("app revision", fmt.Sprintf("%s@%d", name, rev))
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return decodeErr("app revision", name, err)
		}
		return nil
	})
	return r, err
}

func (s apps) Delete(ctx context.Context, name string, expectRev uint64) error {
	return s.db.update(ctx, func(t *tx) error {
		cur, err := t.app(name)
		if err != nil {
			return err
		}
		if err := checkRev("app", name, expectRev, cur.Rev); err != nil {
			return err
		}
		if _, err := t.nextRev(); err != nil {
			return err
		}
		prefix := append([]byte(name), 0)
		c := t.b(bucketRevisions).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return t.b(bucketApps).Delete([]byte(name))
	})
}

// Rollouts: the value is the revision (8 bytes) and the document.

// rollouts serves a bucket of blobs: the rollouts, and the controller's
// documents.
type rollouts struct {
	db     *DB
	bucket []byte
	kind   string
}

func (t *tx) blob(bucket []byte, id string) (store.Blob, bool) {
	v := t.b(bucket).Get([]byte(id))
	if len(v) < 8 {
		return store.Blob{}, false
	}
	return store.Blob{ID: id, Rev: getU64(v[:8]), Data: append([]byte(nil), v[8:]...)}, true
}

func (s rollouts) Get(ctx context.Context, id string) (b store.Blob, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		var ok bool
		if b, ok = t.blob(s.bucket, id); !ok {
			return store.NotFound(s.kind, id)
		}
		return nil
	})
	return b, err
}

func (s rollouts) List(ctx context.Context) (out []store.Blob, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		return t.b(s.bucket).ForEach(func(k, _ []byte) error {
			b, _ := t.blob(s.bucket, string(k))
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// Put shares its commit with concurrent Puts (bbolt's Batch): the
// controller stores what it published to each device from many
// goroutines at once, one fsync for all of them. A Put whose revision
// check fails leaves the others of its batch to commit.
func (s rollouts) Put(ctx context.Context, id string, data []byte, expectRev uint64) (out store.Blob, err error) {
	if id == "" {
		return out, invalid("%s id is empty", s.kind)
	}
	err = s.db.batch(ctx, func(t *tx) error {
		cur, _ := t.blob(s.bucket, id)
		if err := checkRev(s.kind, id, expectRev, cur.Rev); err != nil {
			return err
		}
		rev, err := t.nextRev()
		if err != nil {
			return err
		}
		out = store.Blob{ID: id, Rev: rev, Data: append([]byte(nil), data...)}
		return t.b(s.bucket).Put([]byte(id), append(u64(rev), data...))
	})
	return out, err
}

func (s rollouts) Delete(ctx context.Context, id string, expectRev uint64) error {
	return s.db.update(ctx, func(t *tx) error {
		cur, ok := t.blob(s.bucket, id)
		if !ok {
			return store.NotFound(s.kind, id)
		}
		if err := checkRev(s.kind, id, expectRev, cur.Rev); err != nil {
			return err
		}
		if _, err := t.nextRev(); err != nil {
			return err
		}
		return t.b(s.bucket).Delete([]byte(id))
	})
}

// Join tokens.

type joinTokens struct{ db *DB }

func (t *tx) joinToken(id string) (store.JoinToken, error) {
	var jt store.JoinToken
	ok, err := t.getJSON(bucketJoinTokens, id, "join token", &jt)
	if err == nil && !ok {
		err = store.NotFound("join token", id)
	}
	return jt, err
}

func (s joinTokens) Create(ctx context.Context, jt store.JoinToken) (out store.JoinToken, err error) {
	if jt.ID == "" || len(jt.SecretHash) == 0 {
		return out, invalid("join token needs an id and a secret hash")
	}
	err = s.db.update(ctx, func(t *tx) error {
		if t.b(bucketJoinTokens).Get([]byte(jt.ID)) != nil {
			return fmt.Errorf("join token %q exists: %w", jt.ID, errdefs.ErrAlreadyExists)
		}
		var err error
		if jt.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = jt
		return t.putJSON(bucketJoinTokens, []byte(jt.ID), "join token", jt)
	})
	return out, err
}

func (s joinTokens) Get(ctx context.Context, id string) (jt store.JoinToken, err error) {
	err = s.db.view(ctx, func(t *tx) error { jt, err = t.joinToken(id); return err })
	return jt, err
}

func (s joinTokens) List(ctx context.Context) (out []store.JoinToken, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		return t.b(bucketJoinTokens).ForEach(func(k, v []byte) error {
			var jt store.JoinToken
			if err := json.Unmarshal(v, &jt); err != nil {
				return decodeErr("join token", string(k), err)
			}
			out = append(out, jt)
			return nil
		})
	})
	return out, err
}

func (s joinTokens) Consume(ctx context.Context, id string, now time.Time, check func(store.JoinToken) error) (out store.JoinToken, err error) {
	err = s.db.update(ctx, func(t *tx) error {
		jt, err := t.joinToken(id)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(jt); err != nil {
				return err
			}
		}
		if !now.Before(jt.Expires) {
			return fmt.Errorf("join token %q expired at %s; create a new one: %w", id, jt.Expires.UTC().Format(time.RFC3339), errdefs.ErrFailedPrecondition)
		}
		if jt.UsesLeft <= 0 {
			return fmt.Errorf("join token %q has been used up; create a new one: %w", id, errdefs.ErrFailedPrecondition)
		}
		jt.UsesLeft--
		if jt.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = jt
		return t.putJSON(bucketJoinTokens, []byte(id), "join token", jt)
	})
	return out, err
}

func (s joinTokens) Delete(ctx context.Context, id string) error {
	return s.db.update(ctx, func(t *tx) error {
		if _, err := t.joinToken(id); err != nil {
			return err
		}
		if _, err := t.nextRev(); err != nil {
			return err
		}
		return t.b(bucketJoinTokens).Delete([]byte(id))
	})
}

// API tokens.

type apiTokens struct{ db *DB }

func (t *tx) apiToken(hash string) (store.APIToken, error) {
	var at store.APIToken
	ok, err := t.getJSON(bucketAPITokens, hash, "api token", &at)
	if err == nil && !ok {
		err = fmt.Errorf("no such api token: %w", errdefs.ErrNotFound) // the hash is not echoed
	}
	return at, err
}

func (s apiTokens) Create(ctx context.Context, at store.APIToken) (out store.APIToken, err error) {
	if at.Hash == "" || at.Name == "" {
		return out, invalid("api token needs a hash and a name")
	}
	if at.Role != store.RoleAdmin && at.Role != store.RoleReadOnly {
		return out, invalid("api token role %q: want %q or %q", at.Role, store.RoleAdmin, store.RoleReadOnly)
	}
	err = s.db.update(ctx, func(t *tx) error {
		if t.b(bucketAPITokens).Get([]byte(at.Hash)) != nil {
			return fmt.Errorf("api token %q: its hash is taken: %w", at.Name, errdefs.ErrAlreadyExists)
		}
		var err error
		if at.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = at
		return t.putJSON(bucketAPITokens, []byte(at.Hash), "api token", at)
	})
	return out, err
}

func (s apiTokens) Get(ctx context.Context, hash string) (at store.APIToken, err error) {
	err = s.db.view(ctx, func(t *tx) error { at, err = t.apiToken(hash); return err })
	return at, err
}

func (s apiTokens) List(ctx context.Context) (out []store.APIToken, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		return t.b(bucketAPITokens).ForEach(func(k, v []byte) error {
			var at store.APIToken
			if err := json.Unmarshal(v, &at); err != nil {
				return decodeErr("api token", "", err)
			}
			out = append(out, at)
			return nil
		})
	})
	return out, err
}

func (s apiTokens) Revoke(ctx context.Context, hash string, at time.Time) (out store.APIToken, err error) {
	err = s.db.update(ctx, func(t *tx) error {
		tok, err := t.apiToken(hash)
		if err != nil {
			return err
		}
		if tok.Revoked {
			out = tok
			return nil
		}
		tok.Revoked, tok.RevokedAt = true, at
		if tok.Rev, err = t.nextRev(); err != nil {
			return err
		}
		out = tok
		return t.putJSON(bucketAPITokens, []byte(hash), "api token", tok)
	})
	return out, err
}

// Generations.

type generations struct{ db *DB }

func (s generations) Next(ctx context.Context, id string) (gen uint64, err error) {
	if id == "" {
		return 0, invalid("device id is empty")
	}
	err = s.db.batch(ctx, func(t *tx) error {
		b := t.b(bucketGenerations)
		last := getU64(b.Get([]byte(id)))
		floor := uint64(max(s.db.now().UnixMilli(), 0))
		gen = max(last+1, floor)
		if gen > wire.MaxGeneration {
			return fmt.Errorf("device %q: generation %d would pass the wire's largest %d: %w", id, gen, uint64(wire.MaxGeneration), errdefs.ErrResourceExhausted)
		}
		return b.Put([]byte(id), u64(gen))
	})
	return gen, err
}

func (s generations) Last(ctx context.Context, id string) (gen uint64, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		gen = getU64(t.b(bucketGenerations).Get([]byte(id)))
		return nil
	})
	return gen, err
}

// Audit.

type audit struct{ db *DB }

func (s audit) Append(ctx context.Context, e store.AuditEntry) (out store.AuditEntry, err error) {
	if e.Who == "" || e.Action == "" {
		return out, invalid("audit entry needs who and action")
	}
	if e.Time.IsZero() {
		e.Time = s.db.now()
	}
	err = s.db.update(ctx, func(t *tx) error {
		b := t.b(bucketAudit)
		var prev []byte
		if _, v := b.Cursor().Last(); v != nil {
			var p store.AuditEntry
			if err := json.Unmarshal(v, &p); err != nil {
				return decodeErr("audit entry", "last", err)
			}
			prev = p.Hash
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		e.Hash = store.AuditHash(prev, e)
		out = e
		return t.putJSON(bucketAudit, u64(seq), "audit entry", e)
	})
	return out, err
}

func (s audit) List(ctx context.Context, after uint64, limit int) (out []store.AuditEntry, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		c := t.b(bucketAudit).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			var e store.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return decodeErr("audit entry", fmt.Sprint(getU64(k)), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func (s audit) Verify(ctx context.Context) error {
	return s.db.view(ctx, func(t *tx) error {
		b := t.b(bucketAudit)
		var prev []byte
		var want uint64 = 1
		err := b.ForEach(func(k, v []byte) error {
			var e store.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("audit entry %d: %v: %w", getU64(k), err, errdefs.ErrDataLoss)
			}
			if getU64(k) != want || e.Seq != want {
				return fmt.Errorf("audit log: entry %d missing (found %d): %w", want, getU64(k), errdefs.ErrDataLoss)
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
		if n := b.Sequence(); want-1 != n {
			return fmt.Errorf("audit log: %d entries, %d were written: %w", want-1, n, errdefs.ErrDataLoss)
		}
		return nil
	})
}
