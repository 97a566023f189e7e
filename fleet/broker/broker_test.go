package broker_test

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/broker"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/test/mqtttest"
)

// fleet is a broker with a test CA, its revocation list, password
// store and clock, and an inline subscriber that records every message
// under tender/v1/devices/.
type fleet struct {
	b     *broker.Broker
	ca    *mqtttest.PKI
	roots *x509.CertPool

	mu      sync.Mutex
	revoked map[string]bool
	now     time.Time
	got     []mqttc.Message
}

type passwords map[string]string

func (p passwords) Check(device, password string) bool {
	want, ok := p[device]
	if !ok {
		want = "\x00never"
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(password)) == 1 && ok
}

func startFleet(t *testing.T, edit func(*broker.Config)) *fleet {
	t.Helper()
	f := &fleet{ca: mqtttest.NewPKI(t, "tender test fleet ca"), roots: x509.NewCertPool(), revoked: map[string]bool{}, now: time.Unix(1_800_000_000, 0)}
	f.roots.AddCert(f.ca.Cert)
	server, _, _ := f.ca.Issue(t, "broker", true)
	cfg := broker.Config{
		TLSAddr:     "127.0.0.1:0",
		Certificate: &server,
		ClientCAs:   f.roots,
		Revoked: func(serial *big.Int) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.revoked[serial.String()]
		},
		Passwords: passwords{"dev-p": "s3cret-password"},
		Now: func() time.Time {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.now
		},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.b = b
	if err := b.Subscribe(topic.Root+"/devices/#", func(m mqttc.Message) {
		f.mu.Lock()
		f.got = append(f.got, m)
		f.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return f
}

func (f *fleet) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// received returns the payloads the inline subscriber got on t.
func (f *fleet) received(t string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.got {
		if m.Topic == t {
			out = append(out, string(m.Payload))
		}
	}
	return out
}

// waitReceived waits until payload arrived on t at the inline subscriber.
func (f *fleet) waitReceived(t *testing.T, tp, payload string) {
	t.Helper()
	waitFor(t, "message "+payload+" on "+tp, func() bool {
		for _, p := range f.received(tp) {
			if p == payload {
				return true
			}
		}
		return false
	})
}

// waitFor polls cond; the deadline only guards against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is how a test client connects.
type client struct {
	cert               *tls.Certificate
	username, password string
	clientID           string
	will               string        // will topic
	keepAlive          time.Duration // 30s if 0; negative: 0 (none)
}

// conn is a connected test client.
type conn struct {
	paho.Client
	lost chan error
	msgs chan paho.Message
}

func (f *fleet) dial(t *testing.T, c client) (*conn, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"}
	if c.cert != nil {
		tc.Certificates = []tls.Certificate{*c.cert}
	}
	cn := &conn{lost: make(chan error, 1), msgs: make(chan paho.Message, 1000)}
	ka := c.keepAlive
	if ka == 0 {
		ka = 30 * time.Second
	} else if ka < 0 {
		ka = 0
	}
	o := paho.NewClientOptions().AddBroker("ssl://" + f.b.TLSAddr()).SetTLSConfig(tc).
		SetClientID(c.clientID).SetUsername(c.username).SetPassword(c.password).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).SetProtocolVersion(4).
		SetKeepAlive(ka).SetConnectTimeout(20 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { cn.lost <- err }).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { cn.msgs <- m })
	if c.will != "" {
		o.SetWill(c.will, "offline", 1, true)
	}
	cn.Client = paho.NewClient(o)
	tok := cn.Connect()
	tok.Wait()
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cn.Disconnect(0) })
	return cn, nil
}

func (f *fleet) mustDial(t *testing.T, c client) *conn {
	t.Helper()
	cn, err := f.dial(t, c)
	if err != nil {
		t.Fatalf("connect %+v: %v", c.clientID, err)
	}
	return cn
}

// device returns a certificate of the fleet CA for id, and its serial.
func (f *fleet) device(t *testing.T, id string) (*tls.Certificate, string) {
	t.Helper()
	crt, _, _ := f.ca.Issue(t, id, false)
	leaf, err := x509.ParseCertificate(crt.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return &crt, leaf.SerialNumber.String()
}

func publish(t *testing.T, c *conn, tp, payload string, qos byte) error {
	t.Helper()
	tok := c.Publish(tp, qos, false, payload)
	tok.Wait()
	return tok.Error()
}

func mustPublish(t *testing.T, c *conn, tp, payload string) {
	t.Helper()
	if err := publish(t, c, tp, payload, 1); err != nil {
		t.Fatalf("publish %s: %v", tp, err)
	}
}

func waitLost(t *testing.T, c *conn, what string) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatalf("%s: connection not cut", what)
	}
}

func tp(id string, k topic.Kind) string { return topic.MustBuild(id, k) }

func TestBroker_DeviceReportReachesController(t *testing.T) {
	f := startFleet(t, nil)
	crt, _ := f.device(t, "dev-a")
	a := f.mustDial(t, client{cert: crt, clientID: "dev-a"})
	for _, k := range []topic.Kind{topic.Reported, topic.Events, topic.Presence, topic.CommandResult} {
		mustPublish(t, a, tp("dev-a", k), "from a "+string(k))
		f.waitReceived(t, tp("dev-a", k), "from a "+string(k))
	}
	// The controller's desired document and command reach the device.
	for _, k := range []topic.Kind{topic.Desired, topic.Command} {
		tok := a.Subscribe(tp("dev-a", k), 1, nil)
		tok.Wait()
		if r := tok.(*paho.SubscribeToken).Result()[tp("dev-a", k)]; tok.Error() != nil || r != 1 {
			t.Fatalf("subscribe %s: %v, granted %#x", k, tok.Error(), r)
		}
		if err := f.b.Publish(tp("dev-a", k), []byte("to a "+string(k)), k == topic.Desired); err != nil {
			t.Fatal(err)
		}
		for got := false; !got; {
			select {
			case m := <-a.msgs:
				if k == topic.Command && m.Topic() == tp("dev-a", topic.Desired) && string(m.Payload()) == "to a desired" {
					// QoS 1 is at least once: a retained message published
					// while the subscription was being made comes live and
					// as retained.
					continue
				}
				if m.Topic() != tp("dev-a", k) || string(m.Payload()) != "to a "+string(k) {
					t.Fatalf("device got %s %q", m.Topic(), m.Payload())
				}
				got = true
			case <-time.After(30 * time.Second):
				t.Fatalf("device did not get its %s", k)
			}
		}
	}
	// A username equal to the certificate's CN is fine too.
	f.mustDial(t, client{cert: crt, clientID: "dev-a", username: "dev-a", password: "ignored"})
	// Counted once the session is established, which mochi tells its
	// hooks after sending CONNACK.
	waitFor(t, "second connection counted", func() bool { return f.b.Stats().Accepted[broker.MethodCertificate] == 2 })
	st := f.b.Stats()
	if st.Accepted[broker.MethodCertificate] != 2 || st.DeniedPublish != 0 || st.DeniedSubscribe != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBroker_ACLConfinesDevice(t *testing.T) {
	f := startFleet(t, nil)
	crtA, _ := f.device(t, "dev-a")
	crtB, _ := f.device(t, "dev-b")
	a := f.mustDial(t, client{cert: crtA, clientID: "dev-a"})
	b := f.mustDial(t, client{cert: crtB, clientID: "dev-b"})

	t.Run("qos0 publish to another device's report is dropped", func(t *testing.T) {
		if err := publish(t, a, tp("dev-b", topic.Reported), "forged", 0); err != nil {
			t.Fatal(err)
		}
		// The same connection's next allowed publish arrives after it: the
		// forged one, processed first, was not delivered.
		mustPublish(t, a, tp("dev-a", topic.Events), "marker-1")
		f.waitReceived(t, tp("dev-a", topic.Events), "marker-1")
		if got := f.received(tp("dev-b", topic.Reported)); len(got) != 0 {
			t.Fatalf("forged report delivered: %q", got)
		}
	})

	for _, target := range []string{
		tp("dev-b", topic.Reported), tp("dev-a", topic.Desired), tp("dev-b", topic.Desired),
		tp("dev-a", topic.Command), "tender/v1/other", "tender/v1/devices/+/reported",
	} {
		t.Run("qos1 publish to "+target+" cuts the connection", func(t *testing.T) {
			c := f.mustDial(t, client{cert: crtA, clientID: "dev-a"})
			before := f.b.Stats().DeniedPublish
			_ = publish(t, c, target, "planted", 1) // no PUBACK: the broker cuts the connection (MQTT 3.1.1)
			waitLost(t, c, "publish to "+target)
			if got := f.received(target); len(got) != 0 {
				t.Fatalf("delivered on %s: %q", target, got)
			}
			if strings.Contains(target, "+") {
				return // mochi refuses a wildcard in a topic name before any ACL
			}
			if st := f.b.Stats(); st.DeniedPublish != before+1 {
				t.Fatalf("denied publishes %d, want %d", st.DeniedPublish, before+1)
			}
		})
	}

	t.Run("publish to $SYS is dropped", func(t *testing.T) {
		c := f.mustDial(t, client{cert: crtA, clientID: "dev-a"})
		// mochi ignores a publish to $SYS before any ACL (no PUBACK either).
		c.Publish("$SYS/broker/clients", 1, false, "planted")
		mustPublish(t, c, tp("dev-a", topic.Events), "marker-sys")
		f.waitReceived(t, tp("dev-a", topic.Events), "marker-sys")
		if got := f.received("$SYS/broker/clients"); len(got) != 0 {
			t.Fatalf("delivered on $SYS: %q", got)
		}
	})

	t.Run("subscriptions beyond its own desired and cmd are refused", func(t *testing.T) {
		a := f.mustDial(t, client{cert: crtA, clientID: "dev-a"})
		for _, filter := range []string{
			tp("dev-b", topic.Command), tp("dev-b", topic.Desired), "#", "tender/v1/devices/+/desired",
			"tender/v1/devices/dev-a/#", tp("dev-a", topic.Reported), "$SYS/#",
		} {
			tok := a.Subscribe(filter, 1, nil)
			tok.Wait()
			if r := tok.(*paho.SubscribeToken).Result()[filter]; r != 0x80 {
				t.Errorf("subscribe %s: granted %#x, want 0x80 (refused)", filter, r)
			}
		}
		tok := a.Subscribe(tp("dev-a", topic.Command), 1, nil)
		tok.Wait()
		// B's command and B's retained desired state are not delivered to A:
		// A's own command, published after them, arrives first.
		if err := f.b.Publish(tp("dev-b", topic.Desired), []byte("for b"), true); err != nil {
			t.Fatal(err)
		}
		if err := f.b.Publish(tp("dev-b", topic.Command), []byte("for b"), false); err != nil {
			t.Fatal(err)
		}
		if err := f.b.Publish(tp("dev-a", topic.Command), []byte("for a"), false); err != nil {
			t.Fatal(err)
		}
		m := <-a.msgs
		if m.Topic() != tp("dev-a", topic.Command) || string(m.Payload()) != "for a" {
			t.Fatalf("device a got %s %q", m.Topic(), m.Payload())
		}
		if f.b.Stats().DeniedSubscribe < 7 {
			t.Fatalf("denied subscriptions %d, want at least 7", f.b.Stats().DeniedSubscribe)
		}
	})

	// B was never disturbed.
	mustPublish(t, b, tp("dev-b", topic.Reported), "b is fine")
	f.waitReceived(t, tp("dev-b", topic.Reported), "b is fine")
}

func TestBroker_RefusedConnects(t *testing.T) {
	f := startFleet(t, nil)
	crtA, _ := f.device(t, "dev-a")
	other := mqtttest.NewPKI(t, "another ca")
	foreign, _, _ := other.Issue(t, "dev-a", false)
	reserved, _ := f.device(t, "controller")
	badCN, _ := f.device(t, "Dev A")
	serverLeaf, _, _ := f.ca.Issue(t, "dev-s", true) // server-auth usage only

	for _, tc := range []struct {
		name   string
		c      client
		reason broker.Reason
	}{
		{"certificate of another ca", client{cert: &foreign, clientID: "dev-a"}, broker.ReasonCertificate},
		{"certificate without client-auth usage", client{cert: &serverLeaf, clientID: "dev-s"}, broker.ReasonCertificate},
		{"certificate of reserved controller", client{cert: reserved, clientID: "controller"}, broker.ReasonIdentity},
		{"certificate cn not a device id", client{cert: badCN, clientID: "Dev A"}, broker.ReasonIdentity},
		{"client id not the certificate's cn", client{cert: crtA, clientID: "dev-b"}, broker.ReasonClientID},
		{"empty client id with certificate", client{cert: crtA, clientID: ""}, broker.ReasonClientID},
		{"username not the certificate's cn", client{cert: crtA, clientID: "dev-a", username: "dev-b"}, broker.ReasonUsername},
		{"anonymous", client{clientID: "dev-a"}, broker.ReasonAnonymous},
		{"wrong password", client{username: "dev-p", password: "guess", clientID: "dev-p"}, broker.ReasonPassword},
		{"unknown device with password", client{username: "dev-x", password: "s3cret-password", clientID: "dev-x"}, broker.ReasonPassword},
		{"password client id not the username", client{username: "dev-p", password: "s3cret-password", clientID: "dev-q"}, broker.ReasonClientID},
		{"will on another device's desired", client{cert: crtA, clientID: "dev-a", will: tp("dev-b", topic.Desired)}, broker.ReasonWill},
		{"will on its own desired", client{cert: crtA, clientID: "dev-a", will: tp("dev-a", topic.Desired)}, broker.ReasonWill},
		{"no keepalive", client{cert: crtA, clientID: "dev-a", keepAlive: -1}, broker.ReasonKeepAlive},
		{"keepalive over the maximum", client{cert: crtA, clientID: "dev-a", keepAlive: 301 * time.Second}, broker.ReasonKeepAlive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.b.Stats().Refused[tc.reason]
			if c, err := f.dial(t, tc.c); err == nil {
				c.Disconnect(0)
				t.Fatal("connected")
			}
			if got := f.b.Stats().Refused[tc.reason]; got != before+1 {
				t.Fatalf("refused for %s: %d, want %d (stats %+v)", tc.reason, got, before+1, f.b.Stats())
			}
		})
	}
	if st := f.b.Stats(); st.Accepted[broker.MethodCertificate]+st.Accepted[broker.MethodPassword] != 0 {
		t.Fatalf("accepted: %+v", st.Accepted)
	}
	// A will on its own presence topic is what an agent sets.
	f.mustDial(t, client{cert: crtA, clientID: "dev-a", will: tp("dev-a", topic.Presence)})
}

func TestBroker_PasswordFallback(t *testing.T) {
	f := startFleet(t, nil)
	p := f.mustDial(t, client{username: "dev-p", password: "s3cret-password", clientID: "dev-p"})
	mustPublish(t, p, tp("dev-p", topic.Reported), "by password")
	f.waitReceived(t, tp("dev-p", topic.Reported), "by password")
	// Confined like a certificate device.
	_ = publish(t, p, tp("dev-a", topic.Reported), "forged", 1)
	waitLost(t, p, "password device publishing as another")
	if got := f.received(tp("dev-a", topic.Reported)); len(got) != 0 {
		t.Fatalf("forged report delivered: %q", got)
	}
	if st := f.b.Stats(); st.Accepted[broker.MethodPassword] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBroker_RevokedDevice(t *testing.T) {
	f := startFleet(t, nil)
	crt, serial := f.device(t, "dev-a")
	a := f.mustDial(t, client{cert: crt, clientID: "dev-a"})
	mustPublish(t, a, tp("dev-a", topic.Reported), "before")
	f.waitReceived(t, tp("dev-a", topic.Reported), "before")

	// Revoke: the connected device is cut, and refused from then on.
	f.mu.Lock()
	f.revoked[serial] = true
	f.mu.Unlock()
	f.b.Disconnect("dev-a")
	waitLost(t, a, "revoked device")
	if _, err := f.dial(t, client{cert: crt, clientID: "dev-a"}); err == nil {
		t.Fatal("revoked device connected")
	}
	st := f.b.Stats()
	if st.Refused[broker.ReasonRevoked] != 1 || st.Disconnected != 1 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, "connected count back to 0", func() bool { return f.b.Stats().Connected == 0 })

	// Its retained topics can be cleared (F-07).
	if err := f.b.Publish(tp("dev-a", topic.Desired), []byte("doc"), true); err != nil {
		t.Fatal(err)
	}
	if err := f.b.ClearRetained("dev-a"); err != nil {
		t.Fatal(err)
	}
	crtB, _ := f.device(t, "dev-a") // re-enrolled with a new certificate
	a2 := f.mustDial(t, client{cert: crtB, clientID: "dev-a"})
	tok := a2.Subscribe(tp("dev-a", topic.Desired), 1, nil)
	tok.Wait()
	if err := f.b.Publish(tp("dev-a", topic.Command), []byte("marker"), false); err != nil {
		t.Fatal(err)
	}
	tok = a2.Subscribe(tp("dev-a", topic.Command), 1, nil)
	tok.Wait()
	if err := f.b.Publish(tp("dev-a", topic.Command), []byte("marker"), false); err != nil {
		t.Fatal(err)
	}
	if m := <-a2.msgs; m.Topic() != tp("dev-a", topic.Command) {
		t.Fatalf("got %s %q before the marker: the retained document was not cleared", m.Topic(), m.Payload())
	}
}

func TestBroker_RateLimitPerDevice(t *testing.T) {
	f := startFleet(t, func(c *broker.Config) { c.Rate, c.Burst = 20, 100 })
	crtA, _ := f.device(t, "dev-a")
	crtB, _ := f.device(t, "dev-b")
	a := f.mustDial(t, client{cert: crtA, clientID: "dev-a"})
	b := f.mustDial(t, client{cert: crtB, clientID: "dev-b"})

	// A floods 1,000 messages within one instant of the broker's clock
	// while B sends 50: A gets its burst through, B all of its messages.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	flood := func(c *conn, id string, n int) {
		defer wg.Done()
		toks := make([]paho.Token, 0, n)
		for i := range n {
			toks = append(toks, c.Publish(tp(id, topic.Events), 1, false, fmt.Sprintf("%s-%d", id, i)))
		}
		for _, tok := range toks {
			tok.Wait()
			if err := tok.Error(); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
				return
			}
		}
	}
	wg.Add(2)
	go flood(a, "dev-a", 1000)
	go flood(b, "dev-b", 50)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every PUBACK is in: every message was delivered or dropped already.
	if got := len(f.received(tp("dev-a", topic.Events))); got != 100 {
		t.Fatalf("dev-a delivered %d, want its burst of 100", got)
	}
	if got := len(f.received(tp("dev-b", topic.Events))); got != 50 {
		t.Fatalf("dev-b delivered %d, want all 50", got)
	}
	st := f.b.Stats()
	if st.RateLimited != 900 || st.RateLimitedBy["dev-a"] != 900 || st.RateLimitedBy["dev-b"] != 0 {
		t.Fatalf("rate limited %d, by device %v", st.RateLimited, st.RateLimitedBy)
	}
	// A second later, 20 more get through.
	f.advance(time.Second)
	for i := range 30 {
		mustPublish(t, a, tp("dev-a", topic.Events), fmt.Sprintf("later-%d", i))
	}
	if got := len(f.received(tp("dev-a", topic.Events))); got != 120 {
		t.Fatalf("dev-a delivered %d after a second, want 120", got)
	}
}

func TestBroker_OversizedPacket(t *testing.T) {
	const limit = 4096
	f := startFleet(t, func(c *broker.Config) { c.MaxPacketSize = limit })
	crt, _ := f.device(t, "dev-a")
	a := f.mustDial(t, client{cert: crt, clientID: "dev-a"})
	t0 := tp("dev-a", topic.Events)
	// Remaining length of a QoS 1 publish: topic length (2) + topic +
	// packet id (2) + payload.
	fits := strings.Repeat("x", limit-2-len(t0)-2)
	mustPublish(t, a, t0, fits)
	f.waitReceived(t, t0, fits)

	_ = publish(t, a, t0, fits+"y", 1)
	waitLost(t, a, "oversized publish")
	if got := len(f.received(t0)); got != 1 {
		t.Fatalf("%d messages delivered, want only the one at the limit", got)
	}
	waitFor(t, "oversized counted", func() bool { return f.b.Stats().Oversized == 1 })

	// The controller cannot publish what a device could not read either.
	if err := f.b.Publish(tp("dev-a", topic.Desired), []byte(fits+"y"), true); err == nil {
		t.Fatal("oversized inline publish accepted")
	}
}

func TestBroker_DefaultLimitIsTheWiresLargestMessage(t *testing.T) {
	f := startFleet(t, nil)
	crt, _ := f.device(t, "dev-a")
	a := f.mustDial(t, client{cert: crt, clientID: "dev-a"})
	t0 := tp("dev-a", topic.Reported)
	big := strings.Repeat("r", mqttc.DefaultMaxPacketSize)
	_ = publish(t, a, t0, big, 1)
	waitLost(t, a, "publish over mqttc.DefaultMaxPacketSize")
	waitFor(t, "oversized counted", func() bool { return f.b.Stats().Oversized == 1 })
}

func TestBroker_Config(t *testing.T) {
	if _, err := broker.New(broker.Config{}); err == nil {
		t.Fatal("tls without a certificate accepted")
	}
	if _, err := broker.New(broker.Config{TLSAddr: "-"}); err == nil {
		t.Fatal("no listener accepted")
	}
	b, err := broker.New(broker.Config{TLSAddr: "-", TCPAddr: "127.0.0.1:0", Passwords: passwords{"dev-p": "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.TLSAddr() != "" || b.TCPAddr() == "" {
		t.Fatalf("addresses tls %q tcp %q", b.TLSAddr(), b.TCPAddr())
	}
	if err := b.Subscribe("a/b", func(mqttc.Message) {}); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe("a/b", func(mqttc.Message) {}); err == nil {
		t.Fatal("second subscription of one filter accepted")
	}
	if err := b.Unsubscribe("a/b"); err != nil {
		t.Fatal(err)
	}
	// Plain TCP: a password device connects.
	o := paho.NewClientOptions().AddBroker("tcp://" + b.TCPAddr()).SetClientID("dev-p").SetUsername("dev-p").SetPassword("pw").SetAutoReconnect(false).SetProtocolVersion(4)
	c := paho.NewClient(o)
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(0)
	if err := b.Start(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second start: %v, want failed precondition", err)
	}
	// A taken address: unavailable, naming the address.
	b2, err := broker.New(broker.Config{TLSAddr: "-", TCPAddr: b.TCPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), b.TCPAddr()) {
		t.Fatalf("start on a taken address: %v", err)
	}
	_ = b2.Close()
}

// The agent's own MQTT session (sync/mqttc: persistent session, presence
// will, QoS 1) works against the embedded broker with a device certificate.
func TestBroker_AgentSession(t *testing.T) {
	f := startFleet(t, nil)
	crt, serial := f.device(t, "dev-a")
	c, err := mqttc.New(mqttc.Config{
		Broker:        "ssl://" + f.b.TLSAddr(),
		ClientID:      "dev-a",
		TLS:           &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{*crt}},
		PresenceTopic: tp("dev-a", topic.Presence),
		Log:           zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitReceived(t, tp("dev-a", topic.Presence), "online")
	got := make(chan mqttc.Message, 1)
	if err := c.Subscribe(ctx, tp("dev-a", topic.Desired), func(m mqttc.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Publish(tp("dev-a", topic.Desired), []byte("signed doc"), true); err != nil {
		t.Fatal(err)
	}
	if m := <-got; string(m.Payload) != "signed doc" {
		t.Fatalf("desired %q", m.Payload)
	}
	if err := c.Publish(ctx, tp("dev-a", topic.Reported), []byte("report"), true); err != nil {
		t.Fatal(err)
	}
	f.waitReceived(t, tp("dev-a", topic.Reported), "report")
	// Revoked while connected: the session is cut, and its reconnects are refused.
	f.mu.Lock()
	f.revoked[serial] = true
	f.mu.Unlock()
	f.b.Disconnect("dev-a")
	waitFor(t, "the revoked agent's reconnect refused", func() bool {
		return f.b.Stats().Refused[broker.ReasonRevoked] >= 1 && !c.Connected()
	})
}

// A connection that never finishes its TLS handshake, or never sends
// CONNECT after it, is closed after ConnectTimeout.
func TestBroker_ConnectTimeout(t *testing.T) {
	f := startFleet(t, func(c *broker.Config) { c.ConnectTimeout = 50 * time.Millisecond })
	raw, err := net.Dial("tcp", f.b.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadDeadline(time.Now().Add(30 * time.Second)) // hang guard
	if _, err := io.ReadAll(raw); err != nil {                // returns at EOF: the broker closed it
		t.Fatal(err)
	}
	waitFor(t, "handshake refusal counted", func() bool { return f.b.Stats().Refused[broker.ReasonHandshake] == 1 })

	tc, err := tls.Dial("tcp", f.b.TLSAddr(), &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetReadDeadline(time.Now().Add(30 * time.Second)) // hang guard
	if _, err := io.ReadAll(tc); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection without CONNECT not closed")
		}
	}
}

// What the controller consumes for every device (its subscriptions to
// tender/v1/devices/+/reported and +/presence) is not kept retained: the
// controller stores it. A device's retained message from before the
// subscription is kept, handed to the subscription, and goes with the
// device's next one; a Last Will is not kept either.
func TestBroker_ConsumedMessagesNotRetained(t *testing.T) {
	f := startFleet(t, nil)
	crt, _ := f.device(t, "dev-a")
	a := f.mustDial(t, client{cert: crt, clientID: "dev-a", will: tp("dev-a", topic.Presence)})
	// retained returns what a new subscription to tp is handed at once.
	retained := func(tp string) []string {
		t.Helper()
		var mu sync.Mutex
		var got []string
		if err := f.b.Subscribe(tp, func(m mqttc.Message) { mu.Lock(); got = append(got, string(m.Payload)); mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
		if err := f.b.Unsubscribe(tp); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	publishRetained := func(tp, payload string) {
		t.Helper()
		tok := a.Publish(tp, 1, true, payload)
		tok.Wait()
		if err := tok.Error(); err != nil {
			t.Fatal(err)
		}
		f.waitReceived(t, tp, payload)
	}
	rep := tp("dev-a", topic.Reported)
	publishRetained(rep, "before")
	if got := retained(rep); len(got) != 1 || got[0] != "before" {
		t.Fatalf("before the controller subscribed, a new subscription got %q, want the retained report", got)
	}

	var mu sync.Mutex
	var consumed []string
	for _, k := range []topic.Kind{topic.Reported, topic.Presence} {
		filter, err := topic.AllDevices(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.b.Subscribe(filter, func(m mqttc.Message) { mu.Lock(); consumed = append(consumed, string(m.Payload)); mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if len(consumed) != 1 || consumed[0] != "before" {
		t.Fatalf("the controller's subscription was handed %q, want the report retained before it", consumed)
	}
	mu.Unlock()
	publishRetained(rep, "after")
	if got := retained(rep); len(got) != 0 {
		t.Fatalf("reports retained while the controller consumes them: %q", got)
	}
	f.b.Disconnect("dev-a") // its Last Will: presence offline
	f.waitReceived(t, tp("dev-a", topic.Presence), "offline")
	if got := retained(tp("dev-a", topic.Presence)); len(got) != 0 {
		t.Fatalf("a Last Will retained while the controller consumes presences: %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(consumed) != 3 || consumed[1] != "after" || consumed[2] != "offline" {
		t.Fatalf("the controller got %q", consumed)
	}
}
