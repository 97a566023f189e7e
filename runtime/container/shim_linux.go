package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
)

// ShimArg is os.Args[1] of a re-executed monitor ("shim"): a small process
// that is the parent of one container, records how it ends and outlives
// whoever started it (the CLI, or an agent being restarted or upgraded).
const ShimArg = "__tender_shim__"

// StartDetached starts the container under a new shim and returns once the
// workload runs (or with the error that stopped it).
func (r *Runtime) StartDetached(ref string) (*Container, error) {
	c, err := r.Get(ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == Running {
		return nil, fmt.Errorf("start %s: %w", c.Name, ErrRunning)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start shim: %w", err)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start shim: %w", err)
	}
	defer rd.Close()
	cmd := exec.Command(self, ShimArg, r.root(), c.ID)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	// A shim only waits: one P and a small heap keep its private memory low.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GOGC=50")
	if err := cmd.Start(); err != nil {
		wr.Close()
		return nil, fmt.Errorf("start shim: %w", err)
	}
	wr.Close()
	msg, _ := io.ReadAll(io.LimitReader(rd, 64<<10))
	// The shim lives on; release it so it is not reaped by us.
	_ = cmd.Process.Release()
	if s := string(msg); s != "ok" {
		if s == "" {
			s = "the shim exited before reporting"
		}
		return nil, errors.New(strings.TrimSpace(s))
	}
	return r.Get(c.ID)
}

// ShimMain is the shim's main: args are [root, id]. It returns the
// process's exit code.
func ShimMain(args []string) int {
	ready := os.NewFile(3, "ready")
	fail := func(err error) int {
		if ready != nil {
			fmt.Fprint(ready, err.Error())
			ready.Close()
		}
		return 1
	}
	if len(args) != 2 {
		return fail(errors.New("shim: usage: ROOT ID"))
	}
	r, err := New(args[0], nil, zerolog.Nop())
	if err != nil {
		return fail(err)
	}
	m, err := r.Start(context.Background(), args[1], IO{})
	if err != nil {
		return fail(err)
	}
	fmt.Fprint(ready, "ok")
	ready.Close()
	// Hang-ups and interrupts meant for a terminal never reach a shim.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	if _, err := m.Wait(); err != nil {
		return 1
	}
	return 0
}
