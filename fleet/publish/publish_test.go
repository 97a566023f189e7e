package publish_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/publish"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
	"github.com/tender-edge/tender/test/mqtttest"
)

// received collects what the broker delivered on desired topics.
type received struct {
	ch chan []byte
}

func (r *received) handler(_ string, payload []byte) {
	r.ch <- payload
}

// next waits for the next desired message.
func (r *received) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-r.ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no desired document arrived")
		return nil
	}
}

func (r *received) none(t *testing.T) {
	t.Helper()
	select {
	case b := <-r.ch:
		t.Fatalf("unexpected document: %s", b)
	default:
	}
}

func app(version string) wire.App {
	return wire.App{Name: "thermo", Version: version, Containers: []wire.Container{{Name: "main", Image: "registry.example/thermo@sha256:" + sha(version)}}}
}

func sha(s string) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = "0123456789abcdef"[(int(s[0])+i)%16]
	}
	return string(b)
}

type env struct {
	t    *testing.T
	path string
	db   *boltdb.DB
	pub  *publish.Publisher
	key  ed25519.PrivateKey
	m    *mqtttest.Mochi
	lat  int
	now  time.Time
}

func (e *env) open() {
	db, err := boltdb.Open(e.path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
	s := db.Store()
	e.pub, err = publish.New(publish.Config{
		Key: e.key, Generations: s.Generations, States: publish.StoreStates(s.Docs), Transport: e.m,
		Now: func() time.Time { return e.now }, Latency: func(time.Duration) { e.lat++ },
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func verify(t *testing.T, pub ed25519.PublicKey, b []byte, last uint64, now time.Time) wire.Desired {
	t.Helper()
	var envl wire.Envelope
	if err := json.Unmarshal(b, &envl); err != nil {
		t.Fatal(err)
	}
	d, err := sign.Verify(pub, envl, sign.Expect{DeviceID: "gw-1", LastGeneration: last, Now: now})
	if err != nil {
		t.Fatalf("device refuses the document: %v", err)
	}
	return d
}

func TestPublish_OnlyOnChangeAndAcrossRestart(t *testing.T) {
	ctx := context.Background()
	rcv := &received{ch: make(chan []byte, 16)}
	m := mqtttest.StartMochi(t, "127.0.0.1:0", map[string]mqtttest.Handler{"tender/v1/devices/+/desired": rcv.handler})
	pubKey, key, err := sign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, path: filepath.Join(t.TempDir(), "fleet.db"), key: key, m: m, now: time.Now()}
	e.open()

	r1, err := e.pub.Publish(ctx, "gw-1", []wire.App{app("1.0")})
	if err != nil || !r1.Published {
		t.Fatalf("first publish: %+v %v", r1, err)
	}
	d1 := verify(t, pubKey, rcv.next(t), 0, e.now)
	if d1.Generation != r1.Generation || len(d1.Apps) != 1 || d1.Apps[0].Version != "1.0" {
		t.Fatalf("document %+v, result %+v", d1, r1)
	}
	if !d1.ExpiresAt.After(e.now.Add(29 * 24 * time.Hour)) {
		t.Fatalf("expires %v", d1.ExpiresAt)
	}

	r, err := e.pub.Publish(ctx, "gw-1", []wire.App{app("1.0")})
	if err != nil || r.Published || r.Generation != r1.Generation {
		t.Fatalf("same content published again: %+v %v", r, err)
	}
	rcv.none(t)

	r2, err := e.pub.Publish(ctx, "gw-1", []wire.App{app("2.0")})
	if err != nil || !r2.Published || r2.Generation <= r1.Generation {
		t.Fatalf("changed content: %+v %v", r2, err)
	}
	verify(t, pubKey, rcv.next(t), r1.Generation, e.now)

	// Restart: the hash and the generations survive.
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	e.open()
	defer e.db.Close()
	r, err = e.pub.Publish(ctx, "gw-1", []wire.App{app("2.0")})
	if err != nil || r.Published || r.Generation != r2.Generation {
		t.Fatalf("unchanged content republished after a restart: %+v %v", r, err)
	}
	rcv.none(t)

	// The last app removed: a signed document with no apps.
	r3, err := e.pub.Publish(ctx, "gw-1", nil)
	if err != nil || !r3.Published || r3.Generation <= r2.Generation {
		t.Fatalf("no apps: %+v %v", r3, err)
	}
	d3 := verify(t, pubKey, rcv.next(t), r2.Generation, e.now)
	if d3.Apps == nil || len(d3.Apps) != 0 {
		t.Fatalf("apps %#v: want an empty list", d3.Apps)
	}

	// Half the lifetime later the same content is signed again.
	e.now = e.now.Add(publish.DefaultExpiry/2 + time.Minute)
	r4, err := e.pub.Publish(ctx, "gw-1", nil)
	if err != nil || !r4.Published || r4.Generation <= r3.Generation {
		t.Fatalf("refresh: %+v %v", r4, err)
	}
	verify(t, pubKey, rcv.next(t), r3.Generation, e.now)
	if e.lat != 4 { // r1, r2, r3, r4: only what was sent
		t.Fatalf("latency observed %d times, want 4", e.lat)
	}

	if err := e.pub.Forget(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	r5, err := e.pub.Publish(ctx, "gw-1", nil)
	if err != nil || !r5.Published || r5.Generation <= r4.Generation {
		t.Fatalf("after forget: %+v %v (generations must never be reused)", r5, err)
	}
}

func TestPublish_RefusesBadDeviceID(t *testing.T) {
	_, key, _ := sign.GenerateKey(nil)
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "f.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := db.Store()
	m := mqtttest.StartMochi(t, "127.0.0.1:0", nil)
	p, err := publish.New(publish.Config{Key: key, Generations: s.Generations, States: publish.StoreStates(s.Docs), Transport: m})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(context.Background(), "gw/+", nil); err == nil {
		t.Fatal("a device id with topic wildcards was accepted")
	}
}
