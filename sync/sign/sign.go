// Package sign signs desired-state documents with the fleet's ed25519 key
// and verifies them on the device.
//
// A document is accepted only if it is signed, the signature verifies
// against the fleet key the device was enrolled with, it names this device,
// its generation is newer than the last one accepted, and it has not expired
// — unless the device's clock is untrusted, in which case freshness is
// judged by the generation alone (SECURITY.md §5.4, §5.5). Each refusal
// matches one sentinel error, so the agent can report why.
package sign

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// Sentinel errors of Verify. Malformed documents and unknown schemas come
// back as the wire package's errors (wire.ErrMalformed, wire.ErrSchema, ...).
var (
	ErrUnsigned     = errors.New("desired state unsigned")
	ErrWrongKey     = errors.New("desired state signed by an unknown key")
	ErrBadSignature = errors.New("desired state signature invalid")
	ErrWrongDevice  = errors.New("desired state for another device")
	ErrStale        = errors.New("desired state not newer than the current one")
	ErrExpired      = errors.New("desired state expired")
)

// StaleError carries the two generations of a refused replay or rollback.
// It matches ErrStale.
type StaleError struct {
	Got  uint64 // generation of the refused document
	Have uint64 // generation already accepted
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("desired state generation %d not newer than %d", e.Got, e.Have)
}

// Is makes errors.Is(err, ErrStale) true.
func (e *StaleError) Is(target error) bool { return target == ErrStale }

// ExpiredError carries the expiry of a refused document. It matches ErrExpired.
type ExpiredError struct {
	Generation uint64
	ExpiresAt  time.Time
	Now        time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("desired state generation %d expired at %s (now %s)",
		e.Generation, e.ExpiresAt.UTC().Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrExpired) true.
func (e *ExpiredError) Is(target error) bool { return target == ErrExpired }

// WrongDeviceError names the device a refused document was meant for. It
// matches ErrWrongDevice.
type WrongDeviceError struct{ Got, Want string }

func (e *WrongDeviceError) Error() string {
	return fmt.Sprintf("desired state for device %q, this is %q", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrWrongDevice) true.
func (e *WrongDeviceError) Is(target error) bool { return target == ErrWrongDevice }

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
	if len(priv) != ed25519.PrivateKeySize {
		return wire.Envelope{}, fmt.Errorf("sign desired state: private key of %d bytes", len(priv))
	}
	norm, err := json.Marshal(json.RawMessage(payload))
	if err != nil {
		return wire.Envelope{}, fmt.Errorf("sign desired state: %w: %v", wire.ErrMalformed, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return wire.Envelope{Payload: norm, Signature: ed25519.Sign(priv, norm), KeyID: KeyID(pub)}, nil
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
	// ClockUntrusted skips the expiry check: the device's clock is known
	// to be wrong (clock.Floor.Untrusted), so only the generation counts.
	ClockUntrusted bool
}

// Verify checks env against the fleet public key and returns the document
// it carries. The checks run from the cheapest to the most contextual:
// signature present, key id, signature, decoding (size, schema, fields,
// validity), device id, generation, expiry.
func Verify(pub ed25519.PublicKey, env wire.Envelope, want Expect) (wire.Desired, error) {
	if len(env.Signature) == 0 {
		return wire.Desired{}, ErrUnsigned
	}
	if len(pub) != ed25519.PublicKeySize {
		return wire.Desired{}, fmt.Errorf("verify desired state: public key of %d bytes", len(pub))
	}
	if env.KeyID != KeyID(pub) {
		return wire.Desired{}, fmt.Errorf("%w: key id %q, want %q", ErrWrongKey, env.KeyID, KeyID(pub))
	}
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, env.Payload, env.Signature) {
		return wire.Desired{}, ErrBadSignature
	}
	d, err := wire.DecodeDesired(env.Payload)
	if err != nil {
		return wire.Desired{}, err
	}
	if d.DeviceID != want.DeviceID {
		return wire.Desired{}, &WrongDeviceError{Got: d.DeviceID, Want: want.DeviceID}
	}
	if d.Generation <= want.LastGeneration {
		return wire.Desired{}, &StaleError{Got: d.Generation, Have: want.LastGeneration}
	}
	if !want.ClockUntrusted && !want.Now.Before(d.ExpiresAt) {
		return wire.Desired{}, &ExpiredError{Generation: d.Generation, ExpiresAt: d.ExpiresAt, Now: want.Now}
	}
	return d, nil
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
