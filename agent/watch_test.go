package agent

import (
	"os/exec"
	"testing"
	"time"

	"github.com/tender-edge/tender/runtime/nsenter"
)

// startSleep is a real process to watch, killed at the end of the test.
func startSleep(t *testing.T) (*exec.Cmd, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	start, err := nsenter.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, start
}

// A watched process that exits wakes the loop; a cancelled watch ends
// without waking it, and holds nothing after stopAll.
func TestExitWatcher(t *testing.T) {
	woke := make(chan struct{}, 10)
	w := newExitWatcher(func() { woke <- struct{}{} })
	a, aStart := startSleep(t)
	b, bStart := startSleep(t)
	w.watch("a", a.Process.Pid, aStart)
	w.watch("b", b.Process.Pid, bStart)
	select {
	case <-woke:
		t.Fatal("woken while both run")
	default:
	}
	a.Process.Kill()
	a.Wait()
	select {
	case <-woke:
	case <-time.After(time.Minute): // only a broken watch waits this long
		t.Fatal("no wake-up after a watched process exited")
	}
	w.keepOnly(map[string]bool{"a": true})
	w.stopAll() // returns only once both goroutines have ended
	select {
	case <-woke:
		t.Error("a cancelled watch woke the loop")
	default:
	}
	if len(w.watched) != 0 {
		t.Errorf("%d watches left after stopAll", len(w.watched))
	}
	// A process that is not the one recorded (its start time differs)
	// wakes the loop at once.
	w.watch("b", b.Process.Pid, bStart+1)
	select {
	case <-woke:
	default:
		t.Error("a reused pid was watched")
	}
}
