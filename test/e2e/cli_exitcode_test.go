package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The documented exit codes, exactly: 1 for bad input and unknown names,
// 125 when the runtime fails, 3 when the daemon is needed and not running.
func TestCLI_ExitCodes(t *testing.T) {
	noDaemon := filepath.Join(t.TempDir(), "agent.sock")
	spec := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(spec, []byte("name: web\nversion: \"1\"\ncontainers: [{name: s, image: "+image+"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"run", "--rm", "no.such/image:1", "id"}, 1},         // unknown image
		{[]string{"run", "--rm", "--memory", "lots", image, "id"}, 1}, // bad value, read by tender-agent
		{[]string{"run", "--rm", "--cpus", "many", image, "id"}, 1},   // bad value, read by the flag parser
		{[]string{"run", "--rm", "--net", "bridge9", image, "id"}, 1}, // bad value, read by the runtime
		{[]string{"run", "--rm", "--no-such-flag", image, "id"}, 1},   // unknown flag
		{[]string{"run"}, 1},                                                     // missing argument
		{[]string{"logs", "no-such-container"}, 1},                               // unknown container
		{[]string{"stop", "-t", "1", "no-such-container"}, 1},                    // unknown container
		{[]string{"rm", "-f", "no-such-container"}, 1},                           // unknown container
		{[]string{"stop", "-t", "soon", "x"}, 1},                                 // bad value
		{[]string{"ps", "-o", "yaml"}, 1},                                        // unknown format
		{[]string{"run", "--rm", "--entrypoint", "/no/such/binary", image}, 125}, // the runtime cannot start it
		{[]string{"--socket", noDaemon, "apply", "-f", spec}, 3},                 // the daemon is needed
		{[]string{"--socket", noDaemon, "apps"}, 3},
	} {
		r := agent(t, tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, "tender-agent: ") {
			t.Errorf("%v: want exit %d and a message, got %s", tc.args, tc.code, r)
		}
	}
}

// -v with an empty or relative host path is refused: it would bind the
// current directory (issue 9).
func TestCLI_VolumeHostPathMustBeAbsolute(t *testing.T) {
	for _, v := range []string{":/x", "relative:/x", ".:/x", "./dir:/x:ro"} {
		r := agent(t, "run", "--rm", "-v", v, image, "cat", "/proc/self/mounts")
		if r.code != 1 || !strings.Contains(r.stderr, "host path") {
			t.Errorf("-v %s: want exit 1 naming the host path, got %s", v, r)
		}
	}
}

// The daemon's container names (APP.CTR.<8 hex>) are refused to run
// --name: the daemon takes such containers for its own (issue 9).
func TestCLI_RunRefusesDaemonNames(t *testing.T) {
	r := agent(t, "run", "-d", "--name", "mine.web.1234abcd", image, "sleep", "100")
	if r.code != 1 || !strings.Contains(r.stderr, "reserved for the daemon's apps") {
		agent(t, "rm", "-f", "mine.web.1234abcd")
		t.Fatalf("run --name mine.web.1234abcd: want exit 1, reserved, got %s", r)
	}
	// Names that only look alike are fine.
	ok(t, "run", "--rm", "--name", "mine.web.notahex1", image, "exit", "0")
}

// A user who may not use the daemon's socket is told so, not that the
// daemon is not running (issue 9).
func TestCLI_SocketPermissionDenied(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	d := newDaemon(t, "")
	// A copy of the binary that user nobody may run.
	dir, err := os.MkdirTemp("", "tender-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "tender-agent")
	b, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"apps"}, {"images"}} {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin,
			"--root", d.root, "--socket", d.socket}, args...)...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 ||
			!strings.Contains(stderr.String(), "permission denied: the agent's socket is root-only") {
			t.Errorf("%v as nobody: want exit 1, permission denied: %v\n%s", args, err, stderr.String())
		}
	}
	// root still gets through.
	d.ok("apps")
}
