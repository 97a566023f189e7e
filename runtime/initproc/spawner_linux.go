package initproc

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// The container's init is the small init (smallinit_linux.go) when this
// binary embeds one, else this very binary, re-executed inside the
// container's namespaces. A process in the container must never be able to
// write to it through /proc/<pid>/exe (CVE-2019-5736). Two ways keep it
// safe, tried in this order:
//
//  1. A read-only bind mount of the init's file (the small init's under
//     InitDir, or our own executable), made in a private mount namespace
//     that only one locked OS thread of this process lives in (the
//     spawner), then detached so that only an O_PATH descriptor reaches it.
//     Inits are forked from that thread: their exe is on a read-only mount,
//     and opening it for writing fails with EROFS. The cost is a few mount
//     calls once per process (runc's "bindfd", without its mount-table
//     storms, since the host's mount table never sees the mount).
//  2. A sealed memfd copy of the init (runc's memfd), when the first
//     cannot be set up. It copies the whole program once per process (and
//     decompresses the small init first) and keeps it in memory.
//
// The first matters for a CLI that starts one container per process: the
// copy costs more than the rest of a container start on slow devices.

// spawnReq asks the spawner thread to start an init.
type spawnReq struct {
	argv []string
	attr *os.ProcAttr
	resp chan spawnResp
}

type spawnResp struct {
	proc *os.Process
	err  error
}

// spawner is the locked thread that owns the private mount namespace and
// the descriptor of the read-only executable.
type spawner struct {
	exeFd int
	reqs  chan spawnReq
}

var (
	spawnerOnce sync.Once
	spawnerInst *spawner
	spawnerErr  error
)

// getSpawner starts the spawner thread on first use.
func getSpawner() (*spawner, error) {
	spawnerOnce.Do(func() {
		// The small init's file, written on first use in this boot; an
		// error here leaves the sealed memfd.
		path, err := smallInitPath()
		if err != nil {
			spawnerErr = err
			return
		}
		ready := make(chan error, 1)
		s := &spawner{reqs: make(chan spawnReq)}
		go s.run(path, ready)
		if err := <-ready; err != nil {
			spawnerErr = err
			return
		}
		spawnerInst = s
	})
	return spawnerInst, spawnerErr
}

// run never returns once set up; on a setup error it returns and its
// thread, still locked, is destroyed with the goroutine, so the private
// mount namespace never leaks into the rest of the process.
// path is the init's file, "" for our own executable.
func (s *spawner) run(path string, ready chan<- error) {
	runtime.LockOSThread() // never unlocked: this thread is not like the others
	fd, err := roExecutable(path)
	if err != nil {
		ready <- err
		return
	}
	s.exeFd = fd
	ready <- nil
	for req := range s.reqs {
		p, err := os.StartProcess(fmt.Sprintf("/proc/self/fd/%d", s.exeFd), req.argv, req.attr)
		req.resp <- spawnResp{p, err}
	}
}

// start forks an init from the spawner thread.
func (s *spawner) start(argv []string, attr *os.ProcAttr) (*os.Process, error) {
	resp := make(chan spawnResp, 1)
	s.reqs <- spawnReq{argv: argv, attr: attr, resp: resp}
	r := <-resp
	return r.proc, r.err
}

// roExecutable moves the calling (locked) thread into a private mount
// namespace, bind-mounts path (the running executable when "") read-only
// there, keeps an O_PATH descriptor of it at or above minExeFd and detaches
// the mount.
func roExecutable(path string) (int, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
		return -1, fmt.Errorf("private mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return -1, fmt.Errorf("private mount namespace: %w", err)
	}
	var want unix.Stat_t
	if path == "" {
		// Bind the executable's path onto itself, after checking that the
		// path still holds the running inode (an upgrade may have
		// replaced it; then the memfd copy is used instead).
		const self = "/proc/self/exe"
		var err error
		if path, err = os.Readlink(self); err != nil {
			return -1, fmt.Errorf("own executable: %w", err)
		}
		if err := unix.Stat(self, &want); err != nil {
			return -1, fmt.Errorf("own executable: %w", err)
		}
	} else if err := unix.Lstat(path, &want); err != nil {
		return -1, fmt.Errorf("init %s: %w", path, err)
	}
	var onDisk unix.Stat_t
	if err := unix.Lstat(path, &onDisk); err != nil || onDisk.Dev != want.Dev || onDisk.Ino != want.Ino {
		return -1, fmt.Errorf("executable %s was replaced on disk", path)
	}
	if err := unix.Mount(path, path, "", unix.MS_BIND, ""); err != nil {
		return -1, fmt.Errorf("bind executable: %w", err)
	}
	if err := unix.Mount("", path, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return -1, fmt.Errorf("bind executable read-only: %w", err)
	}
	tmp, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open read-only executable: %w", err)
	}
	fd, err := unix.FcntlInt(uintptr(tmp), unix.F_DUPFD_CLOEXEC, minExeFd)
	unix.Close(tmp)
	if err != nil {
		return -1, fmt.Errorf("move executable descriptor: %w", err)
	}
	// The descriptor must be the inode checked above, on the read-only
	// mount (a rename between the check and the bind would show here).
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("executable mount is not read-only")
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		unix.Close(fd)
		return -1, fmt.Errorf("executable %s was replaced while mounted", path)
	}
	// Detach: from now on only the descriptor leads to the read-only mount.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("detach executable mount: %w", err)
	}
	return fd, nil
}
