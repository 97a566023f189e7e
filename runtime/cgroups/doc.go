// Package cgroups puts containers under resource limits on cgroup v1 and
// cgroup v2 hosts, through github.com/containerd/cgroups/v3.
//
// The limits are computed as data first (Values, pure and golden-testable)
// and then written by Create. A hybrid host (v1 hierarchies plus an empty
// cgroup2 mount) is driven as v1; nothing is written to its cgroup2 mount.
//
// Swap is always off for a container with a memory limit: on v1
// memory.memsw.limit_in_bytes equals the limit (when swap accounting exists)
// and memory.swappiness is 0; on v2 memory.swap.max is 0.
//
// A controller missing on the host is not applicable and skipped, except
// memory, cpu and pids when a limit for them is asked: Create then fails
// with an error wrapping errdefs.ErrNotImplemented that names the controller.
// Load of a cgroup that does not exist wraps errdefs.ErrNotFound.
//
// On v2 Create enables in the ancestors' cgroup.subtree_control only the
// controllers the container's limits use (and pids, for Stats and the
// limit written at exec); a memory limit also sets memory.oom.group, so an
// OOM kill takes the whole container (v1 has no such switch: there the
// kernel kills one process). OOM kills are read from memory.events
// (oom_kill) on v2 and memory.oom_control on v1. Device rules on v2 are a
// BPF_PROG_TYPE_CGROUP_DEVICE program, compiled by containerd's
// cgroup2.DeviceFilter; Create and Update attach the new program and then
// detach the old ones (containerd's Manager.Update would only add).
//
// Delete removes the parent directory ("/tender") too once it is empty;
// a Create that races with that removal makes the parent again.
//
// A container's pids limit is not written by Create: SplitExec sets it
// apart and Update writes it right before the workload execs, so that the
// runtime's own set-up (a Go init and its threads) never runs under it.
package cgroups
