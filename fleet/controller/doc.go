// Package controller is the fleet controller's shell (`tender serve`):
// it owns the I/O around the pure cores (fleet/placement, fleet/rollout)
// and implements api.Controller for the HTTP API.
//
//	devices ──MQTT──► Transport ──► receive ──► ingest (batches of ≤500,
//	                  (embedded     decode,      every few ms) ──► store.Ingest
//	                   broker or    F-08 check                      │ kick
//	                   mqttc)           │ cmd/result                ▼
//	                                    ▼                         loop (one goroutine)
//	                              waiting command ◄── Logs,       │ every Tick, kick
//	                                                  Restart     ▼
//	  ┌──────────────────────────── pass ───────────────────────────────────┐
//	  │ devices changed since the last pass (all every Resync), apps ◄── store│
//	  │ rollout commands stored by the API → each rollout, in order          │
//	  │ placement.Place(apps, devices, current assignments, grace)          │
//	  │ per app: current revision ≠ what its assigned devices were given     │
//	  │   → rollout.New(From = what they run, To = current, devices)         │
//	  │   devices newly (un)assigned outside a rollout: given / taken at once│
//	  │ per rollout: Observe(each device) → Step → set-desired: given[d][app]│
//	  │                                          events: audit log           │
//	  │ publish every device whose apps changed (fleet/publish: signed,      │
//	  │   retained, new generation only on a change) → rollout.Published     │
//	  │ persist: rollouts (store.Rollouts, one per app, JSON), assignments   │
//	  │   and what each device was given (store.Docs "controller/state")     │
//	  │ publish the snapshot the API reads                                   │
//	  └──────────────────────────────────────────────────────────────────────┘
//
// The loop goroutine alone owns the rollouts and the assignments, and
// the API never waits for it: a pass at 10,000 devices can take seconds.
// Reads (App, Apps, Rollout, Explain, Device, Status) come from the store
// and from the snapshot the loop publishes after each pass, so they are
// at most a pass old. Writes (Apply, RemoveApp, LabelDevice,
// RemoveDevice, enrollment) go to the store, mark what they changed and
// kick the loop; they are answered once durable. RolloutCommand stores
// the command, checked against the stored rollout, with a
// compare-and-swap, and the loop applies it at its next pass
// (rolloutcmd.go). A controller restarted mid-rollout reads its state
// back (loadLoop) and goes on where it was; the publisher's per-device
// content hash keeps it from republishing what the devices have.
//
// The loop keeps a copy of each device trimmed to what it reads
// (loopDevice) and reads again only the devices marked changed (ingest
// marks those of each batch it stores), every device every Resync. With
// several controllers on one store, what the others write is marked by
// the store's watch (Deps.DeviceWatch); while it is not up, the leader
// and the follower read every device at every pass, as they must.
//
// # Revisions and observations
//
// A rollout's From and To are the app's store revisions ("3"); devices
// report app versions, which observe maps back: the version of To or of
// From; if both have the same version, To once the device reports a
// generation at least the one that carried To. The app's state on the
// device gives the health: running → healthy (the agent confirmed it),
// verifying or pulling → starting, degraded → crash loop, failing or
// refused → unhealthy, rolled-back → rolled back by the agent,
// update-deferred → deferred.
//
// # Removal
//
// RemoveApp marks the app deleting. The loop then rolls it out to nothing:
// a rollout whose To is "" over the devices given the app, with the app's
// waves, maxUnavailable, pace and windows (a device settles once its report
// no longer lists the app). Once it succeeded, devices still offline are
// given their document without it (they get it when back) and the app and
// its rollout are forgotten once every device concerned was published to.
// A removal rolled back (undo, or devices that keep the app) keeps the
// app at the revision the removal started from. With now (`app rm --now`)
// every device is given a document without the app at once. RemoveDevice
// revokes the device's certificates (enroll, which rewrites the CRL), has
// the Revoker cut its session and clear its retained topics, and deletes
// it from the store.
//
// # First start
//
// PrepareDir, LoadOrCreateKey (signing.key 0600, signing.pub) and
// EnsureAdminToken (stored hashed; its value returned once) prepare the
// data directory; enroll.New, called by New, makes the CA and the server
// certificate there.
//
// # Several controllers
//
// With an etcd store and a Leadership (leader.go), one controller leads:
// it alone runs the loop's rollouts and publishes, each of its loop's
// writes fenced by its term (store.WithFence). Followers make the
// snapshot the API reads from the store at every tick. With an external
// broker (Config.SharedGroup), reports and presence come as shared
// subscriptions, each message to one controller; the store orders them
// (a report older than the stored one, a presence received before the
// stored one, is dropped). Events are not shared: every controller
// ingests every event and the store keeps the first copy of each
// sequence number, so a device's events are never split across two
// ordered streams (the store drops an event below the highest sequence
// stored as a duplicate; split, half of them would be lost). The cost is
// that a device's duplicate-event counter also counts the other
// controllers' copies. Command results are not shared either: the
// controller that sent the command gets its answer.
//
// # Commands
//
// Logs and Restart sign a wire.Command for the device (sign.SignCommand,
// a fresh id, expiring after CommandTimeout), publish it on its cmd topic
// and wait for the cmd/result with that id from that device. A device
// whose presence is offline is refused at once with errdefs.ErrUnavailable
// ("device gw-3 is offline since …"), one that does not answer in time too.
package controller
