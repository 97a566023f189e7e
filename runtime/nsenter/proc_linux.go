package nsenter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// StartTime returns the start time of pid in clock ticks since boot (field
// 22 of /proc/PID/stat). It tells a process apart from a later one that
// reuses its pid.
func StartTime(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: fields count from
	// the last ')', which ends field 2.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat of %d: no command name", pid)
	}
	fields := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // fields after the name start at field 3
	if len(fields) <= startField {
		return 0, fmt.Errorf("parse stat of %d: %d fields", pid, len(fields)+2)
	}
	v, err := strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat of %d: %w", pid, err)
	}
	return v, nil
}

// checkStart fails with ErrNotRunning unless pid is still the process that
// started at start. Callers open what they need from the pid first, then
// check: what they opened then belongs to the right process.
func checkStart(pid int, start uint64) error {
	if start == 0 {
		return fmt.Errorf("pid %d: no start time: %w", pid, errdefs.ErrInvalidArgument)
	}
	got, err := StartTime(pid)
	if err != nil {
		return err
	}
	if got != start {
		return fmt.Errorf("pid %d started at %d, not %d: %w", pid, got, start, ErrNotRunning)
	}
	return nil
}

// openPidfd returns a pidfd of pid, checked to be the process that started
// at start.
func openPidfd(pid int, start uint64) (int, error) {
	if pid <= 0 {
		return -1, fmt.Errorf("pid %d: %w", pid, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return -1, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	if err := checkStart(pid, start); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
