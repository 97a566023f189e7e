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
//   - a field with a value out of range (ErrInvalid).
//
// The schema is checked before unknown fields, so a newer peer's message is
// reported as a schema mismatch rather than as an unknown field.
//
// The desired state travels inside an Envelope: the JSON of a Desired
// document as Payload, and an ed25519 signature over exactly those bytes
// (see package sync/sign). Presence is a bare "online"/"offline" string so
// that it can be the MQTT Last Will.
package wire
