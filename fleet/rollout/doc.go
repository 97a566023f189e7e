// Package rollout moves the devices of an app from one revision to the
// next in health-gated waves, and back when the new one fails. It is a
// pure state machine, like raft's RawNode: (rollout, observations, now) →
// (rollout, actions). It performs no I/O, reads no clock and keeps no
// goroutine; it is not safe for concurrent use. The controller's single
// loop owns a Rollout, feeds it, performs the actions it returns, and
// persists it (it is plain JSON-serialisable data) after each call:
//
//	r, err := rollout.New(spec, now)            // spec: devices, waves, budgets, windows
//	r.Observe(id, obs)                           // from presence and reports, any number of times
//	acts := r.Step(rollout.Input{Now: now, Locations: zones})
//	for _, a := range acts {                     // set-desired → sign and publish, then
//		... r.Published(a.Device, a.Revision, generation)
//	}
//	r.Command(rollout.Pause, now)                // pause, resume, abort, undo
//	r.Status()                                   // per-wave counts for the UI
//
// # Rollout phases
//
//	                  pause/resume
//	                    ┌─────┐
//	                    ▼     │
//	New ──► progressing (paused) ───── last wave settled and soaked ──► succeeded
//	           │    │                                                      │
//	           │    └── a wave has more failed devices than its           │
//	           │        failureThreshold ("failed": reason) ──┐           │
//	           │                                              ▼           │
//	           ├──────────────── undo ──────────────► rolling-back ◄── undo
//	           │                                      (paused) │
//	           ▼ abort                                         │ every touched device
//	        aborted ───────────── undo ─────────────────►      │ back on From, or offline
//	   (no more actions;                                       ▼
//	    devices keep what they have)                      rolled-back
//
// Progressing starts the devices of the current wave, in list order; a
// wave is settled when none of its online devices is pending, updating
// or updated; after it has stayed settled for HealthyFor the next wave
// starts (after the last one, the rollout has succeeded). Waves are
// cumulative counts or percentages of the devices (rounded up); the last
// wave is every device. In succeeded, devices that were offline or
// deferred still get To when they come back; in rolled-back, touched
// devices still get From.
//
// Rolling back takes every device that was ever asked for To back to
// From, through the same per-device machine, the same budget and the
// same pace: devices not serving To healthily (failed, updating,
// updated, deferred, offline, or reported unhealthy since) at once, as
// they are out of service already, healthy ones within maxUnavailable.
// A failed device is asked back to From on its own even while the
// rollout goes on under its threshold.
// Maintenance windows do not hold a rollback. The failure threshold
// applies to the forward pass, succeeded included (succeeded → rolling-back) (stragglers that fail
// late still count); not to a rollback.
//
// # Device states
//
//	           start (wave, window, budget, pace)
//	pending ──────────────────────────────────► updating ◄──── lock released
//	 ▲  │                                       │  │  │              │
//	 │  │ offline            offline ◄──────────┘  │  └── lock held ─► deferred
//	 │  ▼                       │                  │ runs the target
//	offline ── back, not asked ─┘ back, asked ──►  ▼
//	                                            updated ──── healthy ──► healthy (To)
//	                                               │                     rolled-back (From)
//	 unhealthy, crash loop, rolled back or         │                        │
//	 refused by the agent, no progress within      ▼                        │ unhealthy later
//	 ProgressDeadline ──────────────────────────► failed ◄───────────────────┘
//	                                     (asked back to From; "recovered" once healthy on it)
//
// Unreachable devices have a budget of their own: an offline device
// neither stalls a wave nor counts as failed; it shows as offline and is
// started (or finishes) when it comes back. A deferred device (its app
// holds the update lock) neither stalls nor fails either.
//
// Unavailable devices are the online devices the rollout took out of
// service: updating, updated, or failed and not back on From yet. A
// device is started only while fewer than maxUnavailable are; offline
// devices do not count.
//
// A device's Generation ties a report to what was published: once the
// device reports a generation at least the one published for the pass's
// target, running another revision means the agent refused it or rolled
// it back.
//
// # Maintenance windows
//
// See Window for the schedule syntax ("mon-fri 01:00-05:00"). The time
// zone is the device's: a fixed offset, or an IANA name whose
// *time.Location the shell loads (time.LoadLocation reads files) and
// passes in Input.Locations.
package rollout
