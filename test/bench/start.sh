#!/usr/bin/env bash
# Container lifecycle benchmark: create, start, wait and delete a container
# running `exit 0`, with tender-agent (run --rm), crun (run) and runc (run)
# on the same root filesystem (the test image's), side by side: each round
# runs A B C in turn, so drift in this VM's speed hits all three alike.
# Every runtime runs in a private mount namespace where the cgroup2 mount's
# cgroup.controllers is hidden (crun refuses hybrid cgroups otherwise; see
# shared/PEERS.md); nothing outside that namespace changes.
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

# The same image for everyone: tender-agent loads the archive; crun and runc
# get its layers unpacked into one bundle rootfs.
"$agent" --root "$root" load "$image" >/dev/null
bundle=$work/bundle; mkdir -p "$bundle/rootfs"
mkdir -p "$work/oci" && tar -xf "$image" -C "$work/oci"
manifest=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$work/oci/index.json")
for layer in $(python3 -c 'import json,sys;[print(l["digest"].split(":")[1]) for l in json.load(open(sys.argv[1]))["layers"]]' "$work/oci/blobs/sha256/$manifest"); do
	tar -xzf "$work/oci/blobs/sha256/$layer" -C "$bundle/rootfs"
done
(cd "$bundle" && crun spec >/dev/null)
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["/workload", "exit", "0"]
c["process"]["terminal"] = False
c["root"]["readonly"] = False
json.dump(c, open(p, "w"))
PY

# ns CMD...: run CMD with the cgroup2 controllers file hidden.
ns() { unshare --mount --propagation private sh -c 'mount --bind "$0" /sys/fs/cgroup/unified/cgroup.controllers && exec "$@"' "$empty" "$@"; }
now() { date +%s%N; }
declare -A times
i=0
run_one() { # name cmd...
	local name=$1; shift
	local t0 t1
	t0=$(now); ns "$@" >/dev/null 2>&1 || { echo "bench: $name failed: $*" >&2; ns "$@"; exit 1; }; t1=$(now)
	times[$name]+="$(( (t1 - t0) / 1000 )) "
}
# Warm up each once (page cache, memfd copy paths).
"$agent" --root "$root" run --rm tender.test/workload:latest exit 0
for r in $(seq "$rounds"); do
	run_one tender "$agent" --root "$root" run --rm tender.test/workload:latest exit 0
	run_one crun crun run --bundle "$bundle" "bench-crun-$r"
	run_one runc runc run --bundle "$bundle" "bench-runc-$r"
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f %.1f %.1f\n", m/1000, a[1]/1000, a[NR]/1000}'; }
echo "lifecycle of 'exit 0' (create, start, wait, delete), $rounds rounds, ms: median (min-max)"
declare -A med
for name in tender crun runc; do
	read -r m lo hi < <(echo "${times[$name]}" | stats)
	med[$name]=$m
	printf "  %-7s %7s  (%s-%s)\n" "$name" "$m" "$lo" "$hi"
done
awk -v t="${med[tender]}" -v c="${med[crun]}" -v r="${med[runc]}" 'BEGIN {printf "  tender/crun %.2f   tender/runc %.2f   crun/runc %.2f\n", t/c, t/r, c/r}'
