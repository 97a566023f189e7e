#!/usr/bin/env bash
# Container lifecycle benchmark: create, start, wait and delete a container
# running `exit 0`, with tender-agent (run --rm), crun (run) and runc (run),
# all doing the same work (issue 15): the peers' config.json is Tender's own
# runtime spec for the same container (tender-agent inspect: capabilities,
# mounts, masked and read-only paths, namespaces, rlimits, devices,
# no_new_privs) plus Tender's seccomp filter written as an OCI seccomp
# section (test/bench/peerspec: the same allowlist, conditional rules and
# default errno EPERM), and their root is an overlay of Tender's own
# unpacked layers with a fresh upper directory, mounted before each run and
# removed after it, inside the timed command, as Tender does in its own.
# Before the rounds each runtime is warmed up alike (3 runs each), and each
# is asked once what its container got (clone3 must fail with ENOSYS under
# the seccomp filter; the capability sets must be equal), so a peer that
# silently dropped part of the work fails the benchmark.
# Each round runs A B C in turn, so drift in this VM's speed hits all three
# alike. Every runtime runs in a private mount namespace where the cgroup2
# mount's cgroup.controllers is hidden (crun refuses hybrid cgroups
# otherwise; see shared/PEERS.md); nothing outside that namespace changes.
#
# Usage: test/bench/start.sh [ROUNDS]   (default 30; needs root, crun, runc)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-30}
agent=$PWD/build/tender-agent
image=$PWD/build/testimage.tar
for tool in crun runc; do command -v $tool >/dev/null || { echo "bench: $tool missing (make deps)" >&2; exit 1; }; done
[ -x "$agent" ] && [ -f "$image" ] || { echo "bench: run make build testimage first" >&2; exit 1; }

work=$(mktemp -d /tmp/tender-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
empty=$work/empty; : > "$empty"
root=$work/root

# The same image and the same spec for everyone: tender-agent loads the
# archive and creates one container, whose spec and root mounts become the
# peers' bundle.
"$agent" --root "$root" load "$image" >/dev/null
"$agent" --root "$root" run --name bench-ref tender.test/workload:latest exit 0 >/dev/null
"$agent" --root "$root" inspect bench-ref >"$work/inspect.json"
"$agent" --root "$root" rm bench-ref >/dev/null
bundle=$work/bundle; mkdir -p "$bundle/rootfs"
go build -o "$work/peerspec" ./test/bench/peerspec
peerspec() { "$work/peerspec" -inspect "$work/inspect.json" -syscalls runtime/initproc/seccomp_syscalls.go -rootfs "$bundle/rootfs" -o "$bundle/config.json"; }
out=$(peerspec)
lower=$(sed -n 's/^lowerdir=//p' <<<"$out")
does=$(sed -n 's/^work=//p' <<<"$out")
[ -n "$lower" ] && [ -n "$does" ] || { echo "bench: peerspec said nothing useful: $out" >&2; exit 1; }
setargs() { python3 - "$bundle/config.json" "$@" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["/workload"] + sys.argv[2:]
json.dump(c, open(p, "w"))
PY
}

# ns CMD...: run CMD with the cgroup2 controllers file hidden.
ns() { unshare --mount --propagation private sh -c 'mount --bind "$0" /sys/fs/cgroup/unified/cgroup.controllers && exec "$@"' "$empty" "$@"; }
# peer RUNTIME ID: mount the bundle's root as Tender mounts a container's
# (overlay of the image's layers, a fresh upper and work directory), run,
# then remove the upper layer, as `tender-agent run --rm` does; the mount
# goes with the private namespace.
peer() {
	ns sh -c 'd=$(mktemp -d "$0/run.XXXXXX") && mkdir "$d/upper" "$d/work" &&
		mount -t overlay overlay -o "lowerdir=$1,upperdir=$d/upper,workdir=$d/work" "$2/rootfs" &&
		if [ "$3" = none ]; then true; else "$3" run --bundle "$2" "$4"; fi; rc=$?; umount "$2/rootfs"; rm -rf "$d"; exit $rc' "$work" "$lower" "$bundle" "$@"
}
tender() { ns "$agent" --root "$root" run --rm tender.test/workload:latest "$@"; }
now() { date +%s%N; }
declare -A times
run_one() { # name cmd...
	local name=$1; shift
	local t0 t1
	t0=$(now); "$@" >/dev/null 2>&1 || { echo "bench: $name failed: $*" >&2; "$@"; exit 1; }; t1=$(now)
	times[$name]+="$(( (t1 - t0) / 1000 )) "
}

# What each container gets: the same capability set, and the seccomp
# filter in force (clone3 answers ENOSYS only under it).
for probe in caps clone3; do
	setargs "$probe"
	t=$(tender "$probe" 2>&1); c=$(peer crun "probe-crun-$probe" 2>&1); r=$(peer runc "probe-runc-$probe" 2>&1)
	[ "$t" = "$c" ] && [ "$t" = "$r" ] || { echo "bench: $probe differs: tender '$t' crun '$c' runc '$r'" >&2; exit 1; }
	printf "  %-7s %s in all three\n" "$probe" "$t"
done
[ "$(tender clone3 2>&1)" = ENOSYS ] || { echo "bench: clone3 is not ENOSYS: no seccomp filter?" >&2; exit 1; }
setargs exit 0
echo "each runtime: $does"

# Warm up each alike (page cache, binaries, the layers' dentries).
for w in 1 2 3; do
	tender exit 0 >/dev/null
	peer crun "warm-crun-$w" >/dev/null
	peer runc "warm-runc-$w" >/dev/null
done
for r in $(seq "$rounds"); do
	run_one tender tender exit 0
	run_one crun peer crun "bench-crun-$r"
	run_one runc peer runc "bench-runc-$r"
	run_one setup peer none -
	run_one ns ns true
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f %.1f %.1f\n", m/1000, a[1]/1000, a[NR]/1000}'; }
echo "lifecycle of 'exit 0' (create, start, wait, delete; equal work), $rounds rounds, ms: median (min-max)"
declare -A med
for name in tender crun runc setup ns; do
	read -r m lo hi < <(echo "${times[$name]}" | stats)
	med[$name]=$m
	printf "  %-7s %7s  (%s-%s)\n" "$name" "$m" "$lo" "$hi"
done
# setup: the peers' wrapper alone (unshare, sh, mktemp, mkdir, mount and
# umount of the overlay, rm); ns: the namespace alone, which all pay. The
# second line compares the runtimes alone: each less what wraps it.
awk -v t="${med[tender]}" -v c="${med[crun]}" -v r="${med[runc]}" -v s="${med[setup]}" -v n="${med[ns]}" 'BEGIN {
	printf "  tender/crun %.2f   tender/runc %.2f   crun/runc %.2f\n", t/c, t/r, c/r
	printf "  runtimes alone (tender less ns, peers less setup): tender/crun %.2f   tender/runc %.2f\n", (t-n)/(c-s), (t-n)/(r-s)}'
