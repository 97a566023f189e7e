// Package console drives the web console of a real `tender serve` in
// headless Chromium (chromedp), with simulated devices (test/fleetsim:
// real MQTT over TLS, enrolled through the controller) and rollouts
// started from the tender CLI.
package console

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/test/mqtttest"
	"github.com/tender-edge/tender/test/registry"
)

var tenderBin string // the tender binary under test

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if tenderBin = os.Getenv("TENDER_BIN"); tenderBin == "" {
		tmp, err := os.MkdirTemp("", "tender-console-")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer os.RemoveAll(tmp)
		tenderBin = filepath.Join(tmp, "tender")
		cmd := exec.Command("go", "build", "-o", tenderBin, "../../cmd/tender")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("go build tender: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

// The API tokens of the test fleet, stored (hashed) before tender serve
// first starts, so it makes no admin token of its own.
const (
	adminToken  = "tdr-console-admin-0123456789abcdef0123456789"
	viewerToken = "tdr-console-viewer-0123456789abcdef012345678"
)

// fleet is a running tender serve.
type fleet struct {
	t        *testing.T
	dir, api string
	mqtt     string
	reg      string // registry host:port
	cmd      *exec.Cmd
	log      *strings.Builder
	client   *http.Client
}

// startFleet starts a docker-registry holding one image and tender serve
// with an admin and a read-only token.
func startFleet(t *testing.T, extra ...string) *fleet {
	t.Helper()
	reg := registry.Start(t, registry.Options{})
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Addr+"/tender/console:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fleet{t: t, dir: filepath.Join(dir, "data"), api: "127.0.0.1:" + mqtttest.FreePort(t),
		mqtt: "127.0.0.1:" + mqtttest.FreePort(t), reg: reg.Addr, log: &strings.Builder{},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := boltdb.Open(filepath.Join(f.dir, controller.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Store()
	for _, tk := range []store.APIToken{
		{Hash: api.TokenHash(adminToken), Name: "ops", Role: store.RoleAdmin, Created: time.Now()},
		{Hash: api.TokenHash(viewerToken), Name: "viewer", Role: store.RoleReadOnly, Created: time.Now()},
	} {
		if _, err := st.APITokens.Create(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	regConf := filepath.Join(dir, "registries.yaml")
	if err := os.WriteFile(regConf, []byte(fmt.Sprintf("registries:\n  %q: {insecure: true}\n", reg.Addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.cmd = exec.Command(tenderBin, append([]string{"serve", "--data", f.dir, "--listen", f.api, "--mqtt", f.mqtt,
		"--host", "127.0.0.1", "--registries", regConf, "--log-level", "info", "--enroll-rate", "1000"}, extra...)...)
	f.cmd.Stdout, f.cmd.Stderr = f.log, f.log
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = f.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = f.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tail(f.log.String(), 8000))
		}
	})
	waitFor(t, "the controller's API", 30*time.Second, func() bool {
		resp, err := f.client.Get("https://" + f.api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return f
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// cli runs the tender CLI with the admin token.
func (f *fleet) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tenderBin, args...)
	cmd.Env = append(os.Environ(), "TENDER_SERVER=https://"+f.api, "TENDER_CA="+filepath.Join(f.dir, "ca.crt"),
		"TENDER_TOKEN="+adminToken, "HOME="+f.dir)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("tender %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (f *fleet) ok(args ...string) string {
	f.t.Helper()
	out, err := f.cli(args...)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fleet) json(v any, args ...string) {
	f.t.Helper()
	if err := json.Unmarshal([]byte(f.ok(append(args, "-o", "json")...)), v); err != nil {
		f.t.Fatalf("tender %s -o json: %v", strings.Join(args, " "), err)
	}
}

func (f *fleet) rollout(app string) api.RolloutView {
	f.t.Helper()
	var r api.RolloutView
	f.json(&r, "rollout", "status", app)
	return r
}

func (f *fleet) status() api.StatusView {
	f.t.Helper()
	var s api.StatusView
	f.json(&s, "status")
	return s
}

// apply applies app demo at version v with the given soak.
func (f *fleet) apply(v, healthyFor string) {
	f.t.Helper()
	spec := fmt.Sprintf(`name: demo
version: "%s"
containers:
  - name: main
    image: %s/tender/console:1
    env: {V: "%s"}
placement: {selector: {role: gw}}
rollout: {waves: ["1", "25%%", "50%%", "100%%"], maxUnavailable: "100%%", healthyFor: %s}
`, v, f.reg, v, healthyFor)
	p := filepath.Join(f.t.TempDir(), "app.yaml")
	if err := os.WriteFile(p, []byte(spec), 0o600); err != nil {
		f.t.Fatal(err)
	}
	f.ok("apply", "-f", p)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spki is the fleet's CA and server certificate keys, for the browser.
func (f *fleet) spki() string {
	f.t.Helper()
	return spkiList(f.t, filepath.Join(f.dir, "ca.crt"), filepath.Join(f.dir, "server.crt"))
}
