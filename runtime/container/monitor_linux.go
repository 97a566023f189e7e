package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
)

// MonitorArg is os.Args[1] of the agent binary re-executed as the monitor
// of an agent root ("tender-agent __tender_monitor__ ROOT"): one
// long-lived process, the parent of every container of the root, that
// records how each ends, removes AutoRemove ones and copies their output
// to their logs. It outlives whoever started it (a CLI, or an agent being
// restarted or upgraded); it is started on demand and exits once it has
// had no container for monitorLinger.
const MonitorArg = "__tender_monitor__"

// MonitorProtocol is the version of the monitor's socket protocol. Every
// request carries it; a monitor of another version refuses the request
// (the JSON error reply below is the same in every version), and exits
// first when it watches no container, so that the caller starts one of its
// own version.
const MonitorProtocol = 1

// Files of the monitor, in ROOT.
const (
	monitorSock      = "monitor.sock"       // 0600; requests from uid 0 only
	monitorLockFile  = "monitor.lock"       // held by the running monitor; its pid
	monitorStartLock = "monitor.start.lock" // held while finding or starting one
)

// monitorRequest asks the monitor to start container ID. It is one line of
// JSON, sent in one message with the descriptors it announces
// (SCM_RIGHTS), in this order: stdout, stderr, stdin.
type monitorRequest struct {
	V      int    `json:"v"`
	ID     string `json:"id"`
	Stdout bool   `json:"stdout,omitempty"`
	Stderr bool   `json:"stderr,omitempty"`
	Stdin  bool   `json:"stdin,omitempty"`
	// Attach keeps the connection until the container has exited and
	// been recorded: the monitor then sends its final State.
	Attach bool `json:"attach,omitempty"`
	Trace  bool `json:"trace,omitempty"`
}

// The monitor's replies on the connection: trace lines when tracing, then
// okLine once the workload runs, or a reportedError as JSON instead, then
// EOF. An attached start then gets the last trace lines and the final
// State as JSON when the container has exited and been recorded.
const okLine = "ok\n"

// reportedError is a start failure as the monitor reports it: its text and
// whether it was the user's input (errdefs.ErrInvalidArgument). Version is
// the monitor's protocol; Retry says it has exited for a caller of another
// version, which starts a new monitor.
type reportedError struct {
	Msg     string `json:"error"`
	Invalid bool   `json:"invalid,omitempty"`
	Version int    `json:"version,omitempty"`
	Retry   bool   `json:"retry,omitempty"`
}

func (e *reportedError) Error() string { return e.Msg }

func (e *reportedError) Unwrap() error {
	if e.Invalid {
		return errdefs.ErrInvalidArgument
	}
	return nil
}

// errMonitorGone is a connection that ended before any reply: the monitor
// was exiting (idle, or for a caller of another version) and never read
// the request, which is sent again to a new one.
var errMonitorGone = errors.New("the container monitor closed the connection before replying")

// StartDetached starts the container under the root's monitor and returns
// once the workload runs (or with the error that stopped it).
func (r *Runtime) StartDetached(ref string) (*Container, error) {
	return r.StartDetachedContext(context.Background(), ref)
}

// StartDetachedContext is StartDetached; a trace.Recorder in ctx gets the
// start's phases (the monitor's and the init's) when tracing is on.
func (r *Runtime) StartDetachedContext(ctx context.Context, ref string) (*Container, error) {
	c, err := r.Get(ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == Running {
		return nil, fmt.Errorf("start %s: %w", c.Name, ErrRunning)
	}
	s, err := r.startMonitored(c, nil, trace.From(ctx))
	if err != nil {
		return nil, err
	}
	s.conn.Close()
	return r.Get(c.ID)
}

// Start starts the container under the root's monitor, attached to cio:
// the monitor copies the container's output to cio's writers (as well as
// to its logs) and cio.Stdin is the workload's. It returns once the
// workload runs. The monitor, not the caller, records the exit and removes
// an AutoRemove container: a caller that dies (a CLI whose stdout pipe
// closed, or that was killed) changes nothing for the container. ctx
// bounds the start only.
func (r *Runtime) Start(ctx context.Context, ref string, cio IO) (*Monitor, error) {
	c, err := r.Get(ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == Running {
		return nil, fmt.Errorf("start %s: %w", c.Name, ErrRunning)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Name, err)
	}
	tr := trace.From(ctx)
	s, err := r.startMonitored(c, &cio, tr)
	if err != nil {
		return nil, err
	}
	cur, err := r.Get(c.ID)
	if err != nil {
		// Removed already: an AutoRemove container that ended at once.
		cur = c
	}
	return &Monitor{c: cur, conn: s.conn, report: s.report, copies: s.copies, tr: tr}, nil
}

// started is a start the monitor has acknowledged: its connection, read
// through report, and the local copiers of output for writers that are
// not files.
type started struct {
	conn   *net.UnixConn
	report *bufio.Reader
	copies *sync.WaitGroup
}

// startMonitored asks the root's monitor (started if there is none) to
// start c, attached to cio when not nil, and reads its first reply. A
// tracing monitor sends its phases so far before it; they go to tr.
func (r *Runtime) startMonitored(c *Container, cio *IO, tr *trace.Recorder) (*started, error) {
	req := monitorRequest{V: MonitorProtocol, ID: c.ID, Attach: cio != nil, Trace: tr != nil}
	var files []*os.File // sent, then closed here
	copies := &sync.WaitGroup{}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if cio != nil {
		for i, w := range []io.Writer{cio.Stdout, cio.Stderr} {
			if w == nil {
				continue
			}
			f, err := r.fileFor(w, copies)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("start %s: %w", c.Name, err)
			}
			files = append(files, f)
			if i == 0 {
				req.Stdout = true
			} else {
				req.Stderr = true
			}
		}
		if cio.Stdin != nil {
			f, err := dupFile(cio.Stdin)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("start %s: %w", c.Name, err)
			}
			files = append(files, f)
			req.Stdin = true
		}
	}
	defer closeAll()
	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	line = append(line, '\n')
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	// A monitor that was exiting as we connected never read the request:
	// it is sent again, to the new monitor this starts.
	for attempt := 0; ; attempt++ {
		conn, err := r.dialMonitor()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", c.Name, err)
		}
		tr.Mark("monitor-connect")
		if _, _, err := conn.WriteMsgUnix(line, unix.UnixRights(fds...), nil); err != nil {
			conn.Close()
			if attempt < 3 {
				continue
			}
			return nil, fmt.Errorf("start %s: send to the container monitor: %w", c.Name, err)
		}
		br, err := readFirstReply(conn, tr)
		if err == nil {
			return &started{conn: conn, report: br, copies: copies}, nil
		}
		conn.Close()
		var re *reportedError
		if attempt < 3 && (errors.Is(err, errMonitorGone) || errors.As(err, &re) && re.Retry) {
			continue
		}
		return nil, err
	}
}

// readFirstReply reads the monitor's trace lines and its first reply.
func readFirstReply(conn *net.UnixConn, tr *trace.Recorder) (*bufio.Reader, error) {
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	for p, ok := trace.Decode(line); ok && err == nil; p, ok = trace.Decode(line) {
		tr.Add(p)
		line, err = br.ReadString('\n')
	}
	if line == okLine {
		return br, nil
	}
	rest, _ := io.ReadAll(io.LimitReader(br, 64<<10))
	msg := strings.TrimSpace(line + string(rest))
	if msg == "" {
		return nil, errMonitorGone
	}
	var re *reportedError
	if json.Unmarshal([]byte(msg), &re) == nil && re != nil && re.Msg != "" {
		return nil, re
	}
	return nil, errors.New(msg)
}

// fileFor is a descriptor to pass for w: w's own when it is a file,
// otherwise the write end of a pipe copied to w here (into copies).
func (r *Runtime) fileFor(w io.Writer, copies *sync.WaitGroup) (*os.File, error) {
	if f, ok := w.(*os.File); ok {
		return dupFile(f)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	copies.Add(1)
	go func() {
		defer copies.Done()
		_, _ = io.Copy(w, rd)
		rd.Close()
	}()
	return wr, nil
}

// dupFile is a descriptor of f's own that closing does not close f.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// dialMonitor connects to the root's monitor, starting it when none
// answers. Finding and starting hold monitorStartLock: of two racing
// starters the second finds the monitor the first started.
func (r *Runtime) dialMonitor() (*net.UnixConn, error) {
	sock := filepath.Join(r.top, monitorSock)
	if len(sock) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("container monitor socket %s: the path is longer than a unix socket's %d bytes: use a shorter --root: %w",
			sock, len(unix.RawSockaddrUnix{}.Path)-1, errdefs.ErrInvalidArgument)
	}
	if conn, err := dialUnix(sock); err == nil {
		return conn, nil
	}
	f, err := os.OpenFile(filepath.Join(r.top, monitorStartLock), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container monitor: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("container monitor: lock %s: %w", f.Name(), err)
	}
	if conn, err := dialUnix(sock); err == nil {
		return conn, nil
	}
	if err := r.spawnMonitor(); err != nil {
		return nil, err
	}
	conn, err := dialUnix(sock)
	if err != nil {
		return nil, fmt.Errorf("container monitor: started, but %w", err)
	}
	return conn, nil
}

func dialUnix(path string) (*net.UnixConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}

// spawnMonitor starts the root's monitor and returns once it listens. It
// runs in a session of its own, from /: it outlives this process and its
// terminal. This process reaps it if it outlives it (the daemon).
func (r *Runtime) spawnMonitor() error {
	self, err := os.Executable()
	if monitorExe != "" {
		self, err = monitorExe, nil
	}
	if err != nil {
		return fmt.Errorf("start the container monitor: %w", err)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the container monitor: %w", err)
	}
	defer rd.Close()
	cmd := exec.Command(self, MonitorArg, r.top)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	// It mostly waits: one P and a small heap keep its memory low.
	cmd.Env = append(monitorEnv(os.Environ()), "GOMAXPROCS=1", "GOGC=50")
	if err := cmd.Start(); err != nil {
		wr.Close()
		return fmt.Errorf("start the container monitor: %w", err)
	}
	wr.Close()
	go func() { _ = cmd.Wait() }()
	b, _ := io.ReadAll(io.LimitReader(rd, 64<<10))
	if string(b) == okLine {
		return nil
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = "it exited before it listened"
	}
	return fmt.Errorf("start the container monitor of %s: %s", r.top, msg)
}

// monitorExe, when set, is the binary started as the monitor instead of
// this one (tests: an upgrade replaces it).
var monitorExe string

// monitorEnv is env without what is meant for the process that starts
// the monitor only: the trace variables (a monitor traces the starts that
// ask for it) and systemd's notification and watchdog (the daemon's).
func monitorEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case trace.EnvOn, trace.EnvT0, "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Monitor is a container started attached to its caller's output, through
// the root's monitor.
type Monitor struct {
	c      *Container
	conn   *net.UnixConn
	report *bufio.Reader
	copies *sync.WaitGroup
	tr     *trace.Recorder
}

// Container is the container being watched, as it was once started.
func (m *Monitor) Container() *Container { return m.c }

// Pid is the workload's host pid.
func (m *Monitor) Pid() int { return m.c.State.Pid }

// Signal sends sig to the workload (through a pidfd: a reused pid is never
// hit).
func (m *Monitor) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a signal number", sig)
	}
	fd, err := pidfdFor(m.c.State.Pid, m.c.State.PidStart)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.PidfdSendSignal(fd, s, nil, 0)
}

// Wait blocks until the monitor has recorded the workload's exit (the exit
// code, 128+N for a signal, OOMKilled) and cleaned up after it, and returns
// that record.
func (m *Monitor) Wait() (State, error) {
	b, rerr := io.ReadAll(m.report)
	m.conn.Close()
	// The monitor closed its copies of the output descriptors before it
	// sent the record: what it wrote has been read.
	m.copies.Wait()
	// A tracing monitor sends its last phases before the record.
	for {
		line, rest, ok := strings.Cut(string(b), "\n")
		p, isTrace := trace.Decode(line)
		if !ok || !isTrace {
			break
		}
		m.tr.Add(p)
		b = []byte(rest)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil || st.Status != Exited {
		if rerr == nil {
			rerr = io.ErrUnexpectedEOF
		}
		return State{}, fmt.Errorf("wait for %s: its monitor ended without a record: %w", m.c.Name, rerr)
	}
	m.c.State = st
	return st, nil
}
