package spec

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var img = ocispec.ImageConfig{
	Entrypoint: []string{"/workload"},
	Cmd:        []string{"sleep", "3600"},
	Env:        []string{"PATH=/bin", "A=1"},
	WorkingDir: "/srv",
	User:       "app",
}

func nsTypes(s *specs.Spec) []specs.LinuxNamespaceType {
	var out []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		out = append(out, n.Type)
	}
	return out
}

func TestBuild_Defaults(t *testing.T) {
	s, err := Build(img, Options{Hostname: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Process.Args; !reflect.DeepEqual(got, []string{"/workload", "sleep", "3600"}) {
		t.Errorf("args = %q", got)
	}
	if s.Process.Cwd != "/srv" || s.Hostname != "web" || !s.Process.NoNewPrivileges {
		t.Errorf("cwd %q hostname %q nnp %v", s.Process.Cwd, s.Hostname, s.Process.NoNewPrivileges)
	}
	if !reflect.DeepEqual(s.Process.Capabilities.Bounding, DefaultCaps) || len(s.Process.Capabilities.Inheritable) != 0 || len(s.Process.Capabilities.Ambient) != 0 {
		t.Errorf("caps = %+v", s.Process.Capabilities)
	}
	want := []specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.NetworkNamespace}
	if got := nsTypes(s); !reflect.DeepEqual(got, want) {
		t.Errorf("namespaces = %v, want %v", got, want)
	}
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/interrupts"} {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			t.Errorf("%s not masked", p)
		}
	}
	if !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sysrq-trigger") {
		t.Errorf("sysrq-trigger not read-only")
	}
	if r := s.Linux.Resources; r.Memory != nil || r.CPU != nil || r.Pids != nil {
		t.Errorf("limits set without being asked: %+v", r)
	}
	if d := s.Linux.Resources.Devices[0]; d.Allow || d.Access != "rwm" {
		t.Errorf("first device rule must deny all, got %+v", d)
	}
	if User(img, Options{}) != "app" {
		t.Errorf("named user must be resolved in the container")
	}
}

func TestBuild_Options(t *testing.T) {
	s, err := Build(img, Options{
		Args: []string{"alloc", "16"}, Env: []string{"A=2", "B=3"}, Memory: 32 << 20,
		CPUs: 0.5, Pids: 20, Cpuset: "0", Network: NetHost, User: "1000:1000",
		Volumes: []Volume{{Source: "/srv/data", Target: "/data/", ReadOnly: true}},
		CapDrop: []string{"net_raw", "CAP_MKNOD"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Process.Args; !reflect.DeepEqual(got, []string{"/workload", "alloc", "16"}) {
		t.Errorf("args = %q", got)
	}
	if got := s.Process.Env; !reflect.DeepEqual(got, []string{"PATH=/bin", "A=2", "B=3"}) {
		t.Errorf("env = %q", got)
	}
	r := s.Linux.Resources
	if *r.Memory.Limit != 32<<20 || *r.Memory.Swap != 32<<20 || *r.Memory.Swappiness != 0 {
		t.Errorf("memory = %d swap %d", *r.Memory.Limit, *r.Memory.Swap)
	}
	if *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0" {
		t.Errorf("cpu = %d/%d %q", *r.CPU.Quota, *r.CPU.Period, r.CPU.Cpus)
	}
	if *r.Pids.Limit != 20 {
		t.Errorf("pids = %d", *r.Pids.Limit)
	}
	if slices.Contains(nsTypes(s), specs.NetworkNamespace) {
		t.Errorf("host network must not get a network namespace")
	}
	if s.Process.User.UID != 1000 || s.Process.User.GID != 1000 || User(img, Options{User: "1000:1000"}) != "" {
		t.Errorf("user = %+v", s.Process.User)
	}
	last := s.Mounts[len(s.Mounts)-1]
	if last.Destination != "/data" || last.Source != "/srv/data" || !slices.Contains(last.Options, "ro") {
		t.Errorf("volume mount = %+v", last)
	}
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_RAW") || len(s.Process.Capabilities.Bounding) != 12 {
		t.Errorf("cap-drop ignored: %v", s.Process.Capabilities.Bounding)
	}
}

func TestBuild_Rejects(t *testing.T) {
	for name, o := range map[string]Options{
		"memory too small":    {Memory: 1 << 20},
		"negative memory":     {Memory: -1},
		"cpus too many":       {CPUs: 5000},
		"cpus too few":        {CPUs: 0.001},
		"negative pids":       {Pids: -5},
		"bad cpuset":          {Cpuset: "1-0"},
		"bad network":         {Network: "bridge0"},
		"uid 2^32":            {User: "4294967296"},
		"uid -1":              {User: "-1"},
		"uid 2^31":            {User: "2147483648"},
		"gid 2^31":            {User: "0:2147483648"},
		"empty user":          {User: ":0"},
		"env without =":       {Env: []string{"JUSTKEY"}},
		"volume onto /proc":   {Volumes: []Volume{{Source: "/tmp", Target: "/proc/sys"}}},
		"volume onto /":       {Volumes: []Volume{{Source: "/tmp", Target: "/"}}},
		"relative volume":     {Volumes: []Volume{{Source: "tmp", Target: "/x"}}},
		"relative workdir":    {Workdir: "srv"},
		"unknown cap":         {CapDrop: []string{"CAP_SYS_ADMIN"}},
		"device outside /dev": {Devices: []Device{{Path: "/etc/passwd", Type: "c"}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(img, o)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, err := Build(ocispec.ImageConfig{}, Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("an image without a command must be refused, got %v", err)
	}
}

// A volume's host path must be absolute and clean: an empty one (-v :/x)
// or a relative one would bind whatever directory the agent runs in; its
// container path must not be one the runtime manages. The message says
// which path and why.
func TestBuild_RejectsVolumes(t *testing.T) {
	for _, tt := range []struct {
		v    Volume
		want string
	}{
		{Volume{Source: "", Target: "/x"}, `the host path "" must be absolute`},
		{Volume{Source: ".", Target: "/x"}, `the host path "." must be absolute`},
		{Volume{Source: "data", Target: "/x"}, `the host path "data" must be absolute`},
		{Volume{Source: "/srv/../etc", Target: "/x"}, `the host path "/srv/../etc" must be absolute and clean`},
		{Volume{Source: "/srv/", Target: "/x"}, `the host path "/srv/" must be absolute and clean`},
		{Volume{Source: "/srv", Target: "x"}, `the container path "x" must be absolute`},
		{Volume{Source: "/srv", Target: "/proc/sys"}, "/proc/sys is managed by the runtime"},
		{Volume{Source: "/srv", Target: "/sys/fs/cgroup"}, "/sys/fs/cgroup is managed by the runtime"},
		{Volume{Source: "/srv", Target: "/"}, "/ is managed by the runtime"},
	} {
		_, err := Build(img, Options{Volumes: []Volume{tt.v}})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("volume %+v: err = %v, want ErrInvalidArgument saying %q", tt.v, err, tt.want)
		}
	}
	if _, err := Build(img, Options{Volumes: []Volume{{Source: "/srv/data", Target: "/dev/data"}}}); err != nil {
		t.Errorf("a volume under /dev: %v", err)
	}
}
