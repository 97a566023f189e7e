package policy

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/sync/wire"
)

// DefaultPath is where the agent looks for the device's policy file.
const DefaultPath = "/etc/tender/policy.yaml"

// Policy bounds what any app may ask for on this device. Check is a pure
// function of a Policy and an app; Load and Parse make a Policy.
type Policy struct {
	// Source names where the policy came from, for messages: the file's
	// path, or "the default policy (no /etc/tender/policy.yaml)".
	Source string
	// Devices are path.Match patterns of the host device nodes an app may
	// pass through ("/dev/ttyUSB*"). Empty: no devices. NeverDevices are
	// refused whatever the patterns say.
	Devices []string
	// HostNetwork allows "network: host".
	HostNetwork bool
	// Capabilities are capabilities ("CAP_NET_ADMIN") an app may add to the
	// default set. The app spec has no field to add capabilities yet; the
	// rule is ready for it (CapabilityAllowed).
	Capabilities []string
	// PrivilegedPorts allows publishing host ports below 1024 in "ports:".
	PrivilegedPorts bool
	// Registries are the registry hosts ("registry.example.com:5000",
	// "docker.io") images may come from. Empty: any registry.
	Registries []string
}

// DefaultDevices are the device patterns of the default policy: serial
// ports, GPIO chips, I2C and SPI buses, which gateway apps talk to. No
// disks, no memory.
var DefaultDevices = []string{
	"/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyS*", "/dev/ttyAMA*",
	"/dev/gpiochip*", "/dev/i2c-*", "/dev/spidev*",
}

// NeverDevices give raw access to the host's physical memory or I/O ports:
// an app holding one owns the host. No policy file can allow them.
var NeverDevices = []string{"/dev/mem", "/dev/kmem", "/dev/port"}

// Default is the policy of a device without a policy file: the devices of
// DefaultDevices, host network (the shipped sample app uses it), no added
// capabilities, no privileged ports, any registry.
func Default() *Policy {
	return &Policy{
		Source:      "the default policy",
		Devices:     slices.Clone(DefaultDevices),
		HostNetwork: true,
	}
}

// Rules, as Violation.Rule names them: the policy file's field names.
const (
	RuleDevices         = "devices"
	RuleHostNetwork     = "hostNetwork"
	RuleCapabilities    = "capabilities"
	RulePrivilegedPorts = "privilegedPorts"
	RuleRegistries      = "registries"
)

// Violation is one thing an app asks for beyond the policy. It matches
// errdefs.ErrPermissionDenied.
type Violation struct {
	App       string
	Container string
	Field     string // the app spec's field: "containers[0].devices[1]"
	Rule      string // the policy's rule: RuleDevices, RuleHostNetwork, ...
	Value     string // what was asked for: "/dev/sda", "host", "80:80/tcp"
	Msg       string // what is wrong, and what the policy allows
}

func (v *Violation) Error() string {
	return fmt.Sprintf("app %s, container %s: %s", v.App, v.Container, v.Msg)
}

// Unwrap gives the error's category, errdefs.ErrPermissionDenied.
func (v *Violation) Unwrap() error { return errdefs.ErrPermissionDenied }

// Violations lists the *Violation errors in err, however it was joined or
// wrapped; nil if there are none.
func Violations(err error) []*Violation {
	var out []*Violation
	var walk func(error)
	walk = func(err error) {
		if v, ok := err.(*Violation); ok { // the tree is walked by hand: errors.As stops at the first
			out = append(out, v)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// Check returns nil if the app stays within the policy, or every violation
// it found, joined (each a *Violation; Violations lists them). The error
// matches errdefs.ErrPermissionDenied.
func (p *Policy) Check(app wire.App) error {
	var errs []error
	for i, c := range app.Containers {
		add := func(field, rule, value, format string, args ...any) {
			errs = append(errs, &Violation{
				App: app.Name, Container: c.Name,
				Field: fmt.Sprintf("containers[%d].%s", i, field),
				Rule:  rule, Value: value, Msg: fmt.Sprintf(format, args...),
			})
		}
		for j, d := range c.Devices {
			field := fmt.Sprintf("devices[%d]", j)
			switch clean := path.Clean(d); {
			case d == "" || !strings.HasPrefix(clean, "/dev/"):
				add(field, RuleDevices, d, "device %q is not a path under /dev", d)
			case slices.Contains(NeverDevices, clean):
				add(field, RuleDevices, d, "device %s is never allowed: it gives access to the host's memory or I/O ports", clean)
			case !p.deviceAllowed(clean):
				add(field, RuleDevices, d, "device %s is not allowed by the device policy (%s)", clean, p.allows("devices", p.Devices))
			}
		}
		if c.Network == wire.NetworkHost && !p.HostNetwork {
			add("network", RuleHostNetwork, c.Network, "network host is not allowed by the host network policy (%s sets hostNetwork: false)", p.Source)
		}
		if !p.PrivilegedPorts {
			for j, pt := range c.Ports {
				field := fmt.Sprintf("ports[%d]", j)
				switch port, err := hostPort(pt); {
				case err != nil:
					add(field, RulePrivilegedPorts, pt, "port %q cannot be checked against the privileged port policy: %v", pt, err)
				case port < 1024:
					add(field, RulePrivilegedPorts, pt, "port %q publishes host port %d, and privileged ports (below 1024) are not allowed by the port policy (%s sets privilegedPorts: false)", pt, port, p.Source)
				}
			}
		}
		if len(p.Registries) > 0 {
			switch host, err := registryOf(c.Image); {
			case err != nil:
				add("image", RuleRegistries, c.Image, "image %q cannot be checked against the registry policy: %v", c.Image, err)
			case !p.registryAllowed(host):
				add("image", RuleRegistries, c.Image, "image %s comes from registry %s, which is not allowed by the registry policy (%s)", c.Image, host, p.allows("registries", p.Registries))
			}
		}
	}
	return errors.Join(errs...)
}

// CapabilityAllowed reports whether an app may add capability name
// ("NET_ADMIN" or "CAP_NET_ADMIN", any case) to the default set. The app
// spec cannot add capabilities yet; this is the rule for when it can.
func (p *Policy) CapabilityAllowed(name string) bool {
	c, ok := capName(name)
	return ok && slices.Contains(p.Capabilities, c)
}

func (p *Policy) deviceAllowed(dev string) bool {
	for _, pat := range p.Devices {
		// A malformed pattern (Parse refuses them) matches nothing.
		if ok, err := path.Match(pat, dev); err == nil && ok {
			return true
		}
	}
	return false
}

func (p *Policy) registryAllowed(host string) bool {
	for _, r := range p.Registries {
		if strings.EqualFold(r, host) {
			return true
		}
	}
	return false
}

// allows says what a list rule allows, shortened: "policy.yaml allows
// /dev/ttyUSB*, /dev/ttyACM*, ... and 3 more".
func (p *Policy) allows(what string, list []string) string {
	const show = 8
	switch {
	case len(list) == 0:
		return fmt.Sprintf("%s allows no %s", p.Source, what)
	case len(list) > show:
		return fmt.Sprintf("%s allows %s and %d more", p.Source, strings.Join(list[:show], ", "), len(list)-show)
	default:
		return fmt.Sprintf("%s allows %s", p.Source, strings.Join(list, ", "))
	}
}

// hostPort is the (lowest) host port a "ports:" entry publishes:
// "[ip:]host:container[/proto]", where host may be a range "8000-8010".
// An empty host part ("ip::80") publishes an ephemeral port, reported as
// 65535. A port given alone ("80") counts as a host port: whatever the
// runtime makes of it, the policy must not let it through.
func hostPort(s string) (int, error) {
	spec, _, _ := strings.Cut(s, "/")
	host := spec
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		host = spec[:i]
		if j := strings.LastIndexByte(host, ':'); j >= 0 {
			host = host[j+1:] // after the IP address ("[::1]:80" included)
		}
		if host == "" {
			return 65535, nil
		}
	}
	low, _, _ := strings.Cut(host, "-")
	n, err := strconv.Atoi(low)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("host port %q is not a number from 0 to 65535", host)
	}
	return n, nil
}

// registryOf is the registry host of an image reference, as the image
// store resolves it ("workload" is docker.io's).
func registryOf(ref string) (string, error) {
	full, err := image.NormalizeName(ref)
	if err != nil {
		return "", err
	}
	host, _, _ := strings.Cut(full, "/")
	return host, nil
}

// capabilities are the Linux capabilities, as the runtime names them.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// capName turns "net_admin" or "CAP_NET_ADMIN" into "CAP_NET_ADMIN".
func capName(s string) (string, bool) {
	c := strings.ToUpper(s)
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c, slices.Contains(capabilities, c)
}
