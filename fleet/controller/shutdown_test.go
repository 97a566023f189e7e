package controller_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/broker"
	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/sync/mqttc"
)

type anyPassword struct{}

func (anyPassword) Check(string, string) bool { return true }

// After the controller stops, the embedded broker still delivers
// messages to its handlers: at shutdown it closes every device and
// publishes their Last Wills. More of them than the ingest queue holds
// must not block the broker's clients (tender serve hung at exit with
// 10,000 devices connected, test/bench/fleet.sh).
func TestMessagesAfterRunDoNotBlockBroker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := controller.PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	key, err := controller.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := boltdb.Open(filepath.Join(dir, controller.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := broker.New(broker.Config{TLSAddr: "-", TCPAddr: "127.0.0.1:0", Passwords: anyPassword{}, Rate: 1e6, Burst: 1e6, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = b.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := controller.New(ctx, controller.Config{Dir: dir, Brokers: []string{"tls://127.0.0.1:8883"}, Log: testLog(t)},
		controller.Deps{Store: db.Store(), Key: key, Transport: b, Revoker: b})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	cl, err := mqttc.New(mqttc.Config{Broker: "tcp://" + b.TCPAddr(), ClientID: "sim-1", Username: "sim-1", Password: "x", CleanSession: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	cdone := make(chan struct{})
	go func() { defer close(cdone); _ = cl.Run(cctx) }()
	defer func() { ccancel(); <-cdone }()
	if err := cl.WaitConnected(cctx); err != nil {
		t.Fatal(err)
	}
	// Run has subscribed once a message it cannot decode is counted.
	for c.Stats().Malformed == 0 {
		if err := cl.Publish(cctx, "tender/v1/devices/sim-1/presence", []byte("not a presence"), false); err != nil {
			t.Fatal(err)
		}
		if cctx.Err() != nil {
			t.Fatal("the controller never took a message")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatal(err)
	}

	const n = 5000 // more than the ingest queue
	for i := range n {
		if err := cl.Publish(cctx, "tender/v1/devices/sim-1/presence", []byte("online"), false); err != nil {
			closed = true // Close would hang too
			t.Fatalf("message %d of %d after the controller stopped: %v (its handler blocks the broker)", i+1, n, err)
		}
	}
	closeDone := make(chan error, 1)
	go func() { closeDone <- b.Close() }()
	select {
	case err := <-closeDone:
		closed = true
		if err != nil {
			t.Fatal(err)
		}
	case <-cctx.Done():
		closed = true
		t.Fatal("broker Close hung after the controller stopped")
	}
}
