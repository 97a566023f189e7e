package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const thermoYAML = `
name: thermo
version: "1.4.2"
containers:
  - name: reader
    image: registry.example.com/acme/thermo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    args: ["--port", "/dev/ttyUSB0"]
    env: {LOG_LEVEL: info}
    resources: {cpu: 250m, memory: 64Mi, pids: 64}
    devices: ["/dev/ttyUSB0"]
    volumes: [{name: data, path: /var/lib/thermo}]
    network: host
    restart: always
    health: {http: "http://127.0.0.1:8080/healthz", interval: 10s, timeout: 2s, retries: 3}
placement:
  selector: {site: berlin, role: gateway}
  arch: [arm64, amd64]
  spread: site
  devices: all
rollout:
  waves: ["1", "10%", "50%", "100%"]
  maxUnavailable: 5%
  healthyFor: 60s
  failureThreshold: 10%
`

func TestParseApp_DesignExample(t *testing.T) {
	a, err := ParseApp([]byte(thermoYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := a.Containers[0]
	if a.Name != "thermo" || a.Version != "1.4.2" || c.Name != "reader" || c.Env["LOG_LEVEL"] != "info" {
		t.Fatalf("parsed %+v", a)
	}
	if got := c.Resources.MemoryBytes(); got != 64<<20 {
		t.Errorf("MemoryBytes = %d", got)
	}
	if got := c.Resources.MilliCPU(); got != 250 {
		t.Errorf("MilliCPU = %d", got)
	}
	if c.Health.Interval.Duration != 10*time.Second || c.Health.RetriesOrDefault() != 3 {
		t.Errorf("health %+v", c.Health)
	}
	if a.HealthyFor() != time.Minute || !a.Placement.Devices.All {
		t.Errorf("healthyFor %v, devices %+v", a.HealthyFor(), a.Placement.Devices)
	}

	// JSON round trip: durations as "10s", same revision.
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"interval":"10s"`) || !strings.Contains(string(b), `"healthyFor":"1m0s"`) {
		t.Errorf("marshalled %s", b)
	}
	a2, err := ParseApp(b)
	if err != nil {
		t.Fatalf("reparse JSON: %v", err)
	}
	if a.Revision() != a2.Revision() || len(a.Revision()) != RevisionLen {
		t.Errorf("revision %q vs %q", a.Revision(), a2.Revision())
	}
}

func TestApp_Revision(t *testing.T) {
	base := func() App {
		a, err := ParseApp([]byte("name: a\nversion: '1'\ncontainers: [{name: c, image: busybox}]\n"))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	r0 := base().Revision()
	same := base()
	same.Containers[0].Restart = RestartAlways // the default, spelled out
	same.Containers[0].Network = NetworkNone
	same.UpdateOverride = true
	same.Rollout = &Rollout{HealthyFor: D(time.Minute)}
	if same.Revision() != r0 {
		t.Errorf("defaults or rollout fields changed the revision")
	}
	img := base()
	img.Containers[0].Image = "busybox:2"
	ver := base()
	ver.Version = "2"
	if img.Revision() == r0 || ver.Revision() == r0 {
		t.Errorf("image or version change kept the revision")
	}
}

func TestParseApp_Rejects(t *testing.T) {
	const head = "name: a\nversion: '1'\ncontainers:\n"
	for _, tc := range []struct {
		name, spec, want string
	}{
		{"empty", "", "empty"},
		{"unknown top field", head + "  - {name: c, image: busybox}\nfoo: 1\n", `unknown field "foo"`},
		{"unknown container field", head + "  - {name: c, image: busybox, imag: x}\n", `unknown field "imag"`},
		{"duplicate key", "name: a\nname: b\nversion: '1'\ncontainers: [{name: c, image: busybox}]\n", "already set"},
		{"bad app name", "name: A_b\nversion: '1'\ncontainers: [{name: c, image: busybox}]\n", "app A_b: name:"},
		{"no version", "name: a\ncontainers: [{name: c, image: busybox}]\n", "version: missing"},
		{"no containers", "name: a\nversion: '1'\n", "containers: at least one"},
		{"duplicate containers", head + "  - {name: c, image: busybox}\n  - {name: c, image: busybox}\n", `containers[1].name: duplicate container name "c"`},
		{"bad container name", head + "  - {name: -c, image: busybox}\n", "containers[0].name:"},
		{"names too long", "name: " + strings.Repeat("a", 30) + "\nversion: '1'\ncontainers: [{name: " + strings.Repeat("c", 30) + ", image: busybox}]\n", "at most 53 fit"},
		{"bad image", head + "  - {name: c, image: 'Busy Box'}\n", "containers[0].image:"},
		{"bad digest", head + "  - {name: c, image: 'busybox@sha256:abc'}\n", "digest"},
		{"no image", head + "  - {name: c}\n", "containers[0].image: missing"},
		{"bad duration", head + "  - {name: c, image: busybox, health: {tcp: '127.0.0.1:80', interval: 10x}}\n", `containers[0].health.interval: invalid duration "10x"`},
		{"number duration", head + "  - {name: c, image: busybox, health: {tcp: '127.0.0.1:80', timeout: 10}}\n", "containers[0].health.timeout: invalid duration 10"},
		{"negative duration", head + "  - {name: c, image: busybox}\nrollout: {healthyFor: -5s}\n", "rollout.healthyFor: negative"},
		{"negative pace", head + "  - {name: c, image: busybox}\nrollout: {pace: -3}\n", "rollout.pace: -3"},
		{"bad window", head + "  - {name: c, image: busybox}\nrollout: {windows: [{selector: {a: b}, schedule: 'mon 1-2'}]}\n", `rollout.windows[0].schedule: schedule "mon 1-2": hours "1-2"`},
		{"window without selector", head + "  - {name: c, image: busybox}\nrollout: {windows: [{schedule: 'mon 01:00-02:00'}]}\n", "rollout.windows[0].selector: empty"},
		{"unknown window field", head + "  - {name: c, image: busybox}\nrollout: {windows: [{selector: {a: b}, schedule: 'mon 01:00-02:00', zone: UTC}]}\n", `unknown field "zone"`},
		{"bad progress deadline", head + "  - {name: c, image: busybox}\nrollout: {progressDeadline: soon}\n", "rollout.progressDeadline"},
		{"two probes", head + "  - {name: c, image: busybox, health: {tcp: '127.0.0.1:80', exec: [true]}}\n", "more than one probe"},
		{"no probe", head + "  - {name: c, image: busybox, health: {interval: 5s}}\n", "no probe"},
		{"bad http probe", head + "  - {name: c, image: busybox, health: {http: 'ftp://x/'}}\n", "health.http"},
		{"memory too small", head + "  - {name: c, image: busybox, resources: {memory: 1Mi}}\n", "below the minimum of 6Mi"},
		{"memory negative", head + "  - {name: c, image: busybox, resources: {memory: -64Mi}}\n", "resources.memory"},
		{"memory garbage", head + "  - {name: c, image: busybox, resources: {memory: lots}}\n", "resources.memory"},
		{"cpu zero", head + "  - {name: c, image: busybox, resources: {cpu: 0m}}\n", "resources.cpu: \"0m\": must be more than 0"},
		{"cpu negative", head + "  - {name: c, image: busybox, resources: {cpu: '-1'}}\n", "resources.cpu"},
		{"pids negative", head + "  - {name: c, image: busybox, resources: {pids: -1}}\n", "resources.pids"},
		{"relative volume", head + "  - {name: c, image: busybox, volumes: [{name: d, path: data}]}\n", "volumes[0].path"},
		{"volume on /proc", head + "  - {name: c, image: busybox, volumes: [{name: d, path: /proc}]}\n", "/proc is managed by the runtime"},
		{"volume on /proc/sys", head + "  - {name: c, image: busybox, volumes: [{name: d, path: /proc/sys}]}\n", "containers[0].volumes[0].path: /proc/sys is managed by the runtime"},
		{"volume on /sys/fs/cgroup", head + "  - {name: c, image: busybox, volumes: [{name: d, path: /sys/fs/cgroup}]}\n", "/sys/fs/cgroup is managed by the runtime"},
		{"ports", head + "  - {name: c, image: busybox, ports: ['80:80']}\n", "ports need network: bridge"},
		{"bad port", head + "  - {name: c, image: busybox, network: bridge, ports: ['80']}\n", `containers[0].ports[0]: port "80": wrong number of fields`},
		{"port twice", head + "  - {name: c, image: busybox, network: bridge, ports: ['80:80']}\n  - {name: d, image: busybox, network: bridge, ports: ['80:81']}\n", "containers[1].ports[0]: 80:81/tcp publishes the same host port as containers[0].ports[0]"},
		{"network name", head + "  - {name: c, image: busybox}\nnetworks: [Shared]\n", `networks[0]: "Shared"`},
		{"restart", head + "  - {name: c, image: busybox, restart: sometimes}\n", `restart: "sometimes"`},
		{"device", head + "  - {name: c, image: busybox, devices: [/etc/passwd]}\n", "devices[0]"},
		{"env", head + "  - {name: c, image: busybox, env: {'A=B': x}}\n", "env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseApp([]byte(tc.spec))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v: not an invalid argument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseApp_AllErrorsAtOnce(t *testing.T) {
	_, err := ParseApp([]byte("name: a\nversion: '1'\ncontainers: [{name: c, image: busybox, restart: x, network: y}]\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "restart") || !strings.Contains(err.Error(), "network") {
		t.Fatalf("got %v", err)
	}
}

func TestResources_OneGrammar(t *testing.T) {
	// The forms issue 8 found runtime/spec accepting and the wire refusing
	// are refused at validation, with the field and the value named.
	for _, mem := range []string{"64MB", "64mb", "1e3", " 64Mi", "64m"} {
		a := App{Name: "a", Version: "1", Containers: []Container{{Name: "c", Image: "busybox", Resources: Resources{Memory: mem}}}}
		err := a.Validate()
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "containers[0].resources.memory") || !strings.Contains(err.Error(), fmt.Sprintf("%q", mem)) {
			t.Errorf("memory %q: Validate = %v", mem, err)
		}
	}
	r := Resources{Memory: "1.5Gi", CPU: "250m"}
	if r.MemoryBytes() != 3<<29 || r.MilliCPU() != 250 || (Resources{}).MemoryBytes() != 0 || (Resources{}).MilliCPU() != 0 {
		t.Errorf("MemoryBytes, MilliCPU = %d, %d", r.MemoryBytes(), r.MilliCPU())
	}
}

func TestValidImageRef(t *testing.T) {
	for _, ok := range []string{"busybox", "busybox:1.36", "localhost:5000/a/b:c", "tender.test/workload", "a/b@sha256:" + strings.Repeat("a", 64),
		"registry.example.com/acme/thermo:1.4.2@sha256:" + strings.Repeat("0", 64), "[::1]:5000/a:b"} {
		if err := ValidImageRef(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "UPPER", "a//b", "a:", "reg:x/a", "a@sha256:" + strings.Repeat("A", 64),
		"a@sha256:abc", "a@sha512:" + strings.Repeat("a", 128), "reg.io:99999/a", "a:" + strings.Repeat("t", 129),
		"a b", "a\x1b[2J", "busybox:1\x1b]0;owned\x07", strings.Repeat("a", 513)} {
		if err := ValidImageRef(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.ContainsAny(err.Error(), "\x1b\x07") {
			t.Errorf("%q: error %q carries the control characters raw", bad, err)
		}
	}
}

func TestValidate_ControlCharacters(t *testing.T) {
	// Issue 9: a version with OSC/CSI escapes retitled or cleared the
	// operator's terminal. Refused, with the field path, escaped.
	for _, tt := range []struct {
		field string
		edit  func(*App)
	}{
		{"version", func(a *App) { a.Version = "1.0\x1b]0;owned\x07" }},
		{"version", func(a *App) { a.Version = "1.0\u202e" }},
		{"version", func(a *App) { a.Version = "1.0\xff" }},
		{"name", func(a *App) { a.Name = "web\x1b[2J" }},
		{"containers[0].name", func(a *App) { a.Containers[0].Name = "c\x9b2J" }},
		{"containers[0].image", func(a *App) { a.Containers[0].Image = "busybox:1\x1b[2J" }},
		{"containers[0].devices[0]", func(a *App) { a.Containers[0].Devices = []string{"/dev/tty\x1bc"} }},
		{"containers[0].volumes[0].path", func(a *App) { a.Containers[0].Volumes = []Volume{{Name: "v", Path: "/data\x1b[2J"}} }},
		{"placement.selector", func(a *App) { a.Placement = &Placement{Selector: map[string]string{"site": "b\x1b[2J"}} }},
	} {
		a := App{Name: "web", Version: "1.0", Containers: []Container{{Name: "c", Image: "busybox"}}}
		tt.edit(&a)
		err := a.Validate()
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.field+":") {
			t.Errorf("%s: Validate = %v, want an invalid argument naming the field", tt.field, err)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x1b\x07\x9b\u202e") {
			t.Errorf("%s: message %q carries the control characters raw", tt.field, err)
		}
	}
}

// TestValidate_ContainerMessages pins every container-level message and
// field path, in order, for a container wrong in every field at once: the
// validator's split into field groups must not change what operators read.
func TestValidate_ContainerMessages(t *testing.T) {
	bad := func(c Container) App {
		return App{Name: "a", Version: "1", Containers: []Container{c}}
	}
	for _, tc := range []struct {
		name string
		app  App
		want []string
	}{
		{"every field", bad(Container{
			Name: "C", Image: "Busy Box", Args: []string{"ok", "a\x00b"}, Env: map[string]string{"A=B": "x"},
			Resources: Resources{CPU: "0m", Memory: "1Mi", Pids: -1},
			Devices:   []string{"/etc/passwd", "/dev/tty\x1b"},
			Volumes: []Volume{
				{Name: "D", Path: "data"}, {Name: "d", Path: "/x\x1b"}, {Name: "e", Path: "/proc"},
				{Name: "f", Path: "/data"}, {Name: "g", Path: "/data"},
			},
			Network: "y", Ports: []string{"80:80"}, Restart: "x",
			Health: &Health{HTTP: "ftp://x/", TCP: "x", Exec: []string{""}, Interval: Duration{Duration: -1}, Retries: -1},
		}), []string{
			`app a: containers[0].name: "C": want 1-63 of a-z, 0-9 and '-', starting with a letter or digit`,
			`app a: containers[0].image: "Busy Box": not an image reference: want [registry[:port]/]path[:tag][@sha256:<64 hex digits>], lower-case path`,
			`app a: containers[0].args[1]: contains a NUL byte`,
			`app a: containers[0].env: variable "A=B": name empty or containing '=' or NUL, or value containing NUL`,
			`app a: containers[0].resources.cpu: "0m": must be more than 0`,
			`app a: containers[0].resources.memory: "1Mi" is below the minimum of 6Mi`,
			`app a: containers[0].resources.pids: negative: -1`,
			`app a: containers[0].devices[0]: "/etc/passwd": want a clean absolute path under /dev/`,
			`app a: containers[0].devices[1]: "/dev/tty\x1b": control character U+001B at byte 8`,
			`app a: containers[0].volumes[0].name: "D": want 1-63 of a-z, 0-9 and '-', starting with a letter or digit`,
			`app a: containers[0].volumes[0].path: "data": want a clean absolute path`,
			`app a: containers[0].volumes[1].path: "/x\x1b": control character U+001B at byte 2`,
			`app a: containers[0].volumes[2].path: /proc is managed by the runtime`,
			`app a: containers[0].volumes[4].path: "/data": mounted twice`,
			`app a: containers[0].network: "y": want host, none or bridge`,
			`app a: containers[0].restart: "x": want always, on-failure or never`,
			`app a: containers[0].health.http: "ftp://x/": want an http:// or https:// URL`,
			`app a: containers[0].health.tcp: "x": want host:port`,
			`app a: containers[0].health.exec: empty command`,
			`app a: containers[0].health: more than one probe: give only one of http, tcp or exec`,
			`app a: containers[0].health.interval: negative duration -1ns`,
			`app a: containers[0].health.retries: negative: -1`,
		}},
		{"ports without bridge", bad(Container{Name: "c", Image: "busybox", Network: NetworkHost, Ports: []string{"80:80"}}), []string{
			`app a: containers[0].ports: ports need network: bridge`,
		}},
		{"bridge port", bad(Container{Name: "c", Image: "busybox", Network: NetworkBridge, Ports: []string{"1.2.3.4:80:0/udp"}}), []string{
			`app a: containers[0].ports[0]: port "1.2.3.4:80:0/udp": container port: "0" is not a port number from 1 to 65535 (want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp])`,
		}},
		{"no probe", bad(Container{Name: "c", Image: "busybox", Health: &Health{}}), []string{
			`app a: containers[0].health: no probe: give one of http, tcp or exec`,
		}},
		{"unparsable quantities", bad(Container{Name: "c", Image: "busybox", Resources: Resources{CPU: "lots", Memory: "lots"}}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.app.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.Split(err.Error(), "\n")
			if tc.want == nil { // parse errors come from internal/quantity: pin only the fields
				if len(got) != 2 || !strings.HasPrefix(got[0], "app a: containers[0].resources.cpu: ") ||
					!strings.HasPrefix(got[1], "app a: containers[0].resources.memory: ") {
					t.Fatalf("got %q", got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("messages differ:\ngot  %q\nwant %q", got, tc.want)
			}
		})
	}
}
