package reconcile

import (
	"strings"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// Input is everything Plan looks at: one snapshot, taken by the shell.
type Input struct {
	Now time.Time
	// Desired apps, validated. Their order is the priority of apps that
	// are not running yet when admission has to refuse some.
	Desired []wire.App
	// Observed are the runtime's containers. Those whose name does not
	// parse with ParseName are not the agent's and are ignored.
	Observed []Observed
	// Progress is what the last Decision returned (persisted), by app.
	Progress map[string]Progress
	// Images holds the image references (exactly as written in the app
	// spec) present in the local image store.
	Images map[string]bool
	// Locked holds the apps whose update lock is held now.
	Locked map[string]bool
	// Refused holds, by app name, why the device-local policy refuses the
	// app's desired version (the rules it breaks). Such a version is
	// refused at admission like one that does not fit; a version admitted
	// before keeps running.
	Refused  map[string]string
	Capacity Capacity
	Policy   Policy
}

// RunState is a container's state as the runtime reports it.
type RunState string

// Container states as the runtime reports them.
const (
	StatusCreated RunState = "created"
	StatusRunning RunState = "running"
	StatusExited  RunState = "exited"
)

// Health is a container's health as the health checker reports it; ""
// means no check result (yet), which counts as HealthStarting for a
// container with a check. It is the wire's type: the values are listed once.
type Health = wire.HealthState

// Health states.
const (
	HealthStarting  = wire.HealthStarting
	HealthHealthy   = wire.HealthHealthy
	HealthUnhealthy = wire.HealthUnhealthy
)

// Observed is one runtime container as plain data.
type Observed struct {
	Name       string   // runtime name: ContainerName(app, container, revision)
	Status     RunState // StatusCreated, StatusRunning, StatusExited
	ExitCode   int
	OOMKilled  bool
	StartedAt  time.Time // zero if never started
	FinishedAt time.Time // zero unless exited
	// Health and HealthSince: the health checker's current verdict on this
	// run of the container and when it last changed.
	Health      Health
	HealthSince time.Time
	// RestartRequested: an operator asked for a restart after this run
	// started. Plan restarts it now, and the restart is not a failure: no
	// backoff, no count toward crash-loop detection or rollback.
	RestartRequested bool
}

// Capacity is what the device gives to apps. A zero Memory or MilliCPU
// turns that half of admission off.
type Capacity struct {
	Memory          int64 // bytes
	ReserveMemory   int64 // bytes kept for the host and the agent
	MilliCPU        int64 // 1000 per CPU
	ReserveMilliCPU int64
}

// Policy holds the tunables; zero fields take the documented defaults.
type Policy struct {
	BackoffBase time.Duration // first restart delay; default 1s, doubling
	BackoffCap  time.Duration // default 5m; restarts never stop, they slow down to this
	ResetAfter  time.Duration // a run this long resets the backoff; default 10m
	// CrashLoopRestarts restarts in a row, none after a run of ResetAfter,
	// mark a container crash-looping (reported; a new version is rolled
	// back; restarts go on at the capped backoff). Default 5.
	CrashLoopRestarts int
	// CrashLoopWindow bounds RestartLog.Times, the recent restarts kept
	// for reports. Default 10m.
	CrashLoopWindow time.Duration
	// RolloutGrace is added to healthyFor (and the longest health
	// startPeriod) before a new version that has not been confirmed is
	// rolled back. Default 2m.
	RolloutGrace time.Duration
}

// Defaults of Policy.
const (
	DefaultBackoffBase       = time.Second
	DefaultBackoffCap        = 5 * time.Minute
	DefaultResetAfter        = 10 * time.Minute
	DefaultCrashLoopRestarts = 5
	DefaultCrashLoopWindow   = 10 * time.Minute
	DefaultRolloutGrace      = 2 * time.Minute
)

func (p Policy) withDefaults() Policy {
	if p.BackoffBase <= 0 {
		p.BackoffBase = DefaultBackoffBase
	}
	if p.BackoffCap <= 0 {
		p.BackoffCap = DefaultBackoffCap
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = DefaultResetAfter
	}
	if p.CrashLoopRestarts <= 0 {
		p.CrashLoopRestarts = DefaultCrashLoopRestarts
	}
	if p.CrashLoopWindow <= 0 {
		p.CrashLoopWindow = DefaultCrashLoopWindow
	}
	if p.RolloutGrace <= 0 {
		p.RolloutGrace = DefaultRolloutGrace
	}
	return p
}

// Progress is the per-app state Plan needs across agent restarts. The
// shell persists the Decision's Progress map as a whole and feeds it back.
type Progress struct {
	// Confirmed is the last version that proved healthy; it is what a
	// failed update rolls back to. Nil until the first confirmation.
	Confirmed *wire.App `json:"confirmed,omitempty"`
	// Target is the version swapped in and being verified, since
	// TargetSince. Nil when nothing is being verified.
	Target      *wire.App `json:"target,omitempty"`
	TargetSince time.Time `json:"targetSince,omitzero"`
	// RolledBack marks a revision that failed on this device; it is not
	// tried again while it stays the desired one.
	RolledBack *RolledBack `json:"rolledBack,omitempty"`
	// Phase is the last phase reported; a change emits an Event.
	Phase Phase `json:"phase,omitempty"`
	// Restarts are the restart logs of the containers, by runtime name.
	Restarts map[string]RestartLog `json:"restarts,omitempty"`
}

// RolledBack records a failed update.
type RolledBack struct {
	Revision string    `json:"revision"`
	Version  string    `json:"version"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// RestartLog is one container's restart history.
type RestartLog struct {
	// Streak is the number of restarts since the container last ran for
	// Policy.ResetAfter; the next delay is BackoffBase<<Streak, capped.
	Streak int `json:"streak"`
	// Times are the restarts within the crash-loop window, oldest first.
	Times []time.Time `json:"times,omitempty"`
}

// Phase is where an app is.
type Phase string

const (
	PhaseRefused    Phase = "refused"         // admission said no; Message has the numbers
	PhasePulling    Phase = "pulling"         // images of the desired version are being pulled
	PhaseDeferred   Phase = "update-deferred" // the update waits for the app's update lock
	PhaseVerifying  Phase = "verifying"       // a new version runs and must stay healthy for healthyFor
	PhaseRunning    Phase = "running"         // the desired version is confirmed and running
	PhaseDegraded   Phase = "degraded"        // confirmed, but a container is crash-looping or exited
	PhaseFailing    Phase = "failing"         // a first install that is not healthy and has nothing to roll back to
	PhaseRolledBack Phase = "rolled-back"     // the desired version failed; the previous one runs
)

// Kind is what an Action asks the shell to do.
type Kind string

const (
	// KindPull: pull Image into the local store. Re-emitted every round
	// until Input.Images has it; the shell keeps one pull per image in
	// flight and backs off failed pulls itself.
	KindPull Kind = "pull"
	// KindStart: create the container Name from Spec (if it does not exist)
	// and start it detached. If Name exists in state created, just start it.
	KindStart Kind = "start"
	// KindRestart: stop Name if it runs, delete it, create it again from
	// Spec and start it. Named volumes are kept.
	KindRestart Kind = "restart"
	// KindRemove: stop Name (with the grace period) if it runs and delete it.
	KindRemove Kind = "remove"
)

// Action is one step for the shell. Actions of one app come in the order
// they must run (removals before starts).
type Action struct {
	Kind     Kind
	App      string
	Name     string          // runtime container name (start, restart, remove)
	Image    string          // pull
	Revision string          // start, restart: the app revision the container belongs to
	Spec     *wire.Container // start, restart: what to create
	Reason   string
}

// Event is a phase change worth recording in the event log.
type Event struct {
	App    string
	Kind   Phase // the phase entered, or "removed"
	Reason string
}

// PhaseRemoved is the Kind of the Event emitted when an app goes away.
const PhaseRemoved Phase = "removed"

// AppStatus is the state of a desired app, for `apps` and reports.
type AppStatus struct {
	Name            string
	Phase           Phase
	Message         string
	Version         string // version running now ("" if none)
	Revision        string // revision running now
	DesiredVersion  string
	DesiredRevision string
	Containers      []ContainerStatus
}

// State is a container's state in ContainerStatus: the wire's type, so
// the values are listed once (sync/wire) and reports carry them as they are.
type State = wire.ContainerState

// Container states in ContainerStatus.
const (
	StateRunning   = wire.ContainerRunning
	StateStarting  = wire.ContainerStarting  // to be started, created, or health check not passed yet
	StateUnhealthy = wire.ContainerUnhealthy // running, health check failing
	StateBackoff   = wire.ContainerBackoff   // failed, waiting for NextRestart
	StateCrashLoop = wire.ContainerCrashLoop // failed too often recently; still restarted at the capped backoff
	StateExited    = wire.ContainerExited    // failed, and the restart policy says never
	StateCompleted = wire.ContainerCompleted // exited 0 and the policy does not restart it
)

// ContainerStatus is one container of an AppStatus.
type ContainerStatus struct {
	Name        string // container name in the spec
	ID          string // runtime name
	State       State
	Restarts    int       // restarts in the current streak
	NextRestart time.Time // when in StateBackoff or StateCrashLoop
	Message     string
}

// Decision is Plan's result.
type Decision struct {
	// Actions to carry out, in order. If one fails, the shell should skip
	// the remaining actions of the same app; the next round retries.
	Actions []Action
	// Progress replaces Input.Progress: persist it (apps absent from it are
	// deleted) BEFORE carrying out Actions, in the same transaction as Events.
	Progress map[string]Progress
	Events   []Event
	Apps     []AppStatus // one per desired app, in Input.Desired order
	// KeepImages must not be pruned: images of desired, confirmed and
	// target versions. Sorted.
	KeepImages []string
	// Wake is when Plan must run again even if nothing else changes (a
	// restart falls due, healthyFor elapses); zero for never.
	Wake time.Time
}

// ContainerName is the runtime name of container c of revision rev of app
// a: "<app>.<container>.<revision>". App and container names hold no dots
// (wire.App.Validate), so the name parses back unambiguously, and it fits
// the runtime's 63 characters.
func ContainerName(app, container, rev string) string {
	return app + "." + container + "." + rev
}

// ParseName splits a runtime name made by ContainerName. ok is false for
// names that are not the agent's.
func ParseName(name string) (app, container, rev string, ok bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 3 || !wire.ValidName(parts[0]) || !wire.ValidName(parts[1]) || len(parts[2]) != wire.RevisionLen {
		return "", "", "", false
	}
	for _, r := range parts[2] {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return "", "", "", false
		}
	}
	return parts[0], parts[1], parts[2], true
}
