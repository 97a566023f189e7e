// Package dpkgtest installs the .deb packages on this machine with dpkg,
// runs the installed agent, removes and purges them. It changes the host
// (/usr/bin/tender-agent, /etc/tender, /var/lib/tender, systemd's links),
// so it is a package of its own (no other test of it runs concurrently),
// it refuses to run where tender is installed already or where systemd
// runs (the packages would start the services), and it puts everything
// back.
package dpkgtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tender-edge/tender/packaging"
	"github.com/tender-edge/tender/packaging/internal/testbin"
)

const (
	state   = "/var/lib/tender"
	wants   = "/etc/systemd/system/multi-user.target.wants/tender-agent.service"
	mask    = "/etc/systemd/system/tender-agent.service"
	appName = "pkgtest"
)

// hostTouched are the paths the packages and the test create.
var hostTouched = []string{"/usr/bin/tender-agent", "/usr/bin/tender", "/etc/tender", state, "/var/lib/tender-controller",
	"/lib/systemd/system/tender-agent.service", "/lib/systemd/system/tender-controller.service", wants, mask}

func skipUnlessFree(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg here")
	}
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: installing the package would start the agent")
	}
	for _, p := range []string{"tender-agent", "tender"} {
		if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", p).Output(); err == nil && len(out) > 0 && !bytes.Contains(out, []byte("not-installed")) {
			t.Skipf("package %s is on this machine (%s): the test would disturb it", p, out)
		}
	}
	for _, p := range hostTouched {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists: the test would disturb a tender installation", p)
		}
	}
}

type env struct {
	t        *testing.T
	debs     map[string]string // program → .deb
	agentBin string            // a tender-agent outside the package, to clean up
	image    string
}

func setup(t *testing.T) *env {
	t.Helper()
	skipUnlessFree(t)
	src, err := testbin.SrcDir()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	a, err := testbin.Release(src, tmp)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testbin.Image(src, tmp)
	if err != nil {
		t.Fatal(err)
	}
	v, err := packaging.ParseVersion("v0.0.1", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	paths, err := packaging.Build(packaging.Options{SrcDir: src, BinDir: tmp, OutDir: filepath.Join(tmp, "pkgs"), Version: v,
		Time: time.Unix(0, 0), Arches: []packaging.Arch{a}, Formats: []string{"deb"}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, debs: map[string]string{}, agentBin: filepath.Join(tmp, "tender-agent-linux-"+a.Name), image: img}
	for _, p := range paths {
		e.debs[strings.SplitN(filepath.Base(p), "_", 2)[0]] = p
	}
	t.Cleanup(e.cleanup)
	return e
}

// cleanup puts the host back: containers of the test gone, packages
// purged, everything they or the test made removed.
func (e *env) cleanup() {
	out, _ := exec.Command(e.agentBin, "--root", state, "ps", "-a", "-q", "--no-trunc").Output()
	for _, id := range strings.Fields(string(out)) {
		if o, err := exec.Command(e.agentBin, "--root", state, "rm", "-f", id).CombinedOutput(); err != nil {
			e.t.Errorf("cleanup: rm -f %s: %v\n%s", id, err, o)
		}
	}
	killLeftovers(e.t)
	for _, p := range []string{"tender-agent", "tender"} {
		_, _ = runDpkg(e.t, "-P", p)
	}
	for _, p := range hostTouched {
		if err := os.RemoveAll(p); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	}
}

// killLeftovers ends the containers of the state directory that rm -f
// could not reach (a purge that took their directories, were it wrong):
// the processes of every container the state still says is running, by
// their cgroup, then the state directory's container monitor. It reports
// the containers.
func killLeftovers(t *testing.T) {
	states, _ := filepath.Glob(filepath.Join(state, "containers", "*", "state.json"))
	for _, s := range states {
		b, err := os.ReadFile(s)
		if err != nil || !bytes.Contains(b, []byte(`"status": "running"`)) {
			continue
		}
		id := filepath.Base(filepath.Dir(s))
		t.Errorf("cleanup: container %s still ran after rm -f", id)
		procs, _ := filepath.Glob("/sys/fs/cgroup/*/tender/" + id + "/cgroup.procs")
		procs2, _ := filepath.Glob("/sys/fs/cgroup/tender/" + id + "/cgroup.procs")
		for _, p := range append(procs, procs2...) {
			b, _ := os.ReadFile(p)
			for _, pid := range strings.Fields(string(b)) {
				var n int
				if _, err := fmt.Sscan(pid, &n); err == nil && n > 1 {
					_ = syscall.Kill(n, syscall.SIGKILL)
				}
			}
		}
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if len(argv) < 3 || argv[1] != "__tender_monitor__" || argv[2] != state {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(strings.Split(f, "/")[2], &pid); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

// runDpkg runs dpkg, waiting its turn while another process (apt, a
// helper's install) holds dpkg's lock: dpkg itself does not wait.
func runDpkg(t *testing.T, args ...string) (string, error) {
	var out []byte
	var err error
	waitFor(t, "dpkg's lock", func() bool {
		out, err = exec.Command("dpkg", args...).CombinedOutput()
		return err == nil || !bytes.Contains(out, []byte("locked by another process"))
	})
	return string(out), err
}

// dpkg runs dpkg and returns its output; it must succeed.
func (e *env) dpkg(args ...string) string {
	e.t.Helper()
	out, err := runDpkg(e.t, args...)
	if err != nil {
		e.t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func (e *env) must(exist bool, paths ...string) {
	e.t.Helper()
	for _, p := range paths {
		if exists(p) != exist {
			if exist {
				e.t.Errorf("%s is missing", p)
			} else {
				e.t.Errorf("%s is still there", p)
			}
		}
	}
}

// container is what the test reads of a container from its state files.
type container struct {
	ID    string
	Name  string
	Pid   int
	alive bool
}

// containers lists the containers under the state directory.
func containers(t *testing.T) []container {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(state, "containers", "*", "config.json"))
	var cs []container
	for _, cfg := range dirs {
		dir := filepath.Dir(cfg)
		var c struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		var s struct {
			Status string `json:"status"`
			Pid    int    `json:"pid"`
		}
		b, err := os.ReadFile(cfg)
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
			_ = json.Unmarshal(b, &s)
		}
		ct := container{ID: c.ID, Name: c.Name, Pid: s.Pid}
		ct.alive = s.Status == "running" && s.Pid > 0 && syscall.Kill(s.Pid, 0) == nil
		cs = append(cs, ct)
	}
	return cs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a hang guard, not a measure
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The agent's .deb installs here, its daemon runs from what it installed
// (its config and policy accepted), dpkg -r takes the binary and keeps the
// state, and dpkg -P takes the state but never a volume, nor what a
// container that still runs uses.
func TestDeb_InstallRemovePurge(t *testing.T) {
	e := setup(t)
	out := e.dpkg("-i", e.debs["tender-agent"], e.debs["tender"])
	t.Logf("dpkg -i:\n%s", out)
	e.must(true, "/usr/bin/tender-agent", "/usr/bin/tender", "/etc/tender/agent.yaml", "/etc/tender/policy.yaml",
		"/etc/tender/controller.env", "/lib/systemd/system/tender-agent.service", "/lib/systemd/system/tender-controller.service")
	if _, err := exec.LookPath("deb-systemd-helper"); err == nil {
		e.must(true, wants) // enabled on first install
		e.must(false, "/etc/systemd/system/multi-user.target.wants/tender-controller.service")
	}
	if !strings.Contains(out, "/etc/tender/controller.env") {
		t.Errorf("the controller's postinst does not say where its flags go:\n%s", out)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		o, err := exec.Command("systemd-analyze", "verify", "tender-agent.service", "tender-controller.service").CombinedOutput()
		if err != nil || bytes.Contains(o, []byte("tender")) {
			t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, o)
		}
	}

	// The installed daemon, as its unit runs it (the socket aside).
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cli := func(args ...string) (string, error) {
		out, err := exec.Command("/usr/bin/tender-agent", append([]string{"--socket", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	daemon := exec.Command("/usr/bin/tender-agent", "--socket", sock, "daemon", "--config", "/etc/tender/agent.yaml")
	logs, err := daemon.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	var daemonLog bytes.Buffer
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(logs)
		said := false
		for sc.Scan() {
			daemonLog.WriteString(sc.Text() + "\n")
			if !said && strings.Contains(sc.Text(), "agent ready") {
				said = true
				ready <- true
			}
		}
		if !said {
			ready <- false
		}
	}()
	defer func() { _ = daemon.Process.Kill(); _ = daemon.Wait() }()
	if !<-ready {
		_ = daemon.Wait()
		t.Fatalf("the installed daemon did not start:\n%s", daemonLog.String())
	}
	if out, err := cli("load", e.image); err != nil {
		t.Fatalf("load: %v\n%s", err, out)
	}
	spec := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(spec, []byte(`name: `+appName+`
version: "1"
containers:
  - name: main
    image: tender.test/workload:latest
    args: ["sleep", "100000"]
    volumes: [{name: data, path: /data}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("apply", "-f", spec); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	var app container
	waitFor(t, "the app's container to run", func() bool {
		for _, c := range containers(t) {
			if strings.HasPrefix(c.Name, appName+".main.") && c.alive {
				app = c
				return true
			}
		}
		return false
	})
	volume := filepath.Join(state, "volumes", appName, "data")
	if out, err := cli("exec", app.Name, "/workload", "write", "/data/keep.txt", "precious"); err != nil {
		t.Fatalf("exec write: %v\n%s", err, out)
	}
	if out, err := cli("run", "--name", "done", "tender.test/workload:latest", "id"); err != nil {
		t.Fatalf("run done: %v\n%s", err, out)
	}
	var done container
	for _, c := range containers(t) {
		if c.Name == "done" {
			done = c
		}
	}
	if done.ID == "" {
		t.Fatal("no exited container 'done'")
	}
	// systemctl stop (KillMode=process): the daemon goes, the app stays.
	_ = daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		t.Fatalf("daemon after SIGTERM: %v\n%s", err, daemonLog.String())
	}

	out = e.dpkg("-r", "tender-agent")
	t.Logf("dpkg -r:\n%s", out)
	e.must(false, "/usr/bin/tender-agent", "/lib/systemd/system/tender-agent.service")
	e.must(true, "/etc/tender/agent.yaml", "/etc/tender/policy.yaml", filepath.Join(state, "agent.db"), filepath.Join(volume, "keep.txt"))
	if syscall.Kill(app.Pid, 0) != nil {
		t.Errorf("dpkg -r stopped the app's container (pid %d)", app.Pid)
	}

	out = e.dpkg("-P", "tender-agent")
	t.Logf("dpkg -P:\n%s", out)
	e.must(false, "/etc/tender/agent.yaml", "/etc/tender/policy.yaml", filepath.Join(state, "agent.db"),
		filepath.Join(state, "containers", done.ID), wants, mask)
	e.must(true, filepath.Join(state, "containers", app.ID), filepath.Join(state, "images"), filepath.Join(state, "locks"))
	if b, err := os.ReadFile(filepath.Join(volume, "keep.txt")); err != nil || string(b) != "precious" {
		t.Errorf("the app's volume after purge: %q, %v", b, err)
	}
	if syscall.Kill(app.Pid, 0) != nil {
		t.Errorf("dpkg -P stopped the app's container (pid %d)", app.Pid)
	}
	for _, want := range []string{"1 container(s) of /var/lib/tender still run: " + app.ID, "kept /var/lib/tender/volumes"} {
		if !strings.Contains(out, want) {
			t.Errorf("dpkg -P does not say %q:\n%s", want, out)
		}
	}
	e.dpkg("-P", "tender")
	e.must(false, "/usr/bin/tender", "/etc/tender")
}

// Without a running container, purge leaves only the volumes.
func TestDeb_PurgeKeepsOnlyVolumes(t *testing.T) {
	e := setup(t)
	e.dpkg("-i", e.debs["tender-agent"])
	for p, data := range map[string]string{"agent.db": "db", "volumes/web/data/keep.txt": "precious", "images/blobs/x": "layer",
		"containers/0123abcd/state.json": "{\n  \"status\": \"exited\"\n}", "locks/web/.keep": ""} {
		p = filepath.Join(state, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// An enrolled device's identity goes with a purge too.
	for _, p := range []string{"/etc/tender/device.key", "/etc/tender/device.pem", "/etc/tender/fleet-ca.pem"} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.dpkg("-r", "tender-agent")
	e.must(true, filepath.Join(state, "agent.db"), "/etc/tender/device.key")
	out := e.dpkg("-P", "tender-agent")
	var left []string
	_ = filepath.Walk(state, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if fmt.Sprint(left) != "["+state+"/volumes/web/data/keep.txt]" {
		t.Errorf("after purge: %v, want only the volume\n%s", left, out)
	}
	e.must(false, "/etc/tender", wants, mask)
	if !strings.Contains(out, "kept /var/lib/tender/volumes") {
		t.Errorf("purge does not say it kept the volumes:\n%s", out)
	}
	var ee *exec.ExitError
	if err := exec.Command("dpkg-query", "-W", "tender-agent").Run(); !errors.As(err, &ee) {
		t.Errorf("tender-agent still known to dpkg after purge: %v", err)
	}
}
