// Package placement decides which devices of the fleet each app goes to.
// It is a pure function, Place(Request) (Decision, error): apps, devices,
// the current assignments and the time in; assignments, a reason for every
// (app, device) pair and warnings out. It performs no I/O and reads no
// clock; the controller's shell gathers the request, stores the
// assignments and publishes them.
//
// # Rules
//
// A device is a candidate for an app when:
//
//   - selector: it carries every label of placement.selector with exactly
//     that value ("label site=paris, want berlin", "label site missing,
//     want berlin");
//   - arch: placement.arch is empty or lists its arch ("arch arm64 not in
//     [amd64]"). Arch names are Go's GOARCH, as the agent reports them:
//     amd64, arm64, arm (32-bit ARM: armv7), riscv64, 386. "armv7" in a
//     spec is read as "arm" (CanonicalArch); messages show the names as
//     written and as reported.
//
// and it gets the app when, besides:
//
//   - capacity: the sum of the app's containers' memory and CPU
//     (wire.App.Requests) fits in what the device reports (Device.MemoryBytes
//     and MilliCPU) minus Request.Reserve minus every other app placed there
//     ("memory: needs 64Mi, 40Mi free", "cpu: needs 500m, 250m free"). A
//     resource an app does not request is not checked; a device that has
//     not reported its memory or CPUs gives none of it.
//   - count: `devices: all` (or placement, or devices, unset) takes every
//     candidate with room, online or not: a device that is offline keeps
//     its apps and gets their versions when it comes back. `devices: N`
//     takes N online candidates ("not needed: 3 of 3 devices placed"); a
//     device offline is not given new N-device apps ("offline for 2m
//     (grace 5m): new placements go to online devices").
//   - spread: an N-device app with placement.spread picks devices
//     round-robin over the values of that label: the value with the
//     fewest of the app's devices next, ties by value; devices without the
//     label form one group of their own. Within a group, and without
//     spread, the device with the fewest apps placed on it comes first,
//     ties by ID. Spread means nothing for `devices: all` and is ignored
//     there.
//
// # Order, stability and failover
//
// Place runs two passes over the apps in name order. The first keeps each
// app's current devices that are still valid: matching, with room (apps
// earlier by name counted first), and for an N-device app not offline past
// the grace. The second gives each app new devices until it has N (or all
// candidates). So a valid assignment is kept, an app that grows never takes
// room from another's existing placement, and feeding a Decision's
// Assignments back as Current gives the same Decision.
//
// Failover: a device of an N-device app that has been offline longer than
// Request.Grace (DefaultGrace when zero), or never seen, loses its share
// ("offline for 12m (grace 5m)"), which the second pass gives to another
// candidate; the app's other devices keep theirs. When N is lowered, the
// devices dropped are taken from the largest spread group first, offline
// before online, highest ID first.
//
// # Errors and warnings
//
// Place fails, with errdefs.ErrInvalidArgument, only for a malformed
// request: an empty or duplicate device ID or app name, a negative
// placement.devices, an unknown arch, a negative reserve or grace, a zero
// Now. Everything else is a Warning and the decision stands:
//
//   - no-match: the selector and arch match no device;
//   - short: fewer than N devices, or fewer than all matching devices, got
//     the app (the message counts the offline and full ones). `devices: N`
//     with fewer than N matching devices is such a warning, not an error;
//   - spread-label: no matching device carries the spread label;
//   - device-gone: a current assignment names a device no longer in the
//     fleet.
//
// # Explanations
//
// Decision.Explain(app) gives a Reason for every device, sorted by ID;
// Decision.ExplainDevice(app, device) for one (`tender app explain APP
// [DEVICE]`). A device that did not get an app gives the first reason of:
// a selector label, the arch, being offline (N-device apps), room (told
// against what is left once every app is placed), not being needed. So
// the words are the same whichever pass decided, and a rerun with the
// decision as Current explains it the same way.
//
// Reasons are kept compact inside the Decision (a code and two numbers per
// pair) and put into words when asked for: a fleet of 10,000 devices and
// 50 apps costs a few megabytes, not half a million strings. Place itself
// takes about 60 ms there on an idle core (BenchmarkPlace; 20 MB
// allocated); putting all 500,000 reasons into words about 130 ms more.
//
// The shell builds each Device from the controller's records: ID and
// labels from enrollment, Device.WithFacts for the arch, memory and CPUs
// of the last report, Online and LastSeen from presence.
package placement
