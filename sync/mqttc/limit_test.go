package mqttc

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/test/mqtttest"
)

// header is an MQTT fixed header announcing n more bytes.
func header(typ byte, n int) []byte {
	b := []byte{typ}
	for {
		x := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			x |= 0x80
		}
		b = append(b, x)
		if n == 0 {
			return b
		}
	}
}

func TestPacketScanner(t *testing.T) {
	const limit = 1000
	var ok []byte
	ok = append(ok, header(0x20, 2)...) // CONNACK
	ok = append(ok, 0, 0)
	ok = append(ok, header(0xd0, 0)...) // PINGRESP: no body
	ok = append(ok, header(0x32, limit)...)
	ok = append(ok, bytes.Repeat([]byte{'x'}, limit)...) // a PUBLISH of exactly the limit
	ok = append(ok, header(0x90, 3)...)                  // SUBACK
	ok = append(ok, 0, 1, 1)
	over := append(append([]byte(nil), ok...), header(0x30, limit+1)...)
	huge := append(append([]byte(nil), ok...), header(0x30, 250<<20)...)
	malformed := append(append([]byte(nil), ok...), 0x30, 0x80, 0x80, 0x80, 0x80, 0x01)
	// Fed in every chunk size, so that headers split across reads.
	for _, chunk := range []int{1, 2, 3, 7, 64, len(huge)} {
		feed := func(b []byte) error {
			s := packetScanner{limit: limit}
			for i := 0; i < len(b); i += chunk {
				if err := s.scan(b[i:min(i+chunk, len(b))]); err != nil {
					return err
				}
			}
			return nil
		}
		if err := feed(ok); err != nil {
			t.Errorf("chunk %d: packets within the limit refused: %v", chunk, err)
		}
		for name, b := range map[string][]byte{"limit+1": over, "250 MB": huge} {
			err := feed(b)
			var tl *PacketTooLargeError
			if !errors.As(err, &tl) || !errors.Is(err, ErrPacketTooLarge) || tl.Limit != limit || tl.Size <= limit {
				t.Errorf("chunk %d: %s: err = %v, want PacketTooLargeError", chunk, name, err)
			}
		}
		if err := feed(malformed); !errdefs.IsInvalidArgument(err) {
			t.Errorf("chunk %d: a 5-byte length: err = %v", chunk, err)
		}
	}
}

// heapPeak samples the heap until stop is called and returns the largest
// HeapInuse seen.
func heapPeak() (stop func() uint64) {
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// waitFor polls cond until it holds; it fails the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within a minute", what)
		case <-tick.C:
		}
	}
}

// TestClient_RefusesOversizedPacketBeforeReadingIt is issue 9's rogue
// broker: a 250 MB message on the device's command topic cost paho 600 MB
// (it reads a whole packet before anyone can check its size). The client
// cuts the connection at the packet's header, reconnects (with a clean
// session once, or the broker would resend the unacknowledged message on
// every reconnect), and later messages still arrive.
func TestClient_RefusesOversizedPacketBeforeReadingIt(t *testing.T) {
	addr := mqtttest.StartPlainMosquitto(t, "")
	host := strings.TrimPrefix(addr, "tcp://")
	cmd := topic.MustBuild("gw-big", topic.Command)
	c := startClient(t, Config{Broker: addr, ClientID: "gw-big"})
	connected(t, c)
	in := subscribe(t, c, cmd)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := heapPeak()
	if err := mqtttest.PublishStream(host, cmd, 1, 250<<20, 'x'); err != nil {
		stop()
		t.Fatal(err)
	}
	waitFor(t, "connection cut and re-established (or the message read)", func() bool {
		return c.PacketsRefused() == 1 && c.Connects() == 2 && c.Connected() || len(in) > 0
	})
	peak := stop()
	select {
	case m := <-in:
		t.Errorf("the client read the whole %d MiB message", len(m.Payload)>>20)
	default:
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	const budget = 32 << 20
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > budget {
		t.Errorf("the client allocated %d MiB while refusing a 250 MiB packet, want under %d MiB", alloc>>20, budget>>20)
	}
	if peak > before.HeapInuse+budget {
		t.Errorf("heap in use peaked at %d MiB (%d MiB before), want under %d MiB more", peak>>20, before.HeapInuse>>20, budget>>20)
	}
	t.Logf("refusing 250 MiB: %d KiB allocated, heap peak %d KiB (%d KiB before)",
		(after.TotalAlloc-before.TotalAlloc)>>10, peak>>10, before.HeapInuse>>10)

	// A normal message published afterwards arrives, and the broker did not
	// send the big one again.
	if err := mqtttest.PublishStream(host, cmd, 1, 5, 'n'); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Payload) != "nnnnn" {
		t.Fatalf("after the refusal got %d bytes %.20q, want nnnnn", len(m.Payload), m.Payload)
	}
	if n, k := c.PacketsRefused(), c.Connects(); n != 1 || k != 2 {
		t.Errorf("PacketsRefused = %d, Connects = %d; want 1 and 2", n, k)
	}
}
