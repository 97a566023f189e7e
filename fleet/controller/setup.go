package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/sign"
)

// Files under the data directory (besides enroll's ca.crt, ca.key,
// server.crt, server.key and crl.pem).
const (
	KeyFile   = "signing.key" // the fleet's ed25519 key, PKCS #8 PEM, 0600
	PubFile   = "signing.pub" // its public half, 0644
	StoreFile = "fleet.db"    // the bbolt store, 0600
	// AdminTokenName is the name of the admin API token made at first
	// start.
	AdminTokenName = "admin"
)

// PrepareDir makes dir (0700) if needed and refuses one that group or
// others may enter (errdefs.ErrPermissionDenied).
func PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("data directory %s has mode %04o: others may read the fleet's keys; chmod 700 it: %w",
			dir, fi.Mode().Perm(), errdefs.ErrPermissionDenied)
	}
	return nil
}

// LoadOrCreateKey reads the fleet's signing key under dir, creating it
// (0600) on first start. A key file that group or others may read is
// refused.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(path)
	if err == nil {
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("signing key %s has mode %04o: chmod 600 it: %w", path, fi.Mode().Perm(), errdefs.ErrPermissionDenied)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read signing key: %w", err)
		}
		key, err := sign.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	pub, key, err := sign.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	kb, err := sign.MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	pb, err := sign.MarshalPublicKeyPEM(pub)
	if err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, PubFile), pb, 0o644); err != nil {
		return nil, err
	}
	if err := writeNew(path, kb, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// writeNew writes a file through a temporary one, so that a crash leaves
// either no file or the whole one.
func writeNew(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// HashAPIToken is how API tokens are keyed in store.APITokens: the hex
// sha256 of their value (as fleet/api looks them up).
func HashAPIToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewAPIToken draws a token value: "tdra_" and 32 random bytes in hex.
func NewAPIToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("draw api token: %w", err)
	}
	return "tdra_" + hex.EncodeToString(b[:]), nil
}

// EnsureAdminToken makes the admin API token on first start (no token
// stored yet) and returns its value, to be printed once; it is stored
// only hashed. With tokens already stored it returns "".
func EnsureAdminToken(ctx context.Context, tokens store.APITokens, now time.Time) (string, error) {
	l, err := tokens.List(ctx)
	if err != nil {
		return "", fmt.Errorf("list api tokens: %w", err)
	}
	if len(l) > 0 {
		return "", nil
	}
	tok, err := NewAPIToken()
	if err != nil {
		return "", err
	}
	if _, err := tokens.Create(ctx, store.APIToken{Hash: HashAPIToken(tok), Name: AdminTokenName, Role: store.RoleAdmin, Created: now}); err != nil {
		return "", fmt.Errorf("store admin token: %w", err)
	}
	return tok, nil
}
