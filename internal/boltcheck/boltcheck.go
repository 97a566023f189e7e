// Package boltcheck opens a bbolt file and proves it readable before a
// store trusts it: every bucket and key walked and tx.Check run in the
// opening goroutine, with bbolt's panics and memory faults on a damaged
// file turned into a *CorruptError. The agent's store and the controller's
// both open their files through it; what each does with a corrupt file
// (set it aside, or refuse it) is its own decision.
package boltcheck

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// CorruptError is a file that bbolt cannot read whole.
type CorruptError struct{ Err error }

func (e *CorruptError) Error() string { return e.Err.Error() }
func (e *CorruptError) Unwrap() error { return e.Err }

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for another process's lock on the
	// file; the timeout is returned as bbolt's ErrTimeout, not as
	// corruption.
	LockTimeout time.Duration
	// MaxDepth bounds the nesting of buckets (deeper is corruption).
	MaxDepth int
	// Verify, if set, runs in the checking transaction after the walk
	// (decode the store's own records there); its error is returned as
	// it is, and its panics count as corruption.
	Verify func(tx *bolt.Tx) error
}

// Open opens path (mode 0600) and proves it readable. An empty file, one
// bbolt refuses, a fault while reading and a failed check are
// *CorruptError; a lock timeout and a permission error are returned as
// they are; Verify's error too.
func Open(path string, o Options) (b *bolt.DB, err error) {
	if fi, serr := os.Stat(path); serr == nil && fi.Size() == 0 {
		return nil, &CorruptError{errors.New("file is empty")}
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if b != nil {
				closeQuietly(b)
			}
			b, err = nil, &CorruptError{fmt.Errorf("read: %v", r)}
		}
	}()
	b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) || errors.Is(err, os.ErrPermission) {
			return nil, err
		}
		return nil, &CorruptError{fmt.Errorf("open: %w", err)}
	}
	if err := check(b, o); err != nil {
		closeQuietly(b)
		return nil, err
	}
	return b, nil
}

// check walks every bucket and key, drains tx.Check, then runs Verify.
func check(b *bolt.DB, o Options) error {
	var verr error
	err := b.View(func(tx *bolt.Tx) error {
		var walk func(bk *bolt.Bucket, depth int) error
		walk = func(bk *bolt.Bucket, depth int) error {
			return bk.ForEach(func(k, v []byte) error {
				if v == nil {
					if depth > o.MaxDepth {
						return errors.New("buckets nested too deep")
					}
					return walk(bk.Bucket(k), depth+1)
				}
				return nil
			})
		}
		if err := tx.ForEach(func(_ []byte, bk *bolt.Bucket) error { return walk(bk, 0) }); err != nil {
			return err
		}
		var first error
		for err := range tx.Check() { // drain: the checker goroutine must finish
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return first
		}
		if o.Verify != nil {
			verr = o.Verify(tx)
		}
		return nil
	})
	if err != nil {
		return &CorruptError{fmt.Errorf("check: %w", err)}
	}
	return verr
}

func closeQuietly(b *bolt.DB) {
	defer func() { _ = recover() }()
	_ = b.Close()
}
