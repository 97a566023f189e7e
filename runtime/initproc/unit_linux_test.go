package initproc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseMountOptions(t *testing.T) {
	o, err := parseMountOptions([]string{"nosuid", "strictatime", "mode=755", "size=65536k", "ro", "rw", "rprivate", "noexec"})
	if err != nil {
		t.Fatal(err)
	}
	if want := uintptr(unix.MS_NOSUID | unix.MS_STRICTATIME | unix.MS_NOEXEC); o.flags != want {
		t.Errorf("flags = %#x, want %#x", o.flags, want)
	}
	if o.data != "mode=755,size=65536k" {
		t.Errorf("data = %q", o.data)
	}
	if !slices.Equal(o.propagation, []uintptr{unix.MS_PRIVATE | unix.MS_REC}) {
		t.Errorf("propagation = %v", o.propagation)
	}
	o, _ = parseMountOptions([]string{"rbind", "ro"})
	if o.flags != unix.MS_BIND|unix.MS_REC|unix.MS_RDONLY || o.data != "" {
		t.Errorf("rbind,ro = %#x %q", o.flags, o.data)
	}
	if _, err := parseMountOptions([]string{"idmap"}); err == nil {
		t.Error("idmap accepted")
	}
}

func TestShortenOverlayData(t *testing.T) {
	var lowers []string
	for i := 0; i < 40; i++ {
		lowers = append(lowers, fmt.Sprintf("/var/lib/tender/snapshots/%03d/%s/fs", i, strings.Repeat("x", 64)))
	}
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=/u,workdir=/w"
	got, dir := shortenOverlayData(data)
	if dir != "/var/lib/tender/snapshots" {
		t.Fatalf("dir = %q", dir)
	}
	if !strings.HasPrefix(got, "lowerdir=000/") || !strings.HasSuffix(got, ",upperdir=/u,workdir=/w") || len(got) >= len(data) {
		t.Errorf("data = %q", got)
	}
	if _, dir := shortenOverlayData("lowerdir=/a/x:/b/y,upperdir=/u"); dir != "" {
		t.Errorf("no common parent, dir = %q", dir)
	}
}

func TestParseID(t *testing.T) {
	for s, want := range map[string]bool{"0": true, "1000": true, "2147483647": true, "app": true} {
		if _, _, err := parseID(s); (err == nil) != want {
			t.Errorf("parseID(%q) err = %v", s, err)
		}
	}
	for _, s := range []string{"-1", "2147483648", "4294967296", "1e3", "12a"} {
		if _, _, err := parseID(s); err == nil {
			t.Errorf("parseID(%q) accepted", s)
		}
	}
}

func TestCapMask(t *testing.T) {
	m, err := capMask(dockerCaps)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%016x", m); got != dockerCapsHex {
		t.Errorf("docker caps = %s, want %s", got, dockerCapsHex)
	}
	if _, err := capMask([]string{"CAP_TYPO"}); err == nil {
		t.Error("unknown capability accepted")
	}
}

// TestSeccompSyscallList checks the allowlist: no duplicates, every name
// known on some architecture, nothing dangerous, and the policy assembles
// for the running architecture.
func TestSeccompSyscallList(t *testing.T) {
	seen := map[string]bool{}
	var tables []map[string]int
	for _, a := range []string{"amd64", "arm64", "arm", "386"} {
		info, err := arch.GetInfo(a)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, info.SyscallNames)
	}
	for _, n := range allowedSyscalls {
		if seen[n] {
			t.Errorf("duplicate %s", n)
		}
		seen[n] = true
		known := n == "riscv_flush_icache"
		for _, tbl := range tables {
			if _, ok := tbl[n]; ok {
				known = true
			}
		}
		if !known {
			t.Errorf("unknown syscall %s", n)
		}
	}
	for _, bad := range []string{"mount", "umount2", "unshare", "setns", "bpf", "keyctl", "add_key",
		"request_key", "ptrace", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
		"finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at", "io_uring_setup",
		"io_uring_enter", "io_uring_register", "userfaultfd", "pivot_root", "clone", "clone3",
		"socket", "socketcall", "personality", "reboot", "swapon", "acct", "settimeofday"} {
		if seen[bad] {
			t.Errorf("%s in the unconditional allowlist", bad)
		}
	}
	f, err := defaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.filter.Policy.Assemble(); err != nil {
		t.Fatal(err)
	}
}

// What execve takes is bounded per string (MAX_ARG_STRLEN) and in total (a
// quarter of the stack rlimit, at most 6 MiB, at least 128 KiB); beyond
// either the start is refused up front, with a message naming the bound.
func TestCheckExecSize(t *testing.T) {
	stack := func(n uint64) []specs.POSIXRlimit {
		return []specs.POSIXRlimit{{Type: "RLIMIT_STACK", Soft: n, Hard: n}}
	}
	for _, tt := range []struct {
		rl   uint64
		want int64
	}{{8 << 20, 2 << 20}, {64 << 20, 6 << 20}, {1 << 20, 256 << 10}, {256 << 10, 128 << 10}, {^uint64(0), 6 << 20}} {
		if got := ArgMax(stack(tt.rl)); got != tt.want {
			t.Errorf("ArgMax(stack %d) = %d, want %d", tt.rl, got, tt.want)
		}
	}
	big := func(n int) string { return strings.Repeat("a", n) }
	env := []string{"A=" + big(100<<10), "B=" + big(100<<10), "C=" + big(100<<10)}
	if err := CheckExecSize([]string{"/bin/x"}, env, stack(8<<20)); err != nil {
		t.Errorf("300 KiB of environment in 100 KiB values: %v", err)
	}
	err := CheckExecSize([]string{"/bin/x"}, []string{"LONG=" + big(200<<10)}, stack(8<<20))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "environment variable LONG is 204805 bytes") {
		t.Errorf("one 200 KiB value: %v", err)
	}
	args := []string{"/bin/x"}
	for i := 0; i < 30; i++ {
		args = append(args, big(100<<10))
	}
	err = CheckExecSize(args, nil, stack(8<<20))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "at most 2097152 (ARG_MAX") {
		t.Errorf("3 MiB of arguments: %v", err)
	}
	if err := CheckExecSize(args, nil, stack(64<<20)); err != nil {
		t.Errorf("3 MiB of arguments under a 64 MiB stack limit: %v", err)
	}
}
