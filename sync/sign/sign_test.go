package sign

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// fixedKey derives a key from a seed byte so tests are deterministic.
func fixedKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

var fleetKey = fixedKey(1)
var fleetPub = fleetKey.Public().(ed25519.PublicKey)

func desired(t *testing.T, gen uint64) wire.Desired {
	t.Helper()
	app, err := wire.ParseApp([]byte(`
name: thermo
version: "1.0"
containers:
  - name: reader
    image: registry.example.com/acme/thermo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    env: {NOTE: "<b>&amp;</b>"}
`))
	if err != nil {
		t.Fatal(err)
	}
	return wire.Desired{DeviceID: "gw-1", Generation: gen, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), Apps: []wire.App{app}}
}

func signed(t *testing.T, priv ed25519.PrivateKey, d wire.Desired) wire.Envelope {
	t.Helper()
	env, err := SignDesired(priv, d)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

var expect = Expect{DeviceID: "gw-1", LastGeneration: 4, Now: t0.Add(time.Minute)}

func TestVerify_Accepts(t *testing.T) {
	env := signed(t, fleetKey, desired(t, 5))
	// Through the wire, as the agent receives it.
	msg, err := wire.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	d, err := VerifyMessage(fleetPub, msg, expect)
	if err != nil {
		t.Fatalf("VerifyMessage: %v", err)
	}
	if d.Generation != 5 || d.Apps[0].Containers[0].Env["NOTE"] != "<b>&amp;</b>" {
		t.Errorf("verified document = %+v", d)
	}
}

func TestSign_NormalisesPayload(t *testing.T) {
	// Whitespace and HTML characters change when encoding/json re-encodes a
	// RawMessage; the signature must cover what travels.
	raw := []byte("{ \"schema\": 1,\n \"x\": \"<&>\" }")
	env, err := Sign(fleetKey, raw)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := wire.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	back, err := wire.DecodeEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(fleetPub, back.Payload, back.Signature) {
		t.Errorf("signature does not cover the transmitted payload %s", back.Payload)
	}
	if _, err := Sign(fleetKey, []byte("{not json")); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("Sign(invalid JSON) = %v", err)
	}
}

func TestVerify_Unsigned(t *testing.T) {
	env := signed(t, fleetKey, desired(t, 5))
	env.Signature = nil
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrUnsigned) {
		t.Errorf("Verify = %v, want ErrUnsigned", err)
	}
	payload, _ := wire.Encode(desired(t, 5))
	msg, _ := wire.Encode(wire.Envelope{Payload: payload})
	if _, err := VerifyMessage(fleetPub, msg, expect); !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifyMessage(no signature) = %v, want ErrUnsigned", err)
	}
}

func TestVerify_TamperedPayload(t *testing.T) {
	env := signed(t, fleetKey, desired(t, 5))
	env.Payload = bytes.Replace(env.Payload, []byte(`"generation":5`), []byte(`"generation":9`), 1)
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify = %v, want ErrBadSignature", err)
	}
}

func TestVerify_TruncatedSignature(t *testing.T) {
	env := signed(t, fleetKey, desired(t, 5))
	env.Signature = env.Signature[:10]
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify = %v, want ErrBadSignature", err)
	}
}

func TestVerify_WrongKeyID(t *testing.T) {
	env := signed(t, fixedKey(2), desired(t, 5))
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrWrongKey) {
		t.Errorf("Verify = %v, want ErrWrongKey", err)
	}
}

func TestVerify_OtherKeyWithForgedKeyID(t *testing.T) {
	env := signed(t, fixedKey(2), desired(t, 5))
	env.KeyID = KeyID(fleetPub)
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify = %v, want ErrBadSignature", err)
	}
}

func TestVerify_OtherDevice(t *testing.T) {
	d := desired(t, 5)
	d.DeviceID = "gw-2"
	_, err := Verify(fleetPub, signed(t, fleetKey, d), expect)
	var wd *WrongDeviceError
	if !errors.Is(err, ErrWrongDevice) || !errors.As(err, &wd) || wd.Got != "gw-2" || wd.Want != "gw-1" {
		t.Errorf("Verify = %v, want WrongDeviceError gw-2/gw-1", err)
	}
}

func TestVerify_Replayed(t *testing.T) {
	_, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 4)), expect)
	var se *StaleError
	if !errors.As(err, &se) || se.Got != 4 || se.Have != 4 || !errors.Is(err, ErrStale) {
		// Fatal: the message check below needs an error.
		t.Fatalf("Verify(same generation) = %v, want StaleError 4/4", err)
	}
	if !strings.Contains(err.Error(), "4 not newer than 4") {
		t.Errorf("message %q does not name both generations", err)
	}
}

func TestVerify_Older(t *testing.T) {
	_, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 2)), expect)
	var se *StaleError
	if !errors.As(err, &se) || se.Got != 2 || se.Have != 4 {
		t.Errorf("Verify(older generation) = %v, want StaleError 2/4", err)
	}
}

func TestVerify_Expired(t *testing.T) {
	late := expect
	late.Now = t0.Add(2 * time.Hour)
	_, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), late)
	var ee *ExpiredError
	if !errors.Is(err, ErrExpired) || !errors.As(err, &ee) || !ee.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("Verify = %v, want ExpiredError", err)
	}
}

func TestVerify_ExpiryIgnoredWhenClockUntrusted(t *testing.T) {
	late := expect
	late.Now = t0.Add(2 * time.Hour)
	late.ClockUntrusted = true
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), late); err != nil {
		t.Errorf("Verify with untrusted clock = %v, want accepted on generation", err)
	}
	// The generation still counts.
	late.LastGeneration = 5
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), late); !errors.Is(err, ErrStale) {
		t.Errorf("Verify replay with untrusted clock = %v, want ErrStale", err)
	}
}

func TestVerify_MalformedPayload(t *testing.T) {
	env, err := Sign(fleetKey, []byte(`{"schema":1,"deviceId":"gw-1","generation":"five"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("Verify = %v, want wire.ErrMalformed", err)
	}
}

func TestVerify_MalformedEnvelope(t *testing.T) {
	if _, err := VerifyMessage(fleetPub, []byte(`{"payload":`), expect); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("VerifyMessage = %v, want wire.ErrMalformed", err)
	}
}

func TestVerify_UnknownField(t *testing.T) {
	payload, _ := wire.Encode(desired(t, 5))
	payload = bytes.Replace(payload, []byte(`"deviceId"`), []byte(`"hostPid":true,"deviceId"`), 1)
	env, err := Sign(fleetKey, payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, wire.ErrUnknownField) {
		t.Errorf("Verify = %v, want wire.ErrUnknownField", err)
	}
}

func TestVerify_UnknownSchema(t *testing.T) {
	d := desired(t, 5)
	d.Schema = 2
	if _, err := Verify(fleetPub, signed(t, fleetKey, d), expect); !errors.Is(err, wire.ErrSchema) {
		t.Errorf("Verify = %v, want wire.ErrSchema", err)
	}
}

func TestVerify_Oversized(t *testing.T) {
	payload, _ := wire.Encode(desired(t, 5))
	big := append(bytes.TrimSuffix(payload, []byte("}")), []byte(`,"pad":"`+strings.Repeat("x", wire.MaxDesiredSize)+`"}`)...)
	env, err := Sign(fleetKey, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("Verify = %v, want wire.ErrTooLarge", err)
	}
	msg, _ := wire.Encode(env)
	if _, err := VerifyMessage(fleetPub, msg, expect); !errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("VerifyMessage = %v, want wire.ErrTooLarge", err)
	}
}

func TestKeys_RoundTrip(t *testing.T) {
	pub, priv, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParsePublicKey([]byte(EncodePublicKey(pub) + "\n")); err != nil || !got.Equal(pub) {
		t.Errorf("ParsePublicKey(base64) = %v, %v", got, err)
	}
	pemPub, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParsePublicKey(pemPub); err != nil || !got.Equal(pub) {
		t.Errorf("ParsePublicKey(PEM) = %v, %v", got, err)
	}
	pemPriv, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParsePrivateKey(pemPriv); err != nil || !got.Equal(priv) {
		t.Errorf("ParsePrivateKey(PEM) = %v", err)
	}
	if _, err := ParsePublicKey(pemPriv); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParsePublicKey(private PEM) = %v", err)
	}
	if _, err := ParsePublicKey([]byte("AAAA")); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParsePublicKey(3 bytes) = %v", err)
	}
	if KeyID(pub) == KeyID(fleetPub) || len(KeyID(pub)) != 16 {
		t.Errorf("KeyID = %q", KeyID(pub))
	}
}

func TestVerify_ExpiredBeforeFloorRefusedWhenClockUntrusted(t *testing.T) {
	// The clock says 1970 (untrusted), but the device can prove it is later
	// than the document's expiry (its floor): refused.
	want := Expect{DeviceID: "gw-1", LastGeneration: 4, Now: time.Unix(0, 0), ClockUntrusted: true, Floor: t0.Add(2 * time.Hour)}
	_, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), want)
	var ee *ExpiredError
	if !errors.Is(err, ErrExpired) || !errors.As(err, &ee) || !ee.Now.Equal(want.Floor) || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Verify = %v, want ExpiredError judged at the floor", err)
	}
	// A floor before the expiry: judged by generation, accepted.
	want.Floor = t0.Add(30 * time.Minute)
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), want); err != nil {
		t.Errorf("Verify with the floor before expiry = %v, want accepted", err)
	}
	// A trusted clock behind the floor is raised to it.
	want.ClockUntrusted, want.Now, want.Floor = false, t0, t0.Add(2*time.Hour)
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 5)), want); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify with the clock behind the floor = %v, want ErrExpired", err)
	}
}

func TestVerify_GenerationBeyondWhatAFleetIssues(t *testing.T) {
	for _, gen := range []uint64{wire.MaxGeneration + 1, math.MaxUint64} {
		_, err := Verify(fleetPub, signed(t, fleetKey, desired(t, gen)), expect)
		if !errors.Is(err, wire.ErrGenerationRange) || !strings.Contains(err.Error(), "largest a fleet issues") {
			t.Errorf("Verify(generation %d) = %v, want wire.ErrGenerationRange", gen, err)
		}
	}
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, wire.MaxGeneration)), expect); err != nil {
		t.Errorf("Verify(generation 2^53) = %v, want accepted", err)
	}
}

func TestVerify_Categories(t *testing.T) {
	env := signed(t, fleetKey, desired(t, 5))
	env.Signature = nil
	if _, err := Verify(fleetPub, env, expect); !errdefs.IsPermissionDenied(err) {
		t.Errorf("unsigned: %v is not permission denied", err)
	}
	if _, err := Verify(fleetPub, signed(t, fleetKey, desired(t, 4)), expect); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("stale: %v is not a failed precondition", err)
	}
	if _, err := ParsePublicKey([]byte("AAAA")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad key: %v is not an invalid argument", err)
	}
}

func TestVerify_CommandEnvelopeAsDesired(t *testing.T) {
	// A desired document signed over the command domain (as SignCommand
	// signs) does not verify as a desired document.
	payload, err := wire.Encode(desired(t, 5))
	if err != nil {
		t.Fatal(err)
	}
	env, err := sign(fleetKey, commandDomain, payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(fleetPub, env, expect); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(command-domain signature) = %v, want ErrBadSignature", err)
	}
	// And a real command envelope on the desired topic.
	msg := signedCommand(t, fleetKey, command(t, 1))
	if _, err := VerifyMessage(fleetPub, msg, expect); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifyMessage(command) = %v, want ErrBadSignature", err)
	}
}
