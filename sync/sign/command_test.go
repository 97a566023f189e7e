package sign

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

// command is a valid logs command for gw-1, issued at t0.
func command(t *testing.T, id byte) wire.Command {
	t.Helper()
	cid, err := NewCommandID(bytes.NewReader(bytes.Repeat([]byte{id}, 16)))
	if err != nil {
		t.Fatal(err)
	}
	return wire.Command{DeviceID: "gw-1", ID: cid, IssuedAt: t0, ExpiresAt: t0.Add(5 * time.Minute),
		Kind: wire.CommandLogs, App: "thermo", Lines: 10}
}

func signedCommand(t *testing.T, priv []byte, c wire.Command) []byte {
	t.Helper()
	env, err := SignCommand(priv, c)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := wire.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

var cmdExpect = CommandExpect{DeviceID: "gw-1", Now: t0.Add(time.Minute)}

func TestVerifyCommand_Accepts(t *testing.T) {
	g := NewReplayGuard(0)
	c, err := VerifyCommandMessage(fleetPub, signedCommand(t, fleetKey, command(t, 1)), cmdExpect, g)
	if err != nil {
		t.Fatalf("VerifyCommandMessage: %v", err)
	}
	if c.ID != fmt.Sprintf("%032x", bytes.Repeat([]byte{1}, 16)) || c.Kind != wire.CommandLogs || c.Lines != 10 {
		t.Errorf("command = %+v", c)
	}
	if g.Len() != 1 {
		t.Errorf("guard holds %d ids, want 1", g.Len())
	}
}

func TestVerifyCommand_Refusals(t *testing.T) {
	good := signedCommand(t, fleetKey, command(t, 1))
	env, err := wire.DecodeCommandEnvelope(good)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := env
	unsigned.Signature, unsigned.KeyID = nil, ""
	otherDevice := command(t, 1)
	otherDevice.DeviceID = "gw-2"
	late := cmdExpect
	late.Now = t0.Add(5 * time.Minute)
	// A command whose expiry the floor has passed, on a device whose clock
	// is untrusted and says 1970.
	floorPassed := CommandExpect{DeviceID: "gw-1", Now: time.Unix(0, 0), Floor: t0.Add(6 * time.Minute), ClockUntrusted: true}
	// A command signed without the command domain, as a desired document is.
	cmdJSON, err := wire.Encode(command(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	asDesired, err := Sign(fleetKey, cmdJSON)
	if err != nil {
		t.Fatal(err)
	}
	desiredEnv := signed(t, fleetKey, desired(t, 5))

	for _, tt := range []struct {
		name string
		msg  []byte
		env  *wire.Envelope
		want CommandExpect
		err  error
		cat  func(error) bool
	}{
		{"unsigned", nil, &unsigned, cmdExpect, ErrUnsigned, errdefs.IsPermissionDenied},
		{"wrong key", signedCommand(t, fixedKey(2), command(t, 1)), nil, cmdExpect, ErrWrongKey, errdefs.IsPermissionDenied},
		{"tampered", bytes.Replace(good, []byte(`"lines":10`), []byte(`"lines":99`), 1), nil, cmdExpect, ErrBadSignature, errdefs.IsPermissionDenied},
		{"other device", signedCommand(t, fleetKey, otherDevice), nil, cmdExpect, ErrWrongDevice, errdefs.IsPermissionDenied},
		{"expired", good, nil, late, ErrExpired, errdefs.IsFailedPrecondition},
		{"expired before the floor, clock untrusted", good, nil, floorPassed, ErrExpired, errdefs.IsFailedPrecondition},
		{"signed as a desired document", nil, &asDesired, cmdExpect, ErrBadSignature, errdefs.IsPermissionDenied},
		{"a desired envelope", nil, &desiredEnv, cmdExpect, ErrBadSignature, errdefs.IsPermissionDenied},
		{"oversized", append(good[:len(good)-1], []byte(`,"pad":"`+string(bytes.Repeat([]byte("x"), wire.MaxCommandEnvelope))+`"}`)...), nil, cmdExpect, wire.ErrTooLarge, errdefs.IsInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewReplayGuard(0)
			var err error
			if tt.env != nil {
				_, err = VerifyCommand(fleetPub, *tt.env, tt.want, g)
			} else {
				_, err = VerifyCommandMessage(fleetPub, tt.msg, tt.want, g)
			}
			if !errors.Is(err, tt.err) || !tt.cat(err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if g.Len() != 0 {
				t.Errorf("a refused command used up its id: guard holds %d", g.Len())
			}
		})
	}
}

func TestVerifyCommand_Replayed(t *testing.T) {
	g := NewReplayGuard(0)
	msg := signedCommand(t, fleetKey, command(t, 1))
	if _, err := VerifyCommandMessage(fleetPub, msg, cmdExpect, g); err != nil {
		t.Fatal(err)
	}
	later := cmdExpect
	later.Now = t0.Add(4 * time.Minute)
	_, err := VerifyCommandMessage(fleetPub, msg, later, g)
	if !errors.Is(err, ErrReplayed) || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("replay = %v, want ErrReplayed", err)
	}
	// After a restart, from the persisted guard.
	b, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	g2 := NewReplayGuard(0)
	if err := g2.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCommandMessage(fleetPub, msg, later, g2); !errors.Is(err, ErrReplayed) {
		t.Errorf("replay after restoring the guard = %v, want ErrReplayed", err)
	}
	// A clock that went back does not bring a forgotten id back to life:
	// the guard's time never decreases.
	gone := cmdExpect
	gone.Now = t0.Add(time.Hour)
	if _, err := VerifyCommandMessage(fleetPub, signedCommand(t, fleetKey, command(t, 2)), gone, g2); !errors.Is(err, ErrExpired) {
		t.Fatalf("a command an hour late = %v, want ErrExpired", err)
	}
	if g2.Len() != 0 {
		t.Errorf("expired ids kept: %d", g2.Len())
	}
	back := cmdExpect // the clock stepped back an hour
	if _, err := VerifyCommandMessage(fleetPub, msg, back, g2); !errors.Is(err, ErrExpired) {
		t.Errorf("replay after the clock stepped back = %v, want ErrExpired", err)
	}
	// Nor after a restart: the guard's time is persisted with its ids.
	b, err = g2.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	g3 := NewReplayGuard(0)
	if err := g3.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCommandMessage(fleetPub, msg, back, g3); !errors.Is(err, ErrExpired) {
		t.Errorf("replay after a restart and the clock stepped back = %v, want ErrExpired", err)
	}
}

func TestReplayGuard_BusyRatherThanForget(t *testing.T) {
	g := NewReplayGuard(3)
	exp := t0.Add(10 * time.Minute)
	for i := range 3 {
		if err := g.Admit(fmt.Sprint(i), exp, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Admit("3", exp, t0.Add(time.Minute)); !errors.Is(err, ErrBusy) || !errdefs.IsResourceExhausted(err) {
		t.Fatalf("Admit on a full guard = %v, want ErrBusy", err)
	}
	for i := range 3 {
		if err := g.Admit(fmt.Sprint(i), exp, t0.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
			t.Errorf("id %d forgotten while unexpired: %v", i, err)
		}
	}
	// Once they expire, there is room again.
	if err := g.Admit("3", t0.Add(20*time.Minute), exp); err != nil {
		t.Errorf("Admit after the ids expired = %v", err)
	}
	if g.Len() != 1 {
		t.Errorf("guard holds %d ids, want 1", g.Len())
	}
}

func TestReplayGuard_UnmarshalRefusesGarbage(t *testing.T) {
	g := NewReplayGuard(0)
	for _, b := range []string{"", "{", `{"v":2,"ids":{}}`} {
		if err := g.UnmarshalBinary([]byte(b)); err == nil {
			t.Errorf("UnmarshalBinary(%q) accepted", b)
		}
	}
}

func TestSignCommand_RefusesInvalid(t *testing.T) {
	c := command(t, 1)
	c.ExpiresAt = c.IssuedAt.Add(wire.MaxCommandLifetime + time.Second)
	if _, err := SignCommand(fleetKey, c); !errdefs.IsInvalidArgument(err) {
		t.Errorf("SignCommand(lifetime over the cap) = %v, want an invalid argument", err)
	}
}
