// Package packaging builds Tender's packages from the release binaries
// (build/release/PROG-linux-ARCH, `make release`) with nfpm as a library:
// tender-agent as .deb, .rpm, .apk (Alpine, OpenRC) and .ipk (OpenWrt,
// procd), and tender, the fleet controller and its CLI, as .deb, .rpm and
// .apk. It is a build tool run by `make packages` (packaging/cmd/mkpkg);
// neither program links it (test/deps).
//
// What goes where is in Spec; the files it ships are the ones beside this
// file (systemd units, the procd and OpenRC scripts, the maintainer
// scripts, the shipped configs) and configs/policy.yaml. Config files are
// conffiles (kept when changed, on upgrade and on remove); the state
// directory is never in a package, so no package manager removes it: the
// .deb's postrm purge does, keeping the apps' volumes and whatever a
// container that still runs uses (purge_state in install.sh).
package packaging

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/apk" // registers the apk packager
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/ipk" // registers the ipk packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Arch is one release architecture and its names in each package format.
type Arch struct {
	Name   string   // in release file names: amd64, arm64, armv7, riscv64
	GOARCH string   // and GOARM 7 for armv7
	Deb    string   // Debian's name (also the ipk file name's)
	RPM    string   // rpm's
	APK    string   // Alpine's
	UnameM []string // what `uname -m` says on such a machine (the ipk's preinst)
}

// Arches are the release architectures, in `make release` order.
var Arches = []Arch{
	{Name: "amd64", GOARCH: "amd64", Deb: "amd64", RPM: "x86_64", APK: "x86_64", UnameM: []string{"x86_64"}},
	{Name: "arm64", GOARCH: "arm64", Deb: "arm64", RPM: "aarch64", APK: "aarch64", UnameM: []string{"aarch64"}},
	{Name: "armv7", GOARCH: "arm", Deb: "armhf", RPM: "armv7hl", APK: "armv7", UnameM: []string{"armv7l", "armv8l"}},
	{Name: "riscv64", GOARCH: "riscv64", Deb: "riscv64", RPM: "riscv64", APK: "riscv64", UnameM: []string{"riscv64"}},
}

// ArchNamed returns the architecture of that release name or GOARCH.
func ArchNamed(name string) (Arch, error) {
	for _, a := range Arches {
		if a.Name == name || a.GOARCH == name {
			return a, nil
		}
	}
	return Arch{}, fmt.Errorf("architecture %q: want amd64, arm64, armv7 or riscv64: %w", name, errdefs.ErrInvalidArgument)
}

// Formats are the package formats, and the programs packaged in each.
var Formats = []string{"deb", "rpm", "apk", "ipk"}

// Programs are what is packaged: the agent everywhere, the controller
// where systemd or OpenRC can run it (not on OpenWrt).
var Programs = []string{"tender-agent", "tender"}

func packaged(prog, format string) bool {
	return prog == "tender-agent" || format != "ipk"
}

// Version is a release version as the package formats want it, from
// `git describe --always --dirty` and the commit's time.
type Version struct {
	Base  string // 1.2.3 from a v1.2.3 tag; 0.0.0 without a tag
	Exact bool   // the commit is the tag's and the tree clean
	Stamp string // the commit time, 20061102150405 (UTC)
	Hash  string // abbreviated commit hash
	Dirty bool
}

var (
	tagged   = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)
	untagged = regexp.MustCompile(`^([0-9a-f]{4,40})(-dirty)?$`)
)

// ParseVersion reads `git describe --always --dirty` output ("v1.2.3",
// "v1.2.3-4-gabc1234", "abc1234-dirty"); "dev" is a build outside git.
func ParseVersion(describe string, commit time.Time) (Version, error) {
	v := Version{Base: "0.0.0", Stamp: commit.UTC().Format("20060102150405")}
	switch m := tagged.FindStringSubmatch(describe); {
	case m != nil:
		v.Base, v.Hash, v.Dirty = m[1], m[3], m[4] != ""
		v.Exact = m[2] == "" && !v.Dirty
	case untagged.MatchString(describe):
		m := untagged.FindStringSubmatch(describe)
		v.Hash, v.Dirty = m[1], m[2] != ""
	case describe == "dev":
		v.Dirty = true
	default:
		return Version{}, fmt.Errorf("version %q: want git describe output (v1.2.3, v1.2.3-4-gabc1234, abc1234-dirty): %w", describe, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// Deb is the version for .deb, .rpm and .ipk: 1.2.3 for a tag, else
// 1.2.3+git20061102150405.abc1234 (after the tag, ordered by commit
// time), with .dirty for a tree with changes.
func (v Version) Deb() string {
	if v.Exact {
		return v.Base
	}
	s := v.Base + "+git" + v.Stamp
	if v.Hash != "" {
		s += "." + v.Hash
	}
	if v.Dirty {
		s += ".dirty"
	}
	return s
}

// APK is the version for .apk, whose syntax takes no hash:
// 1.2.3_git20061102150405.
func (v Version) APK() string {
	if v.Exact {
		return v.Base
	}
	return v.Base + "_git" + v.Stamp
}

// Options say what to build.
type Options struct {
	SrcDir  string    // the source tree (packaging/ and configs/ are read)
	BinDir  string    // holds PROG-linux-ARCH
	OutDir  string    // where packages are written
	Version Version   //
	Time    time.Time // files' modification time (the commit's: reproducible packages)
	Arches  []Arch    // default: all
	Formats []string  // default: all
}

// Build writes every package of o and returns their paths.
func Build(o Options) ([]string, error) {
	if len(o.Arches) == 0 {
		o.Arches = Arches
	}
	if len(o.Formats) == 0 {
		o.Formats = Formats
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	scripts, err := os.MkdirTemp("", "tender-mkpkg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scripts)
	var out []string
	for _, a := range o.Arches {
		for _, f := range o.Formats {
			for _, p := range Programs {
				if !packaged(p, f) {
					continue
				}
				path, err := buildOne(o, p, a, f, scripts)
				if err != nil {
					return out, fmt.Errorf("%s %s %s: %w", p, f, a.Name, err)
				}
				out = append(out, path)
			}
		}
	}
	return out, nil
}

func buildOne(o Options, prog string, a Arch, format, scripts string) (string, error) {
	info, err := Spec(o, prog, a, format, scripts)
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", err
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	name := pkgr.ConventionalFileName(info)
	if format == "ipk" { // Architecture: all; the file says which
		name = fmt.Sprintf("%s_%s-%s_%s.ipk", info.Name, info.Version, info.Release, a.Deb)
	}
	path := filepath.Join(o.OutDir, name)
	var buf bytes.Buffer
	if err := pkgr.Package(info, &buf); err != nil {
		return "", err
	}
	if err := os.WriteFile(path+".tmp", buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(path+".tmp", path)
}

const (
	maintainer = "Tender <tender@tender-edge.invalid>"
	homepage   = "https://github.com/tender-edge/tender"
)

// Spec is the nfpm description of prog's package in format for a; the
// scripts it needs assembled (the .deb's postrm, the .ipk's preinst) are
// written under dir.
func Spec(o Options, prog string, a Arch, format, dir string) (*nfpm.Info, error) {
	src := func(p string) string { return filepath.Join(o.SrcDir, p) }
	bin := filepath.Join(o.BinDir, prog+"-linux-"+a.Name)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("binary: %w (make release builds it)", err)
	}
	info := &nfpm.Info{
		Name: prog, Arch: a.GOARCH, Platform: "linux",
		Version: o.Version.Deb(), Release: "1", VersionSchema: "none",
		Maintainer: maintainer, Homepage: homepage, Vendor: "Tender",
		Section: "admin", Priority: "optional", MTime: o.Time,
	}
	switch format {
	case "deb":
		info.Deb.Arch = a.Deb
	case "rpm":
		info.RPM.Arch = a.RPM
		info.RPM.Group = "System Environment/Daemons"
	case "apk":
		info.APK.Arch = a.APK
		info.Version, info.Release = o.Version.APK(), "r0"
	case "ipk":
		info.IPK.Arch = "all" // see scripts/ipk/tender-agent.preinst
	}
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: o.Time}}
	}
	conf := func(from, to string, mode os.FileMode) *files.Content {
		c := file(from, to, mode)
		c.Type = files.TypeConfigNoReplace
		return c
	}
	etc := &files.Content{Destination: "/etc/tender", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: o.Time}}
	// Units: Debian 12 keeps them in /lib (its /usr merge moratorium),
	// rpm distributions in /usr/lib.
	unitDir := "/lib/systemd/system"
	if format == "rpm" {
		unitDir = "/usr/lib/systemd/system"
	}
	sc := func(name string) string { return src(filepath.Join("packaging/scripts", format, prog+"."+name)) }
	c := files.Contents{file(bin, "/usr/bin/"+prog, 0o755), etc}
	switch prog {
	case "tender-agent":
		info.Description = "Tender edge agent: runs this device's containers\n" +
			"One static binary: an OCI runtime of its own (namespaces, overlayfs, cgroup\n" +
			"limits, seccomp) and a daemon that converges the device on its fleet's\n" +
			"signed desired state over MQTT, through lost links and reboots."
		c = append(c,
			conf(src("packaging/etc/agent.yaml"), "/etc/tender/agent.yaml", 0o600),
			conf(src("configs/policy.yaml"), "/etc/tender/policy.yaml", 0o644))
		switch format {
		case "deb", "rpm":
			c = append(c, file(src("packaging/systemd/tender-agent.service"), unitDir+"/tender-agent.service", 0o644))
		case "apk":
			c = append(c, file(src("packaging/openrc/tender-agent.initd"), "/etc/init.d/tender-agent", 0o755))
		case "ipk":
			c = append(c,
				file(src("packaging/openwrt/tender-agent.init"), "/etc/init.d/tender-agent", 0o755),
				conf(src("packaging/openwrt/tender-agent.uci"), "/etc/config/tender-agent", 0o644))
		}
		switch format {
		case "deb":
			postrm, err := withPurge(o.SrcDir, dir, a)
			if err != nil {
				return nil, err
			}
			info.Scripts = nfpm.Scripts{PostInstall: sc("postinst"), PreRemove: sc("prerm"), PostRemove: postrm}
		case "rpm":
			info.Scripts = nfpm.Scripts{PostInstall: sc("post"), PreRemove: sc("preun"), PostRemove: sc("postun")}
		case "apk":
			info.Scripts = nfpm.Scripts{PostInstall: sc("post-install"), PreRemove: sc("pre-deinstall")}
			info.APK.Scripts.PostUpgrade = sc("post-upgrade")
		case "ipk":
			pre, err := withUname(o.SrcDir, dir, a)
			if err != nil {
				return nil, err
			}
			info.Scripts = nfpm.Scripts{PreInstall: pre, PostInstall: sc("postinst"), PreRemove: sc("prerm")}
		}
	case "tender":
		info.Description = "Tender fleet controller and its command line\n" +
			"tender serve: the HTTPS API, an embedded MQTT broker, enrollment, placement\n" +
			"and health-gated rollouts; tender: the operator's command line."
		switch format {
		case "deb", "rpm":
			c = append(c,
				file(src("packaging/systemd/tender-controller.service"), unitDir+"/tender-controller.service", 0o644),
				conf(src("packaging/etc/controller.env"), "/etc/tender/controller.env", 0o644))
		}
		switch format {
		case "deb":
			info.Scripts = nfpm.Scripts{PostInstall: sc("postinst"), PreRemove: sc("prerm"), PostRemove: sc("postrm")}
		case "rpm":
			info.Scripts = nfpm.Scripts{PostInstall: sc("post"), PreRemove: sc("preun"), PostRemove: sc("postun")}
		}
	default:
		return nil, fmt.Errorf("program %q: want tender-agent or tender: %w", prog, errdefs.ErrInvalidArgument)
	}
	info.Contents = c
	return info, nil
}

// PurgeState returns the purge_state function of install.sh, the one
// definition of what a purge removes.
func PurgeState(srcDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(srcDir, "packaging/install.sh"))
	if err != nil {
		return "", err
	}
	s := string(b)
	i, j := strings.Index(s, "# BEGIN purge_state"), strings.Index(s, "# END purge_state")
	if i < 0 || j < i {
		return "", errors.New("packaging/install.sh: no '# BEGIN purge_state' ... '# END purge_state' block")
	}
	return s[i : j+len("# END purge_state")], nil
}

// withPurge writes the .deb's postrm with purge_state in place of its
// #@PURGE_STATE@ line.
func withPurge(srcDir, dir string, a Arch) (string, error) {
	fn, err := PurgeState(srcDir)
	if err != nil {
		return "", err
	}
	return fill(srcDir, "packaging/scripts/deb/tender-agent.postrm", "#@PURGE_STATE@", fn, filepath.Join(dir, a.Name+"-tender-agent.postrm"))
}

// withUname writes the .ipk's preinst with the machine names of a.
func withUname(srcDir, dir string, a Arch) (string, error) {
	return fill(srcDir, "packaging/scripts/ipk/tender-agent.preinst", "#@UNAME_M@", strings.Join(a.UnameM, " "), filepath.Join(dir, a.Name+"-tender-agent.preinst"))
}

func fill(srcDir, tmpl, mark, with, out string) (string, error) {
	b, err := os.ReadFile(filepath.Join(srcDir, tmpl))
	if err != nil {
		return "", err
	}
	if !bytes.Contains(b, []byte(mark)) {
		return "", fmt.Errorf("%s: no %s", tmpl, mark)
	}
	b = bytes.Replace(b, []byte(mark), []byte(with), 1)
	return out, os.WriteFile(out, b, 0o755)
}
