package policy_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/policy"
	"github.com/tender-edge/tender/sync/wire"
)

// app is a one-container app "thermo" with container "reader".
func app(c wire.Container) wire.App {
	if c.Name == "" {
		c.Name = "reader"
	}
	if c.Image == "" {
		c.Image = "registry.example.com/acme/thermo:1.4.2"
	}
	return wire.App{Name: "thermo", Version: "1", Containers: []wire.Container{c}}
}

func withSource(p *policy.Policy, src string) *policy.Policy {
	p.Source = src
	return p
}

func TestCheck_Rules(t *testing.T) {
	def := policy.Default()
	strict := &policy.Policy{Source: "/etc/tender/policy.yaml", Devices: []string{"/dev/*"}}
	ports := &policy.Policy{Source: "p.yaml", PrivilegedPorts: true}
	regs := &policy.Policy{Source: "p.yaml", Registries: []string{"registry.example.com", "docker.io"}}
	for _, tc := range []struct {
		name   string
		p      *policy.Policy
		c      wire.Container
		rule   string // "" = allowed
		field  string
		inText string
	}{
		// devices, default policy
		{name: "default serial usb", p: def, c: wire.Container{Devices: []string{"/dev/ttyUSB0"}}},
		{name: "default serial acm", p: def, c: wire.Container{Devices: []string{"/dev/ttyACM1"}}},
		{name: "default serial uart", p: def, c: wire.Container{Devices: []string{"/dev/ttyS0"}}},
		{name: "default serial pi", p: def, c: wire.Container{Devices: []string{"/dev/ttyAMA0"}}},
		{name: "default gpio", p: def, c: wire.Container{Devices: []string{"/dev/gpiochip0"}}},
		{name: "default i2c", p: def, c: wire.Container{Devices: []string{"/dev/i2c-1"}}},
		{name: "default spi", p: def, c: wire.Container{Devices: []string{"/dev/spidev0.0"}}},
		{name: "default no sata disk", p: def, c: wire.Container{Devices: []string{"/dev/sda"}}, rule: "devices", field: "containers[0].devices[0]", inText: "device /dev/sda is not allowed"},
		{name: "default no partition", p: def, c: wire.Container{Devices: []string{"/dev/sda1"}}, rule: "devices"},
		{name: "default no sd card", p: def, c: wire.Container{Devices: []string{"/dev/mmcblk0"}}, rule: "devices"},
		{name: "default no sd partition", p: def, c: wire.Container{Devices: []string{"/dev/mmcblk0p2"}}, rule: "devices"},
		{name: "default no nvme", p: def, c: wire.Container{Devices: []string{"/dev/nvme0n1"}}, rule: "devices"},
		{name: "default no virtio disk", p: def, c: wire.Container{Devices: []string{"/dev/vda"}}, rule: "devices"},
		{name: "default no kmsg", p: def, c: wire.Container{Devices: []string{"/dev/kmsg"}}, rule: "devices"},
		{name: "default no tun", p: def, c: wire.Container{Devices: []string{"/dev/net/tun"}}, rule: "devices"},
		{name: "default no mem", p: def, c: wire.Container{Devices: []string{"/dev/mem"}}, rule: "devices", inText: "device /dev/mem is never allowed"},
		{name: "default no kmem", p: def, c: wire.Container{Devices: []string{"/dev/kmem"}}, rule: "devices", inText: "never allowed"},
		{name: "default no port", p: def, c: wire.Container{Devices: []string{"/dev/port"}}, rule: "devices", inText: "never allowed"},
		{name: "cleaned before matching", p: def, c: wire.Container{Devices: []string{"/dev/ttyUSB0/../sda"}}, rule: "devices", inText: "device /dev/sda is not allowed"},
		{name: "dot dot out of dev", p: strict, c: wire.Container{Devices: []string{"/dev/../etc/passwd"}}, rule: "devices", inText: "not a path under /dev"},
		{name: "relative", p: strict, c: wire.Container{Devices: []string{"sda"}}, rule: "devices", inText: "not a path under /dev"},
		{name: "empty", p: strict, c: wire.Container{Devices: []string{""}}, rule: "devices"},
		{name: "star does not cross slash", p: strict, c: wire.Container{Devices: []string{"/dev/bus/usb/001/002"}}, rule: "devices"},
		{name: "file allows disks", p: strict, c: wire.Container{Devices: []string{"/dev/sda"}}},
		{name: "file cannot allow mem", p: strict, c: wire.Container{Devices: []string{"/dev/mem"}}, rule: "devices", inText: "never allowed"},
		{name: "file cannot allow port", p: strict, c: wire.Container{Devices: []string{"/dev/./port"}}, rule: "devices", inText: "never allowed"},
		{name: "no devices allowed", p: &policy.Policy{Source: "p.yaml"}, c: wire.Container{Devices: []string{"/dev/ttyUSB0"}}, rule: "devices", inText: "(p.yaml allows no devices)"},
		{name: "malformed pattern matches nothing", p: &policy.Policy{Source: "p.yaml", Devices: []string{"/dev/tty["}}, c: wire.Container{Devices: []string{"/dev/tty["}}, rule: "devices"},

		// host network
		{name: "default host network", p: def, c: wire.Container{Network: wire.NetworkHost}},
		{name: "no host network", p: strict, c: wire.Container{Network: wire.NetworkHost}, rule: "hostNetwork", field: "containers[0].network", inText: "network host is not allowed by the host network policy (/etc/tender/policy.yaml sets hostNetwork: false)"},
		{name: "network none", p: strict, c: wire.Container{Network: wire.NetworkNone}},
		{name: "network unset", p: strict, c: wire.Container{}},

		// privileged ports
		{name: "high port", p: def, c: wire.Container{Ports: []string{"8080:80/tcp"}}},
		{name: "ephemeral host port", p: def, c: wire.Container{Ports: []string{"127.0.0.1::80"}}},
		{name: "port 80", p: def, c: wire.Container{Ports: []string{"80:80"}}, rule: "privilegedPorts", field: "containers[0].ports[0]", inText: `port "80:80" publishes host port 80`},
		{name: "port alone", p: def, c: wire.Container{Ports: []string{"80"}}, rule: "privilegedPorts"},
		{name: "port with ip", p: def, c: wire.Container{Ports: []string{"127.0.0.1:443:8443/tcp"}}, rule: "privilegedPorts", inText: "host port 443"},
		{name: "port with ipv6", p: def, c: wire.Container{Ports: []string{"[::1]:22:2222"}}, rule: "privilegedPorts", inText: "host port 22"},
		{name: "port range", p: def, c: wire.Container{Ports: []string{"1000-1100:1000-1100"}}, rule: "privilegedPorts", inText: "host port 1000"},
		{name: "port zero", p: def, c: wire.Container{Ports: []string{"0:80"}}, rule: "privilegedPorts"},
		{name: "port 1024", p: def, c: wire.Container{Ports: []string{"1024:80"}}},
		{name: "port unreadable", p: def, c: wire.Container{Ports: []string{"http:80"}}, rule: "privilegedPorts", inText: "cannot be checked"},
		{name: "privileged ports allowed", p: ports, c: wire.Container{Ports: []string{"80:80", "22"}}},

		// registries
		{name: "any registry by default", p: def, c: wire.Container{Image: "evil.example.com/x:1"}},
		{name: "listed registry", p: regs, c: wire.Container{Image: "registry.example.com/acme/thermo@sha256:" + strings.Repeat("a", 64)}},
		{name: "registry case", p: regs, c: wire.Container{Image: "Registry.Example.COM/acme/thermo"}},
		{name: "docker hub short name", p: regs, c: wire.Container{Image: "busybox"}},
		{name: "docker hub index name", p: regs, c: wire.Container{Image: "index.docker.io/library/busybox:1"}},
		{name: "other registry", p: regs, c: wire.Container{Image: "evil.example.com/x:1"}, rule: "registries", field: "containers[0].image", inText: "image evil.example.com/x:1 comes from registry evil.example.com, which is not allowed by the registry policy (p.yaml allows registry.example.com, docker.io)"},
		{name: "same host other port", p: regs, c: wire.Container{Image: "registry.example.com:5000/x"}, rule: "registries"},
		{name: "local name", p: regs, c: wire.Container{Image: "tender.test/workload:latest"}, rule: "registries"},
		{name: "unreadable image", p: regs, c: wire.Container{Image: "UPPER/case"}, rule: "registries", inText: "cannot be checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check(app(tc.c))
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("allowed, want refused by rule %s", tc.rule)
			}
			if !errdefs.IsPermissionDenied(err) {
				t.Errorf("error %v is not errdefs.ErrPermissionDenied", err)
			}
			vs := policy.Violations(err)
			if len(vs) != 1 {
				t.Fatalf("%d violations, want 1: %v", len(vs), err)
			}
			v := vs[0]
			if v.Rule != tc.rule || v.App != "thermo" || v.Container != "reader" {
				t.Errorf("violation %+v, want rule %s of thermo/reader", v, tc.rule)
			}
			if tc.field != "" && v.Field != tc.field {
				t.Errorf("field %q, want %q", v.Field, tc.field)
			}
			if !strings.HasPrefix(err.Error(), "app thermo, container reader: ") || !strings.Contains(err.Error(), tc.inText) {
				t.Errorf("message %q, want it to start with the app and container and contain %q", err, tc.inText)
			}
		})
	}
}

func TestCheck_Message(t *testing.T) {
	p := withSource(policy.Default(), "/etc/tender/policy.yaml")
	p.Devices = []string{"/dev/ttyUSB*", "/dev/ttyACM*"}
	err := p.Check(app(wire.Container{Devices: []string{"/dev/ttyUSB0", "/dev/sda"}}))
	want := "app thermo, container reader: device /dev/sda is not allowed by the device policy (/etc/tender/policy.yaml allows /dev/ttyUSB*, /dev/ttyACM*)"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}

	// Without a file the message says so, which tells the operator where
	// to allow more; a long list is shortened.
	p = policy.Default()
	p.Source = "the default policy (no /etc/tender/policy.yaml)"
	p.Devices = append(p.Devices, "/dev/a", "/dev/b", "/dev/c")
	err = p.Check(app(wire.Container{Devices: []string{"/dev/sda"}}))
	want = "app thermo, container reader: device /dev/sda is not allowed by the device policy (the default policy (no /etc/tender/policy.yaml) allows /dev/ttyUSB*, /dev/ttyACM*, /dev/ttyS*, /dev/ttyAMA*, /dev/gpiochip*, /dev/i2c-*, /dev/spidev*, /dev/a and 2 more)"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// Every violation of one app is reported at once, each with its container,
// field and rule, so that an operator fixes them in one go.
func TestCheck_AllViolationsAtOnce(t *testing.T) {
	p := &policy.Policy{Source: "p.yaml", Devices: []string{"/dev/ttyUSB*"}, Registries: []string{"registry.example.com"}}
	a := wire.App{Name: "thermo", Version: "1", Containers: []wire.Container{
		{Name: "reader", Image: "registry.example.com/a", Devices: []string{"/dev/ttyUSB0", "/dev/sda", "/dev/mem"}, Network: wire.NetworkHost},
		{Name: "ok", Image: "registry.example.com/b", Devices: []string{"/dev/ttyUSB1"}},
		{Name: "web", Image: "evil.example.com/c", Ports: []string{"8080:8080", "443:443"}},
	}}
	err := fmt.Errorf("admit app thermo: %w", p.Check(a)) // as the agent would wrap it
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("%v: not ErrPermissionDenied", err)
	}
	var first *policy.Violation
	if !errors.As(err, &first) || first.Field != "containers[0].devices[1]" {
		t.Errorf("errors.As: %+v, want the first violation", first)
	}
	var got []string
	for _, v := range policy.Violations(err) {
		got = append(got, fmt.Sprintf("%s %s %s %s %s", v.App, v.Container, v.Field, v.Rule, v.Value))
	}
	want := []string{
		"thermo reader containers[0].devices[1] devices /dev/sda",
		"thermo reader containers[0].devices[2] devices /dev/mem",
		"thermo reader containers[0].network hostNetwork host",
		"thermo web containers[2].ports[1] privilegedPorts 443:443",
		"thermo web containers[2].image registries evil.example.com/c",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := strings.Count(err.Error(), "\n"); n != len(want)-1 {
		t.Errorf("message has %d lines, want one per violation:\n%v", n+1, err)
	}
	if policy.Violations(nil) != nil || policy.Violations(errors.New("x")) != nil {
		t.Error("Violations found violations in errors without any")
	}
}

// The shipped sample apps run under the default policy.
func TestCheck_DefaultAllowsSamples(t *testing.T) {
	for _, f := range []string{"../../configs/apps/thermo.yaml", "../../configs/apps/web.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		a, err := wire.ParseApp(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := policy.Default().Check(a); err != nil {
			t.Errorf("%s: the default policy refuses a shipped sample: %v", f, err)
		}
	}
}

func TestCapabilityAllowed(t *testing.T) {
	p, err := policy.Parse([]byte("capabilities: [net_admin, CAP_SYS_TIME]\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"NET_ADMIN": true, "cap_net_admin": true, "CAP_SYS_TIME": true, "sys_time": true,
		"SYS_ADMIN": false, "CAP_NET_RAW": false, "": false, "CAP_BOGUS": false,
	} {
		if got := p.CapabilityAllowed(name); got != want {
			t.Errorf("CapabilityAllowed(%q) = %v, want %v", name, got, want)
		}
	}
	if policy.Default().CapabilityAllowed("NET_ADMIN") {
		t.Error("the default policy allows an added capability")
	}
}
