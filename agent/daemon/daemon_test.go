package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

// The whole daemon (real state file, image store, runtime, local API and
// fleet link to a real broker) leaves no goroutine behind when it stops,
// commands and all.
func TestDaemon_StopLeavesNoGoroutine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the daemon needs root (container runtime)")
	}
	results := make(chan string, 100)
	broker := mqtttest.StartMochi(t, "127.0.0.1:0", map[string]mqtttest.Handler{
		"tender/v1/devices/gw-leak/cmd/result": func(_ string, b []byte) { results <- string(b) },
	})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{DeviceID: "gw-leak", StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "run", "agent.sock")}
	cfg.Fleet.Broker = "tcp://" + broker.Addr
	cfg.Fleet.PublicKey = base64.StdEncoding.EncodeToString(pub)
	cfg.Default()
	d, err := New(cfg, Deps{Log: zerolog.New(zerolog.NewTestWriter(t)), PolicyPath: filepath.Join(dir, "no-policy.yaml"),
		Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	// Use it: the API answers, and the link takes commands from the broker.
	cl := waitAPI(t, cfg.Socket)
	if _, err := cl.Apps(ctx); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	// Commands sent before the link subscribed are lost (not retained):
	// send bursts until one is answered.
	deadline := time.After(30 * time.Second)
	answered := false
	for i := 0; !answered; i++ {
		for range 20 {
			id, _ := sign.NewCommandID(nil)
			now := time.Now()
			env, err := sign.SignCommand(priv, wire.Command{DeviceID: "gw-leak", ID: id, IssuedAt: now, ExpiresAt: now.Add(time.Minute),
				Kind: wire.CommandLogs, App: "none"})
			if err != nil {
				t.Fatal(err)
			}
			b, err := wire.Encode(env)
			if err != nil {
				t.Fatal(err)
			}
			if err := broker.Publish("tender/v1/devices/gw-leak/cmd", b, false); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case r := <-results:
			answered = true
			if !strings.Contains(r, "no container") && !strings.Contains(r, "busy") {
				t.Errorf("command result %s", r)
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			cancel()
			<-done
			t.Fatal("no command answered")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func waitAPI(t *testing.T, sock string) *api.Client {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cl, err := api.Dial(context.Background(), sock)
		if err == nil {
			return cl
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's API did not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
