package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/containerd/errdefs"
)

// Errors callers branch on more finely than by category. Everything else
// is one of the categories of containerd/errdefs: an absent record is
// errdefs.ErrNotFound, a lost race errdefs.ErrConflict, a record created
// twice errdefs.ErrAlreadyExists.
var (
	// ErrCorrupt: the store's data is damaged. The controller refuses to
	// start rather than start empty (that would forget every device,
	// token and generation): restore a backup.
	ErrCorrupt = fmt.Errorf("store is damaged: %w", errdefs.ErrDataLoss)
	// ErrSchema: the store was written by a newer controller with a layout
	// this build does not know.
	ErrSchema = fmt.Errorf("unsupported store schema: %w", errdefs.ErrFailedPrecondition)
	// ErrLocked: another process holds the store.
	ErrLocked = fmt.Errorf("store is locked by another process: %w", errdefs.ErrUnavailable)
)

// IsConflict says whether err is a lost compare-and-swap: read again and
// retry.
func IsConflict(err error) bool { return errdefs.IsConflict(err) }

// Conflict is the error of a write whose expected revision is not the
// stored one; implementations return it so every store says the same.
// cur 0 means the record does not exist.
func Conflict(kind, id string, expect, cur uint64) error {
	if cur == 0 {
		return fmt.Errorf("%s %q was deleted since it was read at revision %d: %w", kind, id, expect, errdefs.ErrConflict)
	}
	if expect == 0 {
		return fmt.Errorf("%s %q already exists (revision %d): %w", kind, id, cur, errdefs.ErrAlreadyExists)
	}
	return fmt.Errorf("%s %q was changed by another writer (read at revision %d, now %d); read it again and retry: %w",
		kind, id, expect, cur, errdefs.ErrConflict)
}

// NotFound is the error for an absent record.
func NotFound(kind, id string) error {
	return fmt.Errorf("no %s %q: %w", kind, id, errdefs.ErrNotFound)
}

// AuditHash is the chain hash of e following the entry whose hash is
// prev: sha256 over prev and e's fields, each length-prefixed.
func AuditHash(prev []byte, e AuditEntry) []byte {
	h := sha256.New()
	put := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], e.Seq)
	put(prev)
	put(seq[:])
	put([]byte(e.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")))
	for _, s := range []string{e.Who, e.Action, e.Target, e.From, e.Detail} {
		put([]byte(s))
	}
	return h.Sum(nil)
}

// ErrStoreDown is what a cache in front of the store answers, for a
// record it does not hold, while the store is taken as down: it did not
// answer a moment ago and is not asked again yet.
var ErrStoreDown = fmt.Errorf("the store did not answer a moment ago (is a majority of the etcd members up?): %w", errdefs.ErrUnavailable)
