package boltcheck

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	b, err := bolt.Open(good, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("a"))
		if err != nil {
			return err
		}
		inner, err := bk.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		_, err = inner.CreateBucket([]byte("c"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b, err = Open(good, Options{LockTimeout: time.Second, MaxDepth: 4})
	if err != nil {
		t.Fatalf("a good file: %v", err)
	}
	b.Close()

	// Nesting deeper than allowed is corruption.
	var ce *CorruptError
	if _, err := Open(good, Options{LockTimeout: time.Second, MaxDepth: 0}); !errors.As(err, &ce) {
		t.Fatalf("too deep: %v", err)
	}
	// Verify's error comes back as it is, not as corruption.
	mine := errors.New("schema 9")
	if _, err := Open(good, Options{LockTimeout: time.Second, MaxDepth: 4, Verify: func(*bolt.Tx) error { return mine }}); err != mine {
		t.Fatalf("verify: %v", err)
	}
	// A panic in Verify is corruption.
	if _, err := Open(good, Options{LockTimeout: time.Second, MaxDepth: 4, Verify: func(*bolt.Tx) error { panic("boom") }}); !errors.As(err, &ce) {
		t.Fatalf("panicking verify: %v", err)
	}
	for name, content := range map[string][]byte{"empty": nil, "garbage": []byte("not a bbolt file, just some bytes that are long enough to be read as a page header or two")} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p, Options{LockTimeout: time.Second, MaxDepth: 4}); !errors.As(err, &ce) {
			t.Errorf("%s file: %v, want *CorruptError", name, err)
		}
	}
}
