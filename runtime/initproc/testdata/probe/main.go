// Command probe tries syscalls a container must not be able to use and
// prints one "name=result" line each (result "ok" or the errno name).
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	// Only ever inside a test container (PID 1 of its own pid namespace):
	// on a host these calls would take effect.
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "probe: refusing to run outside a container")
		os.Exit(2)
	}
	if len(os.Args) > 1 && os.Args[1] == "chroot-escape" {
		chrootEscape()
		return
	}
	try := func(name string, err error) {
		if err == nil {
			fmt.Printf("%s=ok\n", name)
			return
		}
		fmt.Printf("%s=%s\n", name, unix.ErrnoName(err.(syscall.Errno)))
	}
	try("unshare", unix.Unshare(unix.CLONE_NEWUSER))
	try("mount", unix.Mount("tmpfs", "/nonexistent-probe-target", "tmpfs", 0, ""))
	_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
	try("keyctl", err)
	_, _, e := unix.Syscall(unix.SYS_BPF, 0, 0, 0)
	try("bpf", errno(e))
	_, _, e = unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)
	try("io_uring_setup", errno(e))
	_, err = unix.Socket(unix.AF_ALG, unix.SOCK_SEQPACKET, 0)
	try("socket_alg", err)
	_, err = unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	try("socket_vsock", err)
	_, _, e = unix.Syscall(unix.SYS_SOCKET, 1<<32|unix.AF_ALG, unix.SOCK_SEQPACKET, 0)
	try("socket_alg_hibits", errno(e))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	try("socket_unix", err)
	if err == nil {
		unix.Close(fd)
	}
	var args [11]uint64 // struct clone_args
	_, _, e = unix.Syscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	try("clone3", errno(e))
	_, _, e = unix.Syscall6(unix.SYS_CLONE, unix.CLONE_NEWUSER|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	try("clone_newuser", errno(e))
	_, _, e = unix.Syscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
	try("ptrace", errno(e))
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	try("personality_query", errno(e))
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0x0400000, 0, 0) // READ_IMPLIES_EXEC
	try("personality_rie", errno(e))
}

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// chrootEscape is the classic way out of a chroot, for a process that may
// chroot (CAP_SYS_CHROOT): chroot into a subdirectory while cwd stays
// outside it, climb with "..", chroot there. It prints the names in the /
// it ends up in.
func chrootEscape() {
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
	if err := os.MkdirAll("/escape", 0o755); err != nil {
		fail("mkdir", err)
	}
	if err := unix.Chroot("/escape"); err != nil {
		fail("chroot", err)
	}
	for i := 0; i < 64; i++ {
		if err := unix.Chdir(".."); err != nil {
			fail("chdir ..", err)
		}
	}
	if err := unix.Chroot("."); err != nil {
		fail("chroot .", err)
	}
	ents, err := os.ReadDir("/")
	if err != nil {
		fail("read /", err)
	}
	for _, e := range ents {
		fmt.Println(e.Name())
	}
}
