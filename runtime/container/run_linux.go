package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/initproc"
	"github.com/tender-edge/tender/runtime/logs"
	"github.com/tender-edge/tender/runtime/network"
)

// IO are destinations for the container's output besides its log files
// (the terminal of a foreground run), and its standard input.
type IO struct {
	Stdin          *os.File // nil: /dev/null
	Stdout, Stderr io.Writer
}

// monitor is a container started by this process (the root's monitor),
// which is its parent and must Wait for it.
type monitor struct {
	r      *Runtime
	c      *Container
	proc   *os.Process
	cg     *cgroups.Cgroup
	logw   *logs.Writer
	copies sync.WaitGroup
	pipes  []*os.File
	net    *network.Manager // set once an attach was tried
	ip     string
	tr     *trace.Recorder
}

// startHere starts a created or exited container as a child of this
// process (the monitor) and returns once its workload has been exec'd. A
// start that fails is recorded, or the container removed if AutoRemove.
func (r *Runtime) startHere(ctx context.Context, ref string, cio IO) (*monitor, error) {
	c, err := r.Get(ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == Running {
		return nil, fmt.Errorf("start %s: %w", c.Name, ErrRunning)
	}
	m := &monitor{r: r, c: c, tr: trace.From(ctx)}
	m.tr.Mark("state-open")
	if err := m.start(cio); err != nil {
		m.release()
		c.State = State{Status: Exited, ExitCode: 125, Error: err.Error(), FinishedAt: time.Now().UTC()}
		serr := r.saveState(c)
		if c.AutoRemove {
			serr = r.remove(c)
		}
		if serr != nil {
			err = fmt.Errorf("%w; recording the failure also failed: %v", err, serr)
		}
		return nil, fmt.Errorf("start container %s: %w", c.Name, err)
	}
	return m, nil
}

func (m *monitor) start(cio IO) error {
	c := m.c
	// A cgroup left from a crash of an earlier run is taken down first.
	if old, err := cgroups.Load(c.Cgroup); err == nil {
		_ = old.Kill()
		_ = old.Delete()
	}
	atCreate, atExec := cgroups.SplitExec(c.Spec.Linux.Resources)
	cg, err := cgroups.Create(c.Cgroup, atCreate)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	m.cg = cg
	m.tr.Mark("cgroup-setup")
	lw, err := logs.Open(m.r.LogDir(c), "container", logs.Options{})
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	m.logw = lw
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	m.pipes = []*os.File{outR, errR}
	stdio := initproc.Stdio{Stdin: cio.Stdin, Stdout: outW, Stderr: errW}
	cfg := &initproc.Config{Spec: c.Spec, RootMounts: c.RootMounts, User: c.User, Seccomp: c.Seccomp, NoPivot: c.NoPivot}
	// On v2 the init is cloned straight into its cgroup; on v1, or where
	// the kernel refuses that, Join moves it there.
	hooks := initproc.Hooks{Join: cg.Add, Trace: m.tr}
	dir, err := cg.OpenDir()
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	if dir != nil {
		defer dir.Close()
		hooks.Cgroup = dir
	}
	if c.Net != nil {
		// The init waits in its new network namespace until Place has
		// run: its network is up before its root is even set up.
		nm, err := network.Open(m.r.top)
		if err != nil {
			return err
		}
		hooks.Place = func(pid int) error {
			m.net = nm
			ep, err := nm.Attach(pid, m.r.endpoint(c))
			if err != nil {
				return err
			}
			m.ip = ep.IP.String()
			return nil
		}
	}
	if atExec != nil {
		hooks.BeforeExec = func(int) error { return cg.Update(atExec) }
	}
	m.tr.Mark("logs-open")
	proc, err := initproc.StartWith(cfg, stdio, hooks)
	outW.Close()
	errW.Close()
	if hooks.Cgroup != nil {
		if rerr := initproc.IntoCgroupRefused(); rerr != nil {
			intoCgroupSaid.Do(func() {
				m.r.log.Info().Err(rerr).Msg("cgroup v2: the kernel refuses to clone an init into its cgroup; inits are moved there after they start")
			})
		}
	}
	if err != nil {
		return err
	}
	m.proc = proc
	m.copy(outR, lw.Stream("stdout"), cio.Stdout)
	m.copy(errR, lw.Stream("stderr"), cio.Stderr)
	c.State = State{
		Status: Running, Pid: proc.Pid, PidStart: procStart(proc.Pid),
		MonitorPid: os.Getpid(), MonitorStart: procStart(os.Getpid()), StartedAt: time.Now().UTC(), IP: m.ip,
	}
	if err := m.r.saveState(c); err != nil {
		// The workload runs; say so, but do not leave it unsupervised.
		m.r.log.Error().Err(err).Str("container", c.Name).Msg("saving running state")
	}
	m.tr.Mark("state-save")
	return nil
}

// intoCgroupSaid logs the kernel's refusal of CLONE_INTO_CGROUP once per
// process (initproc remembers it and does not ask again).
var intoCgroupSaid sync.Once

func (m *monitor) copy(r *os.File, log io.Writer, extra io.Writer) {
	w := log
	if extra != nil {
		// extra must not fail the log: it is a tolerant writer.
		w = io.MultiWriter(log, extra)
	}
	m.copies.Add(1)
	go func() {
		defer m.copies.Done()
		// One monitor copies for every container: a small buffer each
		// (io.Copy's is 32 KiB), and r without its WriterTo, so that
		// CopyBuffer uses it.
		_, _ = io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, copyBuffer))
	}()
}

// copyBuffer is the buffer of one output stream's copier.
const copyBuffer = 4 << 10

// waitProc waits for the workload's init to exit and reaps it. It blocks
// no thread: the wait is a pidfd in the Go poller (the monitor watches
// many containers; os.Process.Wait holds a thread in waitid for each).
func waitProc(p *os.Process) (syscall.WaitStatus, error) {
	defer p.Release()
	fd, err := unix.PidfdOpen(p.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		// Before Linux 5.10: a thread waits.
		ps, err := p.Wait()
		if err != nil {
			return 0, err
		}
		return ps.Sys().(syscall.WaitStatus), nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ws unix.WaitStatus
	var werr error
	// Read calls the function again each time the pidfd is readable,
	// which it is once the process has exited.
	err = rc.Read(func(uintptr) bool {
		var pid int
		for {
			pid, werr = unix.Wait4(p.Pid, &ws, unix.WNOHANG, nil)
			if werr != unix.EINTR {
				break
			}
		}
		return werr != nil || pid == p.Pid
	})
	if err == nil {
		err = werr
	}
	return syscall.WaitStatus(ws), err
}

// Wait blocks until the workload exits, records how it ended (the exit
// code, 128+N for a signal, OOMKilled from the cgroup's OOM counter),
// removes the cgroup, and deletes the container if it was created with
// AutoRemove.
func (m *monitor) Wait() (State, error) {
	m.tr.Skip()
	ws, werr := waitProc(m.proc)
	m.waitCopies()
	m.tr.Mark("wait")
	c := m.c
	st := State{Status: Exited, FinishedAt: time.Now().UTC(), StartedAt: c.State.StartedAt}
	if werr != nil {
		st.ExitCode, st.Error = -1, werr.Error()
	} else if ws.Signaled() {
		st.ExitCode = 128 + int(ws.Signal())
	} else {
		st.ExitCode = ws.ExitStatus()
	}
	if n, err := m.cg.OOMKills(); err == nil && n > 0 && st.ExitCode != 0 {
		st.OOMKilled = true
	}
	m.release()
	c.State = st
	var err error
	if c.AutoRemove {
		err = m.r.remove(c)
	} else {
		err = m.r.saveState(c)
	}
	m.tr.Mark("cleanup")
	return st, err
}

// waitCopies lets the output copiers drain. Every writer of the pipes was
// in the container's pid namespace, which died with its init; the bound
// only guards against a descriptor passed out of it.
func (m *monitor) waitCopies() {
	done := make(chan struct{})
	go func() { m.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		for _, p := range m.pipes {
			p.Close()
		}
		<-done
	}
}

func (m *monitor) release() {
	if m.net != nil {
		if err := m.net.Detach(m.c.ID); err != nil {
			m.r.log.Warn().Err(err).Str("container", m.c.Name).Msg("detaching from the bridge network")
		}
	}
	for _, p := range m.pipes {
		p.Close()
	}
	if m.logw != nil {
		m.logw.Close()
	}
	if m.cg != nil {
		// Usually the pid namespace died with its init and took every
		// process with it; the freeze-and-kill is for the rest.
		if procs, err := m.cg.Procs(); err != nil || len(procs) > 0 {
			_ = m.cg.Kill()
		}
		if err := m.cg.Delete(); err != nil {
			m.r.log.Warn().Err(err).Str("container", m.c.Name).Msg("removing cgroup")
		}
	}
}

// Stop asks the container to end with SIGTERM and kills it after grace
// (the container's StopGrace when grace < 0). It returns once the
// container has exited and its monitor has recorded it.
func (r *Runtime) Stop(ref string, grace time.Duration) error {
	c, err := r.Get(ref)
	if err != nil {
		return err
	}
	if c.State.Status != Running {
		return nil
	}
	if grace < 0 {
		grace = c.StopGrace
	}
	if err := signalAndWait(c.State.Pid, c.State.PidStart, unix.SIGTERM, grace); err != nil {
		if err := signalAndWait(c.State.Pid, c.State.PidStart, unix.SIGKILL, 10*time.Second); err != nil {
			return fmt.Errorf("stop %s: %w", c.Name, err)
		}
	}
	return r.awaitExited(c)
}

// Kill sends sig to the container's workload.
func (r *Runtime) Kill(ref string, sig unix.Signal) error {
	c, err := r.Get(ref)
	if err != nil {
		return err
	}
	if c.State.Status != Running {
		return fmt.Errorf("kill %s: %w", c.Name, ErrNotRunning)
	}
	fd, err := pidfdFor(c.State.Pid, c.State.PidStart)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

var errTimeout = errors.New("timed out")

// signalAndWait signals the process (through a pidfd, so a reused pid is
// never hit) and waits up to d for it to exit.
func signalAndWait(pid int, start uint64, sig unix.Signal, d time.Duration) error {
	fd, err := pidfdFor(pid, start)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	deadline := time.Now().Add(d)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms < 0 {
			return errTimeout
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
}

func pidfdFor(pid int, start uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, ErrNotRunning
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd %d: %w", pid, err)
	}
	// Checked after the open: the pidfd now pins the process we verified.
	if !alive(pid, start) {
		unix.Close(fd)
		return -1, ErrNotRunning
	}
	return fd, nil
}

// awaitExited waits for the container's monitor to record its exit; if the
// monitor is gone (killed), it cleans up itself.
func (r *Runtime) awaitExited(c *Container) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cur, err := r.load(c.ID)
		if errors.Is(err, os.ErrNotExist) {
			return nil // removed by an AutoRemove monitor
		}
		if err != nil {
			return err
		}
		if cur.State.Status != Running {
			return nil
		}
		if !alive(cur.State.MonitorPid, cur.State.MonitorStart) {
			return r.reap(cur)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("stop %s: its monitor did not record the exit in time", c.Name)
}

// reap cleans up after a container whose monitor is gone.
func (r *Runtime) reap(c *Container) error {
	if cg, err := cgroups.Load(c.Cgroup); err == nil {
		_ = cg.Kill()
		if n, err := cg.OOMKills(); err == nil && n > 0 {
			c.State.OOMKilled = true
		}
		_ = cg.Delete()
	}
	r.detach(c)
	c.State.Status = Exited
	c.State.IP = ""
	c.State.FinishedAt = time.Now().UTC()
	if c.State.ExitCode == 0 {
		c.State.ExitCode = 137
	}
	if c.AutoRemove {
		return r.remove(c)
	}
	return r.saveState(c)
}

// Delete removes a container. A running one is refused unless force, which
// kills it first.
func (r *Runtime) Delete(ref string, force bool) error {
	c, err := r.Get(ref)
	if err != nil {
		return err
	}
	if c.State.Status == Running {
		if !force {
			return fmt.Errorf("remove %s: stop it first or force removal: %w", c.Name, ErrRunning)
		}
		if err := signalAndWait(c.State.Pid, c.State.PidStart, unix.SIGKILL, 10*time.Second); err != nil {
			return fmt.Errorf("remove %s: %w", c.Name, err)
		}
		if err := r.awaitExited(c); err != nil {
			return err
		}
	}
	return r.remove(c)
}

// endpoint is c's attachment as runtime/network wants it.
func (r *Runtime) endpoint(c *Container) network.Endpoint {
	return network.Endpoint{ID: c.ID, Name: c.Name, Aliases: c.Net.Aliases, Groups: c.Net.Groups,
		Ports: c.Net.Ports, Dir: r.Dir(c)}
}

// detach frees what a bridged container held on the network, when its
// monitor could not (it is gone).
func (r *Runtime) detach(c *Container) {
	if c.Net == nil {
		return
	}
	nm, err := network.Open(r.top)
	if err == nil {
		err = nm.Detach(c.ID)
	}
	if err != nil {
		r.log.Warn().Err(err).Str("container", c.Name).Msg("detaching from the bridge network")
	}
}

func (r *Runtime) remove(c *Container) error {
	r.detach(c)
	if cg, err := cgroups.Load(c.Cgroup); err == nil {
		_ = cg.Kill()
		_ = cg.Delete()
	}
	if err := os.RemoveAll(r.Dir(c)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove container %s: %w", c.Name, err)
	}
	return nil
}

// Stats reads a running container's resource use from its cgroup.
func (r *Runtime) Stats(c *Container) (cgroups.Stats, error) {
	if c.State.Status != Running {
		return cgroups.Stats{}, fmt.Errorf("stats %s: %w", c.Name, ErrNotRunning)
	}
	cg, err := cgroups.Load(c.Cgroup)
	if err != nil {
		return cgroups.Stats{}, fmt.Errorf("stats %s: %w", c.Name, err)
	}
	return cg.Stats()
}
