package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/fleet/store"
)

// certPrefix is the key prefix of certificate records in store.Docs.
const certPrefix = "cert/"

// enrollStore adapts the fleet store to enroll.Store: tokens are
// store.JoinTokens, certificates documents "cert/<serial>" of store.Docs.
type enrollStore struct {
	tokens store.JoinTokens
	docs   store.Rollouts
	now    func() time.Time
}

func tokenRecord(t store.JoinToken) enroll.TokenRecord {
	return enroll.TokenRecord{ID: t.ID, SecretHash: t.SecretHash, Labels: t.Labels, CreatedAt: t.Created,
		ExpiresAt: t.Expires, UsesLeft: t.UsesLeft, Revision: t.Rev}
}

func (s enrollStore) CreateToken(ctx context.Context, rec enroll.TokenRecord) error {
	_, err := s.tokens.Create(ctx, store.JoinToken{ID: rec.ID, SecretHash: rec.SecretHash, Labels: rec.Labels,
		Created: rec.CreatedAt, Expires: rec.ExpiresAt, UsesLeft: rec.UsesLeft})
	return err
}

func (s enrollStore) Token(ctx context.Context, id string) (enroll.TokenRecord, error) {
	t, err := s.tokens.Get(ctx, id)
	if err != nil {
		return enroll.TokenRecord{}, err
	}
	return tokenRecord(t), nil
}

// SwapToken spends one use: the store's Consume, refused unless the
// stored token is still at old's revision.
func (s enrollStore) SwapToken(ctx context.Context, old, new enroll.TokenRecord) error {
	if new.UsesLeft != old.UsesLeft-1 {
		return fmt.Errorf("join token %s: a swap must spend exactly one use: %w", old.ID, errdefs.ErrInvalidArgument)
	}
	_, err := s.tokens.Consume(ctx, old.ID, s.now(), func(t store.JoinToken) error {
		if t.Rev != old.Revision {
			return store.Conflict("join token", old.ID, old.Revision, t.Rev)
		}
		return nil
	})
	return err
}

func (s enrollStore) PutCert(ctx context.Context, rec enroll.CertRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = store.UpdateRollout(ctx, s.docs, certPrefix+rec.Serial, func([]byte) ([]byte, error) { return data, nil })
	if errdefs.IsNotFound(err) {
		_, err = s.docs.Put(ctx, certPrefix+rec.Serial, data, 0)
	}
	return err
}

func (s enrollStore) Certs(ctx context.Context) ([]enroll.CertRecord, error) {
	docs, err := s.docs.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []enroll.CertRecord
	for _, d := range docs {
		if !strings.HasPrefix(d.ID, certPrefix) {
			continue
		}
		var rec enroll.CertRecord
		if err := json.Unmarshal(d.Data, &rec); err != nil {
			return nil, fmt.Errorf("certificate record %s: %v: %w", d.ID, err, errdefs.ErrDataLoss)
		}
		out = append(out, rec)
	}
	return out, nil
}
