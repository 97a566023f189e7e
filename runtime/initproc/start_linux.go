package initproc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
)

// Stdio are the workload's standard streams; a nil file becomes /dev/null.
type Stdio struct{ Stdin, Stdout, Stderr *os.File }

// The sync protocol over the socket on the child's descriptor 3:
//
//  1. parent to child: the config's length (8 bytes, little-endian), then
//     the config as JSON;
//  2. child to parent, once its set-up is done: readyByte; it then waits;
//  3. parent to child: goByte, once it has applied what must not
//     constrain the set-up (Hooks.BeforeExec: the pids limit);
//  4. child to parent: execByte, right before execve. The socket closes on
//     exec (close-on-exec).
//
// Instead of readyByte or execByte the child may send an error text and
// exit.
const (
	readyByte = 0x01
	goByte    = 0x02
	execByte  = 'X'
)

// maxConfig bounds the config a child accepts. The parent sends what
// CheckExecSize allowed (at most 6 MiB of arguments and environment) plus
// mounts and the rest; JSON escaping at most sextuples a byte.
const maxConfig = 64 << 20

// maxStatus bounds an error text from the child.
const maxStatus = 64 << 10

// minExeFd is the lowest descriptor number the sealed executable may have in
// the parent: the fork child dup2s the passed files onto 0..3 (and moves
// some up to len(files)) before execve resolves /proc/self/fd/N, which must
// not be one of them.
const minExeFd = 64

// exeCache holds the sealed memfd copy of the init (CVE-2019-5736): the
// small init when this binary embeds one, else /proc/self/exe. Containers
// exec it when the read-only mount of spawner_linux.go cannot be made, so
// that a container process reaching it through /proc/<pid>/exe can neither
// write to it nor truncate it.
var exeCache struct {
	mu sync.Mutex
	f  *os.File
}

// sealedExe returns the process's sealed copy of the init, making it on
// first use.
func sealedExe() (*os.File, error) {
	exeCache.mu.Lock()
	defer exeCache.mu.Unlock()
	if exeCache.f != nil {
		return exeCache.f, nil
	}
	var f *os.File
	var err error
	if hasSmallInit() {
		f, err = smallInitMemfd()
	} else {
		f, err = makeSealedExe()
	}
	if err != nil {
		return nil, err
	}
	exeCache.f = f
	return f, nil
}

// makeSealedExe copies /proc/self/exe into a sealed memfd.
func makeSealedExe() (*os.File, error) {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("open own executable: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat own executable: %w", err)
	}
	return sealedCopy(func(fd int) error {
		if err := unix.Ftruncate(fd, st.Size()); err != nil {
			return fmt.Errorf("size memfd: %w", err)
		}
		var off int64
		for off < st.Size() {
			n, err := unix.Sendfile(fd, int(src.Fd()), &off, int(min(st.Size()-off, 1<<30)))
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return fmt.Errorf("copy own executable: %w", err)
			}
			if n == 0 {
				return errors.New("copy own executable: short copy")
			}
		}
		return nil
	})
}

// sealedCopy makes a memfd at or above minExeFd, has fill write the
// program into it, and seals it against any change.
func sealedCopy(fill func(fd int) error) (*os.File, error) {
	mfd, err := unix.MemfdCreate("tender-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create memfd: %w", err)
	}
	fd, err := unix.FcntlInt(uintptr(mfd), unix.F_DUPFD_CLOEXEC, minExeFd)
	unix.Close(mfd)
	if err != nil {
		return nil, fmt.Errorf("move memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:tender-init")
	if err := fill(fd); err != nil {
		f.Close()
		return nil, err
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return f, nil
}

// startInit forks the init from a protected copy of it (the small init, or
// this executable): a read-only mount (spawner_linux.go) or, failing that,
// a sealed memfd.
func startInit(argv []string, attr *os.ProcAttr) (*os.Process, error) {
	if s, err := getSpawner(); err == nil {
		return s.start(argv, attr)
	}
	exe, err := sealedExe()
	if err != nil {
		return nil, fmt.Errorf("sealed executable: %w", err)
	}
	return os.StartProcess("/proc/self/fd/"+strconv.Itoa(int(exe.Fd())), argv, attr)
}

// cloneFlags maps the spec's namespaces to clone flags. The cgroup namespace
// is left out: the child unshares it after place, so that its root is the
// container's cgroup (runc does the same).
func cloneFlags(s *specs.Spec) (uintptr, error) {
	if s.Linux == nil {
		return 0, errors.New("spec has no linux section")
	}
	var flags uintptr
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			return 0, fmt.Errorf("namespace %s: joining a namespace is not supported", ns.Type)
		}
		switch ns.Type {
		case specs.MountNamespace:
			flags |= unix.CLONE_NEWNS
		case specs.PIDNamespace:
			flags |= unix.CLONE_NEWPID
		case specs.UTSNamespace:
			flags |= unix.CLONE_NEWUTS
		case specs.IPCNamespace:
			flags |= unix.CLONE_NEWIPC
		case specs.NetworkNamespace:
			flags |= unix.CLONE_NEWNET
		case specs.CgroupNamespace:
		default:
			return 0, fmt.Errorf("namespace %s: not supported", ns.Type)
		}
	}
	if flags&unix.CLONE_NEWNS == 0 {
		return 0, errors.New("a mount namespace is required")
	}
	return flags, nil
}

// Hooks are the parent's steps around the child's set-up; each gets the
// child's host pid and any may be nil.
type Hooks struct {
	// Cgroup, when not nil, is the container's cgroup v2 directory (opened
	// read-only or O_PATH): the init is cloned straight into it
	// (CLONE_INTO_CGROUP, Linux 5.7), with no migration afterwards, and
	// Join is not called. Where the kernel refuses that (see
	// IntoCgroupRefused), the init starts in this process's cgroup and
	// Join moves it.
	Cgroup *os.File
	// Join moves the child into its cgroup, unless the clone put it there
	// (Cgroup). It runs before Place.
	Join func(pid int) error
	// Place runs before the child reads its config (to put it into its
	// cgroup, so that its set-up is accounted and confined there, or to
	// attach its network namespace).
	Place func(pid int) error
	// BeforeExec runs once the child has set everything up and waits to
	// exec: limits that apply to the workload but must not constrain the
	// set-up (the Go init's threads count against a pids limit until
	// execve ends them).
	BeforeExec func(pid int) error
	// Trace, when not nil, records the start's phases: the parent's own
	// and the init's, which it sends back on its descriptor 4.
	Trace *trace.Recorder
}

// Start runs the init in new namespaces, calls place with its pid (to put it
// into its cgroup), sends it cfg, and waits until it has exec'd the workload
// (it returns the workload's process) or failed (it kills and reaps it and
// returns its error). The caller Waits on the returned process.
func Start(cfg *Config, stdio Stdio, place func(pid int) error) (*os.Process, error) {
	return StartWith(cfg, stdio, Hooks{Place: place})
}

// StartWith is Start with a hook before the exec as well. A command and
// environment too large to exec are refused before anything starts, with
// an error wrapping errdefs.ErrInvalidArgument.
func StartWith(cfg *Config, stdio Stdio, h Hooks) (*os.Process, error) {
	if cfg == nil || cfg.Spec == nil || cfg.Spec.Process == nil || cfg.Spec.Root == nil {
		return nil, errors.New("config needs a spec with process and root")
	}
	if err := CheckExecSize(cfg.Spec.Process.Args, cfg.Spec.Process.Env, cfg.Spec.Process.Rlimits); err != nil {
		return nil, err
	}
	if cfg.Spec.Process.Terminal {
		return nil, errors.New("terminal: not supported")
	}
	flags, err := cloneFlags(cfg.Spec)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "sync-parent")
	child := os.NewFile(uintptr(fds[1]), "sync-child")
	defer parent.Close()

	files := []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr, child}
	var devNull *os.File
	for i := 0; i < 3; i++ {
		if files[i] != nil {
			continue
		}
		if devNull == nil {
			if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				child.Close()
				return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
			}
		}
		files[i] = devNull
	}
	env := []string{"GOMAXPROCS=1", "GOGC=off"}
	var traceR *os.File
	if h.Trace != nil {
		var traceW *os.File
		if traceR, traceW, err = os.Pipe(); err != nil {
			child.Close()
			return nil, fmt.Errorf("trace pipe: %w", err)
		}
		defer traceR.Close()
		defer traceW.Close()
		files = append(files, traceW)
		env = append(env, trace.EnvOn+"=1", trace.EnvT0+"="+strconv.FormatInt(trace.Now(), 10))
	}
	attr := &os.ProcAttr{
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setsid:     true,
		},
	}
	argv := []string{"tender-init", Arg, ProtocolID()}
	joined := false
	if h.Cgroup != nil && IntoCgroupRefused() == nil {
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, int(h.Cgroup.Fd())
		joined = true
	}
	proc, err := startInit(argv, attr)
	if joined && refusedIntoCgroup(err) {
		// Once per process: the next starts go straight to Join.
		refused := fmt.Errorf("clone into cgroup: %w", err)
		intoCgroupRefused.CompareAndSwap(nil, &refused)
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = false, 0
		joined = false
		proc, err = startInit(argv, attr)
	}
	child.Close()
	if devNull != nil {
		devNull.Close()
	}
	if traceR != nil {
		files[len(files)-1].Close() // the init has its own copy
	}
	if err != nil {
		return nil, fmt.Errorf("start init: %w", err)
	}
	h.Trace.Mark("init-start")
	abort := func(err error) (*os.Process, error) {
		_ = proc.Kill()
		_, _ = proc.Wait()
		return nil, err
	}
	if h.Join != nil && !joined {
		if err := h.Join(proc.Pid); err != nil {
			return abort(fmt.Errorf("place init: %w", err))
		}
	}
	if h.Place != nil {
		if err := h.Place(proc.Pid); err != nil {
			return abort(fmt.Errorf("place init: %w", err))
		}
	}
	h.Trace.Mark("cgroup-place")
	msg, err := handshake(parent, payload, beforeExec(h.BeforeExec, proc.Pid))
	if err != nil {
		return abort(fmt.Errorf("init: %w", err))
	}
	if msg != "" {
		return abort(&InitError{Msg: msg})
	}
	if h.Trace != nil {
		// The init's phases end where it asked for its execve; the
		// socket's EOF, seen by handshake, is the execve done.
		ps := trace.DecodeAll(traceR)
		h.Trace.Add(ps...)
		if len(ps) > 0 {
			h.Trace.Since("exec-workload", ps[len(ps)-1].End)
		}
		h.Trace.Skip()
	}
	return proc, nil
}

// intoCgroupRefused is the kernel's refusal of the first clone into a
// cgroup (nil until one).
var intoCgroupRefused atomic.Pointer[error]

// IntoCgroupRefused returns why this process starts inits in its own
// cgroup and moves them after (Hooks.Join) though Hooks.Cgroup was given:
// the kernel's answer to the first clone into a cgroup that it refused, or
// nil when none was (yet).
func IntoCgroupRefused() error {
	if e := intoCgroupRefused.Load(); e != nil {
		return *e
	}
	return nil
}

// refusedIntoCgroup reports whether a start's error is the kernel refusing
// clone3 or its CLONE_INTO_CGROUP, not the start itself: ENOSYS (no clone3
// before Linux 5.3, or a seccomp filter around this process denying it, as
// container runtimes' default profiles do), E2BIG (Linux 5.3 to 5.6: the
// clone_args with a cgroup are larger than the kernel knows), EINVAL (the
// flag unknown to the kernel). A cgroup the kernel will not take the
// process into (EBUSY, EBADF, EOPNOTSUPP) is an error of the start, as a
// failed move would be.
func refusedIntoCgroup(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.E2BIG) || errors.Is(err, unix.EINVAL)
}

func beforeExec(f func(pid int) error, pid int) func() error {
	if f == nil {
		return nil
	}
	return func() error { return f(pid) }
}

// handshake is the parent's half of the sync protocol: it sends the
// config, runs ready when the child is about to exec and lets it go on,
// then waits for the child's verdict. An empty message means the child
// exec'd; otherwise it is the child's error text.
func handshake(sock *os.File, payload []byte, ready func() error) (string, error) {
	fd := int(sock.Fd())
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(len(payload)))
	if err := writeAll(fd, append(hdr[:], payload...)); err != nil {
		// The child died early; what it said is the better error.
		if msg, rerr := readAll(fd); rerr == nil && len(msg) > 0 {
			return string(msg), nil
		}
		return "", fmt.Errorf("send config: %w", err)
	}
	msg, err := readStatus(fd, ready)
	if err != nil {
		return "", err
	}
	switch {
	case len(msg) == 1 && msg[0] == execByte:
		return "", nil
	case len(msg) == 0:
		return "", errors.New("exited before exec")
	case msg[0] == execByte:
		msg = msg[1:]
	}
	return string(msg), nil
}

// InitError is a failure reported by the container's init before it could
// exec the workload.
type InitError struct{ Msg string }

func (e *InitError) Error() string { return "container init: " + e.Msg }

// readStatus reads the child's messages to EOF. A lone readyByte (the
// child then waits for an answer, so nothing follows it) runs ready and is
// answered with goByte; what remains is returned.
func readStatus(fd int, ready func() error) ([]byte, error) {
	var buf []byte
	var chunk [512]byte
	answered := false
	for {
		n, err := unix.Read(fd, chunk[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return buf, fmt.Errorf("read status: %w", err)
		}
		if n == 0 {
			return buf, nil
		}
		buf = append(buf, chunk[:n]...)
		if !answered && len(buf) == 1 && buf[0] == readyByte {
			answered, buf = true, buf[:0]
			if ready != nil {
				if err := ready(); err != nil {
					return nil, fmt.Errorf("before exec: %w", err)
				}
			}
			if err := writeAll(fd, []byte{goByte}); err != nil {
				return nil, fmt.Errorf("let exec proceed: %w", err)
			}
			continue
		}
		if len(buf) > maxStatus {
			return buf, errors.New("init status too long")
		}
	}
}

// readAll reads fd to EOF, at most maxStatus bytes, with plain read(2)
// calls (the parent's end of the socket is blocking and not in the
// runtime's poller).
func readAll(fd int) ([]byte, error) {
	var buf []byte
	var chunk [512]byte
	for {
		n, err := unix.Read(fd, chunk[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return buf, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = append(buf, chunk[:n]...)
		if len(buf) > maxStatus {
			return buf, errors.New("status too long")
		}
	}
}

// readFull reads exactly len(b) bytes from fd.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

// writeAll writes b to fd with plain write(2) calls.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readConfig is the child's step 1 of the sync protocol: the config's
// length, then the config.
func readConfig(fd int) ([]byte, error) {
	var hdr [8]byte
	if err := readFull(fd, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(hdr[:])
	if n > maxConfig {
		return nil, fmt.Errorf("config of %d bytes is over the %d bytes accepted", n, maxConfig)
	}
	b := make([]byte, n)
	if err := readFull(fd, b); err != nil {
		return nil, err
	}
	return b, nil
}

// awaitGo is the child's steps 2 and 3: it says it is ready to exec and
// waits for the parent's go-ahead.
func awaitGo() error {
	writeStatus(string(rune(readyByte)))
	var b [1]byte
	if err := readFull(syncFd, b[:]); err != nil {
		return fmt.Errorf("wait for the runtime before exec: %w", err)
	}
	if b[0] != goByte {
		return fmt.Errorf("wait for the runtime before exec: unexpected byte %#x", b[0])
	}
	return nil
}
