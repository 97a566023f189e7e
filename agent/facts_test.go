package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// The device's time zone is what maintenance windows are read in: it comes
// from the host's own settings, as systemd (a link) or Debian (a file) keep
// them.
func TestTimeZone(t *testing.T) {
	for _, tc := range []struct {
		name, link, file, want string
	}{
		{name: "systemd link", link: "/usr/share/zoneinfo/Europe/Berlin", want: "Europe/Berlin"},
		{name: "relative link", link: "../usr/share/zoneinfo/America/Argentina/Buenos_Aires", want: "America/Argentina/Buenos_Aires"},
		{name: "posix tree", link: "/usr/share/zoneinfo/posix/Asia/Tokyo", want: "Asia/Tokyo"},
		{name: "debian file", file: "Europe/Lisbon\n", want: "Europe/Lisbon"},
		{name: "link wins over file", link: "/usr/share/zoneinfo/Europe/Paris", file: "Europe/Lisbon\n", want: "Europe/Paris"},
		{name: "utc", link: "/usr/share/zoneinfo/Etc/UTC", want: ""},
		{name: "nothing", want: ""},
		{name: "junk file", file: "../../etc/shadow\n", want: ""},
		{name: "not a zoneinfo link", link: "/tmp/whatever", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.link != "" {
				if err := os.Symlink(tc.link, filepath.Join(root, "etc/localtime")); err != nil {
					t.Fatal(err)
				}
			}
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(root, "etc/timezone"), []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := timeZone(root); got != tc.want {
				t.Errorf("timeZone = %q, want %q", got, tc.want)
			}
		})
	}
}
