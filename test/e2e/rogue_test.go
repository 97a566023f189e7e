package e2e

// The broker is the attacker here: the test publishes on the device's
// topics as anyone who can reach the broker could.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

// procWriteBytes is what process pid has caused to be written to storage
// (/proc/PID/io write_bytes), fsynced bbolt pages included.
func procWriteBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no write_bytes in /proc/PID/io")
	return 0
}

// TestRogue_DesiredFlood: 10,000 junk documents on the desired topic cost a
// bounded amount of disk writes (it was 858 MB: a log line, an event and a
// forced report each), a handful of events, and no restart of any app.
func TestRogue_DesiredFlood(t *testing.T) {
	f := newFleet(t)
	m := mqtttest.StartMochi(t, "127.0.0.1:0", f.subs())
	f.send = m.Publish
	d := newFleetDaemon(t, fleetConfig("tcp://"+m.Addr, f, ""))
	f.publishDesired(f.signed(f.doc(1, sleeper("sl", "1"))), true)
	f.waitReport(d, 1, "sl")
	before := d.running("sl.")
	if len(before) != 1 {
		t.Fatalf("running %+v", before)
	}
	var seq0 uint64
	for _, e := range f.eventsSnapshot() {
		seq0 = max(seq0, e.Seq)
	}
	pid := d.cmd.Process.Pid
	w0 := procWriteBytes(t, pid)

	const n = 10000
	good := f.signed(f.doc(2, sleeper("evil", "1")))
	for i := range n {
		var p []byte
		switch i % 4 {
		case 0: // unsigned
			p = []byte(fmt.Sprintf(`{"payload":{"schema":1,"deviceId":"gw-e2e","generation":%d,"apps":[]}}`, 100+i))
		case 1: // malformed
			p = []byte(fmt.Sprintf(`{"payload": %d`, i))
		case 2: // tampered signature
			p = []byte(strings.Replace(string(good), `"generation":2`, fmt.Sprintf(`"generation":%d`, 100+i), 1))
		default: // unknown fields
			p = []byte(fmt.Sprintf(`{"junk":%d}`, i))
		}
		f.publishDesired(p, false)
	}
	// The broker may drop part of a flood (mochi bounds what it queues
	// for a client): end it with a marker, repeated until a report shows
	// that the device has seen it.
	marker := []byte(`{"payload":"end of the flood"}`)
	sum := sha256.Sum256(marker)
	markerDigest := "sha256:" + hex.EncodeToString(sum[:])
	deadline := time.Now().Add(2 * time.Minute)
	for seen := false; !seen; {
		if time.Now().After(deadline) {
			t.Fatal("no report saw the end of the flood")
		}
		f.publishDesired(marker, false)
		time.Sleep(500 * time.Millisecond)
		f.mu.Lock()
		for _, r := range f.reports {
			seen = seen || r.DesiredDigest == markerDigest
		}
		f.mu.Unlock()
	}
	written := procWriteBytes(t, pid) - w0
	var rejected int
	for _, e := range f.eventsSnapshot() {
		if e.Seq > seq0 && e.Kind == wire.EventRejectedDesired {
			rejected++
		}
	}
	t.Logf("flood of %d junk documents: %d bytes written by the daemon, %d rejected-desired events", n, written, rejected)
	fmt.Printf("desired flood: %d junk documents, %d KiB written, %d events\n", n, written>>10, rejected)
	if written > 4<<20 {
		t.Errorf("%d bytes written for %d junk documents: want a bounded cost (under 4 MiB)", written, n)
	}
	if rejected == 0 || rejected > 10 {
		t.Errorf("%d rejected-desired events for the flood, want a few (one per reason and window)", rejected)
	}
	if lines := strings.Count(d.log.String(), "desired state rejected"); lines > 10 {
		t.Errorf("%d log lines for the flood, want a few", lines)
	}
	after := d.running("sl.")
	if len(after) != 1 || after[0].ID != before[0].ID || len(d.running("evil.")) != 0 {
		t.Fatalf("the flood changed what runs: %+v", after)
	}
}
