package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
)

// binary is the tender binary built for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tender-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "tender")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tender: %v\n%s", err, out)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	adminToken = "admin-0123456789abcdef"
	readToken  = "reader-0123456789abcdef"
)

// controller is the API over TLS on loopback with the fake controller
// (apitest: a stand-in, the real controller is fleet/controller's) and
// tokens in a real bbolt store.
type controller struct {
	fake   *apitest.Fake
	url    string
	caFile string
	home   string
}

func startController(t *testing.T) *controller {
	t.Helper()
	dir := t.TempDir()
	db, err := boltdb.Open(filepath.Join(dir, "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Store()
	t.Cleanup(func() { st.Close() })
	for _, tk := range []store.APIToken{
		{Hash: sum(adminToken), Name: "admin", Role: store.RoleAdmin},
		{Hash: sum(readToken), Name: "viewer", Role: store.RoleReadOnly},
	} {
		if _, err := st.APITokens.Create(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
	tlsc, caPEM := testCA(t)
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, caPEM, 0o644)
	fake := apitest.New()
	fake.Tokens = st.APITokens // API tokens it makes work at once
	srv, err := api.NewServer(api.Config{TLS: tlsc, Controller: fake, Tokens: st.APITokens, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o700)
	return &controller{fake: fake, url: "https://" + ln.Addr().String(), caFile: caFile, home: home}
}

func sum(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func testCA(t testing.TB) (*tls.Config, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "controller"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// env is the environment of a CLI run: the controller, its CA and the
// admin token, unless overridden ("" removes a variable).
func (c *controller) env(over ...string) []string {
	vars := map[string]string{"HOME": c.home, "TENDER_SERVER": c.url, "TENDER_CA": c.caFile, "TENDER_TOKEN": adminToken, "PATH": os.Getenv("PATH")}
	for i := 0; i+1 < len(over); i += 2 {
		vars[over[i]] = over[i+1]
	}
	var env []string
	for k, v := range vars {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// tender runs the binary and returns its stdout, stderr and exit code.
func tender(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestCLI_DevicesTable(t *testing.T) {
	c := startController(t)
	out, errOut, code := tender(t, c.env(), "devices")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "LAST SEEN") {
		t.Fatalf("devices: %d\n%s%s", code, out, errOut)
	}
	// Columns line up: every row has its LABELS where the header has it.
	col := strings.Index(lines[0], "LABELS")
	for _, l := range lines[1:] {
		if len(l) < col || !strings.HasPrefix(l[col:], "site=") {
			t.Errorf("row not aligned with LABELS at %d: %q", col, l)
		}
	}
	// gw-3's version carries a terminal escape: shown escaped, never raw.
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `thermo@1.0\x1b]0;pwned\x07`) {
		t.Errorf("device-supplied string not escaped:\n%q", out)
	}
	out, _, code = tender(t, c.env(), "devices", "-l", "site=berlin")
	if code != 0 || strings.Count(out, "\n") != 3 || strings.Contains(out, "gw-2") {
		t.Errorf("devices -l site=berlin: %d\n%s", code, out)
	}
	out, _, code = tender(t, c.env(), "devices", "-o", "wide")
	if code != 0 || !strings.Contains(out, "KERNEL") || !strings.Contains(out, "48.0MiB/1.0GiB") {
		t.Errorf("devices -o wide: %d\n%s", code, out)
	}
	out, _, code = tender(t, c.env(), "devices", "-o", "json", "-l", "site=munich")
	var ds []api.DeviceView
	if err := json.Unmarshal([]byte(out), &ds); code != 0 || err != nil || len(ds) != 1 || ds[0].ID != "gw-2" {
		t.Errorf("devices -o json: %d %v\n%s", code, err, out)
	}
	out, _, code = tender(t, c.env(), "devices", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "  id: gw-1") {
		t.Errorf("devices -o yaml: %d\n%s", code, out)
	}
}

// The exit code table, end to end, and one-line errors.
func TestCLI_ExitCodes(t *testing.T) {
	c := startController(t)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		msg  string
	}{
		{"ok", c.env(), []string{"status"}, 0, ""},
		{"not found", c.env(), []string{"device", "show", "gw-9"}, 1, `no device "gw-9"`},
		{"bad selector", c.env(), []string{"devices", "-l", "site"}, 1, "not key=value"},
		{"bad label arg", c.env(), []string{"device", "label", "gw-1", "site"}, 1, "key=value"},
		{"bad output", c.env(), []string{"apps", "-o", "xml"}, 1, `-o "xml"`},
		{"no wide", c.env(), []string{"status", "-o", "wide"}, 1, "no wide output"},
		{"unknown flag", c.env(), []string{"devices", "--nope"}, 1, "unknown flag"},
		{"missing args", c.env(), []string{"logs", "gw-1"}, 1, "usage"},
		{"pause", c.env(), []string{"rollout", "pause", "thermo"}, 0, ""},
		{"refused", c.env(), []string{"rollout", "pause", "thermo"}, 1, "not progressing"},
		{"no spec file", c.env(), []string{"apply", "-f", "/nonexistent.yaml"}, 1, "read spec"},
		{"invalid spec", c.env(), []string{"apply", "-f", "/dev/null"}, 1, "empty spec"},
		{"no token", c.env("TENDER_TOKEN", ""), []string{"devices"}, 1, "no API token"},
		{"wrong token", c.env("TENDER_TOKEN", "guess"), []string{"devices"}, 4, "bearer token"},
		{"read-only write", c.env("TENDER_TOKEN", readToken), []string{"device", "rm", "gw-1"}, 4, "admin token is needed"},
		{"untrusted server", c.env("TENDER_CA", ""), []string{"devices"}, 4, "not trusted"},
		{"unreachable", c.env("TENDER_SERVER", "https://127.0.0.1:1"), []string{"devices"}, 3, "not reachable"},
		{"device offline", c.env(), []string{"logs", "gw-2", "thermo"}, 125, "offline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := tender(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("tender %s: exit %d, want %d; stderr %q, want %q in it", strings.Join(tc.args, " "), code, tc.code, errOut, tc.msg)
			}
			first, _, _ := strings.Cut(errOut, "\n")
			if code != 0 && !strings.HasPrefix(first, "tender: ") {
				t.Errorf("error not on one tender: line: %q", errOut)
			}
		})
	}
	// A controller failure is 125.
	c.fake.Err = errors.New("store: disk on fire")
	if _, errOut, code := tender(t, c.env(), "apps"); code != 125 || !strings.Contains(errOut, "disk on fire") {
		t.Errorf("controller failure: %d %q", code, errOut)
	}
	c.fake.Err = nil
	// A read-only token changed nothing.
	if out, _, _ := tender(t, c.env(), "devices", "-o", "json"); !strings.Contains(out, `"gw-1"`) {
		t.Errorf("gw-1 gone after a read-only rm:\n%s", out)
	}
}

// Writes pass through to the controller as the admin token's caller and
// show in the audit.
func TestCLI_Writes(t *testing.T) {
	c := startController(t)
	spec := filepath.Join(t.TempDir(), "web.yaml")
	os.WriteFile(spec, []byte("name: web\nversion: \"1.2\"\ncontainers:\n- name: main\n  image: nginx\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"device", "label", "gw-1", "floor=2", "site-"}, "device gw-1 labeled: floor=2"},
		{[]string{"apply", "-f", spec}, "app web: version 1.2, revision 1"},
		{[]string{"token", "create", "--labels", "site=berlin", "--ttl", "1h", "--uses", "2"}, "tender-agent enroll --server " + c.url + " --token tok1.secret.cahash"},
		{[]string{"logs", "gw-1", "thermo", "-n", "2"}, "thermo/main line 2\n"},
		{[]string{"restart", "gw-1", "thermo"}, "thermo restarted on gw-1"},
		{[]string{"rollout", "pause", "thermo"}, "rollout of thermo: paused"},
		{[]string{"app", "rm", "web"}, "app web is being removed"},
		{[]string{"device", "rm", "gw-2"}, "device gw-2 removed"},
	} {
		out, errOut, code := tender(t, c.env(), tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("tender %s: %d\n%s%s\nwant %q", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	out, _, code := tender(t, c.env(), "audit")
	if code != 0 || strings.Count(out, " admin ") != 8 || !strings.Contains(out, "device label") || !strings.Contains(out, "127.0.0.1:") {
		t.Errorf("audit:\n%s", out)
	}
	// Log lines are the device's: here, through a pipe, as they are
	// (termsafe escapes them on a terminal only).
	out, _, _ = tender(t, c.env(), "logs", "gw-1", "thermo")
	if !strings.Contains(out, "evil \x1b[2J line") {
		t.Errorf("logs:\n%q", out)
	}
}

func TestCLI_ReadCommands(t *testing.T) {
	c := startController(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"device", "show", "gw-1"}, []string{"ID:", "gw-1", "2 lost (gaps)", "Apps:", "Events:", "applied-desired"}},
		{[]string{"apps"}, []string{"NAME", "thermo", "2.0", "progressing"}},
		{[]string{"apps", "-o", "wide"}, []string{"CONTAINERS", "main=registry.local/thermo:2.0"}},
		{[]string{"app", "show", "thermo"}, []string{"Revision:", "2 (latest 2)", "registry.local/thermo:2.0"}},
		{[]string{"app", "history", "thermo"}, []string{"REVISION", "1.0", "2.0", "*"}},
		{[]string{"app", "explain", "thermo"}, []string{"gw-3", "arch armv7 not in [arm64 amd64]", "yes"}},
		{[]string{"app", "explain", "thermo", "gw-2", "-o", "json"}, []string{`"device": "gw-2"`}},
		{[]string{"events", "--device", "gw-3"}, []string{"CURSOR", "unhealthy"}},
		{[]string{"status"}, []string{"Devices:", "3 (2 online)", "embedded"}},
		{[]string{"version"}, []string{"tender "}},
	} {
		out, errOut, code := tender(t, c.env(), tc.args...)
		for _, w := range tc.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("tender %s: %d, want %q in\n%s%s", strings.Join(tc.args, " "), code, w, out, errOut)
				break
			}
		}
	}
	out, _, _ := tender(t, c.env(), "events", "--kind", "started")
	if strings.Contains(out, "unhealthy") || !strings.Contains(out, "started") {
		t.Errorf("events --kind started:\n%s", out)
	}
}

// The config file gives server, token and CA (relative to the file).
func TestCLI_ConfigFile(t *testing.T) {
	c := startController(t)
	dir := filepath.Join(c.home, ".config", "tender")
	os.MkdirAll(dir, 0o700)
	ca, _ := os.ReadFile(c.caFile)
	os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644)
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("server: "+c.url+"\ntoken: "+readToken+"\ncaFile: ca.crt\n"), 0o600)
	env := c.env("TENDER_SERVER", "", "TENDER_TOKEN", "", "TENDER_CA", "")
	if out, errOut, code := tender(t, env, "status"); code != 0 || !strings.Contains(out, "embedded") {
		t.Errorf("status from the config file: %d\n%s%s", code, out, errOut)
	}
	// The environment wins over the file: an admin token may write.
	if _, errOut, code := tender(t, c.env("TENDER_SERVER", "", "TENDER_CA", ""), "rollout", "pause", "thermo"); code != 0 {
		t.Errorf("TENDER_TOKEN over the file: %d %s", code, errOut)
	}
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("server: x\nbogus: 1\n"), 0o600)
	if _, errOut, code := tender(t, env, "status"); code != 1 || !strings.Contains(errOut, "bogus") {
		t.Errorf("bad config file: %d %s", code, errOut)
	}
}

func TestCLI_HelpAndCompletion(t *testing.T) {
	c := startController(t)
	out, _, code := tender(t, c.env(), "--help")
	for _, w := range []string{"devices", "rollout", "apply", "Exit codes", "TENDER_TOKEN"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("--help lacks %q:\n%s", w, out)
		}
	}
	if out, _, code := tender(t, c.env(), "rollout", "status", "--help"); code != 0 || !strings.Contains(out, "--watch") {
		t.Errorf("rollout status --help: %d\n%s", code, out)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if out, _, code := tender(t, c.env(), "completion", sh); code != 0 || !strings.Contains(out, "tender") {
			t.Errorf("completion %s: %d", sh, code)
		}
	}
	// Dynamic completion asks the controller.
	out, _, _ = tender(t, c.env(), "__complete", "device", "show", "")
	if !strings.Contains(out, "gw-1\ngw-2\ngw-3\n") {
		t.Errorf("device show completion:\n%s", out)
	}
	out, _, _ = tender(t, c.env(), "__complete", "rollout", "undo", "")
	if !strings.Contains(out, "thermo\n") {
		t.Errorf("rollout undo completion:\n%s", out)
	}
}

// rollout status draws each wave as a bar with its counts; --watch draws
// again on change and ends when the rollout does.
func TestCLI_RolloutStatus(t *testing.T) {
	c := startController(t)
	out, _, code := tender(t, c.env(), "rollout", "status", "thermo")
	want := []string{
		"thermo: 1.0 (1) -> 2.0 (2), progressing",
		"WAVE   PROGRESS",
		"1/2    [####################]   1         1         1         0        0         0",
		"2/2    [....................]   2         0         0         0        3         0",
	}
	for _, w := range want {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("rollout status lacks %q:\n%s", w, out)
		}
	}

	cmd := exec.Command(binary, "rollout", "status", "thermo", "--watch", "--interval", "10ms")
	cmd.Env = c.env()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "progressing") {
			r := api.RolloutView{App: "thermo", From: "1.0 (1)", To: "2.0 (2)", Phase: "succeeded",
				Waves: []api.WaveCounts{{Index: 0, Devices: 1, Updated: 1, Healthy: 1}, {Index: 1, Devices: 2, Updated: 2, Healthy: 1, Failed: 0, Deferred: 0}}}
			c.fake.SetRollout(r)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch: %v\n%s", err, strings.Join(seen, "\n"))
	}
	all := strings.Join(seen, "\n")
	if strings.Count(all, "thermo: ") != 2 || !strings.Contains(all, "succeeded") || !strings.Contains(all, "[##########==========]") {
		t.Errorf("watch output:\n%s", all)
	}
}

// events -f prints the first page with its header, then each new event
// once, after the last cursor seen.
func TestCLI_EventsFollow(t *testing.T) {
	c := startController(t)
	cmd := exec.Command(binary, "events", "-f", "--interval", "10ms", "--app", "thermo")
	cmd.Env = c.env()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "unhealthy") {
			c.fake.AddEvent("gw-1", "rolled-back", "thermo")
			c.fake.AddEvent("gw-2", "started", "other")
		}
		if strings.Contains(sc.Text(), "rolled-back") {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	all := strings.Join(seen, "\n")
	if strings.Count(all, "CURSOR") != 1 || strings.Count(all, "unhealthy") != 1 || !strings.Contains(all, "rolled-back") || strings.Contains(all, "other") {
		t.Errorf("events -f:\n%s", all)
	}
}
