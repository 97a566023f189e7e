package store

import (
	"context"
	"errors"
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// Store groups the controller's state by concern. Every field is set by
// an implementation's constructor (boltdb.Open; etcd next); the controller
// passes the parts a room needs (the publisher gets Generations, the API
// gets Devices, Apps, ...), not the whole Store.
//
// Records carry Rev, the store's revision at their last write (like etcd's
// ModRevision). Writes that can race take the revision the caller read
// (expectRev; 0 means "must not exist yet") and fail with
// errdefs.ErrConflict, without writing, when the record has moved on:
// exactly one of two racing writers wins. UpdateDevice, UpdateApp, ...
// wrap the read-modify-write loop.
type Store struct {
	Devices     Devices
	Ingest      Ingester
	Apps        Apps
	Rollouts    Rollouts
	JoinTokens  JoinTokens
	APITokens   APITokens
	Events      Events
	Audit       Audit
	Generations Generations
	// Docs holds the controller's own documents by key, with the
	// Rollouts interface's compare-and-swap: placement's assignments,
	// the publisher's content hash per device, the certificates
	// enrollment issued.
	Docs Rollouts
	// Sessions holds the web console's sign-in sessions, so that every
	// controller on the store knows them.
	Sessions Sessions
	// Close releases the store (the file lock, connections).
	Close func() error
}

// Devices holds the enrolled devices and their last known status.
type Devices interface {
	// Get returns device id: errdefs.ErrNotFound if it is not enrolled.
	Get(ctx context.Context, id string) (Device, error)
	// List returns the devices in id order, with their status.
	List(ctx context.Context) ([]Device, error)
	// Put writes d's record (labels, facts, credentials, revoked) if the
	// stored one is still at expectRev (0: creates it, errdefs.
	// ErrAlreadyExists if it exists). The status part of d is ignored: it
	// is the Ingester's. It returns the record as stored, with its new Rev.
	Put(ctx context.Context, d Device, expectRev uint64) (Device, error)
	// Delete removes device id, its status and its events if its record
	// is still at expectRev. Its generation high-water mark is kept, so a
	// device enrolled again under the same id never sees a generation
	// reissued.
	Delete(ctx context.Context, id string, expectRev uint64) error
}

// Ingester takes what devices publish. It is the hot path: one call per
// batch of messages gathered over a few milliseconds, one write to the
// store per call.
type Ingester interface {
	// Ingest stores a batch. Messages of devices that are not enrolled
	// (or revoked) are skipped and named in the result, not an error; an
	// error means nothing of the batch was stored.
	Ingest(ctx context.Context, b Batch) (IngestResult, error)
}

// Apps holds the app specs, each an ordered list of revisions of which one
// is current.
type Apps interface {
	// Get returns app name: errdefs.ErrNotFound if there is none.
	Get(ctx context.Context, name string) (App, error)
	// List returns the apps in name order.
	List(ctx context.Context) ([]App, error)
	// Apply stores spec as a new revision of its app and makes it current,
	// if the app is still at expectRev (0: a new app, errdefs.
	// ErrAlreadyExists if it exists). Revision numbers count from 1 and
	// are never reused, also after Delete.
	Apply(ctx context.Context, spec wire.App, by string, expectRev uint64) (App, error)
	// Put writes the app record's own fields (Current, Deleting) if it is
	// still at expectRev. Current must name a stored revision.
	Put(ctx context.Context, a App, expectRev uint64) (App, error)
	// Revisions returns the app's revisions, oldest first.
	Revisions(ctx context.Context, name string) ([]AppRevision, error)
	// Revision returns one revision: errdefs.ErrNotFound if absent.
	Revision(ctx context.Context, name string, rev uint64) (AppRevision, error)
	// Delete removes the app and its revisions if it is still at
	// expectRev.
	Delete(ctx context.Context, name string, expectRev uint64) error
}

// Rollouts holds rollout states as opaque documents (the rollout package
// defines them), one per id.
type Rollouts interface {
	Get(ctx context.Context, id string) (Blob, error)
	List(ctx context.Context) ([]Blob, error)
	// Put stores data as rollout id if it is still at expectRev (0:
	// creates it).
	Put(ctx context.Context, id string, data []byte, expectRev uint64) (Blob, error)
	Delete(ctx context.Context, id string, expectRev uint64) error
}

// JoinTokens holds enrollment tokens. The store only ever sees the
// secret's hash.
type JoinTokens interface {
	// Create stores t: errdefs.ErrAlreadyExists if its ID is taken.
	Create(ctx context.Context, t JoinToken) (JoinToken, error)
	Get(ctx context.Context, id string) (JoinToken, error)
	List(ctx context.Context) ([]JoinToken, error)
	// Consume spends one use of token id at now, atomically: check runs
	// on the stored token first (compare the secret's hash there) and
	// its error refuses the use. An expired token or one with no use left
	// is refused with errdefs.ErrFailedPrecondition; an unknown one with
	// errdefs.ErrNotFound. A token whose last use is spent is kept, with
	// UsesLeft 0, until Delete.
	Consume(ctx context.Context, id string, now time.Time, check func(JoinToken) error) (JoinToken, error)
	Delete(ctx context.Context, id string) error
}

// APITokens holds the API's bearer tokens, by the hash of their value.
type APITokens interface {
	// Create stores t: errdefs.ErrAlreadyExists if its Hash is taken.
	Create(ctx context.Context, t APIToken) (APIToken, error)
	// Get looks a token up by hash: errdefs.ErrNotFound if unknown.
	// A revoked token is returned with Revoked set; refusing it is the
	// caller's decision.
	Get(ctx context.Context, hash string) (APIToken, error)
	List(ctx context.Context) ([]APIToken, error)
	// Revoke marks the token revoked at at; revoking twice keeps the
	// first time.
	Revoke(ctx context.Context, hash string, at time.Time) (APIToken, error)
}

// Sessions holds the web console's sign-in sessions by the hash of their
// id: the id itself (the browser's cookie) is never stored. A session is
// kept until it is deleted or expires; an expired one is never returned.
type Sessions interface {
	// Create stores s: errdefs.ErrAlreadyExists if its Hash is taken,
	// errdefs.ErrInvalidArgument if it expires before it is created.
	Create(ctx context.Context, s Session) (Session, error)
	// Get returns the session stored under hash: errdefs.ErrNotFound if
	// there is none, or it has expired at now.
	Get(ctx context.Context, hash string, now time.Time) (Session, error)
	// Delete removes the session; an absent one is no error.
	Delete(ctx context.Context, hash string) error
}

// Session is a web console session: a browser signed in with an API
// token.
type Session struct {
	// Hash is the hex sha256 of the session's id.
	Hash string `json:"hash"`
	// TokenHash is the hash of the API token signed in with (checked
	// again at every request, so revoking the token ends the session).
	TokenHash string    `json:"tokenHash"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
}

// Events reads the events that Ingest stored.
type Events interface {
	// Feed returns up to limit events of every device with a Cursor
	// greater than after, oldest first (the console's feed: pass the last
	// Cursor seen). Old events are dropped past the retention (Options of
	// the implementation); a reader that fell behind just misses them.
	Feed(ctx context.Context, after uint64, limit int) ([]FeedEvent, error)
	// Device returns up to limit of device id's newest events, oldest
	// first.
	Device(ctx context.Context, id string, limit int) ([]FeedEvent, error)
}

// Audit is the append-only audit log (SECURITY.md F-12): it has no update
// and no delete. Entries are chained by hash, so an edit of the stored
// log shows in Verify.
type Audit interface {
	// Append stores e with the next sequence number and the chain hash.
	Append(ctx context.Context, e AuditEntry) (AuditEntry, error)
	// List returns up to limit entries with Seq > after, oldest first.
	List(ctx context.Context, after uint64, limit int) ([]AuditEntry, error)
	// Verify walks the whole log and checks the chain: errdefs.ErrDataLoss
	// naming the first entry that does not match.
	Verify(ctx context.Context) error
}

// Generations issues the generations of the desired documents.
type Generations interface {
	// Next returns a generation for device id strictly greater than any
	// this store has issued to it or seen it report, and records it
	// before returning: it is never issued again, also after a restart.
	// It is at least the store clock's Unix milliseconds, so that a store
	// restored from an older backup still issues generations above those
	// issued after the backup was taken (see doc.go).
	Next(ctx context.Context, id string) (uint64, error)
	// Last returns the highest generation issued to or reported by id,
	// 0 if none.
	Last(ctx context.Context, id string) (uint64, error)
}

// Device is an enrolled device: its record, written by enrollment and
// the operator, and its status, written by Ingest.
type Device struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
	// Facts are those sent at enrollment; Status.Report has the latest.
	Facts      wire.DeviceFacts `json:"facts"`
	EnrolledAt time.Time        `json:"enrolledAt"`
	// CertSerial is the serial number of the device's certificate, in hex.
	CertSerial string `json:"certSerial,omitempty"`
	// PasswordHash is the MQTT password fallback, hashed by the caller.
	PasswordHash []byte    `json:"passwordHash,omitempty"`
	Revoked      bool      `json:"revoked,omitempty"`
	RevokedAt    time.Time `json:"revokedAt,omitzero"`
	// Rev is the revision of the record (not of Status).
	Rev    uint64       `json:"rev"`
	Status DeviceStatus `json:"-"`
}

// DeviceStatus is what the device last said about itself.
type DeviceStatus struct {
	Report     *wire.Reported `json:"report,omitempty"`
	ReportedAt time.Time      `json:"reportedAt,omitzero"` // when the controller received it
	Presence   wire.Presence  `json:"presence,omitempty"`
	// LastSeen is when the controller last received anything from the
	// device.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// EventSeq is the highest event sequence number stored; EventGaps
	// counts the numbers skipped below it (events lost on the way),
	// EventDuplicates the events dropped as already stored.
	EventSeq        uint64 `json:"eventSeq,omitempty"`
	EventGaps       uint64 `json:"eventGaps,omitempty"`
	EventDuplicates uint64 `json:"eventDuplicates,omitempty"`
	// StaleReports counts reports dropped as older than the stored one.
	StaleReports uint64 `json:"staleReports,omitempty"`
	// EventsKept is the number of the device's events in the store.
	EventsKept uint64 `json:"eventsKept,omitempty"`
	// PresenceAt is when the presence message was received.
	PresenceAt time.Time `json:"presenceAt,omitzero"`
	// Impersonations counts the messages the device sent in another
	// device's name (payload deviceId not its own: SECURITY.md F-08),
	// dropped; ImpersonatedAs and ImpersonatedAt are the last one's claim
	// and time. A device with any is flagged.
	Impersonations uint64    `json:"impersonations,omitempty"`
	ImpersonatedAs string    `json:"impersonatedAs,omitempty"`
	ImpersonatedAt time.Time `json:"impersonatedAt,omitzero"`
}

// Batch is what devices published over a short while. Within a batch,
// messages of one device are applied in the order given.
type Batch struct {
	Reports  []Report
	Events   []Event
	Presence []Presence
}

// Report is a report received from Device at Received.
type Report struct {
	Device   string
	Received time.Time
	Report   wire.Reported
}

// Event is an event received from Device at Received.
type Event struct {
	Device   string
	Received time.Time
	Event    wire.Event
}

// Presence is a presence message received from Device at Received.
type Presence struct {
	Device   string
	Received time.Time
	Presence wire.Presence
}

// IngestResult counts what Ingest did.
type IngestResult struct {
	Reports         int // stored
	StaleReports    int // older than the stored one, dropped
	Events          int // stored
	DuplicateEvents int // sequence number already stored, dropped
	Gaps            uint64
	Presence        int
	// Refused counts messages whose payload names another device than
	// the one they came from (SECURITY.md F-08), dropped.
	Refused int
	// Unknown names the devices whose messages were skipped because they
	// are not enrolled or are revoked (each once).
	Unknown []string
}

// App is an app's record.
type App struct {
	Name string `json:"name"`
	// Current is the revision devices should run.
	Current uint64 `json:"current"`
	// Latest is the newest revision stored.
	Latest uint64 `json:"latest"`
	// Deleting says the app is being removed from every device; the
	// record goes once that rollout is done.
	Deleting bool `json:"deleting,omitempty"`
	// DeleteNow: remove it from every device at once, not through a
	// rollout.
	DeleteNow bool   `json:"deleteNow,omitempty"`
	Rev       uint64 `json:"rev"`
}

// AppRevision is one stored spec of an app.
type AppRevision struct {
	Revision uint64    `json:"revision"`
	Spec     wire.App  `json:"spec"`
	Created  time.Time `json:"created"`
	By       string    `json:"by"`
}

// Blob is an opaque document with its revision.
type Blob struct {
	ID   string `json:"id"`
	Data []byte `json:"data"`
	Rev  uint64 `json:"rev"`
}

// JoinToken is an enrollment token. The secret itself is never stored.
type JoinToken struct {
	ID         string            `json:"id"`
	SecretHash []byte            `json:"secretHash"`
	Labels     map[string]string `json:"labels,omitempty"`
	Created    time.Time         `json:"created"`
	Expires    time.Time         `json:"expires"`
	UsesLeft   int               `json:"usesLeft"`
	Rev        uint64            `json:"rev"`
}

// Role is what an API token may do.
type Role string

// Roles of API tokens.
const (
	RoleAdmin    Role = "admin"
	RoleReadOnly Role = "read-only"
)

// APIToken is an API bearer token, known by the hash of its value.
type APIToken struct {
	Hash      string    `json:"hash"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revokedAt,omitzero"`
	Rev       uint64    `json:"rev"`
}

// FeedEvent is a stored event.
type FeedEvent struct {
	Cursor   uint64     `json:"cursor"`
	Device   string     `json:"device"`
	Received time.Time  `json:"received"`
	Event    wire.Event `json:"event"`
}

// AuditEntry is one change made to the fleet.
type AuditEntry struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Who made it: a token's name, "controller" for its own decisions.
	Who string `json:"who"`
	// Action is what was done ("apply", "token create", "device rm"),
	// Target what to ("app thermo", "device gw-1").
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	// From is where the request came from (a remote address).
	From   string `json:"from,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Hash is sha256 over the previous entry's Hash and this entry's
	// other fields (AuditHash); the first entry chains from nothing.
	Hash []byte `json:"hash"`
}

// maxRetries bounds the read-modify-write loops of the Update helpers.
const maxRetries = 16

// UpdateDevice applies fn to device id and writes it back, again from a
// fresh read if another writer got there first. An error from fn is
// returned as is and nothing is written.
func UpdateDevice(ctx context.Context, s Devices, id string, fn func(*Device) error) (Device, error) {
	return retry(ctx, func() (Device, error) {
		d, err := s.Get(ctx, id)
		if err != nil {
			return Device{}, err
		}
		rev := d.Rev
		if err := fn(&d); err != nil {
			return Device{}, errFn{err}
		}
		return s.Put(ctx, d, rev)
	})
}

// UpdateApp applies fn to app name's record and writes it back, as
// UpdateDevice does.
func UpdateApp(ctx context.Context, s Apps, name string, fn func(*App) error) (App, error) {
	return retry(ctx, func() (App, error) {
		a, err := s.Get(ctx, name)
		if err != nil {
			return App{}, err
		}
		rev := a.Rev
		if err := fn(&a); err != nil {
			return App{}, errFn{err}
		}
		return s.Put(ctx, a, rev)
	})
}

// UpdateRollout applies fn to rollout id's document and writes the
// result back, as UpdateDevice does.
func UpdateRollout(ctx context.Context, s Rollouts, id string, fn func([]byte) ([]byte, error)) (Blob, error) {
	return retry(ctx, func() (Blob, error) {
		b, err := s.Get(ctx, id)
		if err != nil {
			return Blob{}, err
		}
		data, err := fn(b.Data)
		if err != nil {
			return Blob{}, errFn{err}
		}
		return s.Put(ctx, id, data, b.Rev)
	})
}

// errFn marks an error of the caller's function, which is not retried.
type errFn struct{ err error }

func (e errFn) Error() string { return e.err.Error() }
func (e errFn) Unwrap() error { return e.err }

func retry[T any](ctx context.Context, op func() (T, error)) (T, error) {
	var zero T
	var err error
	for range maxRetries {
		if cerr := ctx.Err(); cerr != nil {
			return zero, cerr
		}
		var v T
		v, err = op()
		var fe errFn
		if errors.As(err, &fe) {
			return zero, fe.err
		}
		if err == nil || !IsConflict(err) {
			return v, err
		}
	}
	return zero, err
}
