#!/usr/bin/env bash
# Footprint of the agent daemon: its resident memory while idle with 10
# running containers, the size of the static binary, and the CPU it uses
# idle over a minute (DURATION seconds). Also the shims' memory, for scale.
# Usage: test/bench/footprint.sh [DURATION]   (needs root; make build testimage)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-60}
agent=$PWD/build/tender-agent
image=$PWD/build/testimage.tar
[ -x "$agent" ] && [ -f "$image" ] || { echo "footprint: run make build testimage first" >&2; exit 1; }
work=$(mktemp -d /tmp/tender-footprint.XXXXXX)
root=$work/state sock=$work/agent.sock
ta() { "$agent" --root "$root" --socket "$sock" "$@"; }
cleanup() {
	# The daemon first: it would restart what is removed under it.
	[ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
	for id in $(ta ps -a -q --no-trunc 2>/dev/null); do ta rm -f "$id" >/dev/null 2>&1 || true; done
	rm -rf "$work"
}
trap cleanup EXIT
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
# Shims share the binary's pages: their private memory is what each costs.
shims=$(for p in $(pgrep -f "__tender_shim__ $root"); do awk '/^Private_Dirty/ {print $2}' "/proc/$p/smaps_rollup"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
# PSS shares each shared page among the processes that map it: the sum
# over the daemon and every shim is what Tender costs the device, whatever
# the binary's pages. Sampled 5 times, 1 s apart; the median is reported.
pss_sum() { for p in "$dpid" $(pgrep -f "__tender_shim__ $root"); do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup"; done | awk '{s += $1} END {print s}'; }
pss=$(for _ in 1 2 3 4 5; do pss_sum; sleep 1; done | sort -n | sed -n 3p)
nshims=$(pgrep -fc "__tender_shim__ $root")
size=$(stat -c %s "$agent")
echo "agent daemon footprint, $running running containers:"
printf "  daemon RSS idle      %6.1f MiB   (target < 20 MiB)\n" "$(echo "$rss/1024" | bc -l)"
printf "  binary (static, stripped) %5.1f MiB   (target < 15 MiB)\n" "$(echo "$size/1048576" | bc -l)"
printf "  CPU idle over %ss   %6.2f%% of one CPU  (%s ticks)\n" "$duration" "$(echo "($t1-$t0)*100/$hz/$duration" | bc -l)" "$((t1 - t0))"
printf "  PSS daemon + %s shims %6.1f MiB   (target <= 16 MiB; median of 5 samples)\n" "$nshims" "$(echo "$pss/1024" | bc -l)"
printf "  shim private memory  %6.1f MiB each (median; the binary's pages are shared)\n" "$(echo "${shims:-0}/1024" | bc -l)"
