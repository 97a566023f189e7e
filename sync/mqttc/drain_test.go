package mqttc

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/outbox"
)

// holdingProxy forwards a client's connection to the broker. Once armed, it
// holds back everything the broker sends (the PUBACKs) until the client
// has sent want PUBLISH packets: a client that waits for each PUBACK
// before the next publish never gets there.
type holdingProxy struct {
	addr            string
	mu              sync.Mutex
	cond            *sync.Cond
	armed, released bool
	published, want int
}

func startHoldingProxy(t *testing.T, upstream string, want int) *holdingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &holdingProxy{addr: ln.Addr().String(), want: want}
	p.cond = sync.NewCond(&p.mu)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	forward(ln, upstream, func(c, u net.Conn) {
		mu.Lock()
		conns = append(conns, c, u)
		mu.Unlock()
		go p.clientToBroker(c, u)
		go p.brokerToClient(u, c)
	})
	return p
}

func (p *holdingProxy) arm() {
	p.mu.Lock()
	p.armed = true
	p.mu.Unlock()
}

// clientToBroker copies packets one by one, counting PUBLISHes.
func (p *holdingProxy) clientToBroker(c, u net.Conn) {
	defer u.Close()
	for {
		pkt, err := readPacket(c)
		if err != nil {
			return
		}
		if pkt[0]>>4 == 3 { // PUBLISH
			p.mu.Lock()
			if p.armed {
				p.published++
				if p.published >= p.want {
					p.released = true
					p.cond.Broadcast()
				}
			}
			p.mu.Unlock()
		}
		if _, err := u.Write(pkt); err != nil {
			return
		}
	}
}

// brokerToClient copies bytes, holding them while armed and not released.
func (p *holdingProxy) brokerToClient(u, c net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := u.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		for p.armed && !p.released {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// readPacket reads one MQTT control packet: fixed header byte, remaining
// length (varint), body.
func readPacket(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 1, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n, mult := 0, 1
	for i := 0; i < 4; i++ {
		b := make([]byte, 1)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		hdr = append(hdr, b[0])
		n += int(b[0]&0x7f) * mult
		mult *= 128
		if b[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// TestDrain_KeepsAWindowInFlight: the proxy lets no PUBACK through until
// the client has sent 8 publishes; Drain, keeping DrainWindow in flight,
// gets there and empties the outbox. One publish at a time would wait for
// a PUBACK that never comes.
func TestDrain_KeepsAWindowInFlight(t *testing.T) {
	const want = 8
	if DrainWindow < want {
		t.Fatalf("DrainWindow %d < %d", DrainWindow, want)
	}
	_, addr := startBroker(t, "127.0.0.1:0")
	proxy := startHoldingProxy(t, addr, want)
	ob, err := outbox.Open(t.TempDir()+"/outbox.db", outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	dev := startClient(t, Config{Broker: "tcp://" + proxy.addr, ClientID: "gw-w"})
	connected(t, dev)
	proxy.arm()
	for i := 0; i < 40; i++ {
		if _, err := ob.AddEvent([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- Drain(ctx, dev, ob, "gw-w") }()
	defer func() {
		cancel()
		if err := <-drained; !errors.Is(err, context.Canceled) {
			t.Errorf("Drain = %v", err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		items, err := ob.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d items still pending: the drain did not keep publishes in flight", len(items))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
