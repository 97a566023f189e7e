package mountpath

import "testing"

func TestReservedPath(t *testing.T) {
	for _, tt := range []struct {
		p        string
		reserved bool
		reason   string
	}{
		{"/", true, "/ is managed by the runtime"},
		{"/proc", true, "/proc is managed by the runtime"},
		{"/proc/sys", true, "/proc/sys is managed by the runtime"},
		{"/proc/sys/", true, "/proc/sys is managed by the runtime"},
		{"/sys/fs/cgroup", true, "/sys/fs/cgroup is managed by the runtime"},
		{"/sys", true, "/sys is managed by the runtime"},
		{"/dev", true, "/dev is managed by the runtime"},
		{"/data/../proc/kcore", true, "/proc/kcore is managed by the runtime"},
		{"data", true, `"data" is not an absolute path`},
		{"", true, `"" is not an absolute path`},
		{"/dev/ttyUSB0", false, ""},
		{"/procfs", false, ""},
		{"/system", false, ""},
		{"/var/lib/app", false, ""},
		{"/run/tender/lock", false, ""},
	} {
		reason, reserved := ReservedPath(tt.p)
		if reserved != tt.reserved || reason != tt.reason {
			t.Errorf("ReservedPath(%q) = %q, %v; want %q, %v", tt.p, reason, reserved, tt.reason, tt.reserved)
		}
	}
}
