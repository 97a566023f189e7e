// Package store is the fleet controller's state behind a small interface,
// one part per concern (Devices, Ingester, Apps, Rollouts, JoinTokens,
// APITokens, Events, Audit, Generations), grouped in the Store struct.
// fleet/store/boltdb is the embedded implementation; an etcd one comes
// next behind the same interface, and fleet/store/storetest is the
// conformance suite both run.
//
// # Revisions and compare-and-swap
//
// Every record carries Rev, the store-wide revision of its last write
// (etcd's ModRevision; bbolt keeps one counter in the file). A write that
// can race names the revision it read (expectRev, 0 for "create") and is
// refused with errdefs.ErrConflict (errdefs.ErrAlreadyExists for a create
// over an existing record) when another writer got there first: of two
// controllers applying the same app, one wins and the other is told to
// read again. UpdateDevice, UpdateApp and UpdateRollout are the
// read-modify-write loops. Writes that cannot be lost by racing (ingest of
// reports and events, audit appends, token consumption, generations) are
// atomic operations of the store: the implementation does the read and
// the write in one transaction (bbolt) or one transaction on the key's
// revision (etcd).
//
// # Devices and ingest
//
// A device has a record (labels, enrollment facts, certificate serial,
// password hash, revoked), written by enrollment and the operator with
// compare-and-swap, and a status (last report, presence, last seen, event
// sequence high-water mark, gaps, duplicates), written only by Ingest, so
// that reports, the hot path, never conflict with a label change. Ingest
// takes a Batch of what devices published over a few milliseconds and
// stores it in one write. It skips, without failing the batch:
//
//   - messages of devices not enrolled or revoked (IngestResult.Unknown);
//   - messages whose payload names another device (Refused, F-08);
//   - a report older (by its Time) than the stored one (StaleReports);
//   - an event whose Seq is not above the device's high-water mark
//     (DuplicateEvents). Sequence numbers start at 1; the first event
//     stored for a device sets the mark, and every number skipped after
//     that counts as a gap (EventGaps). Events of one device within a
//     batch are taken in sequence order.
//
// A report's ObservedGeneration raises the device's generation high-water
// mark: a generation a device has seen is never issued again. (One past
// wire.MaxGeneration is ignored: it was never issued, and a device
// claiming one would only lock itself out.)
//
// # Generations
//
// Generations.Next returns max(last+1, now in Unix milliseconds), where
// last is the highest generation issued to or reported by the device, and
// stores it before returning. The clock floor is what makes a restore
// safe: a store restored from a backup taken at time B has forgotten the
// generations issued after B, but issues new ones of at least the current
// time, which is above every generation issued after B as long as the
// clock has moved on and no device was issued generations faster than one
// per millisecond on average (a desired document is published only when
// it changes: a device gets a few a day). The reports of devices that come
// back raise the mark further. A clock that goes back never lowers a
// generation (last+1 wins). 2^53 milliseconds is about the year 287,000: the floor
// stays below wire.MaxGeneration.
//
// # Events and audit
//
// Events are kept per device (the newest N) and in a global feed read by
// cursor (Events.Feed) with a bounded retention; the oldest go first. The
// audit log (SECURITY.md F-12) is append-only: its interface has no update
// or delete, and each entry carries the sha256 chain hash (AuditHash) of
// the log up to it, which Audit.Verify checks, with the count of entries
// ever written, so an entry edited, removed or cut off shows.
//
// # Tokens
//
// The store never sees a secret: join tokens keep the hash of theirs, API
// tokens are keyed by the hash of their value (SECURITY.md F-03).
// JoinTokens.Consume checks (the caller's constant-time hash comparison),
// refuses an expired or used-up token and spends one use in one atomic
// step: a one-use token presented twice at once enrolls one device.
package store
