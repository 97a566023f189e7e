package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Defaults and bounds.
const (
	DefaultCertValidity = 365 * 24 * time.Hour
	DefaultTokenTTL     = 24 * time.Hour
	MaxTokenTTL         = 365 * 24 * time.Hour
	MaxTokenUses        = 100000
	maxLabels           = 64
	maxLabelLen         = 63
	swapAttempts        = 8
)

// Errors callers branch on, each wrapping its category.
var (
	// ErrTokenRefused: unknown token, or wrong secret (401).
	ErrTokenRefused = fmt.Errorf("join token refused: %w", errdefs.ErrUnauthenticated)
	// ErrTokenSpent: expired, or used up (403).
	ErrTokenSpent = fmt.Errorf("join token no longer valid: %w", errdefs.ErrPermissionDenied)
)

// Config configures an Enroller.
type Config struct {
	// Dir holds the CA, the server certificate and the CRL (made 0700).
	Dir string
	// Store keeps tokens and issued certificates.
	Store Store
	// Brokers are the MQTT URLs devices are told to connect to.
	Brokers []string
	// SigningKey is the fleet's ed25519 key that signs desired documents.
	SigningKey ed25519.PublicKey
	// CertValidity of device certificates (default one year, at most the
	// CA's own end).
	CertValidity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Enroller issues join tokens, enrolls devices and revokes them.
type Enroller struct {
	cfg Config
	ca  *CA

	mu      sync.Mutex
	revoked map[string]bool // serials (hex)
	// live are the unrevoked certificates by device id, and enrolling
	// the ids being enrolled now: enrollment checks them without
	// listing every certificate (which made enrolling n devices O(n²)),
	// and two enrollments of one id at once cannot both pass. Like
	// revoked, they assume this Enroller is the only writer of its
	// store's certificate records.
	live      map[string][]CertRecord
	enrolling map[string]bool
}

// New loads (or on first start creates) the CA under cfg.Dir and the
// revocations from cfg.Store, and writes the CRL.
func New(ctx context.Context, cfg Config) (*Enroller, error) {
	if cfg.Store == nil || cfg.Dir == "" || len(cfg.SigningKey) != ed25519.PublicKeySize || len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("enroll: Dir, Store, Brokers and an ed25519 SigningKey are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	ca, err := LoadOrCreateCA(cfg.Dir, cfg.Now())
	if err != nil {
		return nil, err
	}
	e := &Enroller{cfg: cfg, ca: ca, revoked: map[string]bool{}, live: map[string][]CertRecord{}, enrolling: map[string]bool{}}
	certs, err := cfg.Store.Certs(ctx)
	if err != nil {
		return nil, fmt.Errorf("enroll: list certificates: %w", err)
	}
	for _, c := range certs {
		if !c.RevokedAt.IsZero() {
			e.revoked[c.Serial] = true
		} else {
			e.live[c.DeviceID] = append(e.live[c.DeviceID], c)
		}
	}
	if err := e.writeCRL(certs); err != nil {
		return nil, err
	}
	return e, nil
}

// CA returns the fleet CA.
func (e *Enroller) CA() *CA { return e.ca }

// CRLPath is where the CRL (PEM) is written, for mosquitto's crlfile.
func (e *Enroller) CRLPath() string { return filepath.Join(e.cfg.Dir, CRLFile) }

// TokenOptions are the parameters of a join token.
type TokenOptions struct {
	Labels map[string]string
	TTL    time.Duration // default 24h, at most a year
	Uses   int           // default 1
}

// CreateToken makes a join token and stores its record (the secret only as
// a hash). The returned string is shown to the operator once and never
// again; it is not logged.
func (e *Enroller) CreateToken(ctx context.Context, opt TokenOptions) (string, TokenRecord, error) {
	if opt.TTL == 0 {
		opt.TTL = DefaultTokenTTL
	}
	if opt.Uses == 0 {
		opt.Uses = 1
	}
	if opt.TTL < 0 || opt.TTL > MaxTokenTTL {
		return "", TokenRecord{}, fmt.Errorf("ttl %s: want above 0 and at most %s: %w", opt.TTL, MaxTokenTTL, errdefs.ErrInvalidArgument)
	}
	if opt.Uses < 0 || opt.Uses > MaxTokenUses {
		return "", TokenRecord{}, fmt.Errorf("uses %d: want 1 to %d: %w", opt.Uses, MaxTokenUses, errdefs.ErrInvalidArgument)
	}
	if err := validLabels(opt.Labels); err != nil {
		return "", TokenRecord{}, err
	}
	now := e.cfg.Now()
	tok := wire.JoinToken{ID: randomHex(wire.JoinTokenIDLen / 2), Secret: randomHex(wire.JoinTokenSecretLen / 2), CAHash: e.ca.Hash()}
	rec := TokenRecord{
		ID: tok.ID, SecretHash: hashSecret(tok.Secret), Labels: maps.Clone(opt.Labels),
		CreatedAt: now, ExpiresAt: now.Add(opt.TTL), UsesLeft: opt.Uses,
	}
	if err := e.cfg.Store.CreateToken(ctx, rec); err != nil {
		return "", TokenRecord{}, fmt.Errorf("store join token: %w", err)
	}
	stored, err := e.cfg.Store.Token(ctx, rec.ID)
	if err != nil {
		return "", TokenRecord{}, fmt.Errorf("store join token: %w", err)
	}
	return tok.String(), stored, nil
}

// validLabels checks label keys and values: 1-63 characters of
// [A-Za-z0-9._-/] for keys, 0-63 of [A-Za-z0-9._-] for values.
func validLabels(l map[string]string) error {
	if len(l) > maxLabels {
		return fmt.Errorf("labels: %d, at most %d: %w", len(l), maxLabels, errdefs.ErrInvalidArgument)
	}
	keys := slicesSorted(l)
	for _, k := range keys {
		if k == "" || len(k) > maxLabelLen || !labelChars(k, true) {
			return fmt.Errorf("label key %q: want 1-%d characters of a-z, A-Z, 0-9, '.', '_', '-', '/': %w", k, maxLabelLen, errdefs.ErrInvalidArgument)
		}
		if v := l[k]; len(v) > maxLabelLen || !labelChars(v, false) {
			return fmt.Errorf("label %s value %q: want at most %d characters of a-z, A-Z, 0-9, '.', '_', '-': %w", k, v, maxLabelLen, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func labelChars(s string, slash bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || slash && c == '/') {
			return false
		}
	}
	return true
}

func slicesSorted(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Enroll checks a request and issues the device's certificate. The token
// must exist, match, be unexpired and have a use left (ErrTokenRefused,
// ErrTokenSpent); the CSR must be signed by its own key, an ECDSA P-256 or
// P-384 or an ed25519 key, with CN = the device id; SANs and other
// extensions in the CSR are ignored. A device id that holds a valid,
// unrevoked certificate is refused (errdefs.ErrAlreadyExists): a join
// token must not let its holder take over an enrolled device's identity.
// A use is consumed with a compare-and-swap, after every check passed.
func (e *Enroller) Enroll(ctx context.Context, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	if req.Schema == 0 {
		req.Schema = wire.EnrollSchema // a caller in Go; the handler's decoder requires it
	}
	if err := req.Validate(); err != nil {
		return wire.EnrollResponse{}, err
	}
	now := e.cfg.Now()
	rec, err := e.checkToken(ctx, req.TokenID, req.Secret, now)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	csr, err := checkCSR(req.CSR, req.DeviceID)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	if err := e.reserve(req.DeviceID, now); err != nil {
		return wire.EnrollResponse{}, err
	}
	defer e.release(req.DeviceID)
	rec, err = e.consume(ctx, rec, req.Secret, now)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: req.DeviceID},
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(now.Add(e.cfg.CertValidity), e.ca.Cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := e.ca.sign(tmpl, csr.PublicKey)
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("issue certificate for %s: %w", req.DeviceID, err)
	}
	crec := CertRecord{Serial: serialHex(cert.SerialNumber), DeviceID: req.DeviceID, NotAfter: cert.NotAfter}
	if err := e.cfg.Store.PutCert(ctx, crec); err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("record certificate of %s: %w", req.DeviceID, err)
	}
	e.mu.Lock()
	e.live[req.DeviceID] = append(e.live[req.DeviceID], crec)
	e.mu.Unlock()
	return wire.EnrollResponse{
		Schema: wire.EnrollSchema, DeviceID: req.DeviceID,
		Certificate: string(pemCert(cert.Raw)), CA: string(e.ca.PEM),
		Brokers: append([]string(nil), e.cfg.Brokers...), PublicKey: sign.EncodePublicKey(e.cfg.SigningKey),
		Labels: maps.Clone(rec.Labels),
	}, nil
}

// checkToken finds the token and checks secret, expiry and uses.
func (e *Enroller) checkToken(ctx context.Context, id, secret string, now time.Time) (TokenRecord, error) {
	rec, err := e.cfg.Store.Token(ctx, id)
	if errdefs.IsNotFound(err) {
		return TokenRecord{}, fmt.Errorf("%w: unknown token %s: ask the operator for a new one ('tender token create')", ErrTokenRefused, id)
	}
	if err != nil {
		return TokenRecord{}, fmt.Errorf("look up join token %s: %w", id, err)
	}
	if subtle.ConstantTimeCompare(rec.SecretHash, hashSecret(secret)) != 1 {
		return TokenRecord{}, fmt.Errorf("%w: token %s: wrong secret", ErrTokenRefused, id)
	}
	if !now.Before(rec.ExpiresAt) {
		return TokenRecord{}, fmt.Errorf("%w: token %s expired at %s: ask the operator for a new one", ErrTokenSpent, id, rec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if rec.UsesLeft <= 0 {
		return TokenRecord{}, fmt.Errorf("%w: token %s is used up: ask the operator for a new one", ErrTokenSpent, id)
	}
	return rec, nil
}

// consume takes one use of the token with a compare-and-swap, re-reading
// and re-checking it when another enrollment won the race.
func (e *Enroller) consume(ctx context.Context, rec TokenRecord, secret string, now time.Time) (TokenRecord, error) {
	for range swapAttempts {
		next := clone(rec)
		next.UsesLeft--
		err := e.cfg.Store.SwapToken(ctx, rec, next)
		if err == nil {
			return next, nil
		}
		if !errdefs.IsConflict(err) {
			return TokenRecord{}, fmt.Errorf("consume a use of join token %s: %w", rec.ID, err)
		}
		if rec, err = e.checkToken(ctx, rec.ID, secret, now); err != nil {
			return TokenRecord{}, err
		}
	}
	return TokenRecord{}, fmt.Errorf("consume a use of join token %s: too many concurrent enrollments, try again: %w", rec.ID, errdefs.ErrUnavailable)
}

// reserve refuses a device id that holds a valid certificate, or that
// another enrollment is enrolling now; otherwise it marks id as being
// enrolled until release.
func (e *Enroller) reserve(id string, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.live[id] {
		if now.Before(c.NotAfter) {
			return fmt.Errorf("device %s is already enrolled (certificate %s): remove it first ('tender device rm %s') or choose another id: %w",
				id, c.Serial, id, errdefs.ErrAlreadyExists)
		}
	}
	if e.enrolling[id] {
		return fmt.Errorf("device %s is being enrolled by another request: %w", id, errdefs.ErrAlreadyExists)
	}
	e.enrolling[id] = true
	return nil
}

func (e *Enroller) release(id string) {
	e.mu.Lock()
	delete(e.enrolling, id)
	e.mu.Unlock()
}

// checkCSR parses and checks a CSR for device id.
func checkCSR(csrPEM, id string) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode([]byte(csrPEM))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" || strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("csr: want one PEM CERTIFICATE REQUEST block: %w", errdefs.ErrInvalidArgument)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature does not verify: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("csr: ECDSA key on %s: want P-256 or P-384: %w", k.Curve.Params().Name, errdefs.ErrInvalidArgument)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("csr: %T key: want ECDSA P-256: %w", k, errdefs.ErrInvalidArgument)
	}
	if csr.Subject.CommonName != id {
		return nil, fmt.Errorf("csr: subject CN %q: want the device id %q: %w", csr.Subject.CommonName, id, errdefs.ErrInvalidArgument)
	}
	if err := topic.ValidDeviceID(id); err != nil {
		return nil, err
	}
	if strings.HasPrefix(id, ControllerID) {
		return nil, fmt.Errorf("device id %q is (or starts with) the controller's identity at the broker: choose another id: %w", id, errdefs.ErrInvalidArgument)
	}
	return csr, nil
}

// Revoke revokes every certificate of a device (target is a device id) or
// one certificate (target is its serial in hex), and rewrites the CRL. It
// returns the serials it revoked; a target that names nothing is
// errdefs.ErrNotFound. Revoking again is not an error.
func (e *Enroller) Revoke(ctx context.Context, target string) ([]string, error) {
	certs, err := e.cfg.Store.Certs(ctx)
	if err != nil {
		return nil, fmt.Errorf("revoke %s: list certificates: %w", target, err)
	}
	now := e.cfg.Now()
	serial := strings.ToLower(strings.ReplaceAll(target, ":", ""))
	var revoked []string
	for i, c := range certs {
		if c.DeviceID != target && c.Serial != serial {
			continue
		}
		if c.RevokedAt.IsZero() {
			c.RevokedAt = now
			if err := e.cfg.Store.PutCert(ctx, c); err != nil {
				return nil, fmt.Errorf("revoke %s: %w", c.Serial, err)
			}
			certs[i] = c
		}
		e.mu.Lock()
		e.revoked[c.Serial] = true
		e.live[c.DeviceID] = slices.DeleteFunc(e.live[c.DeviceID], func(l CertRecord) bool { return l.Serial == c.Serial })
		if len(e.live[c.DeviceID]) == 0 {
			delete(e.live, c.DeviceID)
		}
		e.mu.Unlock()
		revoked = append(revoked, c.Serial)
	}
	if len(revoked) == 0 {
		return nil, fmt.Errorf("revoke: no device or certificate serial %q: %w", target, errdefs.ErrNotFound)
	}
	if err := e.writeCRL(certs); err != nil {
		return revoked, err
	}
	return revoked, nil
}

// Revoked reports whether the certificate with this serial is revoked:
// the embedded broker's check at every connection.
func (e *Enroller) Revoked(serial *big.Int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.revoked[serialHex(serial)]
}

// writeCRL writes the CRL of every revoked certificate that has not
// expired, signed by the CA, valid for the CA's lifetime (it is rewritten
// on every revocation; mosquitto rereads it when it reloads).
func (e *Enroller) writeCRL(certs []CertRecord) error {
	now := e.cfg.Now()
	var entries []x509.RevocationListEntry
	for _, c := range certs {
		if c.RevokedAt.IsZero() || !now.Before(c.NotAfter) {
			continue
		}
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			return fmt.Errorf("write CRL: serial %q of %s is not hex: %w", c.Serial, c.DeviceID, errdefs.ErrInternal)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: c.RevokedAt})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-backdate),
		NextUpdate:                e.ca.Cert.NotAfter,
		RevokedCertificateEntries: entries,
	}, e.ca.Cert, e.ca.key)
	if err != nil {
		return fmt.Errorf("write CRL: %w", err)
	}
	if err := writeFileAtomic(e.CRLPath(), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("write CRL: %w", err)
	}
	return nil
}

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func serialHex(n *big.Int) string { return n.Text(16) }

func randomHex(nBytes int) string {
	b := make([]byte, nBytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
