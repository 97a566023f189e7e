// Command peerspec writes an OCI bundle config.json for crun and runc that
// asks for the same work Tender does for one container (issue 15): Tender's
// own runtime spec for it (read from `tender-agent inspect`: capabilities,
// mounts, masked and read-only paths, namespaces, rlimits, devices and
// their cgroup rules, no_new_privs), plus Tender's seccomp filter, which
// Tender builds as BPF in runtime/initproc and does not put in the spec,
// written as an OCI seccomp section: the same unconditional allowlist (read
// from runtime/initproc/seccomp_syscalls.go and filtered the same way, to
// the names this architecture has), the same conditional rules (clone
// without namespace flags, socket without AF_ALG and AF_VSOCK, personality
// limited, clone3 ENOSYS) and the same default, errno EPERM. It also prints
// the container's root mounts (the overlay) so that the benchmark can mount
// the peers' root the same way, and one line per runtime saying what it does.
//
// Usage: peerspec -inspect FILE -syscalls runtime/initproc/seccomp_syscalls.go -rootfs DIR -o config.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// inspected is the part of `tender-agent inspect`'s answer used here.
type inspected struct {
	Spec       *specs.Spec `json:"spec"`
	RootMounts []struct {
		Type    string   `json:"type"`
		Source  string   `json:"source"`
		Options []string `json:"options"`
	} `json:"rootMounts"`
	Seccomp string `json:"seccomp"`
}

func main() {
	in := flag.String("inspect", "", "output of tender-agent inspect for one container")
	src := flag.String("syscalls", "runtime/initproc/seccomp_syscalls.go", "Tender's allowlist source")
	rootfs := flag.String("rootfs", "", "bundle root path for the peers")
	out := flag.String("o", "config.json", "where to write the peers' config.json")
	flag.Parse()
	if err := run(*in, *src, *rootfs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "peerspec:", err)
		os.Exit(1)
	}
}

func run(in, src, rootfs, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var cs []inspected
	if err := json.Unmarshal(b, &cs); err != nil || len(cs) != 1 || cs[0].Spec == nil {
		return fmt.Errorf("%s: want the inspect output of one container (%v)", in, err)
	}
	c := cs[0]
	if c.Seccomp != "default" {
		return fmt.Errorf("%s: the container's seccomp is %q, not Tender's default profile", in, c.Seccomp)
	}
	if len(c.RootMounts) != 1 || c.RootMounts[0].Type != "overlay" {
		return fmt.Errorf("%s: want one overlay root mount, have %+v", in, c.RootMounts)
	}
	names, err := allowlist(src)
	if err != nil {
		return err
	}
	sc, nAllowed, err := ociSeccomp(names)
	if err != nil {
		return err
	}
	s := c.Spec
	s.Root = &specs.Root{Path: rootfs, Readonly: s.Root != nil && s.Root.Readonly}
	s.Process.Terminal = false
	s.Linux.Seccomp = sc
	s.Hostname = "bench"
	// crun 1.8.1 refuses any ociVersion but 1.0.x; every field used here
	// is in 1.0.2 (runc 1.1's version).
	s.Version = "1.0.2-dev"
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// What the script needs: the overlay's lower directories.
	for _, o := range c.RootMounts[0].Options {
		if l, ok := strings.CutPrefix(o, "lowerdir="); ok {
			fmt.Printf("lowerdir=%s\n", l)
		}
	}
	var ns []string
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, string(n.Type))
	}
	fmt.Printf("work=seccomp %d syscalls allowed + %d conditional rules (default errno EPERM, clone3 ENOSYS, %s only), "+
		"%d capabilities, no_new_privs %v, %d masked and %d read-only paths, %d mounts, namespaces %s, "+
		"%d device cgroup rules, root: overlay of %d layer(s) with a fresh upper\n",
		nAllowed, len(sc.Syscalls)-1, strings.Join(archs(), ","), len(s.Process.Capabilities.Bounding), s.Process.NoNewPrivileges,
		len(s.Linux.MaskedPaths), len(s.Linux.ReadonlyPaths), len(s.Mounts), strings.Join(ns, ","),
		len(s.Linux.Resources.Devices), strings.Count(lowerOf(c.RootMounts[0].Options), ":")+1)
	return nil
}

func lowerOf(opts []string) string {
	for _, o := range opts {
		if l, ok := strings.CutPrefix(o, "lowerdir="); ok {
			return l
		}
	}
	return ""
}

// allowlist reads the string literals of `var allowedSyscalls` in Tender's
// source, so the peers get the list the agent was built with.
func allowlist(src string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		return nil, err
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "allowedSyscalls" || len(vs.Values) != 1 {
			return true
		}
		for _, e := range vs.Values[0].(*ast.CompositeLit).Elts {
			if s, err := strconv.Unquote(e.(*ast.BasicLit).Value); err == nil {
				names = append(names, s)
			}
		}
		return false
	})
	if len(names) < 100 {
		return nil, fmt.Errorf("%s: found %d names in allowedSyscalls, want the whole list", src, len(names))
	}
	return names, nil
}

// archs is the one ABI Tender's filter lets through: the machine's own.
func archs() []string {
	return []string{map[string]string{
		"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
		"riscv64": "SCMP_ARCH_RISCV64", "386": "SCMP_ARCH_X86",
	}[runtime.GOARCH]}
}

// ociSeccomp mirrors runtime/initproc/seccomp_linux.go's defaultSeccomp.
func ociSeccomp(names []string) (*specs.LinuxSeccomp, int, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, 0, err
	}
	var known []string
	for _, n := range names {
		if _, ok := info.SyscallNames[n]; ok {
			known = append(known, n)
		}
	}
	const cloneNS = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	allow := func(name string, a ...specs.LinuxSeccompArg) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow, Args: a}
	}
	eq := func(v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: 0, Value: v, Op: specs.OpEqualTo}
	}
	// masked: arg0 & mask == v.
	masked := func(mask, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: 0, Value: mask, ValueTwo: v, Op: specs.OpMaskedEqual}
	}
	sys := []specs.LinuxSyscall{{Names: known, Action: specs.ActAllow}}
	if _, ok := info.SyscallNames["clone"]; ok {
		sys = append(sys, allow("clone", masked(cloneNS, 0)))
	}
	// socket: family < 64 and not 38 (AF_ALG) nor 40 (AF_VSOCK). OCI
	// conditions on one argument in one rule are ORed by runc, so the set
	// is written as a union of rules: [0,38) 39 41 [42,44) [44,48) [48,64).
	sys = append(sys,
		allow("socket", specs.LinuxSeccompArg{Index: 0, Value: 38, Op: specs.OpLessThan}),
		allow("socket", eq(39)), allow("socket", eq(41)),
		allow("socket", masked(^uint64(1), 42)), allow("socket", masked(^uint64(3), 44)),
		allow("socket", masked(^uint64(15), 48)))
	for _, p := range []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff} {
		sys = append(sys, allow("personality", eq(p)))
	}
	if _, ok := info.SyscallNames["clone3"]; ok {
		enosys := uint(unix.ENOSYS)
		sys = append(sys, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
	}
	var archList []specs.Arch
	for _, a := range archs() {
		archList = append(archList, specs.Arch(a))
	}
	eperm := uint(unix.EPERM)
	return &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm, Architectures: archList, Syscalls: sys}, len(known), nil
}
