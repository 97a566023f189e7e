package outbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// mustOpen opens an outbox in a fresh file and checks the file's
// consistency when the test ends.
func mustOpen(t *testing.T, path string, lim Limits) *Outbox {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "outbox.db")
	}
	o, err := Open(path, lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := o.db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		o.Close()
	})
	return o
}

func pending(t *testing.T, o *Outbox) []string {
	t.Helper()
	items, err := o.Pending()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		out = append(out, fmt.Sprintf("%s/%d:%s", it.Kind, it.Seq, it.Payload))
	}
	return out
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestOutbox_OrderAndAck(t *testing.T) {
	o := mustOpen(t, "", Limits{})
	for i := 1; i <= 3; i++ {
		seq, err := o.AddEvent([]byte(fmt.Sprintf("e%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Errorf("event %d got seq %d", i, seq)
		}
	}
	if err := o.PutReport([]byte("r1")); err != nil {
		t.Fatal(err)
	}
	want := []string{"report/1:r1", "event/1:e1", "event/2:e2", "event/3:e3"}
	if got := pending(t, o); !equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	items, _ := o.Pending()
	if err := o.Ack(items[1]); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack(items[1]); err != nil { // twice: no-op
		t.Fatal(err)
	}
	if err := o.Ack(items[0]); err != nil {
		t.Fatal(err)
	}
	if got, want := pending(t, o), []string{"event/2:e2", "event/3:e3"}; !equal(got, want) {
		t.Fatalf("after acks Pending = %v, want %v", got, want)
	}
	// Sequence numbers keep increasing after acks.
	if seq, _ := o.AddEvent([]byte("e4")); seq != 4 {
		t.Errorf("next seq = %d, want 4", seq)
	}
}

func TestOutbox_ReportSupersedes(t *testing.T) {
	o := mustOpen(t, "", Limits{})
	for _, r := range []string{"r1", "r2", "r3"} {
		if err := o.PutReport([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	items, _ := o.Pending()
	if got, want := pending(t, o), []string{"report/3:r3"}; !equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	// A newer report arrives while r3 is in flight: acking r3 keeps r4.
	if err := o.PutReport([]byte("r4")); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack(items[0]); err != nil {
		t.Fatal(err)
	}
	if got, want := pending(t, o), []string{"report/4:r4"}; !equal(got, want) {
		t.Fatalf("after acking the superseded report Pending = %v, want %v", got, want)
	}
	items, _ = o.Pending()
	if err := o.Ack(items[0]); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, o); len(got) != 0 {
		t.Fatalf("Pending = %v, want nothing", got)
	}
}

func TestOutbox_CapByCount(t *testing.T) {
	o := mustOpen(t, "", Limits{MaxEvents: 3})
	for i := 1; i <= 5; i++ {
		if _, err := o.AddEvent([]byte(fmt.Sprintf("e%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := pending(t, o), []string{"event/3:e3", "event/4:e4", "event/5:e5"}; !equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	if n, err := o.Dropped(); err != nil || n != 2 {
		t.Errorf("Dropped = %d, %v, want 2", n, err)
	}
	// Acking an event that was dropped is a no-op and keeps the counters right.
	if err := o.Ack(Item{Kind: Event, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.AddEvent([]byte("e6")); err != nil {
		t.Fatal(err)
	}
	if got, want := pending(t, o), []string{"event/4:e4", "event/5:e5", "event/6:e6"}; !equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	if n, _ := o.Dropped(); n != 3 {
		t.Errorf("Dropped = %d, want 3", n)
	}
}

func TestOutbox_CapByBytes(t *testing.T) {
	o := mustOpen(t, "", Limits{MaxBytes: 10})
	for _, p := range []string{"aaaa", "bbbb", "cccc"} { // 12 bytes > 10
		if _, err := o.AddEvent([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := pending(t, o), []string{"event/2:bbbb", "event/3:cccc"}; !equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	if _, err := o.AddEvent([]byte("0123456789x")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("AddEvent(larger than the whole outbox) = %v, want an invalid argument", err)
	}
	if n, _ := o.Dropped(); n != 1 {
		t.Errorf("Dropped = %d, want 1", n)
	}
	// Acks free bytes: two 4-byte events fit again after one ack.
	items, _ := o.Pending()
	if err := o.Ack(items[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := o.AddEvent([]byte("dddd")); err != nil {
		t.Fatal(err)
	}
	if n, _ := o.Dropped(); n != 1 {
		t.Errorf("Dropped after ack = %d, want still 1", n)
	}
}

func TestOutbox_AddEventFuncSeesSeq(t *testing.T) {
	o := mustOpen(t, "", Limits{})
	seq, err := o.AddEventFunc(func(seq uint64) ([]byte, error) {
		return []byte(`{"seq":` + strconv.FormatUint(seq, 10) + `}`), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pending(t, o), []string{`event/1:{"seq":1}`}; seq != 1 || !equal(got, want) {
		t.Errorf("Pending = %v (seq %d), want %v", got, seq, want)
	}
}

func TestOutbox_Notify(t *testing.T) {
	o := mustOpen(t, "", Limits{})
	<-o.Notify() // Open signals once for items of a previous run
	select {
	case <-o.Notify():
		t.Fatal("notified without a new item")
	default:
	}
	if _, err := o.AddEvent([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := o.PutReport([]byte("r")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-o.Notify():
	default:
		t.Fatal("no notification after AddEvent")
	}
}

func TestOutbox_SharedDB(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "agent.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o, err := New(db, "v1/outbox", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.AddEvent([]byte("e1")); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	// The shared database is still open.
	if err := db.View(func(tx *bolt.Tx) error { return nil }); err != nil {
		t.Fatalf("shared db closed by outbox: %v", err)
	}
}

// TestOutbox_SurvivesKill writes in a child process that then SIGKILLs
// itself without closing the database, and reads the outbox back.
func TestOutbox_SurvivesKill(t *testing.T) {
	if path := os.Getenv("OUTBOX_KILL_CHILD"); path != "" {
		o, err := Open(path, Limits{MaxEvents: 100})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for i := 1; i <= 150; i++ {
			if _, err := o.AddEvent([]byte(fmt.Sprintf("e%d", i))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		if err := o.PutReport([]byte("r")); err != nil {
			os.Exit(2)
		}
		items, _ := o.Pending()
		if err := o.Ack(items[1]); err != nil { // ack e51
			os.Exit(2)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	path := filepath.Join(t.TempDir(), "outbox.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutbox_SurvivesKill$")
	cmd.Env = append(os.Environ(), "OUTBOX_KILL_CHILD="+path)
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\n%s", err, out)
	}
	o := mustOpen(t, path, Limits{MaxEvents: 100})
	got := pending(t, o)
	if len(got) != 1+99 || got[0] != "report/1:r" || got[1] != "event/52:e52" || got[99] != "event/150:e150" {
		t.Fatalf("after kill Pending has %d items: %v ... %v", len(got), got[:2], got[len(got)-1])
	}
	if n, _ := o.Dropped(); n != 50 {
		t.Errorf("Dropped after kill = %d, want 50", n)
	}
	if seq, _ := o.AddEvent([]byte("e151")); seq != 151 {
		t.Errorf("seq after kill = %d, want 151", seq)
	}
}
