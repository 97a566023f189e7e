package initproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exec into a running container (docker exec, health checks). Go cannot
// setns(2) a multi-threaded process into a mount namespace, and a pid
// namespace only applies to children, so it takes two steps:
//
//  1. The parent (StartExec), on a locked thread, joins the container's pid
//     namespace for its children (setns on a pidfd with CLONE_NEWPID), forks
//     the protected copy of its executable as the exec helper, and returns
//     the thread to its own pid namespace. The helper is in the container's
//     pid namespace; the parent then sends it its ExecConfig.
//  2. The helper (ExecMain), on its locked main thread, unshares its fs
//     attributes, joins the container's mount, uts, ipc, net and cgroup
//     namespaces through the same pidfd, applies rlimits, user and groups,
//     capabilities, no_new_privs and seccomp as the init does, closes extra
//     descriptors, and once the parent has placed it in the container's
//     cgroup, execs the command.
//
// The helper's descriptors: 0, 1, 2 the command's stdio, 3 the sync socket
// (the same protocol as the init's), 4 the pidfd of the container's init.

// execPidFd is the helper's descriptor of the container's init pidfd.
const execPidFd = 4

// execNamespaces are the namespaces the helper joins itself; the pid
// namespace comes from the parent.
const execNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// StartExec starts cfg's command inside the namespaces of the process pidfd
// refers to (the container's init: the caller opens the pidfd and checks it
// is the right process). It calls place with the helper's host pid (to put
// it into the container's cgroup) once the helper has joined the container
// and set itself up, right before it execs the command: the container's
// limits (a pids limit the container already fills) apply to the command,
// not to the Go helper's threads. It returns once the command runs: its process, which leads its own process
// group, or the helper's error (an *ExecError when the helper reported it),
// after killing and reaping the helper. ctx bounds
// the start only. The caller Waits on the returned process.
func StartExec(ctx context.Context, cfg *ExecConfig, pidfd int, stdio Stdio, place func(pid int) error) (*os.Process, error) {
	if cfg == nil || cfg.Process == nil || len(cfg.Process.Args) == 0 {
		return nil, errors.New("exec config needs process args")
	}
	if cfg.Process.Terminal {
		return nil, errors.New("terminal: not supported")
	}
	if err := CheckExecSize(cfg.Process.Args, cfg.Process.Env, cfg.Process.Rlimits); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode exec config: %w", err)
	}
	exe, err := exePath()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "sync-parent")
	child := os.NewFile(uintptr(fds[1]), "sync-child")
	defer parent.Close()
	defer child.Close()
	pfd, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate pidfd: %w", err)
	}
	pidFile := os.NewFile(uintptr(pfd), "pidfd")
	defer pidFile.Close()

	files := []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr, child, pidFile}
	var devNull *os.File
	for i := 0; i < 3; i++ {
		if files[i] != nil {
			continue
		}
		if devNull == nil {
			if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
			}
			defer devNull.Close()
		}
		files[i] = devNull
	}
	attr := &os.ProcAttr{
		Env:   []string{"GOMAXPROCS=1", "GOGC=off"},
		Files: files,
		// Its own process group, so that a timeout kills what it started.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	proc, err := startInPidNS(pidfd, exe, []string{"tender-exec", ExecArg, ProtocolID()}, attr)
	if err != nil {
		return nil, fmt.Errorf("start exec helper: %w", err)
	}
	child.Close()
	pidFile.Close()
	abort := func(err error) (*os.Process, error) {
		_ = unix.Kill(-proc.Pid, unix.SIGKILL)
		_ = proc.Kill()
		_, _ = proc.Wait()
		return nil, err
	}
	// A helper stuck before exec is killed at ctx's end; its socket then
	// reads EOF.
	stop := context.AfterFunc(ctx, func() { _ = proc.Kill() })
	defer stop()
	msg, err := handshake(parent, payload, beforeExec(place, proc.Pid))
	if ctx.Err() != nil {
		return abort(fmt.Errorf("exec helper: %w", ctx.Err()))
	}
	if err != nil {
		return abort(fmt.Errorf("exec helper: %w", err))
	}
	if msg != "" {
		return abort(&ExecError{Msg: msg})
	}
	return proc, nil
}

// ExecError is a failure reported by the exec helper before it could exec
// the command (command not found, unknown user, bad cwd, ...).
type ExecError struct{ Msg string }

func (e *ExecError) Error() string { return "exec helper: " + e.Msg }

// exePath is a path to the protected copy of the init (the small init, or
// this executable): the spawner's read-only mount or the sealed memfd. Its
// descriptor number is at least minExeFd, above the child's passed files.
func exePath() (string, error) {
	if s, err := getSpawner(); err == nil {
		return "/proc/self/fd/" + strconv.Itoa(s.exeFd), nil
	}
	exe, err := sealedExe()
	if err != nil {
		return "", fmt.Errorf("sealed executable: %w", err)
	}
	return "/proc/self/fd/" + strconv.Itoa(int(exe.Fd())), nil
}

// startInPidNS forks path from a locked thread whose children go into the
// pid namespace of pidfd's process. The thread then returns to its own pid
// namespace; if it cannot, it stays locked and dies with its goroutine.
func startInPidNS(pidfd int, path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	type result struct {
		proc *os.Process
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("own pid namespace: %w", err)}
			return
		}
		defer unix.Close(own)
		if err := unix.Setns(pidfd, unix.CLONE_NEWPID); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("join pid namespace: %w", err)}
			return
		}
		p, err := os.StartProcess(path, argv, attr)
		if rerr := unix.Setns(own, unix.CLONE_NEWPID); rerr == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{p, err}
	}()
	r := <-ch
	return r.proc, r.err
}

// ExecMain is the exec helper's side. Callers run it first thing when
// len(os.Args) > 1 && os.Args[1] == ExecArg. It never returns: it execs the
// command, or writes its error to the sync socket and exits non-zero.
func ExecMain() {
	runtime.LockOSThread()
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(-1)
	err := execChild()
	writeStatus(err.Error())
	os.Exit(1)
}

// execChild does the helper's work; it returns only on error.
func execChild() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("exec helper panic: %v", r)
		}
	}()
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set non-dumpable: %w", err)
	}
	for _, fd := range []int{syncFd, execPidFd} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("descriptor %d: %w", fd, err)
		}
	}
	if err := checkProtocol(os.Args); err != nil {
		return err
	}
	raw, err := readConfig(syncFd)
	if err != nil {
		return fmt.Errorf("read exec config: %w", err)
	}
	var cfg ExecConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("decode exec config: %w", err)
	}
	p := cfg.Process
	if p == nil || len(p.Args) == 0 {
		return errors.New("exec config: needs process args")
	}
	// setns into a mount namespace needs an fs_struct of our own: the
	// Go runtime's threads share one.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs attributes: %w", err)
	}
	if err := unix.Setns(execPidFd, execNamespaces); err != nil {
		return fmt.Errorf("join container namespaces: %w", err)
	}
	unix.Close(execPidFd)
	// From here on, paths are the container's: setns put our root and
	// working directory at the root of its mount namespace.
	if err := setRlimits(p.Rlimits); err != nil {
		return err
	}
	u, err := resolveUser(cfg.User, p.User)
	if err != nil {
		return err
	}
	env := p.Env
	if u.home != "" && !hasEnv(env, "HOME") {
		env = append(env[:len(env):len(env)], "HOME="+u.home)
	}
	if err := setCwd(p.Cwd); err != nil {
		return err
	}
	argv0, err := lookPath(p.Args[0], env)
	if err != nil {
		return fmt.Errorf("exec %s: %w", p.Args[0], err)
	}
	if err := closeExtraFds(); err != nil {
		return fmt.Errorf("close descriptors: %w", err)
	}
	return restrictAndExec(cfg.Seccomp, p, u, argv0, env)
}
