package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tender-edge/tender/test/mqtttest"
)

// F-07 with an external broker: Debian's mosquitto, given the fleet CA,
// a server certificate of ServerCertificate and the CRL of this package,
// takes an enrolled device's certificate (CN = client id) and refuses a
// revoked one's.
func TestMosquittoHonoursCRL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.e.CA().ServerCertificate(nil, f.clk.Now()); err != nil {
		t.Fatal(err)
	}
	tok := f.token(t, TokenOptions{Uses: 2})
	pairs := map[string]tls.Certificate{}
	for _, id := range []string{"gw-good", "gw-revoked"} {
		key := p256(t)
		req := request(t, tok, id)
		req.CSR = csrPEM(t, key, id)
		resp, err := f.e.Enroll(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		pair, err := tls.X509KeyPair([]byte(resp.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil {
			t.Fatal(err)
		}
		pairs[id] = pair
	}
	if _, err := f.e.Revoke(ctx, "gw-revoked"); err != nil {
		t.Fatal(err)
	}
	port := mqtttest.FreePort(t)
	mqtttest.StartPlainMosquitto(t, "listener "+port+" 127.0.0.1\n"+
		"cafile "+filepath.Join(f.dir, CACertFile)+"\n"+
		"certfile "+filepath.Join(f.dir, ServerCertFile)+"\n"+
		"keyfile "+filepath.Join(f.dir, ServerKeyFile)+"\n"+
		"crlfile "+f.e.CRLPath()+"\n"+
		"require_certificate true\nuse_identity_as_username true\n")
	roots := x509.NewCertPool()
	roots.AddCert(f.e.CA().Cert)
	connect := func(id string) error {
		o := paho.NewClientOptions().AddBroker("ssl://127.0.0.1:" + port).SetClientID(id).
			SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pairs[id]}, ServerName: "localhost"}).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(20 * time.Second)
		c := paho.NewClient(o)
		tk := c.Connect()
		tk.Wait()
		if tk.Error() == nil {
			c.Disconnect(0)
		}
		return tk.Error()
	}
	if err := connect("gw-good"); err != nil {
		t.Fatalf("enrolled device refused by mosquitto: %v", err)
	}
	if err := connect("gw-revoked"); err == nil {
		t.Fatal("mosquitto took a revoked device's certificate")
	} else {
		t.Logf("revoked device: %v", err)
	}
}
