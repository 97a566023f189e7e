package mqttc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/topic"
)

// startBroker starts an embedded mochi broker on addr ("127.0.0.1:0" for
// any port) with extra hooks, and returns a function that stops it and its
// address.
func startBroker(t *testing.T, addr string, hooks ...mqtt.Hook) (stop func(), _ string) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	if err := s.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { _ = s.Close() }) }
	t.Cleanup(stop)
	return stop, tcp.Address()
}

// fastBackoff keeps reconnects quick in tests.
var fastBackoff = Backoff{Base: 5 * time.Millisecond, Cap: 50 * time.Millisecond}

// startClient runs a client until the test ends.
func startClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	cfg.Backoff = fastBackoff
	cfg.Rand = rand.New(rand.NewPCG(1, 1))
	cfg.Log = zerolog.New(zerolog.NewTestWriter(t))
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return c
}

func connected(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("client never connected: %v", err)
	}
}

// inbox collects received messages.
type inbox chan Message

func (in inbox) handler(m Message) { in <- m }

func (in inbox) next(t *testing.T) Message {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return Message{}
	}
}

func subscribe(t *testing.T, c *Client, filter string) inbox {
	t.Helper()
	in := make(inbox, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, filter, in.handler); err != nil {
		t.Fatal(err)
	}
	return in
}

func publish(t *testing.T, c *Client, topic, payload string, retained bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Publish(ctx, topic, []byte(payload), retained); err != nil {
		t.Fatal(err)
	}
}

func TestClient_PublishSubscribe(t *testing.T) {
	_, addr := startBroker(t, "127.0.0.1:0")
	obs := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "observer", CleanSession: true})
	connected(t, obs)
	in := subscribe(t, obs, "tender/v1/devices/+/events")

	dev := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "gw-1"})
	connected(t, dev)
	publish(t, dev, "tender/v1/devices/gw-1/events", "e1", false)
	if m := in.next(t); m.Topic != "tender/v1/devices/gw-1/events" || string(m.Payload) != "e1" {
		t.Errorf("received %+v", m)
	}
}

func TestClient_PublishNotConnected(t *testing.T) {
	c, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "gw-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(context.Background(), "x", nil, false); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish before Run = %v, want ErrNotConnected", err)
	}
}

// gateHook holds PUBLISH packets on one topic in OnPublish, which mochi
// runs before it sends the PUBACK.
type gateHook struct {
	mqtt.HookBase
	topic   string
	entered chan struct{}
	release chan struct{}
}

func (h *gateHook) ID() string { return "gate" }
func (h *gateHook) Provides(b byte) bool {
	return b == mqtt.OnPublish
}
func (h *gateHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == h.topic {
		h.entered <- struct{}{}
		<-h.release
	}
	return pk, nil
}

func TestClient_PublishWaitsForPuback(t *testing.T) {
	gate := &gateHook{topic: "gated", entered: make(chan struct{}, 1), release: make(chan struct{})}
	_, addr := startBroker(t, "127.0.0.1:0", gate)
	dev := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "gw-1"})
	connected(t, dev)

	done := make(chan error, 1)
	go func() { done <- dev.Publish(context.Background(), "gated", []byte("x"), false) }()
	<-gate.entered // the broker holds the packet: no PUBACK can have been sent
	select {
	case err := <-done:
		t.Fatalf("Publish returned %v before the broker acknowledged", err)
	default:
	}
	close(gate.release)
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v", err)
	}
}

// proxy forwards TCP connections to a broker and can cut them all.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.serve(upstream)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(upstream string) {
	forward(p.ln, upstream, func(c, u net.Conn) {
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	})
}

// forward accepts connections on ln until it closes, dials upstream for
// each and hands both ends to pipe.
func forward(ln net.Listener, upstream string, pipe func(client, broker net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			pipe(c, u)
		}
	}()
}

// cut stops accepting and resets every connection, as a dead link would.
func (p *proxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

func TestClient_LastWillOnAbruptClose(t *testing.T) {
	_, addr := startBroker(t, "127.0.0.1:0")
	presence := topic.MustBuild("gw-1", topic.Presence)
	obs := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "observer", CleanSession: true})
	connected(t, obs)
	in := subscribe(t, obs, presence)

	p := startProxy(t, addr)
	dev := startClient(t, Config{Broker: "tcp://" + p.ln.Addr().String(), ClientID: "gw-1", PresenceTopic: presence})
	connected(t, dev)
	if m := in.next(t); string(m.Payload) != "online" {
		t.Fatalf("presence = %q, want online", m.Payload)
	}
	p.cut()
	// QoS 1 is at least once: mochi now and then delivers "online" a
	// second time; anything after it must be the Will.
	m := in.next(t)
	for string(m.Payload) == "online" {
		m = in.next(t)
	}
	if string(m.Payload) != "offline" {
		t.Fatalf("presence after the link died = %q, want offline", m.Payload)
	}
	// It is retained: a newcomer sees it.
	late := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "late", CleanSession: true})
	connected(t, late)
	lin := subscribe(t, late, presence)
	if m := lin.next(t); string(m.Payload) != "offline" || !m.Retained {
		t.Errorf("newcomer got %q retained=%v, want retained offline", m.Payload, m.Retained)
	}
}

func TestClient_CleanShutdownSaysOffline(t *testing.T) {
	_, addr := startBroker(t, "127.0.0.1:0")
	presence := topic.MustBuild("gw-1", topic.Presence)
	obs := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "observer", CleanSession: true})
	connected(t, obs)
	in := subscribe(t, obs, presence)

	dev, err := New(Config{Broker: "tcp://" + addr, ClientID: "gw-1", PresenceTopic: presence, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dev.Run(ctx) }()
	if m := in.next(t); string(m.Payload) != "online" {
		t.Fatalf("presence = %q, want online", m.Payload)
	}
	cancel()
	<-done
	// QoS 1 is at least once: the "online" may come again first.
	m := in.next(t)
	for string(m.Payload) == "online" {
		m = in.next(t)
	}
	if string(m.Payload) != "offline" {
		t.Fatalf("presence after shutdown = %q, want offline", m.Payload)
	}
}

func TestClient_ResubscribesAfterBrokerRestart(t *testing.T) {
	stop1, addr := startBroker(t, "127.0.0.1:0")
	cmd := topic.MustBuild("gw-1", topic.Command)
	presence := topic.MustBuild("gw-1", topic.Presence)
	dev := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "gw-1", PresenceTopic: presence})
	connected(t, dev)
	devIn := subscribe(t, dev, cmd)

	stop1() // broker gone, sessions lost with it
	_, addr2 := startBroker(t, addr)
	if addr2 != addr {
		t.Fatalf("restarted broker on %s, want %s", addr2, addr)
	}
	obs := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "observer", CleanSession: true})
	connected(t, obs)
	// The device announces "online" only after it subscribed again.
	pin := subscribe(t, obs, presence)
	if m := pin.next(t); string(m.Payload) != "online" {
		t.Fatalf("presence = %q, want online", m.Payload)
	}
	publish(t, obs, cmd, "restart", false)
	if m := devIn.next(t); string(m.Payload) != "restart" {
		t.Errorf("device got %q after the restart, want restart", m.Payload)
	}
}

func TestDrain_SendsOutboxInOrderAfterLinkComesBack(t *testing.T) {
	_, addr := startBroker(t, "127.0.0.1:0")
	obs := startClient(t, Config{Broker: "tcp://" + addr, ClientID: "observer", CleanSession: true})
	connected(t, obs)
	rin := subscribe(t, obs, topic.MustBuild("gw-1", topic.Reported))
	ein := subscribe(t, obs, topic.MustBuild("gw-1", topic.Events))

	// The device reaches the broker through a port where nothing listens yet.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	link := hole.Addr().String()
	hole.Close()

	ob, err := outbox.Open(t.TempDir()+"/outbox.db", outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	dev := startClient(t, Config{Broker: "tcp://" + link, ClientID: "gw-1"})
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- Drain(ctx, dev, ob, "gw-1") }()
	defer func() {
		cancel()
		if err := <-drained; !errors.Is(err, context.Canceled) {
			t.Errorf("Drain = %v", err)
		}
	}()

	const n = 50
	for i := 0; i < n; i++ {
		if _, err := ob.AddEvent([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []string{"r1", "r2"} {
		if err := ob.PutReport([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}

	// The link comes up.
	ln, err := net.Listen("tcp", link)
	if err != nil {
		t.Fatalf("reopen %s: %v", link, err)
	}
	p := &proxy{ln: ln}
	p.serve(addr)
	t.Cleanup(p.cut)

	if m := rin.next(t); string(m.Payload) != "r2" {
		t.Errorf("report = %q, want only the newest, r2", m.Payload)
	}
	for i := 0; i < n; i++ {
		if m := ein.next(t); int(m.Payload[0]) != i {
			t.Fatalf("event %d arrived as number %d: out of order, lost or twice", m.Payload[0], i)
		}
	}
	// Drain acks each item before it sends the next, so once a sentinel
	// arrives everything before it has left the outbox.
	if _, err := ob.AddEvent([]byte{n}); err != nil {
		t.Fatal(err)
	}
	if m := ein.next(t); int(m.Payload[0]) != n {
		t.Fatalf("sentinel = %d", m.Payload[0])
	}
	items, err := ob.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) > 1 || (len(items) == 1 && items[0].Payload[0] != n) {
		t.Errorf("outbox still holds %d items after delivery", len(items))
	}
	select {
	case m := <-rin:
		t.Errorf("a superseded report was sent too: %q", m.Payload)
	default:
	}
}
