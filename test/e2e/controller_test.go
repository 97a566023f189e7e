package e2e

// tender serve with three tender-agent daemons, each with its own state,
// socket and certificate, enrolled with join tokens: the real processes,
// a real registry, and either the embedded broker over TLS or Debian's
// mosquitto with configs/mosquitto (tender serve --broker), the same
// scenario on both.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tender-edge/tender/test/mqtttest"
	"github.com/tender-edge/tender/test/registry"
)

// brokerKind is the broker the controller and its devices meet at.
type brokerKind string

const (
	embedded  brokerKind = "embedded"
	mosquitto brokerKind = "mosquitto"
)

type controller struct {
	t         *testing.T
	dir       string
	api, mqtt string
	regConf   string
	args      []string // more flags of tender serve
	cmd       *exec.Cmd
	log       *bytes.Buffer
	// mosq is the external broker (tender serve --broker), nil with the
	// embedded one; mqtt is then its mutual-TLS listener.
	mosq *mqtttest.Mosquitto
}

// startController starts tender serve with broker and the extra serve
// flags args. With mosquitto, the controller starts first, as an operator
// would: it makes the CA, the server certificate and the CRL that
// mosquitto reads, then waits until mosquitto, started on those files,
// takes its connection.
func startController(t *testing.T, regAddr string, broker brokerKind, args ...string) *controller {
	t.Helper()
	dir := t.TempDir()
	c := &controller{t: t, dir: filepath.Join(dir, "data"), args: args, api: "127.0.0.1:" + mqtttest.FreePort(t),
		mqtt: "127.0.0.1:" + mqtttest.FreePort(t), regConf: filepath.Join(dir, "registries.yaml")}
	if broker == mosquitto {
		if _, err := os.Stat(mqtttest.MosquittoBin); err != nil {
			t.Skipf("%s missing (apt-get install mosquitto): %v", mqtttest.MosquittoBin, err)
		}
	}
	if err := os.WriteFile(c.regConf, []byte(fmt.Sprintf("registries:\n  %q: {insecure: true}\n", regAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("controller log:\n%s", c.log)
		}
	})
	if broker == embedded {
		c.start()
		return c
	}
	c.launch("--broker", "ssl://"+c.mqtt)
	waitFor(t, "the controller's CRL", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(c.dir, "crl.pem"))
		return err == nil
	})
	_, port, _ := strings.Cut(c.mqtt, ":")
	c.mosq = mqtttest.StartFleetMosquitto(t, "../..", c.dir, port, nil)
	c.waitAPI()
	return c
}

// start starts tender serve (again) and waits for its API.
func (c *controller) start() {
	c.t.Helper()
	if c.mosq != nil {
		c.launch("--broker", c.mosq.CertAddr)
	} else {
		c.launch("--mqtt", c.mqtt)
	}
	c.waitAPI()
}

func (c *controller) launch(broker ...string) {
	c.t.Helper()
	c.log = &bytes.Buffer{}
	c.cmd = exec.Command(tenderBin, append([]string{"serve", "--data", c.dir, "--listen", c.api,
		"--host", "127.0.0.1", "--registries", c.regConf, "--log-level", "debug"}, broker...)...)
	c.cmd.Args = append(c.cmd.Args, c.args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *controller) waitAPI() {
	c.t.Helper()
	waitFor(c.t, "the controller's API", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(c.dir, "admin.token"))
		return err == nil && c.cli("status").code == 0
	})
}

func (c *controller) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
}

// cli runs the tender CLI against the controller with the admin token.
func (c *controller) cli(args ...string) result {
	tok, _ := os.ReadFile(filepath.Join(c.dir, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tenderBin, args...)
	cmd.Env = append(os.Environ(), "TENDER_SERVER=https://"+c.api, "TENDER_CA="+filepath.Join(c.dir, "ca.crt"),
		"TENDER_TOKEN="+strings.TrimSpace(string(tok)), "HOME="+c.dir)
	r, _ := runCmd(cmd)
	return r
}

func (c *controller) ok(args ...string) string {
	c.t.Helper()
	r := c.cli(args...)
	if r.code != 0 {
		c.t.Fatalf("tender %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

func (c *controller) json(v any, args ...string) {
	c.t.Helper()
	if err := json.Unmarshal([]byte(c.ok(append(args, "-o", "json")...)), v); err != nil {
		c.t.Fatalf("tender %s -o json: %v", strings.Join(args, " "), err)
	}
}

// enroll makes a tender-agent daemon enrolled as id, with a join token of
// its own, and starts it.
func (c *controller) enroll(id, regAddr string) *daemon {
	c.t.Helper()
	d := c.enrollOnly(id, regAddr)
	d.start()
	return d
}

// enrollOnly is enroll without the start; extra are more enroll flags.
func (c *controller) enrollOnly(id, regAddr string, extra ...string) *daemon {
	c.t.Helper()
	var tok struct{ Token string }
	c.json(&tok, "token", "create", "--labels", "site=lab,name="+id, "--ttl", "10m", "--uses", "1")
	d := prepareDaemon(c.t, fastPolicy+fmt.Sprintf("registries:\n  %q: {insecure: true}\n", regAddr))
	out, err := exec.Command(agentBin, append([]string{"enroll", "--server", "https://" + c.api, "--token", tok.Token, "--id", id, "--config", d.config}, extra...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("enroll %s: %v\n%s", id, err, out)
	}
	return d
}

type deviceRow struct {
	ID     string `json:"id"`
	Online bool   `json:"online"`
	Apps   []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
	} `json:"apps"`
}

// versions maps each device to the version of app it reports running.
func (c *controller) versions(app string) map[string]string {
	var devs []deviceRow
	c.json(&devs, "devices")
	out := map[string]string{}
	for _, d := range devs {
		for _, a := range d.Apps {
			if a.Name == app && a.State == "running" {
				out[d.ID] = a.Version
			}
		}
	}
	return out
}

func (c *controller) waitVersions(app, version string, ids ...string) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%v running %s %s", ids, app, version), 3*time.Minute, func() bool {
		v := c.versions(app)
		for _, id := range ids {
			if v[id] != version {
				return false
			}
		}
		return true
	})
}

type rolloutView struct {
	Phase string `json:"phase"`
	To    string `json:"to"`
	Waves []struct {
		Devices, Healthy, Failed, Updating, Updated, RolledBack int
	} `json:"waves"`
}

func (c *controller) rollout(app string) rolloutView {
	var r rolloutView
	c.json(&r, "rollout", "status", app)
	return r
}

func labApp(reg, version string, bad bool) string {
	args := `["sleep", "3600"]`
	if bad {
		args = `["exit", "3"]`
	}
	return fmt.Sprintf(`name: sl
version: "%s"
containers:
  - name: main
    image: %s/tender/workload:1
    args: %s
    env: {V: "%s"}
    restart: always
placement: {selector: {site: lab}}
rollout: {waves: ["1", "100%%"], healthyFor: 2s, failureThreshold: "0"}
`, version, reg, args, version)
}

// TestController_RolloutsAcrossThreeAgents: a good version rolls out in
// waves to all three; a bad one stops at the first wave and is rolled back;
// a device stopped during a rollout gets the right version when it comes
// back; a controller restarted mid-rollout resumes it. The same scenario
// with the embedded broker and with mosquitto.
func TestController_RolloutsAcrossThreeAgents(t *testing.T) {
	for _, b := range []brokerKind{embedded, mosquitto} {
		t.Run(string(b), func(t *testing.T) { rolloutsAcrossThreeAgents(t, b) })
	}
}

func rolloutsAcrossThreeAgents(t *testing.T, broker brokerKind) {
	reg := registry.Start(t, registry.Options{})
	archive, err := os.ReadFile(testImage)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.Push(context.Background(), archive, reg.Addr+"/tender/workload:1", true); err != nil {
		t.Fatal(err)
	}
	c := startController(t, reg.Addr, broker)
	ids := []string{"gw-1", "gw-2", "gw-3"}
	agents := map[string]*daemon{}
	for _, id := range ids {
		if id == "gw-3" && broker == embedded {
			// The password fallback: its config holds no certificate,
			// so it comes online only if the embedded broker takes the
			// password it made at enrollment.
			d := c.enrollOnly(id, reg.Addr, "--password-auth")
			cfg, err := os.ReadFile(d.config)
			if err != nil || strings.Contains(string(cfg), "certFile") || !strings.Contains(string(cfg), "password:") {
				t.Fatalf("config after enroll --password-auth (%v):\n%s", err, cfg)
			}
			d.start()
			agents[id] = d
			continue
		}
		agents[id] = c.enroll(id, reg.Addr)
	}
	waitFor(t, "three devices online", time.Minute, func() bool {
		var devs []deviceRow
		c.json(&devs, "devices", "-l", "site=lab")
		n := 0
		for _, d := range devs {
			if d.Online {
				n++
			}
		}
		return n == 3
	})
	apply := func(version string, bad bool) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(p, []byte(labApp(reg.Addr, version, bad)), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ok("apply", "-f", p)
	}

	// A good version, then a second one, in waves.
	apply("1", false)
	c.waitVersions("sl", "1", ids...)
	apply("2", false)
	c.waitVersions("sl", "2", ids...)
	waitFor(t, "the rollout of 2 to succeed", time.Minute, func() bool { return c.rollout("sl").Phase == "succeeded" })
	if r := c.rollout("sl"); r.Phase != "succeeded" || len(r.Waves) != 2 || r.Waves[0].Devices != 1 || r.Waves[1].Devices != 2 {
		t.Fatalf("rollout of 2: %+v", r)
	}

	// A bad version: the first wave's device fails, the rollout stops there
	// and rolls back; the others never get it.
	apply("3", true)
	waitFor(t, "the bad rollout rolled back", 3*time.Minute, func() bool { return c.rollout("sl").Phase == "rolled-back" })
	c.waitVersions("sl", "2", ids...)
	if r := c.rollout("sl"); r.Waves[1].Updating+r.Waves[1].Updated+r.Waves[1].Healthy+r.Waves[1].Failed+r.Waves[1].RolledBack != 0 || r.Waves[0].Failed+r.Waves[0].RolledBack == 0 {
		t.Fatalf("the bad version reached the second wave: %+v", r)
	}

	// A device stopped during a rollout gets the version when it is back;
	// the controller restarted mid-rollout resumes it.
	agents["gw-3"].stop()
	apply("4", false)
	waitFor(t, "version 4 on the online devices", 3*time.Minute, func() bool {
		v := c.versions("sl")
		return v["gw-1"] == "4" || v["gw-2"] == "4"
	})
	c.stop()
	c.start()
	agents["gw-3"].start()
	c.waitVersions("sl", "4", ids...)
	waitFor(t, "the rollout of 4 to succeed after the restart", time.Minute, func() bool { return c.rollout("sl").Phase == "succeeded" })
}
