package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/agent"
	fleet "github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/sync/sign"
)

// tender-agent enroll against a real controller side on loopback TLS:
// the config is written and accepted, and refusals exit 1 with one line.
func TestEnrollCommand(t *testing.T) {
	pub, _, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := fleet.New(context.Background(), fleet.Config{
		Dir: filepath.Join(t.TempDir(), "pki"), Store: fleet.NewMemStore(),
		Brokers: []string{"tls://127.0.0.1:8883"}, SigningKey: pub,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.CA().ServerCertificate(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e.Handler(fleet.HandlerOptions{}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	token, _, err := e.CreateToken(context.Background(), fleet.TokenOptions{Labels: map[string]string{"site": "berlin"}})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")

	var out bytes.Buffer
	if err := run(context.Background(), []string{"enroll", "--server", srv.URL, "--token", token, "--id", "gw-1", "--config", cfgPath}, &out, &out); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "enrolled as gw-1") || !strings.Contains(out.String(), "labels: site=berlin") || strings.Contains(out.String(), token) {
		t.Errorf("output:\n%s", out.String())
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil || cfg.DeviceID != "gw-1" || cfg.Fleet.PublicKey != sign.EncodePublicKey(pub) || cfg.Fleet.Broker != "tls://127.0.0.1:8883" {
		t.Fatalf("config %+v: %v", cfg, err)
	}
	before, _ := os.ReadFile(cfgPath)

	// The token again (from the environment): refused, exit 1, the
	// config unchanged.
	t.Setenv(joinTokenEnv, token)
	out.Reset()
	err = run(context.Background(), []string{"enroll", "--server", srv.URL, "--id", "gw-2", "--config", cfgPath}, &out, &out)
	if err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "used up") {
		t.Fatalf("reused token: %v (exit %d)", err, exitCode(err))
	}
	if after, _ := os.ReadFile(cfgPath); !bytes.Equal(before, after) {
		t.Fatal("a refused enrollment changed the config")
	}
	t.Setenv(joinTokenEnv, "")
	if err := run(context.Background(), []string{"enroll", "--config", cfgPath}, &out, &out); exitCode(err) != exitBadInput {
		t.Fatalf("no --server: %v (exit %d)", err, exitCode(err))
	}
}
