// Package topic builds and parses the MQTT topic names of the Tender wire.
//
// Every topic lives under Root ("tender/v1"). Device D owns:
//
//	tender/v1/devices/D/desired      fleet → device, retained, signed envelope
//	tender/v1/devices/D/reported     device → fleet, retained
//	tender/v1/devices/D/events       device → fleet
//	tender/v1/devices/D/presence     device → fleet, retained ("online"/"offline")
//	tender/v1/devices/D/cmd          fleet → device
//	tender/v1/devices/D/cmd/result   device → fleet
//
// The package is pure: no I/O.
package topic

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Root is the prefix of every Tender topic; the version segment changes only
// with an incompatible topic layout.
const Root = "tender/v1"

const devicesPrefix = Root + "/devices/"

// Kind names one of a device's topics.
type Kind string

// The topic kinds of a device.
const (
	Desired       Kind = "desired"
	Reported      Kind = "reported"
	Events        Kind = "events"
	Presence      Kind = "presence"
	Command       Kind = "cmd"
	CommandResult Kind = "cmd/result"
)

// Kinds lists every device topic kind, in a fixed order.
var Kinds = []Kind{Desired, Reported, Events, Presence, Command, CommandResult}

// MaxDeviceIDLen is the longest device id accepted.
const MaxDeviceIDLen = 63

// Every error of ValidDeviceID, Build, Parse and AllDevices wraps
// errdefs.ErrInvalidArgument.

// ValidDeviceID reports why id cannot be used as a device id, or nil.
// A device id is 1–63 characters of [a-z0-9._-], starting with [a-z0-9];
// it therefore never holds an MQTT wildcard, a slash or a substitution
// pattern, and it is safe as a topic level, a client id and a username.
func ValidDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("device id empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("device id of %d characters, at most %d: %w", len(id), MaxDeviceIDLen, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("device id %q: character %q at %d, want a-z, 0-9 and (after the first) '.', '_', '-': %w", id, c, i, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func validKind(k Kind) bool {
	for _, v := range Kinds {
		if v == k {
			return true
		}
	}
	return false
}

// Build returns the topic of kind k for device id.
func Build(id string, k Kind) (string, error) {
	if err := ValidDeviceID(id); err != nil {
		return "", err
	}
	if !validKind(k) {
		return "", fmt.Errorf("unknown topic kind %q: %w", string(k), errdefs.ErrInvalidArgument)
	}
	return devicesPrefix + id + "/" + string(k), nil
}

// MustBuild is Build for ids already validated (for example at enrollment);
// it panics on an invalid id or kind, a programmer error.
func MustBuild(id string, k Kind) string {
	t, err := Build(id, k)
	if err != nil {
		panic(err)
	}
	return t
}

// Parse splits a concrete topic (no wildcards) into its device id and kind.
func Parse(t string) (id string, k Kind, err error) {
	rest, ok := strings.CutPrefix(t, devicesPrefix)
	if !ok {
		return "", "", fmt.Errorf("topic %q: not a tender device topic: %w", t, errdefs.ErrInvalidArgument)
	}
	id, kind, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("topic %q: not a tender device topic (no kind): %w", t, errdefs.ErrInvalidArgument)
	}
	if err := ValidDeviceID(id); err != nil {
		return "", "", err
	}
	if !validKind(Kind(kind)) {
		return "", "", fmt.Errorf("topic %q: unknown kind %q: %w", t, kind, errdefs.ErrInvalidArgument)
	}
	return id, Kind(kind), nil
}

// AllDevices returns the subscription filter matching kind k of every
// device (the controller's view), for example "tender/v1/devices/+/reported".
func AllDevices(k Kind) (string, error) {
	if !validKind(k) {
		return "", fmt.Errorf("unknown topic kind %q: %w", string(k), errdefs.ErrInvalidArgument)
	}
	return devicesPrefix + "+/" + string(k), nil
}
