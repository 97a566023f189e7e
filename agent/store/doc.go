// Package store keeps the agent's state in one bbolt file. Every write is
// one bbolt transaction, which is fsynced before it returns.
//
// Every bucket the agent writes is listed here; nothing else writes the
// file. Top-level buckets: "v1" (below) and "v1/outbox" (OutboxBucket: the
// fleet link's outbox of reports and events not yet acknowledged by the
// broker; its layout is documented in sync/outbox).
//
//	v1/meta
//	    "schema"          "2"
//	    "events.dropped"  uint64 big-endian: events dropped by the cap
//	v1/desired
//	    "doc"             JSON Desired {generation, source, apps}
//	v1/progress
//	    <app name>        JSON reconcile.Progress (rollout, rollback marks,
//	                      restart logs)
//	v1/events
//	    <seq>             uint64 big-endian sequence (the bucket's
//	                      NextSequence) → JSON Event; the oldest are
//	                      deleted past Options.EventCap
//	v1/fleet              the fleet link's state (FleetState), uint64s
//	                      big-endian
//	    "generation"      last fleet generation accepted
//	    "storedgen"       the store generation its document got
//	    "digest"          sha256 of the accepted envelope
//	    "evcursor"        last event of v1/events put in the outbox
//	    "time"            the clock floor, unix nanoseconds
//	    "commands"        the command replay guard (sync/sign), opaque
//
// Schema 1 (the first release) kept the fleet state and the outbox in the
// unversioned top-level buckets "fleet/state" and "fleet/outbox"; Open
// moves them to v1/fleet and v1/outbox in the transaction that sets schema
// 2 (migrate). A file with a schema this build does not know is refused
// with ErrSchema, not treated as corruption.
//
// Open checks the whole file (a traversal of every bucket and key, then
// tx.Check) with faults turned into panics and recovered; a file that fails
// is renamed to "<path>.corrupt-<unix seconds>" and a fresh one is created.
// DB.Recovered says so.
package store
