// Package e2e drives the built tender-agent binary as a user would, with
// real containers (as root), real cgroups and the project's test image.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	agentBin  string // the tender-agent binary under test
	tenderBin string // the tender binary (controller and CLI) under test
	testImage string // build/testimage.tar
	root      string // the --root shared by the tests (one image store)
)

const image = "tender.test/workload:latest"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: tender-agent runs containers as root")
		return 0
	}
	tmp, err := os.MkdirTemp("", "tender-e2e-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(tmp)
	agentBin, testImage = os.Getenv("TENDER_AGENT"), os.Getenv("TENDER_TESTIMAGE")
	if agentBin == "" || testImage == "" {
		// Outside `make test`: build both here.
		agentBin, testImage = filepath.Join(tmp, "tender-agent"), filepath.Join(tmp, "testimage.tar")
		wl := filepath.Join(tmp, "workload")
		for _, args := range [][]string{
			{"build", "-o", agentBin, "../../cmd/tender-agent"},
			{"build", "-o", wl, "../workload"},
			{"run", "../mkimage", "-bin", wl, "-o", testImage},
		} {
			cmd := exec.Command("go", args...)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Printf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return 1
			}
		}
	}
	if tenderBin = os.Getenv("TENDER_BIN"); tenderBin == "" {
		tenderBin = filepath.Join(tmp, "tender")
		cmd := exec.Command("go", "build", "-o", tenderBin, "../../cmd/tender")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("go build tender: %v\n%s", err, out)
			return 1
		}
	}
	root = filepath.Join(tmp, "root")
	if out, err := exec.Command(agentBin, "--root", root, "load", testImage).CombinedOutput(); err != nil {
		fmt.Printf("load test image: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// result is one finished tender-agent command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// agent runs tender-agent --root ROOT args... and returns what it did.
func agent(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if noPivot && len(args) > 0 && args[0] == "run" {
		args = append([]string{"run", "--no-pivot"}, args[1:]...)
	}
	r, err := runCmd(exec.CommandContext(ctx, agentBin, append([]string{"--root", root}, args...)...))
	if err != nil {
		t.Fatalf("tender-agent %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// runCmd runs cmd and returns its output and exit code (-1 when a signal
// ended it); the error is for a command that could not run at all (its
// code is then -1 too).
func runCmd(cmd *exec.Cmd) (result, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code = -1
		return r, err
	}
	return r, nil
}

// ok runs tender-agent and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := agent(t, args...)
	if r.code != 0 {
		t.Fatalf("tender-agent %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scaled(d))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowFactor is TENDER_E2E_SLOW, default 1: how many times slower than a
// real machine this one is. The emulated guests of make vmtest set it;
// the waits of the tests are that many times longer there, and the test
// app's health check gives its server time to start.
func slowFactor() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("TENDER_E2E_SLOW"), &n); err != nil || n < 1 {
		return 1
	}
	return n
}

// scaled is d made slowFactor times longer.
func scaled(d time.Duration) time.Duration { return d * time.Duration(slowFactor()) }
