package e2e

// The broker is the attacker here: a mosquitto the test controls, open to
// anyone, on which the test publishes on the device's topics as anyone who
// can reach the broker could.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
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
	// The broker queues the whole flood for the device (its default drops
	// past 1000 messages), so the device sees all of it.
	f, d := rogueSetup(t, "max_queued_messages 0")
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

// rogueSetup starts an open mosquitto, a fleet client on it and a daemon
// enrolled with the fleet's key, running the app sl at generation 1.
func rogueSetup(t *testing.T, brokerConf string) (*fleet, *daemon) {
	t.Helper()
	f := newFleet(t)
	broker := mqtttest.StartPlainMosquitto(t, brokerConf)
	f.mqttController(broker, "controller", "", nil)
	f.broker = broker
	d := newFleetDaemon(t, fleetConfig(broker, f, ""))
	f.publishDesired(f.signed(f.doc(1, sleeper("sl", "1"))), true)
	f.waitReport(d, 1, "sl")
	return f, d
}

// TestRogue_Commands: commands that the fleet did not sign, signed for
// another device, expired, or replayed are refused and reported, never
// answered or run; a signed one runs once.
func TestRogue_Commands(t *testing.T) {
	f, d := rogueSetup(t, "")
	ctrs := d.running("sl.")
	send := func(b []byte) {
		t.Helper()
		if err := f.send(topic.MustBuild(deviceID, topic.Command), b, false); err != nil {
			t.Fatal(err)
		}
	}
	lastSeq := func() (n uint64) {
		for _, e := range f.eventsSnapshot() {
			n = max(n, e.Seq)
		}
		return n
	}
	refused := func(what, reason string, payload []byte) {
		t.Helper()
		before := lastSeq()
		send(payload)
		e := f.waitEvent("a rejected-command event for "+what, func(e wire.Event) bool {
			return e.Kind == wire.EventRejectedCommand && e.Seq > before
		})
		if !strings.HasPrefix(e.Reason, reason+":") {
			t.Errorf("%s: reason %q, want %s: ...", what, e.Reason, reason)
		}
	}
	// Unsigned: the old, plain command a broker could forge.
	plain := wire.Command{Schema: wire.CommandSchema, DeviceID: deviceID, ID: strings.Repeat("a", wire.CommandIDLen),
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute), Kind: wire.CommandRestart, App: "sl"}
	b, err := json.Marshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	refused("an unsigned restart", "unsigned", []byte(`{"payload":`+string(b)+`}`))
	// Signed by the fleet, for another device.
	other := wire.Command{Kind: wire.CommandRestart, App: "sl"}
	f.signedCommand(&other) // fills in id and validity
	other.DeviceID = "gw-other"
	envOther, err := sign.SignCommand(f.priv, other)
	if err != nil {
		t.Fatal(err)
	}
	bOther, _ := wire.Encode(envOther)
	refused("another device's restart", "wrong-device", bOther)
	// A good one, then the same bytes again.
	logs := wire.Command{Kind: wire.CommandLogs, App: "sl", Lines: 3}
	good := f.signedCommand(&logs)
	send(good)
	waitFor(t, "the signed command's result", 30*time.Second, func() bool { return len(f.resultsFor(logs.ID)) == 1 })
	refused("a replayed command", "replayed", good)
	// Expired (issued and expired in the past, within the lifetime bound).
	exp := wire.Command{Kind: wire.CommandRestart, App: "sl"}
	f.signedCommand(&exp)
	exp.IssuedAt, exp.ExpiresAt = time.Now().Add(-2*time.Hour), time.Now().Add(-2*time.Hour+time.Minute)
	envExp, err := sign.SignCommand(f.priv, exp)
	if err != nil {
		t.Fatal(err)
	}
	bExp, _ := wire.Encode(envExp)
	refused("an expired restart", "expired", bExp)

	if n := len(f.resultsFor(logs.ID)); n != 1 {
		t.Errorf("%d results for one command sent twice", n)
	}
	if now := d.running("sl."); len(now) != 1 || now[0].ID != ctrs[0].ID {
		t.Fatalf("a refused restart restarted the app: %+v", now)
	}
}

// TestRogue_HugePacket: a 250 MB message on the device's desired topic is
// refused from its header, before it is read: the daemon's peak memory
// stays small, it reconnects, and a good document still gets through.
func TestRogue_HugePacket(t *testing.T) {
	f, d := rogueSetup(t, "")
	pid := d.cmd.Process.Pid
	addr := strings.TrimPrefix(f.broker, "tcp://")
	if err := mqtttest.PublishStream(addr, topic.MustBuild(deviceID, topic.Desired), 1, 250<<20, 'x'); err != nil {
		t.Fatal(err)
	}
	f.publishDesired(f.signed(f.doc(2, sleeper("sl", "2"))), true)
	f.waitReport(d, 2, "sl")
	peak := procStatusKiB(t, pid, "VmHWM")
	t.Logf("daemon peak RSS after a 250 MB packet: %d KiB", peak)
	fmt.Printf("huge packet: daemon peak RSS %d KiB\n", peak)
	if peak > 96<<10 {
		t.Errorf("daemon peak RSS %d KiB after a 250 MB packet: it was buffered", peak)
	}
}

// procStatusKiB reads a "kB" field of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
