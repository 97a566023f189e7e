// Package publish signs each device's desired document and publishes it,
// retained, on tender/v1/devices/D/desired, only when its content
// changed: the controller's loop calls Publish with the apps a device
// must run (each at the revision the rollouts say) as often as it likes.
//
// # A document's life
//
//	Publish(device, apps)
//	   │
//	   ▼
//	content hash = sha256 of the apps, sorted by name (no apps: "[]")
//	   │
//	   ├── equal to the hash last published to the device, and that
//	   │   document is younger than half its lifetime ──► nothing sent
//	   │
//	   ▼
//	generation = Generations.Next(device)   (strictly higher, never reused,
//	   │                                     also after a restart or a restore)
//	   ▼
//	sign.SignDesired(key, {device, generation, issuedAt now,
//	   │                   expiresAt now+Expiry, apps})
//	   ▼
//	Transport.Publish(desired topic, envelope, retained)   (QoS 1)
//	   │
//	   ▼
//	State{Hash, Generation, At} stored per device (States)
//
// The state is written after the broker took the message: a publish that
// failed is retried by the next call (the hash did not move). A
// generation drawn for a publish that failed is skipped, never reissued.
// Removing a device's last app publishes a document with no apps, not an
// empty retained message: the device must be told, with a signature, to
// stop everything. Forget clears a device's state when it is removed.
//
// States persist across restarts (StoreStates keeps them in store.Docs
// under "desired/<device>"), so a restarted controller does not republish
// every device; they are cached in memory after the first read.
package publish
