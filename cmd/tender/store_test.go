package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/test/etcdtest"
)

func TestParseStoreURL(t *testing.T) {
	for _, tc := range []struct {
		in, endpoints, prefix string
		tls                   bool
		bad                   string
	}{
		{in: "etcd://h1:2379,h2:2380,h3", endpoints: "h1:2379 h2:2380 h3:2379", prefix: "/tender/"},
		{in: "etcds://10.0.0.1:2379/fleet-a", endpoints: "10.0.0.1:2379", prefix: "/fleet-a/", tls: true},
		{in: "etcd://[::1]:2379/a/b/", endpoints: "[::1]:2379", prefix: "/a/b/"},
		{in: "h1:2379", bad: "want etcd://"},
		{in: "http://h1:2379", bad: `unknown scheme "http"`},
		{in: "etcd://", bad: "names no etcd member"},
	} {
		got, err := parseStoreURL(tc.in)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) || exitCode(err) != exitBadInput {
				t.Errorf("%s: %v, want an invalid argument saying %q", tc.in, err, tc.bad)
			}
			continue
		}
		if err != nil || strings.Join(got.endpoints, " ") != tc.endpoints || got.prefix != tc.prefix || got.tls != tc.tls {
			t.Errorf("%s: %+v %v", tc.in, got, err)
		}
	}
	f := storeFlags{url: "etcd://h1", ca: "ca.pem"}
	if _, err := f.openEtcd(context.Background()); err == nil || !strings.Contains(err.Error(), "etcds://") {
		t.Errorf("TLS flags with etcd://: %v", err)
	}
}

func runTender(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestStoreMigrate copies a bbolt store into a real etcd with the binary,
// then compares both stores record by record.
func TestStoreMigrate(t *testing.T) {
	c := etcdtest.Start(t, 1)
	src := filepath.Join(t.TempDir(), "fleet.db")
	clock := storetest.NewClock(storetest.T0)
	db, err := boltdb.Open(src, &boltdb.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Fill(t, db.Store(), clock)
	// A running controller holds the file: migrate says so.
	to := "etcd://" + strings.Join(c.Endpoints(), ",") + "/fleet-a"
	if out, code := runTender(t, "store", "migrate", "--from", src, "--to", to); code == 0 || !strings.Contains(out, "locked") {
		t.Fatalf("migrate of a store in use: exit %d: %s", code, out)
	}
	db.Close()
	out, code := runTender(t, "store", "migrate", "--from", src, "--to", to)
	if code != 0 || !strings.Contains(out, "counts checked") || !strings.Contains(out, "events") {
		t.Fatalf("migrate: exit %d: %s", code, out)
	}
	t.Logf("tender store migrate:\n%s", out)
	out, code = runTender(t, "store", "migrate", "--from", src, "--to", to)
	if code != exitBadInput || !strings.Contains(out, "--force") {
		t.Fatalf("migrate onto a store: exit %d: %s", code, out)
	}
	if out, code = runTender(t, "store", "migrate", "--from", src, "--to", to, "--force"); code != 0 {
		t.Fatalf("migrate --force: exit %d: %s", code, out)
	}

	bdb, err := boltdb.Open(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	edb, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "/fleet-a/"})
	if err != nil {
		t.Fatal(err)
	}
	defer edb.Close()
	storetest.Equal(t, bdb.Store(), edb.Store())
}

// TestServe_EtcdStore: tender serve --store etcd://... keeps its records in
// etcd (the admin token it creates is there) and its keys in --data; a
// cluster that does not answer stops it with a message naming it.
func TestServe_EtcdStore(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := filepath.Join(t.TempDir(), "data") // made 0700 by serve
	url := "etcd://" + strings.Join(c.Endpoints(), ",") + "/ctl"
	var log lockedBuffer
	cmd := exec.Command(binary, "serve", "--data", dir, "--store", url, "--listen", "127.0.0.1:"+port(t),
		"--mqtt", "127.0.0.1:"+port(t), "--host", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "admin.token")); err == nil && len(b) > 0 && strings.Contains(log.String(), "controller serving") {
			break
		}
		select {
		case <-done:
			t.Fatalf("tender serve exited: %v\n%s", waitErr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tender serve did not come up:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	edb, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "/ctl/"})
	if err != nil {
		t.Fatal(err)
	}
	defer edb.Close()
	toks, err := edb.Store().APITokens.List(context.Background())
	if err != nil || len(toks) != 1 || toks[0].Name != "admin" {
		t.Fatalf("api tokens in etcd: %+v %v\n%s", toks, err, log.String())
	}
	for _, f := range []string{"fleet.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s written in --data with an etcd store", f)
		}
	}
	if !strings.Contains(log.String(), `"store":"`+url) {
		t.Errorf("the log does not say which store:\n%s", log.String())
	}

	// No etcd: a clear error, not a hang.
	c.Stop()
	out, code := runTender(t, "serve", "--data", filepath.Join(t.TempDir(), "data"), "--store", url, "--listen", "127.0.0.1:"+port(t), "--mqtt", "127.0.0.1:"+port(t))
	if code == 0 || !strings.Contains(out, "unavailable") || !strings.Contains(out, c.Endpoints()[0]+": dial tcp") || !strings.Contains(out, "connection refused") {
		t.Fatalf("serve without etcd: exit %d: %s", code, out)
	}
	t.Logf("serve without etcd: %s", strings.TrimSpace(out))
}

// lockedBuffer is a bytes.Buffer the child's output goroutine writes
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func port(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestStoreMigrate_TLS: etcds:// with the CA and a client certificate
// reaches members that require one.
func TestStoreMigrate_TLS(t *testing.T) {
	c := etcdtest.StartTLS(t, 1)
	src := filepath.Join(t.TempDir(), "fleet.db")
	clock := storetest.NewClock(storetest.T0)
	db, err := boltdb.Open(src, &boltdb.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Fill(t, db.Store(), clock)
	db.Close()
	to := "etcds://" + strings.Join(c.Endpoints(), ",")
	out, code := runTender(t, "store", "migrate", "--from", src, "--to", to,
		"--store-ca", c.CAFile, "--store-cert", c.ClientCertFile, "--store-key", c.ClientKeyFile)
	if code != 0 || !strings.Contains(out, "counts checked") {
		t.Fatalf("migrate over TLS: exit %d: %s", code, out)
	}
	// The same members over plain etcd://: refused, clearly.
	out, code = runTender(t, "store", "migrate", "--from", src, "--to", "etcd://"+strings.Join(c.Endpoints(), ","), "--store-ca", c.CAFile)
	if code != exitBadInput || !strings.Contains(out, "etcds://") {
		t.Fatalf("TLS flags with etcd://: exit %d: %s", code, out)
	}
	// Without the client certificate the members refuse us.
	start := time.Now()
	out, code = runTender(t, "store", "migrate", "--from", src, "--to", to, "--store-ca", c.CAFile)
	if code == 0 || !strings.Contains(out, "TLS: remote error") {
		t.Fatalf("migrate without a client certificate: exit %d: %s, want the members' TLS refusal", code, out)
	}
	t.Logf("without a client certificate, after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
}
