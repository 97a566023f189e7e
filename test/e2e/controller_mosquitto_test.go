package e2e

// tender serve --broker against Debian's mosquitto with configs/mosquitto:
// what the broker itself enforces on enrolled devices' certificates, the
// ACL (F-01, F-02) and the CRL (F-07).

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tender-edge/tender/test/mqtttest"
)

// msg is what a test client received.
type msg struct{ topic, payload string }

// mqttClient connects to addr with the certificate pair (PEM files) and
// the fleet CA, and subscribes to filters, which it delivers on the
// returned channel. Its client id is its certificate's CN at mosquitto
// (use_username_as_clientid).
func mqttClient(t *testing.T, addr, caFile, certFile, keyFile string, filters ...string) (paho.Client, chan msg) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(b)
	in := make(chan msg, 64)
	o := paho.NewClientOptions().AddBroker(addr).SetClientID("ignored").SetCleanSession(true).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(20 * time.Second)
	c := paho.NewClient(o)
	if tk := c.Connect(); !tk.WaitTimeout(30*time.Second) || tk.Error() != nil {
		t.Fatalf("connect with %s: %v", certFile, tk.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	for _, f := range filters {
		tk := c.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { in <- msg{m.Topic(), string(m.Payload())} })
		if !tk.WaitTimeout(30*time.Second) || tk.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tk.Error())
		}
	}
	return c, in
}

func publish(t *testing.T, c paho.Client, topic, payload string, retained bool) {
	t.Helper()
	tk := c.Publish(topic, 1, retained, payload)
	if !tk.WaitTimeout(30*time.Second) || tk.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tk.Error())
	}
}

// first is the first message on in: what arrives before a marker sent
// after the publishes under test proves they were dropped, since mosquitto
// delivers on one connection in the order it accepted.
func first(t *testing.T, in chan msg, what string) msg {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(30 * time.Second):
		t.Fatalf("nothing received: %s", what)
	}
	return msg{}
}

// TestControllerMosquitto_ACLAndRevocation: with tender serve --broker and
// configs/mosquitto, an enrolled device's certificate can publish neither
// another device's report nor any desired document (its own included,
// retained or not), while the controller's own identity (CN
// tender-controller, DATA/controller.crt) reads reports and writes desired
// state; and a device removed with `tender device rm` cannot reconnect once
// mosquitto re-read the CRL the controller rewrote (SIGHUP, what
// configs/mosquitto/tender-crl.path does).
func TestControllerMosquitto_ACLAndRevocation(t *testing.T) {
	c := startController(t, "127.0.0.1:1", mosquitto) // no image is pulled here
	a, b := c.enrollOnly("gw-a", "127.0.0.1:1"), c.enrollOnly("gw-b", "127.0.0.1:1")
	devFiles := func(d *daemon) (string, string) {
		dir := filepath.Dir(d.config)
		return filepath.Join(dir, "device.pem"), filepath.Join(dir, "device.key")
	}
	caFile := filepath.Join(c.dir, "ca.crt")

	t.Run("acl", func(t *testing.T) {
		// One session per identity: the controller steps aside while the
		// test speaks as it, and no daemon runs yet.
		c.stop()
		t.Cleanup(c.start) // after the test's clients are gone
		ctl, ctlIn := mqttClient(t, c.mosq.CertAddr, caFile, filepath.Join(c.dir, "controller.crt"), filepath.Join(c.dir, "controller.key"),
			"tender/v1/devices/+/reported")
		aCert, aKey := devFiles(a)
		bCert, bKey := devFiles(b)
		ga, aIn := mqttClient(t, c.mosq.CertAddr, caFile, aCert, aKey, "tender/v1/devices/gw-a/desired")
		gb, bIn := mqttClient(t, c.mosq.CertAddr, caFile, bCert, bKey, "tender/v1/devices/gw-b/desired")

		// gw-a forges gw-b's report and plants desired documents, then
		// reports for itself.
		publish(t, ga, "tender/v1/devices/gw-b/reported", "forged report of gw-b", true)
		publish(t, ga, "tender/v1/devices/gw-b/desired", "planted in gw-b's desired", true)
		publish(t, ga, "tender/v1/devices/gw-a/desired", "planted in gw-a's own desired", true)
		publish(t, ga, "tender/v1/devices/gw-a/reported", "a-marker", false)
		if m := first(t, ctlIn, "gw-a's own report at the controller"); m != (msg{"tender/v1/devices/gw-a/reported", "a-marker"}) {
			t.Fatalf("the controller received %+v first: mosquitto delivered a report gw-a forged for gw-b", m)
		}
		// The controller writes desired state; nothing gw-a planted comes first.
		publish(t, ctl, "tender/v1/devices/gw-b/desired", "ctl-b", false)
		publish(t, ctl, "tender/v1/devices/gw-a/desired", "ctl-a", false)
		if m := first(t, bIn, "the controller's desired for gw-b"); m.payload != "ctl-b" {
			t.Fatalf("gw-b received %+v first: gw-a wrote gw-b's desired topic", m)
		}
		if m := first(t, aIn, "the controller's desired for gw-a"); m.payload != "ctl-a" {
			t.Fatalf("gw-a received %+v first: a device wrote its own desired topic", m)
		}
		// Nothing was retained either: a new subscription gets only what
		// the controller sends after it.
		gb.Disconnect(0)
		_, bIn2 := mqttClient(t, c.mosq.CertAddr, caFile, bCert, bKey, "tender/v1/devices/gw-b/desired")
		publish(t, ctl, "tender/v1/devices/gw-b/desired", "ctl-b2", false)
		if m := first(t, bIn2, "the controller's second desired for gw-b"); m.payload != "ctl-b2" {
			t.Fatalf("gw-b's new subscription received %+v first: a planted desired document was retained", m)
		}
		_, ctlIn2 := mqttClient(t, c.mosq.CertAddr, caFile, filepath.Join(c.dir, "controller.crt"), filepath.Join(c.dir, "controller.key"),
			"tender/v1/devices/gw-b/reported")
		publish(t, gb2(t, c, bCert, bKey), "tender/v1/devices/gw-b/reported", "b-marker", false)
		if m := first(t, ctlIn2, "gw-b's own report"); m.payload != "b-marker" {
			t.Fatalf("the controller's new subscription received %+v first: gw-a's forged report was retained", m)
		}
	})

	t.Run("revoked device cannot reconnect", func(t *testing.T) {
		b.start()
		waitFor(t, "gw-b online", time.Minute, func() bool {
			var devs []deviceRow
			c.json(&devs, "devices")
			for _, d := range devs {
				if d.ID == "gw-b" && d.Online {
					return true
				}
			}
			return false
		})
		b.stop()
		bCert, bKey := devFiles(b)
		serial := readSerial(t, bCert)
		c.ok("device", "rm", "gw-b")
		waitFor(t, "gw-b's serial in the controller's CRL", 30*time.Second, func() bool {
			return crlHas(t, filepath.Join(c.dir, "crl.pem"), serial)
		})
		// mosquitto reads its crlfile at start and on SIGHUP only: until
		// then the revoked certificate still gets in.
		if err := probe(c.mosq.CertAddr, caFile, bCert, bKey); err != nil {
			t.Fatalf("before the reload, mosquitto already refused gw-b (%v): the reload step is no longer needed, update configs/mosquitto", err)
		}
		reloads := countLines(c.mosq, "Reloading config")
		if err := c.mosq.Reload(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "mosquitto reloaded", 30*time.Second, func() bool { return countLines(c.mosq, "Reloading config") > reloads })
		// The same certificate, refused in the TLS handshake (the alert,
		// "revoked certificate", may be lost to the connection's reset).
		refused := countLines(c.mosq, "certificate verify failed")
		if err := probe(c.mosq.CertAddr, caFile, bCert, bKey); err == nil {
			t.Fatal("after the reload, mosquitto still took gw-b's revoked certificate")
		} else {
			t.Logf("gw-b after the reload: %v", err)
		}
		waitFor(t, "mosquitto's log of the refused handshake", 30*time.Second, func() bool {
			return countLines(c.mosq, "certificate verify failed") > refused
		})
		// The agent itself, restarted, is refused at every attempt.
		refused = countLines(c.mosq, "certificate verify failed")
		b.start()
		waitFor(t, "mosquitto refusing gw-b's agent", time.Minute, func() bool {
			return countLines(c.mosq, "certificate verify failed") > refused
		})
		var devs []deviceRow
		c.json(&devs, "devices")
		for _, d := range devs {
			if d.ID == "gw-b" {
				t.Fatalf("gw-b is back in the fleet after its removal: %+v", d)
			}
		}
	})
}

// gb2 connects as gw-b again (its earlier sessions are closed).
func gb2(t *testing.T, c *controller, certFile, keyFile string) paho.Client {
	t.Helper()
	cl, _ := mqttClient(t, c.mosq.CertAddr, filepath.Join(c.dir, "ca.crt"), certFile, keyFile)
	return cl
}

// probe connects once with the certificate pair and disconnects.
func probe(addr, caFile, certFile, keyFile string) error {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots.AppendCertsFromPEM(b)
	o := paho.NewClientOptions().AddBroker(addr).SetClientID("probe").
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(20 * time.Second)
	cl := paho.NewClient(o)
	tk := cl.Connect()
	if !tk.WaitTimeout(30 * time.Second) {
		return fmt.Errorf("connect to %s: no answer", addr)
	}
	if tk.Error() == nil {
		cl.Disconnect(0)
	}
	return tk.Error()
}

func readSerial(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber.String()
}

func crlHas(t *testing.T, path, serial string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.String() == serial {
			return true
		}
	}
	return false
}

func countLines(m *mqtttest.Mosquitto, sub string) int {
	n := 0
	for _, l := range m.Log() {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}
