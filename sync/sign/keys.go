package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
)

// ErrBadKey is returned for key material that cannot be parsed.
var ErrBadKey = reason("bad key", errdefs.ErrInvalidArgument)

// GenerateKey makes a new fleet signing key pair from rnd (nil: crypto/rand).
func GenerateKey(rnd io.Reader) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// EncodePublicKey returns the standard base64 of the 32 key bytes, the form
// the agent's config carries.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// MarshalPublicKeyPEM returns a "PUBLIC KEY" PEM block (PKIX), as openssl writes it.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivateKeyPEM returns a "PRIVATE KEY" PEM block (PKCS #8).
func MarshalPrivateKeyPEM(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePublicKey reads a public key as base64 of the 32 raw bytes or as a
// PKIX "PUBLIC KEY" PEM block.
func ParsePublicKey(s []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(s); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: PEM block %q, want PUBLIC KEY", ErrBadKey, blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: %T, want ed25519", ErrBadKey, k)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(s)))
	if err != nil {
		return nil, fmt.Errorf("%w: not PEM and not base64: %v", ErrBadKey, err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadKey, len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// ParsePrivateKey reads a private key as a PKCS #8 "PRIVATE KEY" PEM block
// or as base64 of the 32-byte seed or the 64-byte key.
func ParsePrivateKey(s []byte) (ed25519.PrivateKey, error) {
	if blk, _ := pem.Decode(s); blk != nil {
		if blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("%w: PEM block %q, want PRIVATE KEY", ErrBadKey, blk.Type)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: %T, want ed25519", ErrBadKey, k)
		}
		return priv, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(s)))
	if err != nil {
		return nil, fmt.Errorf("%w: not PEM and not base64: %v", ErrBadKey, err)
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		return ed25519.PrivateKey(raw), nil
	}
	return nil, fmt.Errorf("%w: %d bytes, want %d or %d", ErrBadKey, len(raw), ed25519.SeedSize, ed25519.PrivateKeySize)
}
