package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/tender-edge/tender/internal/mountpath"
	"github.com/tender-edge/tender/internal/portspec"
	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/internal/quantity"
)

// App is what an operator writes: one application of one or more
// containers, in a given version (DESIGN.md "App spec"). Its JSON keys are
// the YAML keys.
type App struct {
	Name       string      `json:"name"`
	Version    string      `json:"version"`
	Containers []Container `json:"containers"`
	Placement  *Placement  `json:"placement,omitempty"`
	Rollout    *Rollout    `json:"rollout,omitempty"`
	// Networks are shared bridge networks the app's bridged containers
	// join besides the app's own: containers of apps that share one reach
	// each other by name. Apps are otherwise isolated from each other.
	Networks []string `json:"networks,omitempty"`
	// UpdateOverride makes the agent proceed with an update even while the
	// app holds its update lock.
	UpdateOverride bool `json:"updateOverride,omitempty"`
}

// Container is one container of an app.
type Container struct {
	Name      string            `json:"name"`
	Image     string            `json:"image"`
	Args      []string          `json:"args,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Resources Resources         `json:"resources,omitzero"`
	Devices   []string          `json:"devices,omitempty"` // host device nodes passed through
	Volumes   []Volume          `json:"volumes,omitempty"`
	Network   string            `json:"network,omitempty"` // NetworkHost, NetworkBridge or NetworkNone (default)
	Ports     []string          `json:"ports,omitempty"`   // bridge only: "[HOSTIP:]HOSTPORT:PORT[/tcp|udp]"
	Restart   string            `json:"restart,omitempty"` // RestartAlways (default), RestartOnFailure, RestartNever
	Health    *Health           `json:"health,omitempty"`
}

// Resources are a container's limits; they are also what admission counts.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`    // "250m", "0.5", "2" (quantity.ParseMilliCPU); "" = no limit
	Memory string `json:"memory,omitempty"` // "64Mi", "1Gi", "1048576" (quantity.ParseBytes); "" = no limit
	Pids   int64  `json:"pids,omitempty"`   // 0 = no limit
}

// Volume is a named volume mounted at Path. Named volumes belong to the app
// and outlive its containers, across restarts and updates.
type Volume struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Health is a container's health check: exactly one of HTTP, TCP and Exec.
type Health struct {
	HTTP        string   `json:"http,omitempty"` // URL; healthy on 2xx/3xx
	TCP         string   `json:"tcp,omitempty"`  // host:port; healthy when it connects
	Exec        []string `json:"exec,omitempty"` // run in the container; healthy on exit 0
	Interval    Duration `json:"interval,omitzero"`
	Timeout     Duration `json:"timeout,omitzero"`
	Retries     int      `json:"retries,omitempty"`
	StartPeriod Duration `json:"startPeriod,omitzero"`
}

// Placement says which devices of the fleet an app goes to.
type Placement struct {
	Selector map[string]string `json:"selector,omitempty"`
	Arch     []string          `json:"arch,omitempty"`
	Spread   string            `json:"spread,omitempty"`
	Devices  DeviceCount       `json:"devices,omitzero"`
}

// Rollout says how a new version is rolled out over the fleet and when the
// agent confirms it on a device.
type Rollout struct {
	Waves            []string `json:"waves,omitempty"`
	MaxUnavailable   string   `json:"maxUnavailable,omitempty"`
	HealthyFor       Duration `json:"healthyFor,omitzero"`
	FailureThreshold string   `json:"failureThreshold,omitempty"`
	// Pace is the most devices started per minute (0: no limit), so a
	// site's uplink or the registry is not flooded.
	Pace int `json:"pace,omitempty"`
	// ProgressDeadline is how long a device may take from being asked to
	// running the new revision before it counts as failed.
	ProgressDeadline Duration `json:"progressDeadline,omitzero"`
	// Windows are maintenance windows by label, in each device's time
	// zone (DeviceFacts.TimeZone).
	Windows []Window `json:"windows,omitempty"`
}

// ForDevice is the rollout policy a device needs (HealthyFor, the time it
// confirms a new version after); the rest is the controller's, and is left
// out of the documents devices receive.
func (r *Rollout) ForDevice() *Rollout {
	if r == nil || r.HealthyFor == (Duration{}) {
		return nil
	}
	return &Rollout{HealthyFor: r.HealthyFor}
}

// Network modes, restart policies and defaults.
const (
	NetworkHost   = "host"
	NetworkNone   = "none"
	NetworkBridge = "bridge"

	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"

	DefaultHealthInterval = 10 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthRetries  = 3
	// DefaultHealthyFor is how long a new version must stay healthy on the
	// device before the agent confirms it, when rollout.healthyFor is unset.
	DefaultHealthyFor = 30 * time.Second

	// MinMemory is the smallest memory limit accepted (as runtime/spec).
	MinMemory = 6 << 20
	// RevisionLen is the length of App.Revision in hex digits.
	RevisionLen = 8
	// MaxNamesLen bounds len(app name)+len(container name): the runtime
	// container name "<app>.<container>.<revision>" must fit 63 characters.
	MaxNamesLen = 63 - 2 - RevisionLen
)

// ValidName reports whether s is a valid app, container or volume name:
// [a-z0-9][a-z0-9-]{0,62}. (A loop, not a regexp: every start of the agent
// binary would pay for compiling one.)
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

// ParseApp reads an app spec in YAML or JSON. Unknown fields and duplicate
// keys are refused; the result is validated. Every error matches
// errdefs.ErrInvalidArgument.
func ParseApp(data []byte) (App, error) {
	var a App
	if len(bytes.TrimSpace(data)) == 0 {
		return App{}, fmt.Errorf("app spec empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := yaml.UnmarshalStrict(data, &a); err != nil {
		return App{}, fmt.Errorf("app spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := a.Validate(); err != nil {
		return App{}, err
	}
	return a, nil
}

// FieldError is one thing wrong with an app spec. It matches
// errdefs.ErrInvalidArgument.
type FieldError struct {
	App   string // app name, may be empty
	Field string // "containers[0].resources.memory"
	Msg   string
}

func (e *FieldError) Error() string {
	if e.App != "" {
		if noControl(e.App) != nil {
			return fmt.Sprintf("app %q: %s: %s", e.App, e.Field, e.Msg)
		}
		return fmt.Sprintf("app %s: %s: %s", e.App, e.Field, e.Msg)
	}
	return fmt.Sprintf("app: %s: %s", e.Field, e.Msg)
}

// Unwrap makes errors.Is(err, errdefs.ErrInvalidArgument) true.
func (e *FieldError) Unwrap() error { return errdefs.ErrInvalidArgument }

// Validate checks the whole spec and returns every problem found, joined;
// each is a *FieldError naming its field.
func (a *App) Validate() error {
	v := &appValidator{app: a.Name}
	if !ValidName(a.Name) {
		v.add("name", "%q: want 1-63 of a-z, 0-9 and '-', starting with a letter or digit", a.Name)
	}
	if a.Version == "" {
		v.add("version", "missing")
	} else if len(a.Version) > 128 {
		v.add("version", "longer than 128 characters")
	} else if err := noControl(a.Version); err != nil {
		v.add("version", "%q: %v", a.Version, err)
	}
	if len(a.Containers) == 0 {
		v.add("containers", "at least one container is needed")
	}
	seen := map[string]bool{}
	for i := range a.Containers {
		c := &a.Containers[i]
		f := fmt.Sprintf("containers[%d]", i)
		if seen[c.Name] {
			v.add(f+".name", "duplicate container name %q", c.Name)
		}
		seen[c.Name] = true
		if ValidName(c.Name) && ValidName(a.Name) && len(a.Name)+len(c.Name) > MaxNamesLen {
			v.add(f+".name", "app name and container name together are %d characters, at most %d fit", len(a.Name)+len(c.Name), MaxNamesLen)
		}
		v.container(f, c)
	}
	v.appPorts(a.Containers)
	for i, n := range a.Networks {
		if !ValidName(n) {
			v.add(fmt.Sprintf("networks[%d]", i), "%q: want 1-63 of a-z, 0-9 and '-', starting with a letter or digit", n)
		}
	}
	if p := a.Placement; p != nil {
		for k, val := range p.Selector {
			if err := noControl(k + val); err != nil {
				v.add("placement.selector", "%q: %q: %v", k, val, err)
			}
		}
		if err := noControl(p.Spread); err != nil {
			v.add("placement.spread", "%q: %v", p.Spread, err)
		}
		for i, ar := range p.Arch {
			switch ar {
			case "amd64", "arm64", "arm", "armv7", "riscv64", "386":
			default:
				v.add(fmt.Sprintf("placement.arch[%d]", i), "unknown architecture %q", ar)
			}
		}
		if !p.Devices.All && p.Devices.N < 0 {
			v.add("placement.devices", "negative count %d", p.Devices.N)
		}
	}
	if r := a.Rollout; r != nil {
		v.duration("rollout.healthyFor", r.HealthyFor)
		for i, w := range r.Waves {
			if !isCountOrPercent(w) {
				v.add(fmt.Sprintf("rollout.waves[%d]", i), "%q: want a count or a percentage", w)
			}
		}
		if r.MaxUnavailable != "" && !isCountOrPercent(r.MaxUnavailable) {
			v.add("rollout.maxUnavailable", "%q: want a count or a percentage", r.MaxUnavailable)
		}
		if r.FailureThreshold != "" && !isCountOrPercent(r.FailureThreshold) {
			v.add("rollout.failureThreshold", "%q: want a count or a percentage", r.FailureThreshold)
		}
		if r.Pace < 0 {
			v.add("rollout.pace", "%d: want a number of devices per minute, 0 for no limit", r.Pace)
		}
		v.duration("rollout.progressDeadline", r.ProgressDeadline)
		for i, w := range r.Windows {
			f := fmt.Sprintf("rollout.windows[%d]", i)
			if len(w.Selector) == 0 {
				v.add(f+".selector", "empty: a window applies to the devices with these labels")
			}
			for k, val := range w.Selector {
				if err := noControl(k + val); err != nil {
					v.add(f+".selector", "%q: %q: %v", k, val, err)
				}
			}
			if _, err := ParseSchedule(w.Schedule); err != nil {
				v.add(f+".schedule", "%s", strings.TrimSuffix(err.Error(), ": "+errdefs.ErrInvalidArgument.Error()))
			}
		}
	}
	return errors.Join(v.errs...)
}

type appValidator struct {
	app  string
	errs []error
}

func (v *appValidator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{App: v.app, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *appValidator) duration(field string, d Duration) {
	if err := d.Err(); err != nil {
		v.add(field, "%v", err)
	} else if d.Duration < 0 {
		v.add(field, "negative duration %s", d.Duration)
	}
}

// container checks container c, whose fields are named under f
// ("containers[0]"), group by group in the order of the spec.
func (v *appValidator) container(f string, c *Container) {
	if !ValidName(c.Name) {
		v.add(f+".name", "%q: want 1-63 of a-z, 0-9 and '-', starting with a letter or digit", c.Name)
	}
	if err := ValidImageRef(c.Image); err != nil {
		v.add(f+".image", "%v", err)
	}
	v.process(f, c.Args, c.Env)
	v.resources(f+".resources", c.Resources)
	v.devices(f, c.Devices)
	v.volumes(f, c.Volumes)
	v.network(f, c.Network, c.Ports)
	switch c.Restart {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		v.add(f+".restart", "%q: want always, on-failure or never", c.Restart)
	}
	if c.Health != nil {
		v.health(f+".health", c.Health)
	}
}

// process checks the arguments and environment, which go to execve: no
// NUL anywhere, no '=' in a variable's name.
func (v *appValidator) process(f string, args []string, env map[string]string) {
	for i, s := range args {
		if strings.IndexByte(s, 0) >= 0 {
			v.add(fmt.Sprintf("%s.args[%d]", f, i), "contains a NUL byte")
		}
	}
	for k, val := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(val, 0) >= 0 {
			v.add(f+".env", "variable %q: name empty or containing '=' or NUL, or value containing NUL", k)
		}
	}
}

// resources checks the limits, named under f ("containers[0].resources"):
// quantities that parse, CPU above 0, memory at least MinMemory.
func (v *appValidator) resources(f string, r Resources) {
	if r.CPU != "" {
		if m, err := quantity.ParseMilliCPU(r.CPU); err != nil {
			v.add(f+".cpu", "%v", err)
		} else if m <= 0 {
			v.add(f+".cpu", "%q: must be more than 0", r.CPU)
		}
	}
	if r.Memory != "" {
		if b, err := quantity.ParseBytes(r.Memory); err != nil {
			v.add(f+".memory", "%v", err)
		} else if b < MinMemory {
			v.add(f+".memory", "%q is below the minimum of %s", r.Memory, quantity.FormatBytes(MinMemory))
		}
	}
	if r.Pids < 0 {
		v.add(f+".pids", "negative: %d", r.Pids)
	}
}

// devices checks the host device nodes passed through: clean absolute
// paths under /dev/.
func (v *appValidator) devices(f string, devices []string) {
	for i, d := range devices {
		if !path.IsAbs(d) || path.Clean(d) != d || !strings.HasPrefix(d, "/dev/") {
			v.add(fmt.Sprintf("%s.devices[%d]", f, i), "%q: want a clean absolute path under /dev/", d)
		} else if err := noControl(d); err != nil {
			v.add(fmt.Sprintf("%s.devices[%d]", f, i), "%q: %v", d, err)
		}
	}
}

func isReserved(p string) bool { _, r := mountpath.ReservedPath(p); return r }

// volumes checks the named volumes: valid names, and mount paths that are
// clean, absolute, not the runtime's own and not used twice.
func (v *appValidator) volumes(f string, volumes []Volume) {
	paths := map[string]bool{}
	for i, vol := range volumes {
		vf := fmt.Sprintf("%s.volumes[%d]", f, i)
		if !ValidName(vol.Name) {
			v.add(vf+".name", "%q: want 1-63 of a-z, 0-9 and '-', starting with a letter or digit", vol.Name)
		}
		switch {
		case !path.IsAbs(vol.Path) || path.Clean(vol.Path) != vol.Path:
			v.add(vf+".path", "%q: want a clean absolute path", vol.Path)
		case noControl(vol.Path) != nil:
			v.add(vf+".path", "%q: %v", vol.Path, noControl(vol.Path))
		case isReserved(vol.Path):
			why, _ := mountpath.ReservedPath(vol.Path)
			v.add(vf+".path", "%s", why)
		case paths[vol.Path]:
			v.add(vf+".path", "%q: mounted twice", vol.Path)
		}
		paths[vol.Path] = true
	}
}

// network checks the network mode, that ports are published only with a
// bridge, and each port's form.
func (v *appValidator) network(f, network string, ports []string) {
	switch network {
	case "", NetworkHost, NetworkNone:
		if len(ports) > 0 {
			v.add(f+".ports", "ports need network: bridge")
		}
		return
	case NetworkBridge:
	default:
		v.add(f+".network", "%q: want host, none or bridge", network)
		return
	}
	for i, p := range ports {
		if _, err := portspec.ParsePort(p); err != nil {
			v.add(fmt.Sprintf("%s.ports[%d]", f, i), "%s", strings.TrimSuffix(err.Error(), ": "+errdefs.ErrInvalidArgument.Error()))
		}
	}
}

// appPorts refuses two ports of the app's containers that claim the same
// host port.
func (v *appValidator) appPorts(cs []Container) {
	type claim struct {
		p portspec.Port
		f string
	}
	var seen []claim
	for i, c := range cs {
		if c.Network != NetworkBridge {
			continue
		}
		for j, s := range c.Ports {
			p, err := portspec.ParsePort(s)
			if err != nil {
				continue
			}
			f := fmt.Sprintf("containers[%d].ports[%d]", i, j)
			for _, q := range seen {
				if p.Overlaps(q.p) {
					v.add(f, "%s publishes the same host port as %s (%s)", p, q.f, q.p)
				}
			}
			seen = append(seen, claim{p, f})
		}
	}
}

// Ports are the app's published ports, parsed, by container name; a port
// that does not parse is left out (Validate reports it).
func (a *App) Ports() map[string][]portspec.Port {
	out := map[string][]portspec.Port{}
	for _, c := range a.Containers {
		if c.Network != NetworkBridge {
			continue
		}
		for _, s := range c.Ports {
			if p, err := portspec.ParsePort(s); err == nil {
				out[c.Name] = append(out[c.Name], p)
			}
		}
	}
	return out
}

// health checks the health check h, named under hf
// ("containers[0].health"): exactly one well-formed probe, durations that
// parse and are not negative, retries not negative.
func (v *appValidator) health(hf string, h *Health) {
	kinds := 0
	if h.HTTP != "" {
		kinds++
		if u, err := url.Parse(h.HTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(hf+".http", "%q: want an http:// or https:// URL", h.HTTP)
		}
	}
	if h.TCP != "" {
		kinds++
		if _, port, err := net.SplitHostPort(h.TCP); err != nil || !isPort(port) {
			v.add(hf+".tcp", "%q: want host:port", h.TCP)
		}
	}
	if len(h.Exec) > 0 {
		kinds++
		if h.Exec[0] == "" {
			v.add(hf+".exec", "empty command")
		}
	}
	switch kinds {
	case 0:
		v.add(hf, "no probe: give one of http, tcp or exec")
	case 1:
	default:
		v.add(hf, "more than one probe: give only one of http, tcp or exec")
	}
	v.duration(hf+".interval", h.Interval)
	v.duration(hf+".timeout", h.Timeout)
	v.duration(hf+".startPeriod", h.StartPeriod)
	if h.Retries < 0 {
		v.add(hf+".retries", "negative: %d", h.Retries)
	}
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

func isCountOrPercent(s string) bool {
	t := strings.TrimSuffix(s, "%")
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 {
		return false
	}
	return t == s || n <= 100
}

// RestartPolicy is the container's restart policy with its default.
func (c Container) RestartPolicy() string {
	if c.Restart == "" {
		return RestartAlways
	}
	return c.Restart
}

// NetworkMode is the container's network mode with its default.
func (c Container) NetworkMode() string {
	if c.Network == "" {
		return NetworkNone
	}
	return c.Network
}

// IntervalOrDefault is the probe interval, DefaultHealthInterval if unset.
func (h Health) IntervalOrDefault() time.Duration {
	if h.Interval.Duration <= 0 {
		return DefaultHealthInterval
	}
	return h.Interval.Duration
}

// TimeoutOrDefault is the probe timeout, DefaultHealthTimeout if unset.
func (h Health) TimeoutOrDefault() time.Duration {
	if h.Timeout.Duration <= 0 {
		return DefaultHealthTimeout
	}
	return h.Timeout.Duration
}

// RetriesOrDefault is the number of consecutive failures that make a
// container unhealthy, DefaultHealthRetries if unset.
func (h Health) RetriesOrDefault() int {
	if h.Retries <= 0 {
		return DefaultHealthRetries
	}
	return h.Retries
}

// HealthyFor is how long a new version must stay healthy before it is
// confirmed: rollout.healthyFor, or DefaultHealthyFor.
func (a App) HealthyFor() time.Duration {
	if a.Rollout == nil || a.Rollout.HealthyFor.Duration <= 0 {
		return DefaultHealthyFor
	}
	return a.Rollout.HealthyFor.Duration
}

// Revision identifies what runs on the device: a short hash of the version
// and the containers, with defaults applied. Placement, rollout and
// updateOverride do not count, so changing them restarts nothing.
func (a App) Revision() string {
	type rev struct {
		Version    string      `json:"version"`
		Containers []Container `json:"containers"`
	}
	cs := make([]Container, len(a.Containers))
	for i, c := range a.Containers {
		c.Restart = c.RestartPolicy()
		c.Network = c.NetworkMode()
		if c.Health != nil {
			h := *c.Health
			h.Interval.Duration, h.Timeout.Duration, h.Retries = h.IntervalOrDefault(), h.TimeoutOrDefault(), h.RetriesOrDefault()
			c.Health = &h
		}
		cs[i] = c
	}
	b, err := json.Marshal(rev{Version: a.Version, Containers: cs})
	if err != nil {
		panic(fmt.Sprintf("marshal app revision: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:RevisionLen]
}

// MemoryBytes is the memory limit in bytes; 0 when unset (or invalid,
// which Validate refuses).
func (r Resources) MemoryBytes() int64 {
	if r.Memory == "" {
		return 0
	}
	b, err := quantity.ParseBytes(r.Memory)
	if err != nil {
		return 0
	}
	return b
}

// MilliCPU is the CPU limit in thousandths of a CPU; 0 when unset (or
// invalid, which Validate refuses).
func (r Resources) MilliCPU() int64 {
	if r.CPU == "" {
		return 0
	}
	m, err := quantity.ParseMilliCPU(r.CPU)
	if err != nil {
		return 0
	}
	return m
}

// Requests sums the memory and CPU of all of the app's containers.
func (a App) Requests() (memory, milliCPU int64) {
	for _, c := range a.Containers {
		memory += c.Resources.MemoryBytes()
		milliCPU += c.Resources.MilliCPU()
	}
	return memory, milliCPU
}

// Duration is a time.Duration written as a string ("10s", "1m30s"); a
// value that does not parse is kept for Validate to name its field.
type Duration = quantity.Duration

// D makes a Duration.
func D(d time.Duration) Duration { return quantity.D(d) }

// DeviceCount is placement.devices: "all" or a number.
type DeviceCount struct {
	All bool
	N   int
}

// IsZero is true when the count is unset.
func (c DeviceCount) IsZero() bool { return !c.All && c.N == 0 }

// MarshalJSON writes "all" or the number; unset is "all".
func (c DeviceCount) MarshalJSON() ([]byte, error) {
	if c.All || c.N == 0 {
		return []byte(`"all"`), nil
	}
	return []byte(strconv.Itoa(c.N)), nil
}

// UnmarshalJSON reads "all" or a number.
func (c *DeviceCount) UnmarshalJSON(b []byte) error {
	if string(b) == `"all"` {
		*c = DeviceCount{All: true}
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("placement.devices: %s: want \"all\" or a number", b)
	}
	*c = DeviceCount{N: n}
	return nil
}

// ValidImageRef checks an image reference as docker parses it,
// [registry[:port]/]path[:tag][@sha256:hex], with go-containerregistry's
// name package, and refuses besides what it lets through: empty path
// components, registry ports out of range, and digests other than sha256
// with 64 lower-case hex digits (the only kind the runtime verifies).
func ValidImageRef(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	if len(s) > 512 {
		return errors.New("image reference longer than 512 characters")
	}
	if err := noControl(s); err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	if _, dg, ok := strings.Cut(s, "@"); ok && !validSHA256(dg) {
		return fmt.Errorf("%q: digest is not sha256 with 64 lower-case hex digits", s)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return fmt.Errorf("%q: not an image reference: want [registry[:port]/]path[:tag][@sha256:<64 hex digits>], lower-case path", s)
	}
	repo := ref.Context()
	if slices.Contains(strings.Split(repo.RepositoryStr(), "/"), "") {
		return fmt.Errorf("%q: empty path component", s)
	}
	if _, port, err := net.SplitHostPort(repo.RegistryStr()); err == nil && !isPort(port) {
		return fmt.Errorf("%q: registry port %q out of 1-65535", s, port)
	}
	return nil
}

// validSHA256 is "sha256:" and 64 lower-case hex digits.
func validSHA256(s string) bool {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// noControl refuses strings that are not UTF-8 or hold control characters
// (C0, DEL, C1: terminal escapes) or bidirectional overrides: names and
// versions end up on operators' terminals and web pages.
func noControl(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return fmt.Errorf("control character %U at byte %d", r, i)
		}
	}
	return nil
}
