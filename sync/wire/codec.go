package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/topic"
)

// kind describes one JSON message kind for the shared decoder.
type kind struct {
	name   string
	schema int // 0: the message has no schema field (the envelope)
	limit  int
}

var (
	kindDesired       = kind{"desired", DesiredSchema, MaxDesiredSize}
	kindEnvelope      = kind{"envelope", 0, MaxEnvelopeSize}
	kindReported      = kind{"reported", ReportedSchema, MaxReportedSize}
	kindEvent         = kind{"event", EventSchema, MaxEventSize}
	kindCommand       = kind{"command", CommandSchema, MaxCommandSize}
	kindCommandEnv    = kind{"command envelope", 0, MaxCommandEnvelope}
	kindCommandResult = kind{"command result", CommandResultSchema, MaxCommandResultSize}
)

// decode reads exactly one JSON object of kind k from data into v.
func decode(k kind, data []byte, v any) error {
	if len(data) > k.limit {
		return &TooLargeError{Kind: k.name, Size: len(data), Limit: k.limit}
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%s message: %w: not a JSON object", k.name, ErrMalformed)
	}
	if !json.Valid(data) {
		return fmt.Errorf("%s message: %w: invalid JSON", k.name, ErrMalformed)
	}
	if k.schema != 0 {
		var probe struct {
			Schema json.RawMessage `json:"schema"`
		}
		if err := json.Unmarshal(data, &probe); err != nil {
			return fmt.Errorf("%s message: %w: %v", k.name, ErrMalformed, err)
		}
		var got int
		if len(probe.Schema) > 0 {
			if err := json.Unmarshal(probe.Schema, &got); err != nil {
				return fmt.Errorf("%s message: %w: schema is not an integer", k.name, ErrMalformed)
			}
		}
		if got != k.schema {
			return &SchemaError{Kind: k.name, Got: got, Want: k.schema}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// encoding/json has no typed error for unknown fields; its message
		// is stable ("json: unknown field \"x\"") since Go 1.10.
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%s message: %w %s", k.name, ErrUnknownField, name)
		}
		return fmt.Errorf("%s message: %w: %v", k.name, ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s message: %w: data after the object", k.name, ErrMalformed)
	}
	return nil
}

// invalid is a value out of range in a message of kind k.
func invalid(k kind, format string, args ...any) error {
	return fmt.Errorf("%s message: %s: %w", k.name, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// DecodeEnvelope decodes a desired-state envelope. It does not verify the
// signature (see sync/sign).
func DecodeEnvelope(data []byte) (Envelope, error) {
	return decodeEnvelope(kindEnvelope, data)
}

// DecodeCommandEnvelope decodes a command envelope (the payload of the
// command topic), with the command's size cap. It does not verify the
// signature (see sync/sign).
func DecodeCommandEnvelope(data []byte) (Envelope, error) {
	return decodeEnvelope(kindCommandEnv, data)
}

func decodeEnvelope(k kind, data []byte) (Envelope, error) {
	var e Envelope
	if err := decode(k, data, &e); err != nil {
		return Envelope{}, err
	}
	if len(e.Payload) == 0 || string(e.Payload) == "null" {
		return Envelope{}, invalid(k, "payload missing")
	}
	return e, nil
}

// decodeValid decodes data as a message of kind k into a T and validates
// it with T's Validate.
func decodeValid[T any, P interface {
	*T
	Validate() error
}](k kind, data []byte) (T, error) {
	var v T
	if err := decode(k, data, &v); err != nil {
		var zero T
		return zero, err
	}
	if err := P(&v).Validate(); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// DecodeDesired decodes and validates a desired-state document (the
// Payload of an Envelope).
func DecodeDesired(data []byte) (Desired, error) {
	return decodeValid[Desired](kindDesired, data)
}

// Validate checks a desired document: schema, device id, generation,
// validity period, and every app (App.Validate); app names are unique.
func (d *Desired) Validate() error {
	if d.Schema != DesiredSchema {
		return &SchemaError{Kind: kindDesired.name, Got: d.Schema, Want: DesiredSchema}
	}
	if err := topic.ValidDeviceID(d.DeviceID); err != nil {
		return invalid(kindDesired, "device id: %v", err)
	}
	if d.Generation == 0 {
		return invalid(kindDesired, "generation 0")
	}
	if d.Generation > MaxGeneration {
		return fmt.Errorf("desired message: generation %d above %d (2^53), the largest a fleet issues: %w",
			d.Generation, uint64(MaxGeneration), ErrGenerationRange)
	}
	if d.IssuedAt.IsZero() {
		return invalid(kindDesired, "issuedAt missing")
	}
	if d.ExpiresAt.IsZero() {
		return invalid(kindDesired, "expiresAt missing")
	}
	if !d.ExpiresAt.After(d.IssuedAt) {
		return invalid(kindDesired, "expiresAt %s not after issuedAt %s", d.ExpiresAt, d.IssuedAt)
	}
	seen := make(map[string]bool, len(d.Apps))
	for i := range d.Apps {
		if err := d.Apps[i].Validate(); err != nil {
			return fmt.Errorf("desired message: apps[%d]: %w", i, err)
		}
		if seen[d.Apps[i].Name] {
			return invalid(kindDesired, "apps[%d]: app %s listed twice", i, d.Apps[i].Name)
		}
		seen[d.Apps[i].Name] = true
	}
	return nil
}

// DecodeReported decodes a device status report.
func DecodeReported(data []byte) (Reported, error) {
	var r Reported
	if err := decode(kindReported, data, &r); err != nil {
		return Reported{}, err
	}
	if err := topic.ValidDeviceID(r.DeviceID); err != nil {
		return Reported{}, invalid(kindReported, "device id: %v", err)
	}
	return r, nil
}

// DecodeEvent decodes one event.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	if err := decode(kindEvent, data, &e); err != nil {
		return Event{}, err
	}
	if err := topic.ValidDeviceID(e.DeviceID); err != nil {
		return Event{}, invalid(kindEvent, "device id: %v", err)
	}
	if e.Kind == "" {
		return Event{}, invalid(kindEvent, "kind missing")
	}
	return e, nil
}

// MaxCommandIDLen bounds CommandResult.ID.
const MaxCommandIDLen = 64

// DecodeCommand decodes and validates a command (the Payload of a command
// envelope).
func DecodeCommand(data []byte) (Command, error) {
	return decodeValid[Command](kindCommand, data)
}

// Validate checks a command: schema, device id, id, validity period
// (at most MaxCommandLifetime), kind, app, container and lines.
func (c *Command) Validate() error {
	if c.Schema != CommandSchema {
		return &SchemaError{Kind: kindCommand.name, Got: c.Schema, Want: CommandSchema}
	}
	if err := topic.ValidDeviceID(c.DeviceID); err != nil {
		return invalid(kindCommand, "deviceId: %v", err)
	}
	if !validCommandID(c.ID) {
		return invalid(kindCommand, "id %q: want %d lower-case hex digits", truncate(c.ID, 80), CommandIDLen)
	}
	if c.IssuedAt.IsZero() {
		return invalid(kindCommand, "issuedAt missing")
	}
	if c.ExpiresAt.IsZero() {
		return invalid(kindCommand, "expiresAt missing")
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt); life <= 0 || life > MaxCommandLifetime {
		return invalid(kindCommand, "expiresAt %s: want after issuedAt %s by at most %s",
			c.ExpiresAt.UTC().Format(time.RFC3339), c.IssuedAt.UTC().Format(time.RFC3339), MaxCommandLifetime)
	}
	switch c.Kind {
	case CommandLogs, CommandRestart:
	default:
		return invalid(kindCommand, "kind %q: want %s or %s", truncate(string(c.Kind), 40), CommandLogs, CommandRestart)
	}
	if !ValidName(c.App) {
		return invalid(kindCommand, "app %q: want an app name", truncate(c.App, 80))
	}
	if c.Container != "" && !ValidName(c.Container) {
		return invalid(kindCommand, "container %q: want a container name", truncate(c.Container, 80))
	}
	if c.Lines < 0 || c.Lines > MaxLogLines {
		return invalid(kindCommand, "lines %d out of [0, %d]", c.Lines, MaxLogLines)
	}
	return nil
}

func validCommandID(s string) bool {
	if len(s) != CommandIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// DecodeCommandResult decodes a command result.
func DecodeCommandResult(data []byte) (CommandResult, error) {
	var r CommandResult
	if err := decode(kindCommandResult, data, &r); err != nil {
		return CommandResult{}, err
	}
	if r.ID == "" || len(r.ID) > MaxCommandIDLen {
		return CommandResult{}, invalid(kindCommandResult, "id of %d bytes", len(r.ID))
	}
	return r, nil
}

// ParsePresence parses a presence payload.
func ParsePresence(data []byte) (Presence, error) {
	switch p := Presence(data); p {
	case Online, Offline:
		return p, nil
	}
	if len(data) > 16 {
		data = data[:16]
	}
	return "", fmt.Errorf("presence message: %w: %q", ErrMalformed, data)
}

// withSchema returns m, or a copy of it with its schema set to def when
// it is zero (the caller's value is never changed).
func withSchema[T any](m *T, schema func(*T) *int, def int) *T {
	if *schema(m) != 0 {
		return m
	}
	c := *m
	*schema(&c) = def
	return &c
}

// Encode marshals a message, filling in its schema version when it is zero,
// and refuses messages over their kind's size cap. v is one of Desired,
// Envelope, Reported, Event, Command, CommandResult (or a pointer to one).
func Encode(v any) ([]byte, error) {
	var k kind
	switch m := v.(type) {
	case Desired:
		return Encode(&m)
	case *Desired:
		k, v = kindDesired, withSchema(m, func(c *Desired) *int { return &c.Schema }, DesiredSchema)
	case Envelope:
		k = kindEnvelope
	case *Envelope:
		k = kindEnvelope
	case Reported:
		return Encode(&m)
	case *Reported:
		k, v = kindReported, withSchema(m, func(c *Reported) *int { return &c.Schema }, ReportedSchema)
	case Event:
		return Encode(&m)
	case *Event:
		k, v = kindEvent, withSchema(m, func(c *Event) *int { return &c.Schema }, EventSchema)
	case Command:
		return Encode(&m)
	case *Command:
		k, v = kindCommand, withSchema(m, func(c *Command) *int { return &c.Schema }, CommandSchema)
	case CommandResult:
		return Encode(&m)
	case *CommandResult:
		k, v = kindCommandResult, withSchema(m, func(c *CommandResult) *int { return &c.Schema }, CommandResultSchema)
	default:
		return nil, fmt.Errorf("encode %T: not a wire message", v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", k.name, err)
	}
	if len(b) > k.limit {
		return nil, &TooLargeError{Kind: k.name, Size: len(b), Limit: k.limit}
	}
	return b, nil
}
