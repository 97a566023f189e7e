package wire

import (
	"encoding/json"
	"time"
)

// Schema versions this build speaks, one per message kind.
const (
	DesiredSchema       = 1
	ReportedSchema      = 1
	EventSchema         = 1
	CommandSchema       = 2 // 2: signed, bound to the device, with an expiry
	CommandResultSchema = 1
)

// Size caps per message kind, in bytes of the encoded message.
const (
	MaxDesiredSize       = 256 << 10
	MaxEnvelopeSize      = MaxDesiredSize + 4<<10 // payload plus signature and key id
	MaxReportedSize      = 256 << 10
	MaxEventSize         = 16 << 10
	MaxCommandSize       = 4 << 10
	MaxCommandEnvelope   = MaxCommandSize + 1<<10 // payload plus signature and key id
	MaxCommandResultSize = 256 << 10
	// MaxMessageSize is the largest message of any kind: an MQTT client
	// may refuse any packet whose payload is larger.
	MaxMessageSize = max(MaxEnvelopeSize, MaxReportedSize, MaxEventSize, MaxCommandEnvelope, MaxCommandResultSize)
)

// MaxGeneration is the largest generation a fleet issues: 2^53, the
// largest integer a JSON number keeps exactly in every language. A
// generation above it is refused (ErrGenerationRange): accepting 2^64-1
// would leave no newer generation for any later document.
const MaxGeneration = 1 << 53

// Desired is the state the fleet wants device DeviceID to converge on. It is
// signed by the fleet and travels as the Payload of an Envelope.
type Desired struct {
	Schema     int    `json:"schema"`
	DeviceID   string `json:"deviceId"`
	FleetID    string `json:"fleetId,omitempty"`
	Generation uint64 `json:"generation"` // strictly increasing per device
	// IssuedAt and ExpiresAt bound the document's validity; a device whose
	// clock is untrusted judges freshness by Generation alone.
	IssuedAt    time.Time `json:"issuedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	PolicyEpoch uint64    `json:"policyEpoch,omitempty"`
	Apps        []App     `json:"apps"`
}

// Envelope carries a signed Desired document or Command. For a Desired
// document, Signature is ed25519 over the exact bytes of Payload; for a
// Command, over a domain prefix and then Payload (see sync/sign), so that
// neither can pass for the other. KeyID names the signing key (see
// sign.KeyID).
type Envelope struct {
	Payload   json.RawMessage `json:"payload"`
	Signature []byte          `json:"signature,omitempty"` // base64 in JSON
	KeyID     string          `json:"keyId,omitempty"`
}

// Reported is a device's full status. It is retained and the newest one
// supersedes all older ones.
type Reported struct {
	Schema             int    `json:"schema"`
	DeviceID           string `json:"deviceId"`
	ObservedGeneration uint64 `json:"observedGeneration"`
	// DesiredDigest is the sha256 of the last desired envelope received
	// (accepted or not), so the fleet can spot a poisoned retained document.
	DesiredDigest string      `json:"desiredDigest,omitempty"`
	Apps          []AppStatus `json:"apps"`
	Device        DeviceFacts `json:"device"`
	// DroppedEvents counts events dropped from the outbox since the agent's
	// state was created, because the outbox was full.
	DroppedEvents  uint64    `json:"droppedEvents,omitempty"`
	ClockUntrusted bool      `json:"clockUntrusted,omitempty"`
	Time           time.Time `json:"time"`
}

// AppStatus is the state of one app on a device.
type AppStatus struct {
	Name       string            `json:"name"`
	Version    string            `json:"version,omitempty"`
	State      string            `json:"state"` // e.g. pending, running, degraded, failed, rolled-back
	Message    string            `json:"message,omitempty"`
	Containers []ContainerStatus `json:"containers"`
}

// ContainerStatus is the state of one container of an app.
type ContainerStatus struct {
	Name      string         `json:"name"`
	Image     string         `json:"image,omitempty"` // by digest
	State     ContainerState `json:"state"`
	Health    HealthState    `json:"health,omitempty"`
	Restarts  uint32         `json:"restarts"`
	ExitCode  int            `json:"exitCode,omitempty"`
	OOMKilled bool           `json:"oomKilled,omitempty"`
	StartedAt time.Time      `json:"startedAt,omitzero"`
	// CPUNanos is the cumulative CPU time used; the fleet derives rates.
	CPUNanos    uint64 `json:"cpuNanos,omitempty"`
	MemoryBytes uint64 `json:"memoryBytes,omitempty"`
	MemoryLimit uint64 `json:"memoryLimit,omitempty"`
}

// ContainerState is a container's state in ContainerStatus, as the agent
// decides it. Receivers must accept states they do not know (a newer
// agent may send them).
type ContainerState string

// Container states.
const (
	ContainerRunning   ContainerState = "running"
	ContainerStarting  ContainerState = "starting"   // to be started, created, or health check not passed yet
	ContainerUnhealthy ContainerState = "unhealthy"  // running, health check failing
	ContainerBackoff   ContainerState = "backoff"    // failed, waiting to be restarted
	ContainerCrashLoop ContainerState = "crash-loop" // failed too often recently; still restarted, at the capped backoff
	ContainerExited    ContainerState = "exited"     // failed, and the restart policy says never
	ContainerCompleted ContainerState = "completed"  // exited 0, and the restart policy does not restart it
)

// HealthState is a container's health check verdict in
// ContainerStatus.Health. (Health, the check itself, is part of the app
// spec.)
type HealthState string

// Health states.
const (
	HealthNone      HealthState = "" // no health check, or no verdict yet
	HealthStarting  HealthState = "starting"
	HealthHealthy   HealthState = "healthy"
	HealthUnhealthy HealthState = "unhealthy"
)

// DeviceFacts describes the device itself.
type DeviceFacts struct {
	Arch          string `json:"arch"`
	Kernel        string `json:"kernel,omitempty"`
	CgroupVersion int    `json:"cgroupVersion,omitempty"`
	MemoryBytes   uint64 `json:"memoryBytes,omitempty"`
	CPUs          int    `json:"cpus,omitempty"`
	AgentVersion  string `json:"agentVersion,omitempty"`
	// TimeZone is the device's IANA time zone ("Europe/Berlin"), "" for
	// UTC: maintenance windows are read in it.
	TimeZone string `json:"timeZone,omitempty"`
}

// EventKind names what happened. Receivers must accept kinds they do not
// know (a newer agent may send them).
type EventKind string

// Event kinds sent by the agent.
const (
	EventPulled          EventKind = "pulled"
	EventStarted         EventKind = "started"
	EventExited          EventKind = "exited"
	EventRestarted       EventKind = "restarted"
	EventUnhealthy       EventKind = "unhealthy"
	EventHealthy         EventKind = "healthy"
	EventOOMKilled       EventKind = "oom-killed"
	EventRolledBack      EventKind = "rolled-back"
	EventUpdateDeferred  EventKind = "update-deferred"
	EventAppliedDesired  EventKind = "applied-desired"
	EventRejectedDesired EventKind = "rejected-desired"
	EventRejectedCommand EventKind = "rejected-command"
	EventClockUntrusted  EventKind = "clock-untrusted"
)

// Event is one lifecycle event. Seq is assigned by the outbox, increases by
// one per event on a device, and lets the fleet spot gaps and duplicates.
type Event struct {
	Schema     int       `json:"schema"`
	DeviceID   string    `json:"deviceId"`
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Kind       EventKind `json:"kind"`
	App        string    `json:"app,omitempty"`
	Container  string    `json:"container,omitempty"`
	Generation uint64    `json:"generation,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// Presence is the payload of the retained presence topic.
type Presence string

// Presence values; Offline is the Last Will.
const (
	Online  Presence = "online"
	Offline Presence = "offline"
)

// CommandKind is what a Command asks for.
type CommandKind string

// Command kinds.
const (
	CommandLogs    CommandKind = "logs"
	CommandRestart CommandKind = "restart"
)

// MaxLogLines bounds Command.Lines.
const MaxLogLines = 10000

// CommandIDLen is the length of Command.ID: 16 random bytes in hex.
const CommandIDLen = 32

// MaxCommandLifetime bounds ExpiresAt-IssuedAt of a Command, and so how
// long a device must remember a command's id to refuse its replay.
const MaxCommandLifetime = 10 * time.Minute

// Command is an on-demand request from the fleet to a device. It travels
// signed, in an Envelope, and is valid for device DeviceID only, once,
// until ExpiresAt (see sync/sign).
type Command struct {
	Schema    int         `json:"schema"`
	DeviceID  string      `json:"deviceId"`
	ID        string      `json:"id"` // CommandIDLen lower-case hex digits, random
	IssuedAt  time.Time   `json:"issuedAt"`
	ExpiresAt time.Time   `json:"expiresAt"` // after IssuedAt, by at most MaxCommandLifetime
	Kind      CommandKind `json:"kind"`
	App       string      `json:"app"`
	Container string      `json:"container,omitempty"`
	Lines     int         `json:"lines,omitempty"` // logs: how many trailing lines
}

// CommandResult answers the Command with the same ID.
type CommandResult struct {
	Schema int    `json:"schema"`
	ID     string `json:"id"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"` // operator-facing message
	Output string `json:"output,omitempty"`
}
