#!/usr/bin/env bash
# Footprint of the agent daemon: its resident memory while idle with 10
# running containers, the size of the static binary, and the CPU it uses
# idle over a minute (DURATION seconds). Also the memory of the root's
# container monitor (or, for an older binary, its shims), for scale.
# Then, in the same run, Debian's containerd (with runc) running the same
# image 10 times with `ctr run -d`: containerd and all its shims' PSS,
# summed the same way (installed with apt when missing; it runs on a config
# and directories of its own under the work directory, and is stopped and
# cleaned up after).
# Usage: test/bench/footprint.sh [DURATION]   (needs root; make build testimage)
# TENDER_AGENT=PATH measures another agent binary (an older build, to compare).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-60}
agent=${TENDER_AGENT:-$PWD/build/tender-agent}
image=$PWD/build/testimage.tar
[ -x "$agent" ] && [ -f "$image" ] || { echo "footprint: run make build testimage first" >&2; exit 1; }
work=$(mktemp -d /tmp/tender-footprint.XXXXXX)
root=$work/state sock=$work/agent.sock
ta() { "$agent" --root "$root" --socket "$sock" "$@"; }
cleanup() {
	# The daemon first: it would restart what is removed under it.
	[ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
	for id in $(ta ps -a -q --no-trunc 2>/dev/null); do ta rm -f "$id" >/dev/null 2>&1 || true; done
	if [ -n "${cpid:-}" ]; then
		for c in $(ctr_ containers ls -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
		done
		sleep 0.5
		for c in $(ctr_ containers ls -q 2>/dev/null); do
			ctr_ tasks rm -f "$c" >/dev/null 2>&1 || true
			ctr_ containers rm "$c" >/dev/null 2>&1 || true
		done
		kill "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null || true
		grep " $work/ctrd" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	fi
	rm -rf "$work"
}
ctr_() { ctr -a "$work/ctrd/containerd.sock" "$@"; }
trap cleanup EXIT
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y containerd >/dev/null
fi
"$agent" --root "$root" --socket "$sock" daemon --config /dev/null >"$work/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do ta apps >/dev/null 2>&1 && break; sleep 0.1; done
ta load "$image" >/dev/null
for i in $(seq 10); do
	cat >"$work/app$i.yaml" <<YAML
name: app$i
version: "1"
containers:
  - name: main
    image: tender.test/workload:latest
    args: ["sleep", "100000"]
    resources: {memory: 16Mi, pids: 16}
YAML
	ta apply -f "$work/app$i.yaml" >/dev/null
done
for _ in $(seq 300); do
	[ "$(ta ps -q | wc -l)" -ge 10 ] && break
	sleep 0.1
done
running=$(ta ps -q | wc -l)
[ "$running" -ge 10 ] || { echo "footprint: only $running of 10 containers run" >&2; cat "$work/daemon.log" >&2; exit 1; }
sleep 5 # let the first rounds settle before measuring idle
ticks() { awk '{print $14 + $15}' "/proc/$dpid/stat"; }
t0=$(ticks)
sleep "$duration"
t1=$(ticks)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$dpid/status")
# The processes that watch containers: one monitor per root (older
# binaries: one shim per container). They share the binary's pages with
# the daemon: their private memory is what they add.
helpers() { pgrep -f "__tender_(shim|monitor)__ $root" || true; }
kb() { awk -v k="^$2:" '$0 ~ k {print $2}' "/proc/$1/smaps_rollup"; }
priv=$(for p in $(helpers); do kb "$p" Private_Dirty; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
# PSS shares each shared page among the processes that map it: the sum
# over the daemon and its helpers is what Tender costs the device, whatever
# the binary's pages. Sampled 5 times, 1 s apart; the median is reported.
pss_sum() { for p in "$dpid" $(helpers); do kb "$p" Pss; done | awk '{s += $1} END {print s}'; }
pss=$(for _ in 1 2 3 4 5; do pss_sum; sleep 1; done | sort -n | sed -n 3p)
nhelpers=$(helpers | wc -l)
size=$(stat -c %s "$agent")
mib() { echo "${1:-0}/1024" | bc -l; }
echo "agent daemon footprint, $running running containers:"
printf "  daemon RSS idle      %6.1f MiB   (target < 20 MiB)\n" "$(mib "$rss")"
printf "  daemon PSS           %6.1f MiB   (anon %.1f, file-backed %.1f: the binary's pages it touched)\n" \
	"$(mib "$(kb "$dpid" Pss)")" "$(mib "$(kb "$dpid" Pss_Anon)")" "$(mib "$(kb "$dpid" Pss_File)")"
printf "  binary (static, stripped) %5.1f MiB   (target < 15 MiB)\n" "$(echo "$size/1048576" | bc -l)"
printf "  CPU idle over %ss   %6.2f%% of one CPU  (%s ticks)\n" "$duration" "$(echo "($t1-$t0)*100/$hz/$duration" | bc -l)" "$((t1 - t0))"
printf "  PSS daemon + %s monitor/shims %6.1f MiB   (target <= 16 MiB; median of 5 samples)\n" "$nhelpers" "$(mib "$pss")"
printf "  monitor/shim private dirty %6.1f MiB each (median; the binary's pages are shared)\n" "$(mib "$priv")"
# containerd beside it: the same image, 10 containers, the same PSS sum.
mkdir -p "$work/ctrd"
cat >"$work/ctrd/config.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
[grpc]
  address = "$work/ctrd/containerd.sock"
TOML
containerd --config "$work/ctrd/config.toml" >"$work/ctrd/log" 2>&1 &
cpid=$!
for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
ctr_ images import --base-name tender.test/workload "$image" >/dev/null
for i in $(seq 10); do
	ctr_ run -d --memory-limit 16777216 tender.test/workload:latest "app$i" /workload sleep 100000 >/dev/null
done
for _ in $(seq 300); do
	[ "$(ctr_ tasks ls | grep -c RUNNING)" -ge 10 ] && break
	sleep 0.1
done
crunning=$(ctr_ tasks ls | grep -c RUNNING || true)
[ "$crunning" -ge 10 ] || { echo "footprint: only $crunning of 10 containerd containers run" >&2; cat "$work/ctrd/log" >&2; exit 1; }
sleep 5
cshims() { pgrep -f "containerd-shim-runc-v2 -namespace default .*-address $work/ctrd/containerd.sock" || true; }
cpss_sum() { for p in "$cpid" $(cshims); do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup"; done | awk '{s += $1} END {print s}'; }
cpss=$(for _ in 1 2 3 4 5; do cpss_sum; sleep 1; done | sort -n | sed -n 3p)
ncshims=$(cshims | wc -l)
cdpss=$(awk '/^Pss:/ {print $2}' "/proc/$cpid/smaps_rollup")
echo "containerd $(containerd --version | awk '{print $3}') (runc), $crunning running containers of the same image (ctr run -d):"
printf "  PSS containerd + %s shims %6.1f MiB   (containerd alone %.1f MiB; median of 5 samples)\n" "$ncshims" "$(echo "$cpss/1024" | bc -l)" "$(echo "$cdpss/1024" | bc -l)"
printf "  tender/containerd PSS %.2f\n" "$(echo "$pss/$cpss" | bc -l)"
