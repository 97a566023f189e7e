package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
)

// monitorLinger is how long a monitor without containers waits for a new
// one before it exits: back-to-back runs share one. EnvMonitorLinger (a
// Go duration, in the environment of whoever starts the monitor) changes
// it, for tests.
const monitorLinger = 10 * time.Second

// EnvMonitorLinger overrides monitorLinger.
const EnvMonitorLinger = "TENDER_MONITOR_LINGER"

// maxRequest bounds a request line.
const maxRequest = 64 << 10

// MonitorMain is the monitor's main: args are [ROOT]. It reports on
// descriptor 3 (okLine once it listens, or an error text) and returns the
// process's exit code when it exits, idle.
func MonitorMain(args []string) int {
	// Hang-ups and interrupts meant for a terminal never reach a monitor,
	// and a closed output pipe is an error to a write, not its death.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	closeInherited()
	ready := os.NewFile(3, "ready")
	fail := func(err error) int {
		if ready != nil {
			fmt.Fprintln(ready, err)
			ready.Close()
		}
		return 1
	}
	if len(args) != 1 || !filepath.IsAbs(args[0]) {
		return fail(errors.New("monitor: usage: ABSOLUTE-ROOT"))
	}
	root := args[0]
	// Container processes stay its descendants whatever their parents do.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("monitor: subreaper: %w", err))
	}
	r, err := New(root, nil, zerolog.Nop())
	if err != nil {
		return fail(err)
	}
	lock, err := lockMonitor(root)
	if err != nil {
		return fail(err)
	}
	sock := filepath.Join(root, monitorSock)
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(fmt.Errorf("monitor: %w", err))
	}
	// The socket is made 0600 (and chmod'ed again below). The containers'
	// files keep the umask the monitor was started with, as with the shim.
	umask := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	unix.Umask(umask)
	if err != nil {
		return fail(fmt.Errorf("monitor: %w", err))
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return fail(fmt.Errorf("monitor: %w", err))
	}
	fmt.Fprint(ready, okLine)
	ready.Close()
	s := &server{r: r, ln: ln, lock: lock, linger: monitorLinger, drained: make(chan struct{})}
	if d, err := time.ParseDuration(os.Getenv(EnvMonitorLinger)); err == nil && d >= 0 {
		s.linger = d
	}
	return s.serve()
}

// closeInherited closes the descriptors above 3 that the monitor
// inherited from whoever started it (a CLI started with a pipe of its
// caller's open): a long-lived monitor would keep them open. They are the
// ones without close-on-exec: every descriptor opened since the exec, by
// the Go runtime or a package, has it.
func closeInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 3 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}

// lockMonitor takes the lock that makes a monitor the only one of root,
// and writes its pid into it. A monitor that is exiting still holds it for
// a moment: it is tried for a while.
func lockMonitor(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, monitorLockFile), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	for i := 0; ; i++ {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || i == 1000 {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			f.Close()
			return nil, fmt.Errorf("monitor: another monitor (pid %s) holds %s but does not answer on %s: %w",
				bytes.TrimSpace(b), filepath.Join(root, monitorLockFile), monitorSock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// server is a running monitor.
type server struct {
	r      *Runtime
	ln     *net.UnixListener
	lock   *os.File // monitorLockFile, held while this is the root's monitor
	linger time.Duration

	mu      sync.Mutex
	busy    int           // connections being served and containers watched
	closing bool          // the listener is closed: no new container
	drained chan struct{} // closed when closing and nothing is left
	idle    *time.Timer
	tidy    *time.Timer
}

// tidyAfter is how long after a start or an exit the monitor returns the
// memory it freed to the kernel: between events it only waits, and the Go
// runtime would keep freed pages for a while (minutes), to reuse.
const tidyAfter = time.Second

// tidySoon schedules that return, once events have settled.
func (s *server) tidySoon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tidy == nil {
		s.tidy = time.AfterFunc(tidyAfter, debug.FreeOSMemory)
		return
	}
	s.tidy.Reset(tidyAfter)
}

func (s *server) serve() int {
	s.mu.Lock()
	s.armLocked()
	s.mu.Unlock()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				// Handed over or idle: the containers it watches
				// still end here.
				<-s.drained
				return 0
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			// Another monitor takes the new containers; this one still
			// watches its own to their end.
			s.mu.Lock()
			s.closeLocked()
			s.mu.Unlock()
			<-s.drained
			return 1
		}
		s.mu.Lock()
		s.busy++
		if s.idle != nil {
			s.idle.Stop()
			s.idle = nil
		}
		s.mu.Unlock()
		go s.handle(conn)
	}
}

// armLocked starts the idle countdown when nothing is left, and ends a
// monitor that has handed over once nothing is left.
func (s *server) armLocked() {
	if s.busy == 0 && s.closing {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	if s.busy == 0 && !s.closing {
		s.idle = time.AfterFunc(s.linger, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.busy == 0 {
				s.closeLocked()
			}
		})
	}
}

// closeLocked stops taking requests and hands the root over: the socket
// is removed, then the lock released, so that a new monitor may start
// while this one still watches its containers to their end. Connections
// not yet accepted end with nothing read; their callers start the new
// monitor.
func (s *server) closeLocked() {
	if !s.closing {
		s.closing = true
		s.ln.Close() // and removes the socket
		s.lock.Close()
		s.armLocked()
	}
}

// stale reports why this monitor should hand over to a new one for a
// request of version v: another protocol, or its binary replaced on disk
// (an upgrade: new containers get the new binary's monitor and init).
func stale(v int) string {
	if v != MonitorProtocol {
		return fmt.Sprintf("speaks protocol version %d, the caller %d", MonitorProtocol, v)
	}
	self, err1 := os.Stat("/proc/self/exe")
	path, err := os.Executable()
	if err1 != nil || err != nil {
		return ""
	}
	if cur, err := os.Stat(path); err != nil || !os.SameFile(self, cur) {
		return "runs a binary since replaced at " + path
	}
	return ""
}

func (s *server) done() {
	s.mu.Lock()
	s.busy--
	s.armLocked()
	s.mu.Unlock()
}

// reply writes a failure as the client reads it.
func reply(conn net.Conn, re reportedError) {
	b, _ := json.Marshal(re)
	_, _ = conn.Write(b)
}

func (s *server) handle(conn *net.UnixConn) {
	defer s.done()
	defer conn.Close()
	if err := peerIsRoot(conn); err != nil {
		reply(conn, reportedError{Msg: err.Error()})
		return
	}
	req, files, err := readRequest(conn)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		reply(conn, reportedError{Msg: err.Error(), Invalid: true, Version: MonitorProtocol})
		return
	}
	if why := stale(req.V); why != "" {
		// It makes way for a monitor of the caller's version and binary,
		// and watches its own containers to their end.
		s.mu.Lock()
		s.closeLocked()
		s.mu.Unlock()
		reply(conn, reportedError{Version: MonitorProtocol, Retry: true,
			Msg: fmt.Sprintf("the container monitor of %s (pid %d) %s: it has handed over", s.r.top, os.Getpid(), why)})
		return
	}
	var tr *trace.Recorder
	if req.Trace {
		tr = trace.Begin("mon")
	}
	cio, err := requestIO(req, files)
	if err != nil {
		reply(conn, reportedError{Msg: err.Error(), Invalid: true})
		return
	}
	m, err := s.r.startHere(trace.With(context.Background(), tr), req.ID, cio)
	if err != nil {
		_ = tr.Encode(conn)
		reply(conn, reportedError{Msg: err.Error(), Invalid: errdefs.IsInvalidArgument(err)})
		return
	}
	_ = tr.Encode(conn)
	sent := len(tr.Phases())
	_, _ = io.WriteString(conn, okLine)
	if !req.Attach {
		conn.Close()
	}
	s.tidySoon()
	st, err := m.Wait()
	s.tidySoon()
	// The caller's descriptors are closed before the record is sent: a
	// caller that copies them has all of the output once it has it.
	for _, f := range files {
		f.Close()
	}
	files = nil
	if req.Attach {
		if tr != nil {
			for _, p := range tr.Phases()[sent:] {
				fmt.Fprintf(conn, "%s\n", trace.Line(p))
			}
		}
		if err != nil && st.Status == Exited && st.Error == "" {
			st.Error = err.Error()
		}
		b, _ := json.Marshal(st)
		_, _ = conn.Write(b)
	}
}

// requestIO makes the container's IO of the descriptors the request
// announces, in their order: stdout, stderr, stdin.
func requestIO(req monitorRequest, files []*os.File) (IO, error) {
	want := 0
	for _, b := range []bool{req.Stdout, req.Stderr, req.Stdin} {
		if b {
			want++
		}
	}
	if len(files) != want || (want > 0 && !req.Attach) {
		return IO{}, fmt.Errorf("monitor: the request announces %d descriptors and carries %d", want, len(files))
	}
	var cio IO
	i := 0
	if req.Stdout {
		cio.Stdout = &tolerant{w: files[i]}
		i++
	}
	if req.Stderr {
		cio.Stderr = &tolerant{w: files[i]}
		i++
	}
	if req.Stdin {
		cio.Stdin = files[i]
	}
	return cio, nil
}

// peerIsRoot refuses a caller that is not uid 0 (the socket is 0600 in a
// 0700 root already; this holds when a descriptor of it leaks).
func peerIsRoot(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("monitor: peer credentials: %w", cerr)
	}
	if cred.Uid != 0 {
		return fmt.Errorf("monitor: uid %d may not start containers: root only: %w", cred.Uid, errdefs.ErrPermissionDenied)
	}
	return nil
}

// readRequest reads one request line and the descriptors sent with it.
func readRequest(conn *net.UnixConn) (monitorRequest, []*os.File, error) {
	var req monitorRequest
	buf := make([]byte, maxRequest)
	oob := make([]byte, unix.CmsgSpace(3*4))
	// Go receives descriptors with MSG_CMSG_CLOEXEC: none leaks into a
	// container's init.
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return req, nil, fmt.Errorf("monitor: read request: %w", err)
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return req, nil, fmt.Errorf("monitor: request descriptors: %w", err)
		}
		for i := range msgs {
			fds, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "caller-"+strconv.Itoa(len(files))))
			}
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return req, files, errors.New("monitor: the request carries more than 3 descriptors")
	}
	for !bytes.Contains(buf[:n], []byte{'\n'}) {
		if n == len(buf) {
			return req, files, fmt.Errorf("monitor: request longer than %d bytes", maxRequest)
		}
		m, err := conn.Read(buf[n:])
		if err != nil {
			return req, files, fmt.Errorf("monitor: read request: %w", err)
		}
		n += m
	}
	line, _, _ := bytes.Cut(buf[:n], []byte{'\n'})
	if err := json.Unmarshal(line, &req); err != nil {
		return req, files, fmt.Errorf("monitor: request: %w", err)
	}
	return req, files, nil
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
