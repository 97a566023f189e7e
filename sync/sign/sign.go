// Package sign signs desired-state documents and commands with the fleet's
// ed25519 key and verifies them on the device.
//
// A desired document is accepted only if it is signed, the signature
// verifies against the fleet key the device was enrolled with, it names
// this device, its generation is newer than the last one accepted (and at
// most wire.MaxGeneration), and it has not expired. When the device's
// clock is untrusted, expiry is judged against the time floor the device
// can prove (Expect.Floor) and freshness by the generation (SECURITY.md
// §5.4, §5.5).
//
// A command is signed over a domain prefix and its payload, so a command
// cannot pass for a desired document nor one for the other. It is accepted
// only if signed, for this device, unexpired (it lives at most
// wire.MaxCommandLifetime), and not seen before: a bounded ReplayGuard
// remembers the ids of accepted commands until they expire.
//
// Each refusal matches one sentinel error, so the agent can report why,
// and each sentinel wraps an errdefs category: permission denied for
// signature and device failures, failed precondition for stale and
// expired, already exists for a replay, resource exhausted when the guard
// is full.
package sign

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/internal/sentinel"
	"github.com/tender-edge/tender/sync/wire"
)

// Sentinel errors of Verify: the finer reasons the agent reports, each
// wrapping an errdefs category. Malformed documents and unknown schemas
// come back as the wire package's errors (wire.ErrMalformed,
// wire.ErrSchema, ...), which wrap errdefs.ErrInvalidArgument.
var (
	ErrUnsigned     = reason("unsigned", errdefs.ErrPermissionDenied)
	ErrWrongKey     = reason("signed by an unknown key", errdefs.ErrPermissionDenied)
	ErrBadSignature = reason("signature invalid", errdefs.ErrPermissionDenied)
	ErrWrongDevice  = reason("meant for another device", errdefs.ErrPermissionDenied)
	ErrStale        = reason("not newer than the current one", errdefs.ErrFailedPrecondition)
	ErrExpired      = reason("expired", errdefs.ErrFailedPrecondition)
)

func reason(msg string, cat error) error { return sentinel.New(msg, cat) }

// StaleError carries the two generations of a refused replay or rollback.
// It matches ErrStale.
type StaleError struct {
	Got  uint64 // generation of the refused document
	Have uint64 // generation already accepted
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("desired state generation %d not newer than %d", e.Got, e.Have)
}

// Unwrap makes errors.Is(err, ErrStale) true.
func (e *StaleError) Unwrap() error { return ErrStale }

// ExpiredError carries the expiry of a refused document or command. It
// matches ErrExpired.
type ExpiredError struct {
	What      string // "desired state generation 7", "command 3f2a..."
	ExpiresAt time.Time
	Now       time.Time // the time it was judged by
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("%s expired at %s (now %s)",
		e.What, e.ExpiresAt.UTC().Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrExpired) true.
func (e *ExpiredError) Unwrap() error { return ErrExpired }

// WrongDeviceError names the device a refused document or command was
// meant for. It matches ErrWrongDevice.
type WrongDeviceError struct {
	What      string // "desired state", "command"
	Got, Want string
}

func (e *WrongDeviceError) Error() string {
	return fmt.Sprintf("%s for device %q, this is %q", e.What, e.Got, e.Want)
}

// Unwrap makes errors.Is(err, ErrWrongDevice) true.
func (e *WrongDeviceError) Unwrap() error { return ErrWrongDevice }

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign signs payload, the JSON of a wire.Desired document, and returns the
// envelope to publish. The payload is normalised first the way
// encoding/json re-encodes a json.RawMessage (compact, HTML-escaped), so the
// signed bytes are exactly the bytes inside the encoded envelope.
func Sign(priv ed25519.PrivateKey, payload []byte) (wire.Envelope, error) {
	return sign(priv, "", payload)
}

// sign signs domain followed by the normalised payload.
func sign(priv ed25519.PrivateKey, domain string, payload []byte) (wire.Envelope, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return wire.Envelope{}, fmt.Errorf("sign: private key of %d bytes, want %d: %w", len(priv), ed25519.PrivateKeySize, ErrBadKey)
	}
	norm, err := json.Marshal(json.RawMessage(payload))
	if err != nil {
		return wire.Envelope{}, fmt.Errorf("sign: %w: %v", wire.ErrMalformed, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return wire.Envelope{Payload: norm, Signature: ed25519.Sign(priv, signedBytes(domain, norm)), KeyID: KeyID(pub)}, nil
}

// signedBytes is the message a signature covers: the domain, then the payload.
func signedBytes(domain string, payload []byte) []byte {
	if domain == "" {
		return payload
	}
	return append([]byte(domain), payload...)
}

// SignDesired encodes d (filling in its schema) and signs it.
func SignDesired(priv ed25519.PrivateKey, d wire.Desired) (wire.Envelope, error) {
	b, err := wire.Encode(&d)
	if err != nil {
		return wire.Envelope{}, fmt.Errorf("sign desired state: %w", err)
	}
	return Sign(priv, b)
}

// Expect is what the device knows when it checks a document.
type Expect struct {
	DeviceID       string    // this device
	LastGeneration uint64    // highest generation accepted so far (0: none)
	Now            time.Time // the device's time (clock.Floor.Now)
	// Floor is a time the device can prove has passed, whatever its clock
	// says: the binary's build time, the issuedAt of the newest document
	// it verified. A document that expired before Floor is refused even
	// when ClockUntrusted. Zero: none.
	Floor time.Time
	// ClockUntrusted means Now is known to be wrong (clock.Floor.Untrusted):
	// expiry is then judged against Floor alone, and the generation
	// decides freshness.
	ClockUntrusted bool
}

// judgeTime is the time expiry is judged by: Now raised to the floor, or
// the floor alone when the clock is untrusted (zero: do not judge).
func judgeTime(now, floor time.Time, untrusted bool) time.Time {
	if untrusted || floor.After(now) {
		return floor
	}
	return now
}

// Verify checks env against the fleet public key and returns the document
// it carries. The checks run from the cheapest to the most contextual:
// signature present, key id, signature, decoding (size, schema, fields,
// validity, generation at most wire.MaxGeneration), device id, generation,
// expiry.
func Verify(pub ed25519.PublicKey, env wire.Envelope, want Expect) (wire.Desired, error) {
	if err := verifySignature(pub, "", env); err != nil {
		return wire.Desired{}, fmt.Errorf("desired state: %w", err)
	}
	d, err := wire.DecodeDesired(env.Payload)
	if err != nil {
		return wire.Desired{}, err
	}
	if d.DeviceID != want.DeviceID {
		return wire.Desired{}, &WrongDeviceError{What: "desired state", Got: d.DeviceID, Want: want.DeviceID}
	}
	if d.Generation <= want.LastGeneration {
		return wire.Desired{}, &StaleError{Got: d.Generation, Have: want.LastGeneration}
	}
	if at := judgeTime(want.Now, want.Floor, want.ClockUntrusted); !at.IsZero() && !at.Before(d.ExpiresAt) {
		return wire.Desired{}, &ExpiredError{What: fmt.Sprintf("desired state generation %d", d.Generation), ExpiresAt: d.ExpiresAt, Now: at}
	}
	return d, nil
}

// verifySignature checks that env is signed, by pub, over domain and its
// payload.
func verifySignature(pub ed25519.PublicKey, domain string, env wire.Envelope) error {
	if len(env.Signature) == 0 {
		return ErrUnsigned
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("fleet public key of %d bytes, want %d: %w", len(pub), ed25519.PublicKeySize, ErrBadKey)
	}
	if env.KeyID != KeyID(pub) {
		return fmt.Errorf("key id %q, want %q: %w", env.KeyID, KeyID(pub), ErrWrongKey)
	}
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, signedBytes(domain, env.Payload), env.Signature) {
		return ErrBadSignature
	}
	return nil
}

// VerifyMessage decodes a desired-topic MQTT payload (an encoded envelope)
// and verifies it.
func VerifyMessage(pub ed25519.PublicKey, data []byte, want Expect) (wire.Desired, error) {
	env, err := wire.DecodeEnvelope(data)
	if err != nil {
		return wire.Desired{}, err
	}
	return Verify(pub, env, want)
}
