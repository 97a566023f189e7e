// Package wire holds the payloads exchanged between the agent and the fleet
// over MQTT, their schema versions, and strict decoders for them.
//
// Every JSON message carries "schema", the version of its layout. Decoders
// refuse, each with a sentinel error callers can branch on with errors.Is:
//
//   - a message over the size cap of its kind (ErrTooLarge, *TooLargeError),
//   - bytes that are not one JSON object (ErrMalformed),
//   - a schema version this build does not speak, or none (ErrSchema),
//   - a field this build does not know (ErrUnknownField),
//   - a generation above MaxGeneration, 2^53 (ErrGenerationRange),
//   - any other field with a value out of range (errdefs.ErrInvalidArgument
//     itself, with the field in the message).
//
// Every decode error, and every error of App.Validate (*FieldError, one
// per field, joined), wraps errdefs.ErrInvalidArgument. The schema is
// checked before unknown fields, so a newer peer's message is reported as
// a schema mismatch rather than as an unknown field.
//
// The desired state travels inside an Envelope: the JSON of a Desired
// document as Payload, and an ed25519 signature over exactly those bytes.
// A Command (schema 2) travels in an Envelope too, signed over a domain
// prefix and its payload, bound to one device, with a random id and at most
// MaxCommandLifetime between IssuedAt and ExpiresAt (package sync/sign
// signs and verifies both). MaxMessageSize is the largest message of any
// kind; an MQTT client may refuse any larger packet unread.
//
// App specs use one grammar per quantity (package internal/quantity):
// memory as Kubernetes quantities ("64Mi", "1.5Gi", "500M"), CPUs as
// "250m" or "0.5", durations as "10s". Names, versions, images, devices,
// volume paths and placement labels with control characters are refused.
//
// Fields with a fixed set of values have a type listing the set once:
// ContainerState, HealthState, EventKind, CommandKind, Presence. A
// receiver accepts container states, health states and event kinds it
// does not know: a newer agent may send them.
//
// Presence is a bare "online"/"offline" string so that it can be the MQTT
// Last Will.
package wire
