package initproc

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
)

// Namespace flags that clone(2) may not carry (moby: only with
// CAP_SYS_ADMIN, which the default capability set lacks).
const cloneNSFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// Address families socket(2) may not use: AF_ALG and AF_VSOCK.
const (
	afALG   = 38
	afVSOCK = 40
	// afLimit bounds the family so that the comparisons see all 64 bits
	// of the argument (the kernel only looks at the low 32).
	afLimit = 64
)

// Personalities allowed (moby): PER_LINUX, PER_LINUX32, UNAME26,
// UNAME26|PER_LINUX32, and the query value 0xffffffff.
var personalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

type seccompFilter struct{ filter seccomp.Filter }

// defaultSeccomp builds the default profile for this architecture: errno
// EPERM unless allowed, clone3 fails with ENOSYS (libc then uses clone),
// clone without namespace flags, socket without AF_ALG/AF_VSOCK, personality
// limited. Other ABIs of the same machine (x32, i386 on amd64) are denied.
func defaultSeccomp() (*seccompFilter, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(allowedSyscalls))
	for _, n := range allowedSyscalls {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	groups := []seccomp.SyscallGroup{{Names: names, Action: seccomp.ActionAllow}}

	var cond []seccomp.NameWithConditions
	if _, ok := info.SyscallNames["clone"]; ok {
		cond = append(cond, seccomp.NameWithConditions{Name: "clone", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.BitsNotSet, Value: cloneNSFlags},
		}})
	}
	cond = append(cond, seccomp.NameWithConditions{Name: "socket", Conditions: seccomp.ArgumentConditions{
		{Argument: 0, Operation: seccomp.LessThan, Value: afLimit},
		{Argument: 0, Operation: seccomp.NotEqual, Value: afALG},
		{Argument: 0, Operation: seccomp.NotEqual, Value: afVSOCK},
	}})
	for _, p := range personalities {
		cond = append(cond, seccomp.NameWithConditions{Name: "personality", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.Equal, Value: p},
		}})
	}
	groups = append(groups, seccomp.SyscallGroup{NamesWithCondtions: cond, Action: seccomp.ActionAllow})
	if _, ok := info.SyscallNames["clone3"]; ok {
		groups = append(groups, seccomp.SyscallGroup{
			Names:  []string{"clone3"},
			Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS),
		})
	}
	f := &seccompFilter{filter: seccomp.Filter{
		Flag: seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionErrno, // EPERM
			Syscalls:      groups,
		},
	}}
	return f, nil
}

// load installs the filter on every thread. It needs no_new_privs or
// CAP_SYS_ADMIN; the caller sets the former when the spec asks for it.
func (f *seccompFilter) load() error {
	if err := seccomp.LoadFilter(f.filter); err != nil {
		return fmt.Errorf("load filter: %w", err)
	}
	return nil
}
