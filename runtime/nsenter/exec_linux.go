package nsenter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/initproc"
)

// Exec runs a command inside a running container: in the mount, pid, uts,
// ipc, net and cgroup namespaces of its init, with the workload's rlimits,
// user and groups, capabilities (bounding, effective, permitted),
// no_new_privs and seccomp profile, in its cgroup when Place is given. It
// returns the command's exit status (128+N when killed by signal N) and
// its stdout and stderr interleaved, capped.
//
// At ctx's end the command's process group is killed and Exec returns -1
// with an error wrapping ctx.Err(). Whatever is left of the group when the
// command exits is killed as well, so a health check leaves nothing behind.
// A command that cannot be started (not found, bad user, bad cwd) is an
// error, not an exit status.
func Exec(ctx context.Context, o ExecOptions) (int, []byte, error) {
	if len(o.Args) == 0 || o.Args[0] == "" {
		return -1, nil, fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
	}
	if o.Process == nil {
		return -1, nil, fmt.Errorf("exec %s: no container process: %w", o.Args[0], errdefs.ErrInvalidArgument)
	}
	code, out, err := execIn(ctx, o)
	if err != nil {
		return code, out, fmt.Errorf("exec %s in pid %d: %w", o.Args[0], o.Pid, err)
	}
	return code, out, nil
}

func execIn(ctx context.Context, o ExecOptions) (int, []byte, error) {
	if err := ctx.Err(); err != nil {
		return -1, nil, err
	}
	pidfd, err := openPidfd(o.Pid, o.PidStart)
	if err != nil {
		return -1, nil, err
	}
	defer unix.Close(pidfd)

	p := *o.Process
	p.Args = o.Args
	p.Terminal = false
	p.Env = mergeEnv(o.Process.Env, o.Env)
	if o.Cwd != "" {
		p.Cwd = o.Cwd
	}
	cfg := &initproc.ExecConfig{Process: &p, User: o.User, Seccomp: o.Seccomp}

	r, w, err := os.Pipe()
	if err != nil {
		return -1, nil, fmt.Errorf("output pipe: %w", err)
	}
	defer r.Close()
	proc, err := initproc.StartExec(ctx, cfg, pidfd, initproc.Stdio{Stdout: w, Stderr: w}, o.Place)
	w.Close()
	if err != nil {
		return -1, nil, err
	}
	limit := o.MaxOutput
	if limit <= 0 {
		limit = DefaultMaxOutput
	}
	out := &capped{max: limit}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, r)
	}()

	exited := make(chan struct{})
	var st *os.ProcessState
	var werr error
	go func() {
		defer close(exited)
		st, werr = proc.Wait()
	}()
	var ctxErr error
	select {
	case <-exited:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		_ = unix.Kill(-proc.Pid, unix.SIGKILL)
		_ = proc.Kill()
		<-exited
	}
	// The group's pid stays allocated while any member lives, so this
	// reaches only what the command left behind.
	_ = unix.Kill(-proc.Pid, unix.SIGKILL)
	// The copier reaches EOF once every writer is gone. A leftover that left
	// the group may hold the pipe open: then stop reading after a while
	// rather than wait for it. (A deadline set right away would also cut
	// output still in the pipe when the copier is slow to be scheduled.)
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
		_ = r.SetReadDeadline(time.Now())
		<-copied
	}
	if ctxErr != nil {
		return -1, out.Bytes(), ctxErr
	}
	if werr != nil {
		return -1, out.Bytes(), fmt.Errorf("wait: %w", werr)
	}
	return exitStatus(st), out.Bytes(), nil
}

func exitStatus(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// mergeEnv returns base with extra's entries added, replacing same names.
func mergeEnv(base, extra []string) []string {
	env := make([]string, 0, len(base)+len(extra))
	idx := make(map[string]int, len(base)+len(extra))
	for _, kv := range append(base[:len(base):len(base)], extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			env[i] = kv
			continue
		}
		idx[k] = len(env)
		env = append(env, kv)
	}
	return env
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) Bytes() []byte { return c.buf.Bytes() }
