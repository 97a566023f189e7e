package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/internal/trace"
)

// TENDER_TRACE=1 prints every phase of a start once, from the CLI's, the
// root's monitor's and the init's processes, and their durations sum to at most the
// wall time of the command (issue 15).
func TestTrace_RunPrintsEveryPhaseOnce(t *testing.T) {
	want := []string{
		"cli process-start", "cli state-open", "cli image-lookup", "cli create",
		"cli monitor-connect", "mon state-open", "mon cgroup-setup", "mon logs-open", "mon init-start",
		"mon cgroup-place", "init process-start", "init config-read", "init rootfs-mounts", "init user-cwd",
		"init seccomp-assembly", "init caps-seccomp-load", "init await-go", "mon exec-workload",
		"mon state-save", "mon wait", "mon cleanup",
	}
	for _, how := range []string{"env", "flag"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		args := []string{"--root", root, "run", "--rm", image, "exit", "0"}
		if how == "flag" {
			args = []string{"--root", root, "run", "--trace", "--rm", image, "exit", "0"}
		}
		cmd := exec.CommandContext(ctx, agentBin, args...)
		cmd.Env = os.Environ()
		if how == "env" {
			cmd.Env = append(cmd.Env, trace.EnvOn+"=1")
		}
		// The CLI's process start, exactly (else /proc's clock ticks).
		t0 := trace.Now()
		cmd.Env = append(cmd.Env, trace.EnvT0+"="+strconv.FormatInt(t0, 10))
		r, err := runCmd(cmd)
		wall := time.Duration(trace.Now() - t0)
		cancel()
		if err != nil || r.code != 0 {
			t.Fatalf("%s: run --rm exit 0: %v %s", how, err, r)
		}
		seen := map[string]int{}
		var sum, total time.Duration
		sc := bufio.NewScanner(strings.NewReader(r.stderr))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 4 || f[0] != "trace:" || f[len(f)-1] != "ms" {
				t.Errorf("%s: not a trace line: %q", how, sc.Text())
				continue
			}
			ms, err := strconv.ParseFloat(f[len(f)-2], 64)
			if err != nil || ms < 0 {
				t.Errorf("%s: bad duration in %q", how, sc.Text())
				continue
			}
			d := time.Duration(ms * 1e6)
			if f[1] == "total" {
				total = d
				continue
			}
			seen[f[1]+" "+f[2]]++
			sum += d
		}
		for _, p := range want {
			if seen[p] != 1 {
				t.Errorf("%s: phase %q printed %d times, want once:\n%s", how, p, seen[p], r.stderr)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("%s: %d phases printed, want %d:\n%s", how, len(seen), len(want), r.stderr)
		}
		// Each line is rounded to a microsecond.
		if sum > wall+time.Duration(len(seen))*time.Microsecond {
			t.Errorf("%s: phases sum to %v, more than the wall time %v:\n%s", how, sum, wall, r.stderr)
		}
		if d := total - sum; d < -50*time.Microsecond || d > 50*time.Microsecond {
			t.Errorf("%s: total %v, phases sum to %v", how, total, sum)
		}
	}
	// Off by default: not a line of it.
	if r := agent(t, "run", "--rm", image, "exit", "0"); r.code != 0 || strings.Contains(r.stderr, "trace") {
		t.Errorf("run without tracing: %s", r)
	}
}
