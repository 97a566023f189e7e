package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// commandDomain prefixes the bytes a command's signature covers. A desired
// document's signature covers its payload alone, which is a JSON object
// and so starts with '{', never with this prefix: no signature verifies
// both as a desired document and as a command.
const commandDomain = "tender/v1 command\n"

// NewCommandID returns a fresh command id: 16 bytes from rnd (nil:
// crypto/rand) in hex.
func NewCommandID(rnd io.Reader) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var b [wire.CommandIDLen / 2]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", fmt.Errorf("draw command id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// SignCommand validates c (filling in its schema) and signs it for the
// command topic. The caller sets DeviceID, ID (NewCommandID), IssuedAt and
// ExpiresAt (at most wire.MaxCommandLifetime later).
func SignCommand(priv ed25519.PrivateKey, c wire.Command) (wire.Envelope, error) {
	if c.Schema == 0 {
		c.Schema = wire.CommandSchema
	}
	if err := c.Validate(); err != nil {
		return wire.Envelope{}, fmt.Errorf("sign command: %w", err)
	}
	b, err := wire.Encode(&c)
	if err != nil {
		return wire.Envelope{}, fmt.Errorf("sign command: %w", err)
	}
	return sign(priv, commandDomain, b)
}

// CommandExpect is what the device knows when it checks a command.
type CommandExpect struct {
	DeviceID string    // this device
	Now      time.Time // the device's time (clock.Floor.Now)
	// Floor and ClockUntrusted are as in Expect: a command that expired
	// before Floor is refused whatever the clock says; with an untrusted
	// clock, expiry is judged against Floor alone.
	Floor          time.Time
	ClockUntrusted bool
}

// VerifyCommand checks a command envelope against the fleet public key and
// the replay guard, and returns the command. The checks run from the
// cheapest to the most contextual: signature present, key id, signature
// (over the command domain), decoding (size, schema, fields, validity),
// device id, expiry, and last the guard, which records the id: only a
// command that passed every other check uses up its id. guard must not
// be nil.
func VerifyCommand(pub ed25519.PublicKey, env wire.Envelope, want CommandExpect, guard *ReplayGuard) (wire.Command, error) {
	if err := verifySignature(pub, commandDomain, env); err != nil {
		return wire.Command{}, fmt.Errorf("command: %w", err)
	}
	c, err := wire.DecodeCommand(env.Payload)
	if err != nil {
		return wire.Command{}, err
	}
	if c.DeviceID != want.DeviceID {
		return wire.Command{}, &WrongDeviceError{What: "command " + c.ID, Got: c.DeviceID, Want: want.DeviceID}
	}
	// The guard judges expiry, by this time or its own later one.
	if err := guard.Admit(c.ID, c.ExpiresAt, judgeTime(want.Now, want.Floor, want.ClockUntrusted)); err != nil {
		return wire.Command{}, err
	}
	return c, nil
}

// VerifyCommandMessage decodes a command-topic MQTT payload (an encoded
// command envelope) and verifies it.
func VerifyCommandMessage(pub ed25519.PublicKey, data []byte, want CommandExpect, guard *ReplayGuard) (wire.Command, error) {
	env, err := wire.DecodeCommandEnvelope(data)
	if err != nil {
		return wire.Command{}, err
	}
	return VerifyCommand(pub, env, want, guard)
}
