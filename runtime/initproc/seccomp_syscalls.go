package initproc

// allowedSyscalls is the unconditional allowlist of the default seccomp
// profile, modelled on moby's profiles/seccomp/default.json (the syscalls it
// allows to every container, plus the arch-specific ones it allows on amd64,
// arm and arm64, plus chroot, which it allows with CAP_SYS_CHROOT, one of the
// default capabilities). Names that the running architecture lacks are
// skipped. The hottest syscalls come first: without the kernel's seccomp
// action cache (Linux < 5.11) the filter is a linear scan.
//
// Left out on purpose, though moby allows some of them: ptrace,
// process_vm_readv/writev, kcmp (debugging other processes), io_uring_*,
// name_to_handle_at, socketcall (it would bypass the socket filter), and
// everything moby gates on capabilities the default set lacks (mount,
// umount2, unshare, setns, pivot_root, bpf, perf_event_open, keyctl,
// add_key, request_key, kexec_*, init_module, finit_module, delete_module,
// open_by_handle_at, userfaultfd, ...). clone, clone3, socket and personality
// are handled with conditions in seccomp_linux.go.
var allowedSyscalls = []string{
	// hot paths first
	"read", "write", "futex", "epoll_pwait", "epoll_wait", "epoll_ctl",
	"nanosleep", "clock_gettime", "mmap", "munmap", "madvise", "close",
	"openat", "newfstatat", "fstat", "lseek", "rt_sigreturn", "rt_sigprocmask",
	"sched_yield", "getpid", "gettid", "tgkill", "pread64", "pwrite64",
	"readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "poll",
	"ppoll", "select", "pselect6", "fcntl", "ioctl", "brk", "mprotect",
	"getrandom", "statx",

	"accept", "accept4", "access", "adjtimex", "alarm", "bind",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32",
	"chroot", "clock_adjtime", "clock_adjtime64", "clock_getres",
	"clock_getres_time64", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close_range", "connect", "copy_file_range",
	"creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
	"epoll_ctl_old", "epoll_pwait2", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
	"fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
	"fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
	"fremovexattr", "fsetxattr", "fstat64", "fstatat64", "fstatfs",
	"fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex_requeue",
	"futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
	"getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
	"geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
	"getitimer", "getpeername", "getpgid", "getpgrp", "getppid",
	"getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32",
	"getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
	"getsockopt", "get_thread_area", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
	"inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
	"io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
	"ioprio_set", "io_setup", "io_submit", "ipc", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
	"listmount", "listxattr", "listxattrat", "llistxattr", "_llseek",
	"lremovexattr", "lsetxattr", "lstat", "lstat64", "map_shadow_stack",
	"membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
	"mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap2",
	"mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
	"mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
	"msync", "munlock", "munlockall", "_newselect", "open", "openat2",
	"pause", "pidfd_open", "pidfd_send_signal", "pipe",
	"pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "ppoll_time64",
	"prctl", "preadv", "preadv2", "prlimit64", "process_mrelease",
	"pselect6_time64", "pwritev", "pwritev2", "readahead", "readlink",
	"readlinkat", "recv", "recvmmsg", "recvmmsg_time64", "remap_file_pages",
	"removexattr", "removexattrat", "rename", "renameat", "renameat2",
	"restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigqueueinfo", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
	"sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
	"sched_setparam", "sched_setscheduler", "seccomp", "semctl", "semget",
	"semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
	"sendfile64", "sendmmsg", "setfsgid", "setfsgid32", "setfsuid",
	"setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
	"setitimer", "setpgid", "setpriority", "setregid", "setregid32",
	"setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
	"setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
	"set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
	"setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
	"symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64",
	"timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
	"truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
	"utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice",
	"wait4", "waitid", "waitpid",

	// arch-specific (moby allows these per architecture)
	"arch_prctl",                              // amd64
	"arm_fadvise64_64", "arm_sync_file_range", // arm
	"breakpoint", "cacheflush", "set_tls", // arm
	"riscv_flush_icache", // riscv64
}
