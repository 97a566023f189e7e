package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
)

// ShimArg is os.Args[1] of a re-executed monitor ("shim"): a small process
// that is the parent of one container, records how it ends, removes it when
// it was created with AutoRemove, and outlives whoever started it (the CLI,
// or an agent being restarted or upgraded).
const ShimArg = "__tender_shim__"

// attachArg, after ROOT and ID, makes a shim copy the container's output to
// its own stdout and stderr (the CLI's) and report the final state on its
// descriptor 3 (see Start).
const attachArg = "attach"

// The shim's report on descriptor 3: okLine once the workload runs (or an
// error text instead, then EOF); an attached shim then writes the final
// State as JSON when the container has exited and been recorded.
const okLine = "ok\n"

// StartDetached starts the container under a new shim and returns once the
// workload runs (or with the error that stopped it).
func (r *Runtime) StartDetached(ref string) (*Container, error) {
	return r.StartDetachedContext(context.Background(), ref)
}

// StartDetachedContext is StartDetached; a trace.Recorder in ctx gets the
// start's phases (the shim's and the init's) when tracing is on.
func (r *Runtime) StartDetachedContext(ctx context.Context, ref string) (*Container, error) {
	c, err := r.Get(ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == Running {
		return nil, fmt.Errorf("start %s: %w", c.Name, ErrRunning)
	}
	cmd, rd, _, err := r.startShim(c, nil, trace.From(ctx))
	if err != nil {
		return nil, err
	}
	rd.Close()
	// The shim lives on; release it so it is not reaped by us.
	_ = cmd.Process.Release()
	return r.Get(c.ID)
}

// Start starts the container under a new shim attached to cio: the shim
// copies the container's output to cio's writers (as well as to its logs)
// and cio.Stdin is the workload's. It returns once the workload runs. The
// shim, not the caller, records the exit and removes an AutoRemove
// container: a caller that dies (a CLI whose stdout pipe closed, or that
// was killed) changes nothing for the container. ctx bounds the start only.
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
	cmd, rd, br, err := r.startShim(c, &cio, tr)
	if err != nil {
		return nil, err
	}
	cur, err := r.Get(c.ID)
	if err != nil {
		// Removed already: an AutoRemove container that ended at once.
		cur = c
	}
	return &Monitor{c: cur, shim: cmd, pipe: rd, report: br, tr: tr}, nil
}

// startShim starts a shim for c (attached to cio when not nil) and reads
// its first report. On success the caller owns the shim process and the
// report pipe (rd, read through br). A tracing shim sends its phases so
// far before its first report; they go to tr.
func (r *Runtime) startShim(c *Container, cio *IO, tr *trace.Recorder) (cmd *exec.Cmd, rd *os.File, br *bufio.Reader, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start shim: %w", err)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start shim: %w", err)
	}
	args := []string{ShimArg, r.root(), c.ID}
	cmd = exec.Command(self)
	if cio != nil {
		args = append(args, attachArg)
		if cio.Stdin != nil {
			cmd.Stdin = cio.Stdin
		}
		cmd.Stdout, cmd.Stderr = cio.Stdout, cio.Stderr
	}
	cmd.Args = append([]string{self}, args...)
	cmd.ExtraFiles = []*os.File{wr}
	// Its own session: hang-ups and terminal interrupts are the caller's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	// A shim only waits: one P and a small heap keep its private memory low.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GOGC=50")
	if tr != nil {
		cmd.Env = append(cmd.Env, trace.EnvOn+"=1", trace.EnvT0+"="+strconv.FormatInt(trace.Now(), 10))
	}
	if err := cmd.Start(); err != nil {
		rd.Close()
		wr.Close()
		return nil, nil, nil, fmt.Errorf("start shim: %w", err)
	}
	wr.Close()
	br = bufio.NewReader(rd)
	line, err := br.ReadString('\n')
	for p, ok := trace.Decode(line); ok && err == nil; p, ok = trace.Decode(line) {
		tr.Add(p)
		line, err = br.ReadString('\n')
	}
	if line == okLine {
		return cmd, rd, br, nil
	}
	rest, _ := io.ReadAll(io.LimitReader(br, 64<<10))
	rd.Close()
	_ = cmd.Wait()
	msg := strings.TrimSpace(line + string(rest))
	if msg == "" {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		msg = "the shim exited before reporting: " + err.Error()
	}
	var re *reportedError
	if json.Unmarshal([]byte(msg), &re) == nil && re != nil {
		return nil, nil, nil, re
	}
	return nil, nil, nil, errors.New(msg)
}

// reportedError is a start failure as the shim reports it: its text and
// whether it was the user's input (errdefs.ErrInvalidArgument).
type reportedError struct {
	Msg     string `json:"error"`
	Invalid bool   `json:"invalid,omitempty"`
}

func (e *reportedError) Error() string { return e.Msg }

func (e *reportedError) Unwrap() error {
	if e.Invalid {
		return errdefs.ErrInvalidArgument
	}
	return nil
}

// Monitor is a container started attached to its caller's output, through
// its shim.
type Monitor struct {
	c      *Container
	shim   *exec.Cmd
	pipe   *os.File
	report *bufio.Reader
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

// Wait blocks until the shim has recorded the workload's exit (the exit
// code, 128+N for a signal, OOMKilled) and cleaned up after it, and returns
// that record.
func (m *Monitor) Wait() (State, error) {
	b, rerr := io.ReadAll(m.report)
	m.pipe.Close()
	werr := m.shim.Wait()
	// A tracing shim sends its last phases before the record.
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
		return State{}, fmt.Errorf("wait for %s: its shim ended without a record: %w", m.c.Name, errors.Join(rerr, werr))
	}
	m.c.State = st
	return st, nil
}

// ShimMain is the shim's main: args are [root, id] or [root, id, attach].
// It returns the process's exit code.
func ShimMain(args []string) int {
	// Hang-ups and interrupts meant for a terminal never reach a shim, and
	// a closed output pipe is an error to a write, not the shim's death.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	report := os.NewFile(3, "report")
	fail := func(err error) int {
		if report != nil {
			b, _ := json.Marshal(reportedError{Msg: err.Error(), Invalid: errdefs.IsInvalidArgument(err)})
			report.Write(b)
			report.Close()
		}
		return 1
	}
	attached := len(args) == 3 && args[2] == attachArg
	if len(args) != 2 && !attached {
		return fail(errors.New("shim: usage: ROOT ID [attach]"))
	}
	tr := trace.FromEnv("shim")
	r, err := New(args[0], nil, zerolog.Nop())
	if err != nil {
		return fail(err)
	}
	cio := IO{}
	if attached {
		cio = IO{Stdin: os.Stdin, Stdout: &tolerant{w: os.Stdout}, Stderr: &tolerant{w: os.Stderr}}
	}
	m, err := r.startHere(trace.With(context.Background(), tr), args[1], cio)
	if err != nil {
		return fail(err)
	}
	_ = tr.Encode(report)
	sent := len(tr.Phases())
	fmt.Fprint(report, okLine)
	if !attached {
		report.Close()
		report = nil
	}
	st, err := m.Wait()
	if report != nil {
		if tr != nil {
			for _, p := range tr.Phases()[sent:] {
				fmt.Fprintf(report, "%s\n", trace.Line(p))
			}
		}
		b, _ := json.Marshal(st)
		report.Write(b)
		report.Close()
	}
	if err != nil {
		return 1
	}
	return 0
}

// tolerant passes writes on until one fails (a reader that went away),
// then drops them: the container's logs must go on.
type tolerant struct {
	w      io.Writer
	broken bool
}

func (t *tolerant) Write(p []byte) (int, error) {
	if !t.broken {
		if _, err := t.w.Write(p); err != nil {
			t.broken = true
		}
	}
	return len(p), nil
}
