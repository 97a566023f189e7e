// Package store keeps the agent's state in one bbolt file. Every write is
// one bbolt transaction, which is fsynced before it returns.
//
// Schema (all buckets under the top-level bucket "v1"):
//
//	v1/meta
//	    "schema"          "1"
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
//
// A later layout gets a new top-level bucket ("v2") and a migration.
//
// Open checks the whole file (a traversal of every bucket and key, then
// tx.Check) with faults turned into panics and recovered; a file that fails
// is renamed to "<path>.corrupt-<unix seconds>" and a fresh one is created.
// DB.Recovered says so.
package store
