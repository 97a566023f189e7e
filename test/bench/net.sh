#!/usr/bin/env bash
# Bridge network benchmark (issue 14), inside a network namespace of its
# own (the "host"), with a second one as a LAN client: nothing of the
# machine's own network is touched.
#   1. start latency: `run --rm IMAGE exit 0` with --net none and with
#      --net bridge, alternating, ROUNDS each; the medians and their
#      difference (the cost of the veth, the lease and the rules);
#   2. throughput of 512 MiB over HTTP from a container: through a published
#      port (DNAT) from the LAN namespace and from the host's loopback
#      (hairpin), against the same server in the host's network (--net
#      host) read over loopback and from the LAN; the ratios.
#
# Usage: test/bench/net.sh [ROUNDS]   (default 30; needs root)
#   AGENT=path IMAGE=path override build/tender-agent and build/testimage.tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-30}
agent=${AGENT:-$PWD/build/tender-agent}
image=${IMAGE:-$PWD/build/testimage.tar}
img=tender.test/workload:latest
if [ ! -x "$agent" ] || [ ! -f "$image" ]; then echo "bench: run make build testimage first" >&2; exit 1; fi
command -v curl >/dev/null || { echo "bench: curl missing (make deps)" >&2; exit 1; }

work=$(mktemp -d /tmp/tender-netbench.XXXXXX)
host=tnbh$$ lan=tnbl$$
cleanup() {
	nsenter --net=/var/run/netns/$host "$agent" --root "$work/root" rm -f hostsrv bridgesrv >/dev/null 2>&1 || true
	ip netns del $host 2>/dev/null || true
	ip netns del $lan 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
ip netns add $host; ip netns add $lan
ip -n $host link set lo up; ip -n $lan link set lo up
ip -n $host link add hlan type veth peer name eth0 netns $lan
ip -n $host addr add 192.168.77.1/24 dev hlan; ip -n $host link set hlan up
ip -n $lan addr add 192.168.77.2/24 dev eth0; ip -n $lan link set eth0 up
H() { nsenter --net=/var/run/netns/$host "$@"; }
L() { nsenter --net=/var/run/netns/$lan "$@"; }
A() { H "$agent" --root "$work/root" "$@"; }
A load "$image" >/dev/null
# One bridged start first: the bridge and tables exist from then on, as on
# a device that runs bridged apps.
A run --rm --net bridge $img exit 0

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
: > "$work/none"; : > "$work/bridge"
for _ in $(seq "$rounds"); do
	ms A run --rm --net none $img exit 0 >> "$work/none"
	ms A run --rm --net bridge $img exit 0 >> "$work/bridge"
done
none=$(median < "$work/none"); bridge=$(median < "$work/bridge")
echo "start latency, median of $rounds: --net none ${none} ms, --net bridge ${bridge} ms, extra $(awk -v a="$bridge" -v b="$none" 'BEGIN{print a-b}') ms"

A run -d --name hostsrv --net host $img serve 0.0.0.0:9100 >/dev/null
A run -d --name bridgesrv --net bridge -p 9101:80 $img serve 0.0.0.0:80 >/dev/null
for u in http://127.0.0.1:9100/ http://127.0.0.1:9101/; do
	for _ in $(seq 100); do H curl -sf -o /dev/null "$u" && break; sleep 0.05; done
done
speed() { # MiB/s, best of 3
	for _ in 1 2 3; do "$@" curl -sf -o /dev/null -w '%{speed_download}\n' "$url"; done | sort -n | tail -1 | awk '{printf "%.0f", $1/1048576}'
}
url=http://127.0.0.1:9100/zero/512;    hl=$(speed H)
url=http://127.0.0.1:9101/zero/512;    bl=$(speed H)
url=http://192.168.77.1:9100/zero/512; hn=$(speed L)
url=http://192.168.77.1:9101/zero/512; bn=$(speed L)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo "throughput, 512 MiB over HTTP, best of 3:"
echo "  from the host:      --net host ${hl} MiB/s, published port (hairpin) ${bl} MiB/s, ratio $(ratio "$bl" "$hl")"
echo "  from a LAN client:  --net host ${hn} MiB/s, published port (DNAT)    ${bn} MiB/s, ratio $(ratio "$bn" "$hn")"
