// Package boltdb is the fleet controller's embedded store: store.Store in
// one bbolt file (default for a single controller). Every write is one
// bbolt transaction, fsynced before it returns; Ingest, Generations.Next
// and the Puts of Rollouts and Docs share their transactions with
// concurrent callers (bbolt's Batch), and Ingest commits a large batch at
// once.
//
// The file is 0600 (narrowed on open if it was widened), its directory
// 0700 when Open creates it. Every bucket is listed here; nothing else
// writes the file. Integers are uint64 big-endian; records are JSON.
//
//	v1/meta
//	    "schema"        "1"
//	    "rev"           the store revision: bumped by every record write,
//	                    stamped on the record as Rev
//	    "feed.count"    number of events in v1/feed
//	v1/devices          <device id> → store.Device (the record, no status)
//	v1/status           <device id> → store.DeviceStatus (written by Ingest)
//	v1/generations      <device id> → uint64 highest generation issued or
//	                    reported; kept when the device is deleted
//	v1/apps             <app name> → store.App
//	v1/applatest        <app name> → uint64 highest revision ever stored,
//	                    kept when the app is deleted (never reused)
//	v1/revisions        <app name> 0x00 <uint64 revision> → store.AppRevision
//	v1/rollouts         <rollout id> → uint64 revision, then the document
//	v1/docs             <key> → uint64 revision, then the document (Store.Docs)
//	v1/jointokens       <token id> → store.JoinToken (secret hashed)
//	v1/apitokens        <hash of the token> → store.APIToken
//	v1/feed             <uint64 cursor> → store.FeedEvent; the cursor is the
//	                    bucket's sequence, never reused
//	v1/eventindex       <device id> 0x00 <uint64 event seq> → uint64 cursor
//	v1/audit            <uint64 seq> → store.AuditEntry; the bucket's
//	                    sequence counts the entries ever written
//	v1/sessions         <hash of the session id> → store.Session (the
//	                    console's; expired ones dropped at each Create).
//	                    Added to schema 1 without a migration: Open
//	                    creates the bucket in a file that lacks it.
//
// A later schema adds its migration to Open, run in the transaction that
// sets the new "schema"; a file with a schema this build does not know is
// refused with store.ErrSchema.
//
// Open proves the file readable (every bucket and key walked, then
// tx.Check, with memory faults turned into errors). Unlike the agent,
// which rebuilds its state from its containers, the controller cannot
// start empty without forgetting every device, token and generation: a
// damaged file is refused with store.ErrCorrupt and left untouched, for
// the operator to restore a backup (DB.Backup writes a consistent copy
// while the store is in use). A record that does not decode is reported
// with store.ErrCorrupt, naming it.
package boltdb
