package api

import (
	"context"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/wire"
)

// Controller is what the API (and the console after it) needs of the
// fleet controller; fleet/controller implements it. Methods that change
// the fleet take the Caller, for the audit log. Errors carry errdefs
// categories, which the API maps to HTTP statuses.
type Controller interface {
	// Devices lists the devices whose labels match selector (every
	// key=value of it; nil: all), in id order.
	Devices(ctx context.Context, selector map[string]string) ([]DeviceView, error)
	// Device is one device with its apps, containers and last events.
	Device(ctx context.Context, id string) (DeviceDetail, error)
	// LabelDevice sets and removes labels of a device.
	LabelDevice(ctx context.Context, who Caller, id string, set map[string]string, remove []string) (DeviceView, error)
	// RemoveDevice revokes the device (its certificate is refused from
	// now on, the CRL is rewritten, its retained topics are cleared) and
	// forgets it.
	RemoveDevice(ctx context.Context, who Caller, id string) error

	// CreateJoinToken makes an enrollment token; its value is in the
	// answer only.
	CreateJoinToken(ctx context.Context, who Caller, req JoinTokenRequest) (JoinTokenCreated, error)

	// CreateAPIToken makes an API token (admin or read-only) under a name
	// no unrevoked token has; its value is in the answer only, and stored
	// hashed.
	CreateAPIToken(ctx context.Context, who Caller, req APITokenRequest) (APITokenCreated, error)
	// APITokens lists the API tokens, revoked ones included, by name:
	// never their values nor hashes.
	APITokens(ctx context.Context) ([]APITokenView, error)
	// RevokeAPIToken revokes the unrevoked token named name: it is refused
	// from then on. The last unrevoked admin token is not revoked
	// (errdefs.ErrFailedPrecondition). The caller's own token may be.
	RevokeAPIToken(ctx context.Context, who Caller, name string) (APITokenRevoked, error)

	// Apply validates an app spec (YAML or JSON; errors name every field
	// path at once), resolves image tags to digests, checks the images'
	// platforms against the arches the placement allows, and stores it as
	// a new revision (unchanged spec: no new revision). The change rolls
	// out as the app's rollout says.
	Apply(ctx context.Context, who Caller, spec []byte) (AppView, error)
	Apps(ctx context.Context) ([]AppView, error)
	App(ctx context.Context, name string) (AppView, error)
	AppHistory(ctx context.Context, name string) ([]AppRevisionView, error)
	// RemoveApp removes the app from every device, through a rollout like
	// any change (its waves, pace and windows) or, with now, at once; then
	// forgets it.
	RemoveApp(ctx context.Context, who Caller, name string, now bool) (AppView, error)
	// Explain says, device by device (or for one device), why the app is
	// or is not placed there.
	Explain(ctx context.Context, app, device string) (ExplainView, error)

	// Rollout is the app's current (or last) rollout.
	Rollout(ctx context.Context, app string) (RolloutView, error)
	// RolloutCommand is pause, resume, abort or undo.
	RolloutCommand(ctx context.Context, who Caller, app, command string) (RolloutView, error)

	// Logs asks the device for the last lines of a container's output
	// (a signed command); errdefs.ErrUnavailable when the device is
	// offline or does not answer in time.
	Logs(ctx context.Context, who Caller, device, app, container string, lines int) (CommandResult, error)
	// Restart asks the device to restart an app (or one container).
	Restart(ctx context.Context, who Caller, device, app, container string) (CommandResult, error)

	// Events are the fleet's events, newest last, filtered.
	Events(ctx context.Context, f EventFilter) ([]store.FeedEvent, error)
	// Audit is the audit log after seq after.
	Audit(ctx context.Context, after uint64, limit int) ([]store.AuditEntry, error)
	// Status is the controller's own state (for `tender status`).
	Status(ctx context.Context) (StatusView, error)
}

// Caller is who made a request, as the API authenticated it.
type Caller struct {
	Name string     `json:"name"` // the token's name
	Role store.Role `json:"role"`
	From string     `json:"from"` // remote address
}

// DeviceView is a device as lists show it.
type DeviceView struct {
	ID       string            `json:"id"`
	Labels   map[string]string `json:"labels,omitempty"`
	Online   bool              `json:"online"`
	LastSeen time.Time         `json:"lastSeen,omitzero"`
	Facts    wire.DeviceFacts  `json:"facts"`
	// Apps are the device's apps as it last reported them (name, version,
	// phase).
	Apps []wire.AppStatus `json:"apps,omitempty"`
	// Health sums the apps up: ok, degraded, failing, unknown.
	Health string `json:"health"`
	// ObservedGeneration and DesiredGeneration: what it runs, what it
	// was last sent.
	ObservedGeneration uint64 `json:"observedGeneration,omitempty"`
	DesiredGeneration  uint64 `json:"desiredGeneration,omitempty"`
	// MemoryBytes and CPUNanos in use by its containers (last report),
	// against MemoryTotal and CPUs from its facts.
	MemoryUsed   uint64 `json:"memoryUsed,omitempty"`
	CPUNanosUsed uint64 `json:"cpuNanosUsed,omitempty"`
	Revoked      bool   `json:"revoked,omitempty"`
}

// DeviceDetail is one device in full.
type DeviceDetail struct {
	DeviceView
	EnrolledAt time.Time          `json:"enrolledAt"`
	Report     *wire.Reported     `json:"report,omitempty"`
	Status     store.DeviceStatus `json:"status"` // event gaps, duplicates, stale reports
	Events     []store.FeedEvent  `json:"events,omitempty"`
	// Assigned are the apps placement gives the device.
	Assigned []string `json:"assigned,omitempty"`
	// Stale is set when the answer may be stale (the store has no
	// quorum): the Tender-Stale header's text.
	Stale string `json:"stale,omitempty"`
}

// JoinTokenRequest asks for a join token.
type JoinTokenRequest struct {
	Labels map[string]string `json:"labels,omitempty"`
	TTL    time.Duration     `json:"ttl,omitempty"`  // default 24h
	Uses   int               `json:"uses,omitempty"` // default 1
}

// JoinTokenCreated answers it: Token is shown once.
type JoinTokenCreated struct {
	ID      string            `json:"id"`
	Token   string            `json:"token"`
	Labels  map[string]string `json:"labels,omitempty"`
	Expires time.Time         `json:"expires"`
	Uses    int               `json:"uses"`
}

// APITokenRequest asks for an API token.
type APITokenRequest struct {
	// Name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with
	// '-', unique among the unrevoked tokens.
	Name string     `json:"name"`
	Role store.Role `json:"role"` // admin or read-only
}

// APITokenView is an API token as lists show it: never its value nor
// its hash.
type APITokenView struct {
	Name      string     `json:"name"`
	Role      store.Role `json:"role"`
	Created   time.Time  `json:"created"`
	Revoked   bool       `json:"revoked,omitempty"`
	RevokedAt time.Time  `json:"revokedAt,omitzero"`
}

// APITokenCreated answers CreateAPIToken: Token is shown once.
type APITokenCreated struct {
	Token string `json:"token"`
	APITokenView
}

// APITokenRevoked answers RevokeAPIToken. Self says the token revoked is
// the one the request came with: the caller's next request is refused.
type APITokenRevoked struct {
	APITokenView
	Self bool   `json:"self,omitempty"`
	Note string `json:"note,omitempty"`
}

// AppView is an app as lists show it.
type AppView struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`  // of the current revision
	Revision uint64   `json:"revision"` // current
	Latest   uint64   `json:"latest"`
	Deleting bool     `json:"deleting,omitempty"`
	Spec     wire.App `json:"spec"`
	// Placed is how many devices placement gives it; Running how many
	// report the current revision running; Warnings are placement's.
	Placed   int      `json:"placed"`
	Running  int      `json:"running"`
	Warnings []string `json:"warnings,omitempty"`
	// Rollout is the phase of its rollout ("" if none; pending if applied
	// since the controller's last pass).
	Rollout string `json:"rollout,omitempty"`
}

// AppRevisionView is one revision of an app.
type AppRevisionView struct {
	Revision uint64    `json:"revision"`
	Version  string    `json:"version"`
	Created  time.Time `json:"created"`
	By       string    `json:"by"`
	Spec     wire.App  `json:"spec"`
	Current  bool      `json:"current"`
}

// ExplainView is placement's explanation for an app.
type ExplainView struct {
	App      string          `json:"app"`
	Devices  []ExplainDevice `json:"devices"`
	Warnings []string        `json:"warnings,omitempty"`
}

// ExplainDevice is one device's verdict.
type ExplainDevice struct {
	Device string `json:"device"`
	Chosen bool   `json:"chosen"`
	Reason string `json:"reason"`
}

// RolloutView is a rollout as `tender rollout status` and the console
// draw it.
type RolloutView struct {
	App     string       `json:"app"`
	ID      string       `json:"id"`
	From    string       `json:"from"` // version (revision)
	To      string       `json:"to"`
	Phase   string       `json:"phase"` // pending (applied, not started yet), progressing, paused, succeeded, rolling-back, rolled-back, aborted
	Reason  string       `json:"reason,omitempty"`
	Started time.Time    `json:"started"`
	Waves   []WaveCounts `json:"waves"`
	// Stale: as DeviceDetail's.
	Stale string `json:"stale,omitempty"`
}

// WaveCounts are the counts of one wave.
type WaveCounts struct {
	Index      int `json:"index"` // 0-based: the first wave is 0
	Devices    int `json:"devices"`
	Pending    int `json:"pending"`
	Offline    int `json:"offline"`
	Updating   int `json:"updating"`
	Updated    int `json:"updated"`
	Healthy    int `json:"healthy"`
	Failed     int `json:"failed"`
	Deferred   int `json:"deferred"`
	RolledBack int `json:"rolledBack"`
}

// CommandResult is a device's answer to a command.
type CommandResult struct {
	Device string `json:"device"`
	OK     bool   `json:"ok"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// EventFilter narrows the events feed.
type EventFilter struct {
	Device string `json:"device,omitempty"`
	App    string `json:"app,omitempty"`
	Kind   string `json:"kind,omitempty"`
	After  uint64 `json:"after,omitempty"` // cursor
	Limit  int    `json:"limit,omitempty"`
}

// Member is a controller sharing the store with others.
type Member struct {
	ID      string    `json:"id"`
	API     string    `json:"api"`
	Started time.Time `json:"started"`
	Leader  bool      `json:"leader"`
	// Self: the controller that answered.
	Self bool `json:"self,omitempty"`
}

// StatusView is the controller's state.
type StatusView struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Leader  string    `json:"leader"` // "self" with bbolt; the elected one's id with etcd
	// Members are the controllers sharing the store (etcd), oldest first.
	Members  []Member `json:"members,omitempty"`
	Broker   string   `json:"broker"` // "embedded" or the external URL
	Devices  int      `json:"devices"`
	Online   int      `json:"online"`
	Apps     int      `json:"apps"`
	Rollouts int      `json:"rollouts"` // in progress
	// Stale: as DeviceDetail's; the leader is then unknown.
	Stale string `json:"stale,omitempty"`
}
