package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/api"
)

func TestExitCode_OneTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("no such container %q: %w", "x", errdefs.ErrNotFound), 1},
		{fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument), 1},
		{fmt.Errorf("in use: %w", errdefs.ErrFailedPrecondition), 1},
		{fmt.Errorf("name taken: %w", errdefs.ErrConflict), 1},
		{fmt.Errorf("exists: %w", errdefs.ErrAlreadyExists), 1},
		{fmt.Errorf("registry: %w", errdefs.ErrUnauthenticated), 1},
		{fmt.Errorf("socket: %w", errdefs.ErrPermissionDenied), 1},
		{usageError{Err: errors.New("unknown flag: --x"), Path: "tender-agent run"}, 1},
		{invalid(errors.New("config: yaml: line 1")), 1},
		{fmt.Errorf("%w: start it", api.ErrNoDaemon), 3},
		{errors.New("mount overlay: invalid argument"), 125}, // the runtime's own failure, whatever its words
		{fmt.Errorf("cgroup: %w", errdefs.ErrUnavailable), 125},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// Usage errors come from cobra and pflag before any command runs; errors
// from a command keep their own category.
func TestRun_UsageErrorsExitOne(t *testing.T) {
	for _, args := range [][]string{{"pss"}, {"ps", "--bogus"}, {"stop"}, {"run", "--cpus", "x", "img"}, {"images", "extra"}, {"app", "rmm"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || report(err, io.Discard) != 1 {
			t.Errorf("%v: %v, want a usage error (exit 1)", args, err)
		}
	}
	if err := run(context.Background(), []string{"--help"}, io.Discard, io.Discard); err != nil {
		t.Errorf("--help: %v", err)
	}
}

func TestFlagValues(t *testing.T) {
	for in, want := range map[string]time.Duration{"10": 10 * time.Second, "0": 0, "1500ms": 1500 * time.Millisecond} {
		g := graceValue(-1)
		if err := g.Set(in); err != nil || time.Duration(g) != want {
			t.Errorf("stop -t %s = %v, %v; want %v", in, time.Duration(g), err, want)
		}
	}
	for _, bad := range []string{"-1", "soon", "-2s"} {
		g := graceValue(-1)
		if err := g.Set(bad); err == nil {
			t.Errorf("stop -t %s accepted", bad)
		}
	}
	tail := tailValue(5)
	if tail.Set("all"); tail.String() != "all" || tail >= 0 {
		t.Errorf("--tail all = %d", tail)
	}
	if err := tail.Set("-3"); err == nil {
		t.Error("--tail -3 accepted")
	}
}

func TestParseVolume(t *testing.T) {
	dir := t.TempDir()
	if v, err := parseVolume(dir + "/:/data:ro"); err != nil || v.Source != dir || v.Target != "/data" || !v.ReadOnly {
		t.Errorf("parseVolume: %+v, %v", v, err)
	}
	for _, bad := range []string{":/x", "rel:/x", ".:/x", "/no/such/dir:/x", dir + ":/x:rx", dir} {
		if _, err := parseVolume(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "volume") {
			t.Errorf("parseVolume(%q) = %v, want an invalid argument", bad, err)
		}
	}
}
