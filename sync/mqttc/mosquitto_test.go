package mqttc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/sync/clock"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/test/mqtttest"
)

// mosq is a running mosquitto with the configs/mosquitto files and a test PKI.
type mosq struct {
	certAddr string // mTLS listener
	pwAddr   string // TLS + password listener
	roots    *x509.CertPool
	certs    map[string]tls.Certificate // device certificates by CN
}

// startMosquitto runs Debian's mosquitto with configs/mosquitto (through
// test/mqtttest), with device certificates for gw-a, gw-b and gw-x and the
// password users tender-controller and gw-c.
func startMosquitto(t *testing.T) *mosq {
	t.Helper()
	mm := mqtttest.StartMosquitto(t, "../..", map[string]string{"tender-controller": "ctl-secret", "gw-c": "c-secret"})
	m := &mosq{certAddr: mm.CertAddr, pwAddr: mm.PwAddr, roots: mm.Roots, certs: map[string]tls.Certificate{}}
	for _, cn := range []string{"gw-a", "gw-b", "gw-x"} {
		c, _, _ := mm.CA.Issue(t, cn, false)
		m.certs[cn] = c
	}
	return m
}

// device connects as cn with its certificate, client id id.
func (m *mosq) device(t *testing.T, cn, id string, now func() time.Time) *Client {
	t.Helper()
	c := startClient(t, Config{
		Broker:        m.certAddr,
		ClientID:      id,
		TLS:           &tls.Config{RootCAs: m.roots, Certificates: []tls.Certificate{m.certs[cn]}},
		Time:          now,
		PresenceTopic: topic.MustBuild(cn, topic.Presence),
	})
	connected(t, c)
	return c
}

func (m *mosq) controller(t *testing.T) *Client {
	t.Helper()
	c := startClient(t, Config{
		Broker: m.pwAddr, ClientID: "tender-controller", Username: "tender-controller", Password: "ctl-secret",
		TLS: &tls.Config{RootCAs: m.roots},
	})
	connected(t, c)
	return c
}

// expectFirst fails unless the next message on in is want: anything the
// ACL should have stopped would have arrived before it.
func expectFirst(t *testing.T, in inbox, what, want string) {
	t.Helper()
	if m := in.next(t); string(m.Payload) != want {
		t.Fatalf("%s: got %q on %s before the sentinel %q: the ACL let it through", what, m.Payload, m.Topic, want)
	}
}

func TestMosquitto_ACL(t *testing.T) {
	m := startMosquitto(t)
	ctl := m.controller(t)
	a := m.device(t, "gw-a", "gw-a", nil)
	b := m.device(t, "gw-b", "gw-b", nil)
	tp := func(id string, k topic.Kind) string { return topic.MustBuild(id, k) }

	t.Run("own reported reaches the controller", func(t *testing.T) {
		in := subscribe(t, ctl, "tender/v1/devices/+/reported")
		publish(t, a, tp("gw-a", topic.Reported), "a-report", true)
		expectFirst(t, in, "controller", "a-report")
	})

	t.Run("cannot read another device's topics", func(t *testing.T) {
		ain := make(inbox, 10)
		for _, k := range []topic.Kind{topic.Desired, topic.Command, topic.Reported} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := a.Subscribe(ctx, tp("gw-b", k), ain.handler)
			cancel()
			t.Logf("subscribe %s: %v", tp("gw-b", k), err)
			if err != nil && !errors.Is(err, ErrSubscribeRefused) {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"tender/v1/devices/#", "#", "$SYS/#"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := a.Subscribe(ctx, f, ain.handler)
			cancel()
			t.Logf("subscribe %s: %v", f, err)
			if err != nil && !errors.Is(err, ErrSubscribeRefused) {
				t.Fatal(err)
			}
		}
		if err := a.Subscribe(context.Background(), tp("gw-a", topic.Command), ain.handler); err != nil {
			t.Fatal(err)
		}
		publish(t, ctl, tp("gw-b", topic.Desired), "b-desired", false)
		publish(t, ctl, tp("gw-b", topic.Command), "b-cmd", false)
		publish(t, b, tp("gw-b", topic.Reported), "b-report", false)
		publish(t, ctl, tp("gw-a", topic.Command), "a-sentinel", false)
		expectFirst(t, ain, "device a", "a-sentinel")
	})

	t.Run("cannot publish under another device's topics", func(t *testing.T) {
		bin := subscribe(t, b, tp("gw-b", topic.Command))
		cin := subscribe(t, ctl, "tender/v1/devices/+/events")
		for _, k := range []topic.Kind{topic.Reported, topic.Events, topic.Presence, topic.Command, topic.CommandResult} {
			publish(t, a, tp("gw-b", k), "forged-"+string(k), false)
		}
		publish(t, a, tp("gw-a", topic.Events), "a-sentinel", false)
		expectFirst(t, cin, "controller", "a-sentinel")
		publish(t, ctl, tp("gw-b", topic.Command), "b-sentinel", false)
		expectFirst(t, bin, "device b", "b-sentinel")
	})

	t.Run("no device writes any desired topic", func(t *testing.T) {
		publish(t, a, tp("gw-a", topic.Desired), "planted-own", true)
		publish(t, a, tp("gw-b", topic.Desired), "planted-other", true)
		publish(t, b, tp("gw-b", topic.Desired), "planted-b", true)
		// A retained document would be delivered on subscribe, before the
		// controller's sentinel.
		ain := subscribe(t, a, tp("gw-a", topic.Desired))
		bin := subscribe(t, b, tp("gw-b", topic.Desired))
		publish(t, ctl, tp("gw-a", topic.Desired), "ctl-a", false)
		publish(t, ctl, tp("gw-b", topic.Desired), "ctl-b", false)
		expectFirst(t, ain, "device a", "ctl-a")
		expectFirst(t, bin, "device b", "ctl-b")
	})

	t.Run("another identity cannot take over a client id", func(t *testing.T) {
		// x's certificate, a's client id: the broker renames it gw-x.
		intruder := m.device(t, "gw-x", "gw-a", nil)
		publish(t, intruder, tp("gw-x", topic.Events), "intruder", false)
		publish(t, a, tp("gw-a", topic.Events), "a-still-here", false)
		if n := a.Connects(); n != 1 {
			t.Errorf("device a connected %d times: it was kicked off", n)
		}
	})

	t.Run("password device is confined too", func(t *testing.T) {
		c := startClient(t, Config{
			Broker: m.pwAddr, ClientID: "gw-a", Username: "gw-c", Password: "c-secret",
			TLS: &tls.Config{RootCAs: m.roots},
		})
		connected(t, c)
		cin := subscribe(t, ctl, "tender/v1/devices/+/events")
		publish(t, c, tp("gw-a", topic.Events), "c-as-a", false)
		publish(t, c, tp("gw-c", topic.Events), "c-sentinel", false)
		expectFirst(t, cin, "controller", "c-sentinel")
		publish(t, a, tp("gw-a", topic.Events), "a-after-c", false)
		if n := a.Connects(); n != 1 {
			t.Errorf("device a connected %d times: a password user with its client id kicked it off", n)
		}
	})
}

func TestMosquitto_WrongPasswordRefused(t *testing.T) {
	m := startMosquitto(t)
	c, err := New(Config{Broker: m.pwAddr, ClientID: "tender-controller", Username: "tender-controller", Password: "wrong",
		TLS: &tls.Config{RootCAs: m.roots}})
	if err != nil {
		t.Fatal(err)
	}
	cn, err := c.connect(context.Background())
	if err == nil {
		cn.cl.Disconnect(0)
		t.Fatal("connected with a wrong password")
	}
}

// TestMosquitto_TLSWith1970Clock: a device whose clock says 1970 connects
// over mutual TLS with the time floor, and not without it.
func TestMosquitto_TLSWith1970Clock(t *testing.T) {
	m := startMosquitto(t)
	epoch := func() time.Time { return time.Unix(0, 0) }
	raw, err := New(Config{Broker: m.certAddr, ClientID: "gw-a",
		TLS: &tls.Config{RootCAs: m.roots, Certificates: []tls.Certificate{m.certs["gw-a"]}}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if cn, err := raw.connect(context.Background()); err == nil {
		cn.cl.Disconnect(0)
		t.Fatal("connected while checking the certificate against 1970")
	} else {
		var inv x509.CertificateInvalidError
		if !errors.As(err, &inv) && !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("connect with a 1970 clock = %v, want a certificate error", err)
		}
	}
	floor, err := clock.New(clock.Options{System: epoch, BuildTime: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !floor.Untrusted() {
		t.Fatal("floor trusts a 1970 clock")
	}
	a := m.device(t, "gw-a", "gw-a", floor.Now)
	publish(t, a, topic.MustBuild("gw-a", topic.Reported), fmt.Sprintf(`{"clockUntrusted":%v}`, floor.Untrusted()), true)
}
