// Package fleetlink is the agent's MQTT session with its fleet controller:
// it takes signed desired documents in, sends reports and events out
// through an on-disk outbox, and answers the fleet's signed commands.
//
// It reaches the agent through the small Agent interface it defines (apps
// and their containers, wake, logs, restart, device facts) and keeps its
// own state in the agent's store (agent/store: FleetState, the outbox, the
// clock floor), never in buckets of its own.
//
// Generations. The store holds one desired document, written either by a
// local apply or by the fleet, under the store's own counter. A fleet
// document is checked against the last fleet generation accepted
// (store.FleetState.Generation), never against the store's counter: local
// edits cannot lock the fleet out, and no fleet generation can stop local
// edits. Once accepted, a fleet document replaces the whole desired state;
// a later local apply edits on top of it until the next fleet document.
// Reports carry as ObservedGeneration the fleet generation whose document
// the apps have converged on (every app at its desired revision, every
// container running or completed).
//
// Floods cost little: a refused desired document is logged and reported
// once per rejectWindow with a count of the others; reports are written to
// the outbox at most once per reportSpacing unless they carry news; at
// most maxCommands commands run at once, others are answered "busy".
package fleetlink
