// Package container is the parent side of Tender's runtime: it creates
// containers from images, starts them through initproc under their cgroup,
// all of a root's as children of one monitor (the agent binary re-executed
// once, "__tender_monitor__ ROOT", asked over ROOT/monitor.sock; it records
// each exit and removes AutoRemove containers, whether whoever started
// them, a foreground CLI or the agent, is still there or not), stops them,
// and keeps their
// state on disk so any later process, an upgraded agent included, can find
// them again. A container is written in a hidden directory and renamed into
// place, so a listing never sees half of one.
//
// On disk, under ROOT/containers/ID:
//
//	config.json   what the container is (immutable after create)
//	state.json    what it is doing (rewritten atomically by its monitor)
//	upper/ work/  the overlay's writable layer
//	rootfs/       the mount point of its root (mounted only in its mount namespace)
//	logs/         stdout and stderr, CRI format, size-capped and rotated
package container

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tender-edge/tender/runtime/initproc"
	"github.com/tender-edge/tender/runtime/network"
)

// Errors wrap the categories of github.com/containerd/errdefs (an unknown
// name is errdefs.ErrNotFound, a name in use errdefs.ErrConflict, bad
// options errdefs.ErrInvalidArgument). These two are finer, for callers
// that branch on them.
var (
	ErrNotRunning = fmt.Errorf("container is not running: %w", errdefs.ErrFailedPrecondition)
	ErrRunning    = fmt.Errorf("container is running: %w", errdefs.ErrFailedPrecondition)
)

// Status is where a container is in its life: Created, then Running, then
// Exited (and Running again when restarted).
type Status string

// The statuses; Statuses lists them all.
const (
	Created Status = "created"
	Running Status = "running"
	Exited  Status = "exited"
)

// Statuses are the valid values of Status.
var Statuses = []Status{Created, Running, Exited}

// Valid reports whether s is one of Statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Config is what a container is; written once at create.
type Config struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Image      string           `json:"image"`   // reference as the user gave it
	ImageID    string           `json:"imageId"` // config digest
	Created    time.Time        `json:"created"`
	AutoRemove bool             `json:"autoRemove,omitempty"`
	Spec       *specs.Spec      `json:"spec"`
	RootMounts []initproc.Mount `json:"rootMounts"`
	User       string           `json:"user,omitempty"`
	Seccomp    string           `json:"seccomp"`
	Cgroup     string           `json:"cgroup"`
	StopGrace  time.Duration    `json:"stopGrace"`
	// NoPivot enters the root without pivot_root (initproc.Config.NoPivot);
	// without it the fallback is still taken where pivot_root cannot work.
	NoPivot bool `json:"noPivot,omitempty"`
	// Labels are the creator's notes (the agent keeps the app spec of its
	// containers here, to rebuild its state from them if it is lost).
	Labels map[string]string `json:"labels,omitempty"`
	// Net is set for a container on the bridge network.
	Net *NetOptions `json:"net,omitempty"`
}

// NetOptions attach a container to the bridge network (runtime/network).
type NetOptions struct {
	// Groups are the networks it joins (an app's own, shared ones): it
	// reaches the containers of its groups by name and address, others
	// only through their published ports. Default: "default".
	Groups  []string       `json:"groups,omitempty"`
	Aliases []string       `json:"aliases,omitempty"`
	Ports   []network.Port `json:"ports,omitempty"`
}

// State is what a container is doing.
type State struct {
	Status     Status `json:"status"`
	Pid        int    `json:"pid,omitempty"`
	PidStart   uint64 `json:"pidStart,omitempty"` // /proc/PID/stat starttime: tells a reused pid apart
	MonitorPid int    `json:"monitorPid,omitempty"`
	// MonitorStart is the monitor's starttime, as PidStart.
	MonitorStart uint64    `json:"monitorStart,omitempty"`
	StartedAt    time.Time `json:"startedAt,omitempty"`
	FinishedAt   time.Time `json:"finishedAt,omitempty"`
	ExitCode     int       `json:"exitCode"`
	OOMKilled    bool      `json:"oomKilled"`
	Error        string    `json:"error,omitempty"`
	// IP is a bridged container's address while it runs.
	IP string `json:"ip,omitempty"`
}

// Container is a container's config and last known state.
type Container struct {
	Config
	State State `json:"state"`
}

// ShortID is the 12-character form of an ID, as docker prints it.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
