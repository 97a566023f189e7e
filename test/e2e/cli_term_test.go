package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A container's output that would drive the operator's terminal (an OSC
// retitling it) is shown escaped when logs writes to a terminal, and
// given as it is with --raw or through a pipe (issue 9).
func TestCLI_LogsEscapeControlSequencesOnATerminal(t *testing.T) {
	const hostile = "\x1b]0;pwned\x07"
	ok(t, "run", "--name", "osc", image, "echo", hostile+"title")
	t.Cleanup(func() { agent(t, "rm", "-f", "osc") })

	tty := onPty(t, "logs", "osc")
	if strings.Contains(tty, "\x1b") || strings.Contains(tty, "\x07") || !strings.Contains(tty, `\x1b]0;pwned\x07title`) {
		t.Errorf("logs on a terminal: %q, want the escape shown as text", tty)
	}
	if raw := onPty(t, "logs", "--raw", "osc"); !strings.Contains(raw, hostile+"title") {
		t.Errorf("logs --raw on a terminal: %q, want the bytes as they are", raw)
	}
	if piped := ok(t, "logs", "osc"); piped != hostile+"title\n" {
		t.Errorf("logs through a pipe: %q, want the bytes as they are", piped)
	}
}

// onPty runs tender-agent with its stdout on a new pseudo-terminal and
// returns what the terminal received (with the pty's \r\n line endings).
func onPty(t *testing.T, args ...string) string {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&out, ptmx) // ends with EIO once no one holds the terminal
		close(done)
	}()
	cmd := exec.Command(agentBin, append([]string{"--root", root}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pts, &stderr
	err = cmd.Run()
	pts.Close()
	<-done
	if err != nil {
		t.Fatalf("tender-agent %s on a pty: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String()
}
