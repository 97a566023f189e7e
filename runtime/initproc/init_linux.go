package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/trace"
)

// syncFd is the child's end of the sync socket.
const syncFd = 3

// traceFd is where the init sends its phases when the parent traces the
// start (TENDER_TRACE=1 in the environment the parent gave it).
const traceFd = 4

// tr records the init's phases; nil unless the parent traces the start.
var tr *trace.Recorder

// Main is the child side. Callers run it first thing when
// len(os.Args) > 1 && os.Args[1] == Arg. It never returns: it execs the
// workload, or writes its error to the sync socket and exits non-zero.
func Main() {
	runtime.LockOSThread()
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(-1)
	tr = trace.FromEnv("init")
	err := initChild()
	// Only reached on error.
	writeStatus(err.Error())
	os.Exit(1)
}

func writeStatus(msg string) {
	b := []byte(msg)
	for len(b) > 0 {
		n, err := unix.Write(syncFd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		b = b[n:]
	}
}

// initChild does the child's work; it returns only on error.
func initChild() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("init panic: %v", r)
		}
	}()
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set non-dumpable: %w", err)
	}
	if _, err := unix.FcntlInt(syncFd, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("sync socket: %w", err)
	}
	unix.Umask(0)
	if err := checkProtocol(os.Args); err != nil {
		return err
	}
	raw, err := readConfig(syncFd)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	tr.Mark("config-read")
	s := cfg.Spec
	if s == nil || s.Process == nil || s.Root == nil || s.Linux == nil || len(s.Process.Args) == 0 {
		return errors.New("config: spec needs process args, root and linux")
	}
	ns := namespaces(s)
	if ns[specs.CgroupNamespace] {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}

	if ns[specs.NetworkNamespace] {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := setupRootfs(&cfg, ns); err != nil {
		return err
	}
	tr.Mark("rootfs-mounts")

	if s.Hostname != "" {
		if !ns[specs.UTSNamespace] {
			return errors.New("set hostname: no new uts namespace")
		}
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if s.Domainname != "" {
		if !ns[specs.UTSNamespace] {
			return errors.New("set domainname: no new uts namespace")
		}
		if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
			return fmt.Errorf("set domainname: %w", err)
		}
	}
	if err := setRlimits(s.Process.Rlimits); err != nil {
		return err
	}
	u, err := resolveUser(cfg.User, s.Process.User)
	if err != nil {
		return err
	}
	env := s.Process.Env
	if u.home != "" && !hasEnv(env, "HOME") {
		env = append(env[:len(env):len(env)], "HOME="+u.home)
	}
	if err := setCwd(s.Process.Cwd); err != nil {
		return err
	}
	argv0, err := lookPath(s.Process.Args[0], env)
	if err != nil {
		return fmt.Errorf("exec %s: %w", s.Process.Args[0], err)
	}
	if err := closeExtraFds(); err != nil {
		return fmt.Errorf("close descriptors: %w", err)
	}
	tr.Mark("user-cwd")

	return restrictAndExec(cfg.Seccomp, s.Process, u, argv0, env)
}

func namespaces(s *specs.Spec) map[specs.LinuxNamespaceType]bool {
	m := make(map[specs.LinuxNamespaceType]bool, len(s.Linux.Namespaces))
	for _, n := range s.Linux.Namespaces {
		m[n.Type] = true
	}
	return m
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); ok && k == key {
			return true
		}
	}
	return false
}

var rlimitNames = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}

func setRlimits(limits []specs.POSIXRlimit) error {
	for _, l := range limits {
		res, ok := rlimitNames[l.Type]
		if !ok {
			return fmt.Errorf("set rlimit %s: unknown resource", l.Type)
		}
		lim := unix.Rlimit{Cur: l.Soft, Max: l.Hard}
		if err := unix.Prlimit(0, res, &lim, nil); err != nil {
			return fmt.Errorf("set rlimit %s: %w", l.Type, err)
		}
	}
	return nil
}

// setCwd enters the working directory, resolved inside the container's root
// (created when missing, as runc does) without following magic links, and
// checks with getcwd that it is reachable and not in /proc.
func setCwd(cwd string) error {
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return fmt.Errorf("cwd %s: not absolute", cwd)
	}
	cwd = filepath.Clean(cwd)
	if underProc(cwd) {
		return fmt.Errorf("cwd %s: cwd outside container", cwd)
	}
	root, err := openPath("/")
	if err != nil {
		return fmt.Errorf("cwd %s: %w", cwd, err)
	}
	defer root.Close()
	dir, err := mkdirAllInRoot(root, cwd)
	if err != nil {
		return fmt.Errorf("cwd %s: cwd outside container: %w", cwd, err)
	}
	defer dir.Close()
	if err := unix.Fchdir(int(dir.Fd())); err != nil {
		return fmt.Errorf("cwd %s: %w", cwd, err)
	}
	wd, err := unix.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") || underProc(wd) {
		return fmt.Errorf("cwd %s: cwd outside container (%q)", cwd, wd)
	}
	return nil
}

func underProc(p string) bool { return p == "/proc" || strings.HasPrefix(p, "/proc/") }

// lookPath finds file in the container's PATH (from env) unless it has a
// slash.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("executable file not found in $PATH")
}

// closeExtraFds marks every descriptor above stderr close-on-exec
// (CVE-2024-21626): only 0, 1 and 2 reach the workload.
func closeExtraFds() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if err != unix.ENOSYS && err != unix.EINVAL {
		return err
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		var fd int
		if _, err := fmt.Sscanf(n, "%d", &fd); err != nil || fd < 3 {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}
