package policy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/agent/policy"
)

func TestParse(t *testing.T) {
	def := policy.Default()
	for _, tc := range []struct {
		name string
		yaml string
		want *policy.Policy // Source is set to "p.yaml" before comparing
	}{
		{"empty file is the default", "", def},
		{"comments only", "# nothing here\n", def},
		{"fields left out keep the default", "privilegedPorts: true\n",
			&policy.Policy{Devices: def.Devices, HostNetwork: true, PrivilegedPorts: true}},
		{"devices replace the default", "devices: [/dev/sda1, /dev/bus/usb/*/*]\n",
			&policy.Policy{Devices: []string{"/dev/sda1", "/dev/bus/usb/*/*"}, HostNetwork: true}},
		{"no devices", "devices: []\nhostNetwork: false\n", &policy.Policy{}},
		{"capabilities named both ways", "capabilities: [net_admin, CAP_SYS_TIME]\n",
			&policy.Policy{Devices: def.Devices, HostNetwork: true, Capabilities: []string{"CAP_NET_ADMIN", "CAP_SYS_TIME"}}},
		{"registries", "registries: [Registry.Example.com, 'registry.example.com:5000', localhost:5000, docker.io, index.docker.io]\n",
			&policy.Policy{Devices: def.Devices, HostNetwork: true, Registries: []string{"registry.example.com", "registry.example.com:5000", "localhost:5000", "docker.io", "docker.io"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tc.yaml), "p.yaml")
			if err != nil {
				t.Fatal(err)
			}
			want := *tc.want
			want.Source = "p.yaml"
			if !reflect.DeepEqual(p, &want) {
				t.Errorf("got  %+v\nwant %+v", p, &want)
			}
		})
	}
}

func TestParse_Refused(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // each in the message
	}{
		{"unknown field", "devices: [/dev/ttyUSB*]\nprivileged: true\n", []string{"p.yaml", `unknown field "privileged"`}},
		{"misspelt field", "hostnetwork: false\n", []string{`unknown field "hostnetwork"`}},
		{"duplicate key", "hostNetwork: false\nhostNetwork: true\n", []string{`"hostNetwork"`}},
		{"not yaml", "devices: [\n", []string{"p.yaml"}},
		{"wrong type", "hostNetwork: maybe\n", []string{"p.yaml: hostNetwork: got a string, want true or false"}},
		{"not a list", "devices: /dev/ttyUSB0\n", []string{"devices: got a string, want a list of strings"}},
		{"not a mapping", "- /dev/ttyUSB0\n", []string{"want a mapping of devices, hostNetwork"}},
		{"unknown fields, sorted", "zeta: 1\nalpha: 2\n", []string{`unknown fields "alpha", "zeta"`}},
		{"bad glob", "devices: ['/dev/tty[']\n", []string{`devices[0]: "/dev/tty["`, "malformed pattern"}},
		{"outside dev", "devices: ['/etc/*']\n", []string{`devices[0]: "/etc/*"`, "under /dev/"}},
		{"unclean", "devices: [/dev/../sda]\n", []string{"under /dev/"}},
		{"relative", "devices: [ttyUSB*]\n", []string{"under /dev/"}},
		{"mem", "devices: [/dev/ttyUSB*, /dev/mem]\n", []string{"devices[1]: /dev/mem can never be allowed"}},
		{"port", "devices: [/dev/port]\n", []string{"/dev/port can never be allowed"}},
		{"unknown capability", "capabilities: [CAP_EVERYTHING]\n", []string{`capabilities[0]: "CAP_EVERYTHING": not a Linux capability`}},
		{"registry with scheme", "registries: ['https://registry.example.com']\n", []string{`registries[0]`, "without a scheme"}},
		{"registry with path", "registries: [registry.example.com/acme]\n", []string{"without a scheme or path"}},
		{"registry without dot", "registries: [myregistry]\n", []string{`"myregistry": not a registry host`}},
		{"empty registry", "registries: ['']\n", []string{`registries[0]: ""`}},
		{"no registries", "registries: []\n", []string{"leave the field out to allow any registry"}},
		{"every problem at once", "devices: ['/dev/tty[', /dev/kmem]\ncapabilities: [bogus]\nregistries: [a/b]\n",
			[]string{"devices[0]", "devices[1]", "capabilities[0]", "registries[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tc.yaml), "p.yaml")
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if p != nil {
				t.Errorf("a policy came back with the error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v: not errdefs.ErrInvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not contain %q", err, w)
				}
			}
		})
	}
}

// The sample is valid and, as its comments say, the default policy.
func TestSampleConfig(t *testing.T) {
	data, err := os.ReadFile("../../configs/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(data, "configs/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Default()
	want.Source = "configs/policy.yaml"
	if !reflect.DeepEqual(p, want) {
		t.Errorf("the sample is not the default policy:\n got %+v\nwant %+v", p, want)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the policy file must be owned by root")
	}
}

// writePolicy writes a policy file in a fresh root-owned 0755 directory.
func writePolicy(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tender")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	f := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, mode); err != nil {
		t.Fatal(err)
	}
	return f
}

const nobody = 65534

func TestLoad(t *testing.T) {
	needRoot(t)
	t.Run("missing file is the default", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "none", "policy.yaml")
		p, err := policy.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		want := policy.Default()
		want.Source = "the default policy (no " + f + ")"
		if !reflect.DeepEqual(p, want) {
			t.Errorf("got %+v, want %+v", p, want)
		}
	})
	for _, mode := range []os.FileMode{0o644, 0o600, 0o400, 0o640} {
		t.Run("root "+mode.String(), func(t *testing.T) {
			f := writePolicy(t, "hostNetwork: false\n", mode)
			p, err := policy.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if p.HostNetwork || p.Source != f {
				t.Errorf("got %+v, want hostNetwork false from %s", p, f)
			}
		})
	}
	t.Run("through a symlink", func(t *testing.T) {
		f := writePolicy(t, "privilegedPorts: true\n", 0o644)
		link := filepath.Join(filepath.Dir(f), "link.yaml")
		if err := os.Symlink(f, link); err != nil {
			t.Fatal(err)
		}
		if p, err := policy.Load(link); err != nil || !p.PrivilegedPorts {
			t.Errorf("got %+v, %v", p, err)
		}
	})
	t.Run("bad content", func(t *testing.T) {
		f := writePolicy(t, "devices: [/dev/mem]\n", 0o644)
		_, err := policy.Load(f)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), f) {
			t.Errorf("got %v, want ErrInvalidArgument naming %s", err, f)
		}
	})
	t.Run("too large", func(t *testing.T) {
		f := writePolicy(t, "# "+strings.Repeat("x", policy.MaxFileSize)+"\n", 0o644)
		_, err := policy.Load(f)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "larger than 64 KiB") {
			t.Errorf("got %v, want ErrInvalidArgument, too large", err)
		}
	})
	t.Run("a fifo", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "policy.yaml")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := policy.Load(fifo) // hangs if it opens the FIFO for reading and waits
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("got %v, want ErrInvalidArgument, not a regular file", err)
		}
	})
	t.Run("a directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := policy.Load(dir)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("got %v, want ErrInvalidArgument, not a regular file", err)
		}
	})
}

// A policy anyone but root can edit is no policy: Load refuses it, naming
// the file, what is wrong with it and the fix.
func TestLoad_Refused(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, file string)
		want  []string // "%F" is the file, "%D" its directory
	}{
		{"world writable", func(t *testing.T, f string) { chmod(t, f, 0o666) },
			[]string{"policy %F: mode 0666 is writable by group or others", "chmod go-w %F"}},
		{"group writable", func(t *testing.T, f string) { chmod(t, f, 0o664) },
			[]string{"policy %F: mode 0664"}},
		{"owned by nobody", func(t *testing.T, f string) { chown(t, f, nobody, 0) },
			[]string{"policy %F: owned by uid 65534, not root", "chown root %F"}},
		{"owned by nobody, read-only", func(t *testing.T, f string) { chown(t, f, nobody, 0); chmod(t, f, 0o444) },
			[]string{"owned by uid 65534"}},
		{"directory writable by others", func(t *testing.T, f string) { chmod(t, filepath.Dir(f), 0o777) },
			[]string{"directory of policy %D: mode 0777"}},
		{"directory owned by nobody", func(t *testing.T, f string) { chown(t, filepath.Dir(f), nobody, nobody) },
			[]string{"directory of policy %D: owned by uid 65534"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writePolicy(t, "hostNetwork: false\n", 0o644)
			tc.setup(t, f)
			p, err := policy.Load(f)
			if err == nil {
				t.Fatalf("loaded: %+v", p)
			}
			if !errdefs.IsPermissionDenied(err) {
				t.Errorf("%v: not errdefs.ErrPermissionDenied", err)
			}
			for _, w := range tc.want {
				w = strings.NewReplacer("%F", f, "%D", filepath.Dir(f)).Replace(w)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not contain %q", err, w)
				}
			}
		})
	}
}

func chmod(t *testing.T, name string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, name string, uid, gid int) {
	t.Helper()
	if err := os.Chown(name, uid, gid); err != nil {
		t.Fatal(err)
	}
}
