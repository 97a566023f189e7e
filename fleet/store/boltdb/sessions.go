package boltdb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
)

// Console sessions.

type sessions struct{ db *DB }

var _ store.Sessions = sessions{}

// Create implements store.Sessions; it drops the sessions expired at
// s.Created in the same transaction.
func (s sessions) Create(ctx context.Context, ss store.Session) (store.Session, error) {
	if ss.Hash == "" || ss.TokenHash == "" {
		return store.Session{}, invalid("session needs a hash and a token hash")
	}
	if !ss.Expires.After(ss.Created) {
		return store.Session{}, invalid("session expires (%s) before it is created (%s)", ss.Expires, ss.Created)
	}
	err := s.db.update(ctx, func(t *tx) error {
		b := t.b(bucketSessions)
		if b.Get([]byte(ss.Hash)) != nil {
			return fmt.Errorf("session: its hash is taken: %w", errdefs.ErrAlreadyExists)
		}
		var expired [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var o store.Session
			if err := json.Unmarshal(v, &o); err != nil {
				return decodeErr("session", "", err)
			}
			if !ss.Created.Before(o.Expires) {
				expired = append(expired, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return t.putJSON(bucketSessions, []byte(ss.Hash), "session", ss)
	})
	if err != nil {
		return store.Session{}, err
	}
	return ss, nil
}

// Get implements store.Sessions.
func (s sessions) Get(ctx context.Context, hash string, now time.Time) (ss store.Session, err error) {
	err = s.db.view(ctx, func(t *tx) error {
		ok, err := t.getJSON(bucketSessions, hash, "session", &ss)
		if err == nil && (!ok || !now.Before(ss.Expires)) {
			err = fmt.Errorf("no such session, or it expired: %w", errdefs.ErrNotFound) // the hash is not echoed
		}
		return err
	})
	return ss, err
}

// Delete implements store.Sessions.
func (s sessions) Delete(ctx context.Context, hash string) error {
	return s.db.update(ctx, func(t *tx) error { return t.b(bucketSessions).Delete([]byte(hash)) })
}
