package wire

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/topic"
)

// Enrollment: the one exchange between a device and the controller that is
// not MQTT. The device POSTs an EnrollRequest to the controller's
// /v1/enroll over HTTPS, pinning the controller's CA to the hash carried in
// its join token, and gets an EnrollResponse back.
//
// A join token is
//
//	tdr1.<id>.<secret>.<cahash>
//
// id: 16 lower-case hex digits (64 bits, public, names the token record);
// secret: 32 lower-case hex digits (128 bits, proves possession; the
// controller stores only its sha256); cahash: 64 lower-case hex digits, the
// sha256 of the fleet CA's DER SubjectPublicKeyInfo (kubeadm's discovery
// hash without its "sha256:" prefix, which CAHash returns).

// EnrollSchema is the schema version of EnrollRequest and EnrollResponse.
const EnrollSchema = 1

// Size caps of the enrollment messages.
const (
	MaxEnrollRequestSize  = 16 << 10
	MaxEnrollResponseSize = 64 << 10
)

// Join token layout.
const (
	JoinTokenPrefix    = "tdr1"
	JoinTokenIDLen     = 16 // hex digits
	JoinTokenSecretLen = 32 // hex digits
	caHashLen          = 64 // hex digits
	// CAHashPrefix starts a CA hash in its long form, as kubeadm writes it.
	CAHashPrefix = "sha256:"
)

var (
	kindEnrollRequest  = kind{"enroll request", EnrollSchema, MaxEnrollRequestSize}
	kindEnrollResponse = kind{"enroll response", EnrollSchema, MaxEnrollResponseSize}
)

// EnrollRequest is what a device sends to enroll. The secret travels
// because it proves possession of the token; the device sends it only
// over TLS to a controller whose CA matches the token's hash.
type EnrollRequest struct {
	Schema   int    `json:"schema"`
	TokenID  string `json:"tokenId"`
	Secret   string `json:"secret"`
	DeviceID string `json:"deviceId"`
	// CSR is a PEM "CERTIFICATE REQUEST" whose subject CN is DeviceID. The
	// device's private key never leaves the device.
	CSR   string      `json:"csr"`
	Facts DeviceFacts `json:"facts"`
	// PasswordHash, if set, is the sha256 (lower-case hex) of an MQTT
	// password the device made for itself, for brokers it reaches without
	// its client certificate (the password fallback). Like the key, the
	// password never leaves the device.
	PasswordHash string `json:"passwordHash,omitempty"`
}

// EnrollResponse is the controller's answer to a good EnrollRequest.
type EnrollResponse struct {
	Schema   int    `json:"schema"`
	DeviceID string `json:"deviceId"`
	// Certificate is the device's client certificate (PEM), CN = DeviceID.
	Certificate string `json:"certificate"`
	// CA is the fleet CA (PEM): it signs the device certificate and the
	// controller's and broker's server certificates.
	CA string `json:"ca"`
	// Brokers are the MQTT URLs to connect to, preferred first
	// (tls://host:8883).
	Brokers []string `json:"brokers"`
	// PublicKey is the fleet's ed25519 signing key in the form the agent's
	// config carries (sign.EncodePublicKey: base64 of the 32 bytes).
	PublicKey string `json:"publicKey"`
	// Labels are the labels the join token gives the device.
	Labels map[string]string `json:"labels,omitempty"`
}

// JoinToken is a parsed join token.
type JoinToken struct {
	ID     string
	Secret string
	// CAHash is the fleet CA's hash, "sha256:" + 64 hex digits.
	CAHash string
}

// String is the token as the operator copies it.
func (t JoinToken) String() string {
	return JoinTokenPrefix + "." + t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAHash, CAHashPrefix)
}

// ParseJoinToken parses a join token. Its errors wrap
// errdefs.ErrInvalidArgument and never repeat the secret.
func ParseJoinToken(s string) (JoinToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != JoinTokenPrefix {
		return JoinToken{}, fmt.Errorf("join token: want %s.<id>.<secret>.<cahash>, as printed by 'tender token create': %w",
			JoinTokenPrefix, errdefs.ErrInvalidArgument)
	}
	for _, p := range []struct {
		name, v string
		n       int
	}{{"id", parts[1], JoinTokenIDLen}, {"secret", parts[2], JoinTokenSecretLen}, {"CA hash", parts[3], caHashLen}} {
		if !isLowerHex(p.v, p.n) {
			return JoinToken{}, fmt.Errorf("join token: %s: want %d lower-case hex digits: %w", p.name, p.n, errdefs.ErrInvalidArgument)
		}
	}
	return JoinToken{ID: parts[1], Secret: parts[2], CAHash: CAHashPrefix + parts[3]}, nil
}

// ValidTokenID reports whether id has the form of a join token id.
func ValidTokenID(id string) bool { return isLowerHex(id, JoinTokenIDLen) }

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CAHash is the discovery hash of a CA certificate: "sha256:" + hex of the
// sha256 of its DER SubjectPublicKeyInfo (as kubeadm's
// --discovery-token-ca-cert-hash).
func CAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return CAHashPrefix + hex.EncodeToString(sum[:])
}

// DecodeEnrollRequest decodes and validates an enrollment request:
// schema, token id and secret form, device id, a CSR present.
func DecodeEnrollRequest(data []byte) (EnrollRequest, error) {
	return decodeValid[EnrollRequest](kindEnrollRequest, data)
}

// Validate checks the form of a request (not the token's validity).
func (r *EnrollRequest) Validate() error {
	if r.Schema != EnrollSchema {
		return &SchemaError{Kind: kindEnrollRequest.name, Got: r.Schema, Want: EnrollSchema}
	}
	if !ValidTokenID(r.TokenID) {
		return invalid(kindEnrollRequest, "tokenId: want %d lower-case hex digits", JoinTokenIDLen)
	}
	if !isLowerHex(r.Secret, JoinTokenSecretLen) {
		return invalid(kindEnrollRequest, "secret: want %d lower-case hex digits", JoinTokenSecretLen)
	}
	if err := topic.ValidDeviceID(r.DeviceID); err != nil {
		return invalid(kindEnrollRequest, "deviceId: %v", err)
	}
	if r.CSR == "" {
		return invalid(kindEnrollRequest, "csr missing")
	}
	if r.PasswordHash != "" && !isLowerHex(r.PasswordHash, 64) {
		return invalid(kindEnrollRequest, "passwordHash: want 64 lower-case hex digits (sha256)")
	}
	return nil
}

// DecodeEnrollResponse decodes and validates an enrollment response.
func DecodeEnrollResponse(data []byte) (EnrollResponse, error) {
	return decodeValid[EnrollResponse](kindEnrollResponse, data)
}

// Validate checks the form of a response: every field present.
func (r *EnrollResponse) Validate() error {
	if r.Schema != EnrollSchema {
		return &SchemaError{Kind: kindEnrollResponse.name, Got: r.Schema, Want: EnrollSchema}
	}
	if err := topic.ValidDeviceID(r.DeviceID); err != nil {
		return invalid(kindEnrollResponse, "deviceId: %v", err)
	}
	switch {
	case r.Certificate == "":
		return invalid(kindEnrollResponse, "certificate missing")
	case r.CA == "":
		return invalid(kindEnrollResponse, "ca missing")
	case len(r.Brokers) == 0:
		return invalid(kindEnrollResponse, "brokers empty")
	case r.PublicKey == "":
		return invalid(kindEnrollResponse, "publicKey missing")
	}
	for i, b := range r.Brokers {
		if b == "" || strings.ContainsFunc(b, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return invalid(kindEnrollResponse, "brokers[%d]: empty or with control characters", i)
		}
	}
	return nil
}

// EncodeEnrollRequest marshals a request (schema filled in when zero) and
// refuses one over its size cap.
func EncodeEnrollRequest(r EnrollRequest) ([]byte, error) {
	if r.Schema == 0 {
		r.Schema = EnrollSchema
	}
	return encodeKind(kindEnrollRequest, r)
}

// EncodeEnrollResponse marshals a response (schema filled in when zero)
// and refuses one over its size cap.
func EncodeEnrollResponse(r EnrollResponse) ([]byte, error) {
	if r.Schema == 0 {
		r.Schema = EnrollSchema
	}
	return encodeKind(kindEnrollResponse, r)
}

func encodeKind(k kind, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", k.name, err)
	}
	if len(b) > k.limit {
		return nil, &TooLargeError{Kind: k.name, Size: len(b), Limit: k.limit}
	}
	return b, nil
}

// VerifyPinned checks a controller's TLS chain against a join token's CA
// hash, before anything is sent (SECURITY.md F-05): the chain must hold a
// CA whose key hashes to caHash, and that CA must have signed the leaf for
// server authentication. The host name is not checked: the pin is the
// controller's identity, and device certificates (signed by the same CA)
// are for client authentication only. The error says which of the three
// failed; callers add their category.
func VerifyPinned(chain []*x509.Certificate, caHash string) error {
	if len(chain) == 0 {
		return fmt.Errorf("no certificate sent")
	}
	inter := x509.NewCertPool()
	var pinned *x509.Certificate
	for _, c := range chain[1:] {
		if CAHash(c) == caHash && c.IsCA {
			pinned = c
		} else {
			inter.AddCert(c)
		}
	}
	if pinned == nil {
		return fmt.Errorf("no CA of hash %s in its chain: not the fleet's controller (or the token is for another fleet)", caHash)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pinned)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("its certificate is not a server certificate of that CA: %v", err)
	}
	return nil
}

// EnrollStatusCategory is the error category of the controller's answer
// to an enrollment, by its HTTP status (errdefs.ErrUnknown for others).
func EnrollStatusCategory(status int) error {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return errdefs.ErrInvalidArgument
	case http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case http.StatusConflict:
		return errdefs.ErrAlreadyExists
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return errdefs.ErrUnavailable
	}
	return errdefs.ErrUnknown
}
