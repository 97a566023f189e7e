package enroll

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// TokenRecord is what the controller keeps of a join token: never the
// secret, only its sha256 (F-03).
type TokenRecord struct {
	ID         string            `json:"id"`
	SecretHash []byte            `json:"secretHash"` // sha256 of the secret's hex string
	Labels     map[string]string `json:"labels,omitempty"`
	CreatedAt  time.Time         `json:"createdAt"`
	ExpiresAt  time.Time         `json:"expiresAt"`
	UsesLeft   int               `json:"usesLeft"`
	// Revision is the store's: it changes on every write, and SwapToken
	// compares it.
	Revision uint64 `json:"revision"`
}

// CertRecord is a device certificate the CA issued.
type CertRecord struct {
	Serial    string    `json:"serial"` // lower-case hex, as in the CRL and openssl's output
	DeviceID  string    `json:"deviceId"`
	NotAfter  time.Time `json:"notAfter"`
	RevokedAt time.Time `json:"revokedAt,omitzero"` // zero: not revoked
}

// Store keeps join tokens and issued certificates. The controller's store
// (bbolt, etcd) implements it; MemStore is the in-memory one for tests.
//
//   - CreateToken stores a new record (errdefs.ErrAlreadyExists if its id
//     is taken) and sets its Revision.
//   - Token returns a record (errdefs.ErrNotFound if there is none).
//   - SwapToken replaces old by new only if the stored record's Revision is
//     still old.Revision (errdefs.ErrConflict otherwise), and sets new's
//     Revision; a new with UsesLeft 0 may be deleted instead. This is how a
//     use is consumed once, however many controllers race for it.
//   - PutCert stores a certificate record by serial, replacing any.
//   - Certs lists every certificate record (revoked ones included).
type Store interface {
	CreateToken(ctx context.Context, rec TokenRecord) error
	Token(ctx context.Context, id string) (TokenRecord, error)
	SwapToken(ctx context.Context, old, new TokenRecord) error
	PutCert(ctx context.Context, rec CertRecord) error
	Certs(ctx context.Context) ([]CertRecord, error)
}

// MemStore is a Store in memory.
type MemStore struct {
	mu     sync.Mutex
	rev    uint64
	tokens map[string]TokenRecord
	certs  map[string]CertRecord
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{tokens: map[string]TokenRecord{}, certs: map[string]CertRecord{}}
}

func (m *MemStore) CreateToken(_ context.Context, rec TokenRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tokens[rec.ID]; ok {
		return fmt.Errorf("join token %s: %w", rec.ID, errdefs.ErrAlreadyExists)
	}
	m.rev++
	rec.Revision = m.rev
	m.tokens[rec.ID] = clone(rec)
	return nil
}

func (m *MemStore) Token(_ context.Context, id string) (TokenRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.tokens[id]
	if !ok {
		return TokenRecord{}, fmt.Errorf("join token %s: %w", id, errdefs.ErrNotFound)
	}
	return clone(rec), nil
}

func (m *MemStore) SwapToken(_ context.Context, old, new TokenRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.tokens[old.ID]
	if !ok || cur.Revision != old.Revision || new.ID != old.ID {
		return fmt.Errorf("join token %s changed meanwhile: %w", old.ID, errdefs.ErrConflict)
	}
	m.rev++
	new.Revision = m.rev
	m.tokens[new.ID] = clone(new)
	return nil
}

func (m *MemStore) PutCert(_ context.Context, rec CertRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.certs[rec.Serial] = rec
	return nil
}

func (m *MemStore) Certs(context.Context) ([]CertRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Collect(maps.Values(m.certs))
	slices.SortFunc(out, func(a, b CertRecord) int { return compareStrings(a.Serial, b.Serial) })
	return out, nil
}

func clone(r TokenRecord) TokenRecord {
	r.SecretHash = slices.Clone(r.SecretHash)
	r.Labels = maps.Clone(r.Labels)
	return r
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
