#!/usr/bin/env bash
# Image pull benchmark: pull and unpack the test image from the same
# loopback registry (Debian's docker-registry, plain HTTP) with
# `tender-agent pull` versus `skopeo copy docker://… oci:DIR` followed by
# `umoci unpack`, each into an empty store/directory every round. Rounds
# interleave the two so drift in this VM's speed hits both alike. Prints
# the median wall time of each, their ratio, and the peak resident memory
# (/usr/bin/time -v "Maximum resident set size"; for skopeo+umoci the
# larger of the two processes), and tender's peak against umoci's (issue
# 15). Most of tender's peak is its own binary's pages: see make size.
#
# Usage: test/bench/pull.sh [ROUNDS]   (default 10; needs root,
# docker-registry, skopeo, umoci, time: make deps; and make build testimage)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-10}
agent=${AGENT:-$PWD/build/tender-agent}
image=$PWD/build/testimage.tar
for tool in /usr/bin/docker-registry skopeo umoci /usr/bin/time; do
	command -v $tool >/dev/null || { echo "bench: $tool missing (make deps)" >&2; exit 1; }
done
[ -x "$agent" ] && [ -f "$image" ] || { echo "bench: run make build testimage first" >&2; exit 1; }

work=$(mktemp -d /tmp/tender-pullbench.XXXXXX)
regpid=
cleanup() { [ -n "$regpid" ] && kill "$regpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A free loopback port, then the registry on it.
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
addr=127.0.0.1:$port
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $addr}
YML
/usr/bin/docker-registry serve "$work/registry.yml" 2>"$work/registry.log" &
regpid=$!
for _ in $(seq 100); do
	curl -fsS "http://$addr/v2/" >/dev/null 2>&1 && break
	kill -0 "$regpid" || { cat "$work/registry.log" >&2; exit 1; }
	sleep 0.1
done
ref=$addr/tender/workload:latest
go run ./test/bench/pushimage -insecure "$image" "$ref"
cat > "$work/agent.yaml" <<YML
registries:
  "$addr": {insecure: true}
YML

# measure NAME CMD...: appends wall ms and max RSS KiB.
declare -A ms rss
measure() {
	local name=$1; shift
	/usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || { echo "bench: $name failed: $*" >&2; cat "$work/err.txt" >&2; exit 1; }
	local wall kib
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%d", s*1000}' "$work/time.txt")
	kib=$(awk -F': ' '/Maximum resident set size/{print $2}' "$work/time.txt")
	ms[$name]+="$wall "; rss[$name]+="$kib "
}
for r in $(seq "$rounds"); do
	rm -rf "$work/agent" "$work/oci" "$work/bundle"; mkdir -p "$work/agent"
	measure tender "$agent" --root "$work/agent" pull -q --config "$work/agent.yaml" "$ref"
	measure skopeo skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/oci:latest"
	measure umoci umoci unpack --image "$work/oci:latest" "$work/bundle"
done

python3 - "${ms[tender]}" "${ms[skopeo]}" "${ms[umoci]}" "${rss[tender]}" "${rss[skopeo]}" "${rss[umoci]}" "$rounds" <<'PY'
import statistics as st, sys
t, s, u, rt, rs, ru = ([int(x) for x in a.split()] for a in sys.argv[1:7])
su = [a + b for a, b in zip(s, u)]
mt, msu = st.median(t), st.median(su)
print(f"pull+unpack of the test image from a loopback registry, {sys.argv[7]} interleaved rounds (median wall ms)")
print(f"  tender-agent pull        {mt:8.0f} ms   peak RSS {max(rt)/1024:6.1f} MiB")
print(f"  skopeo copy + umoci      {msu:8.0f} ms   peak RSS {max(max(rs), max(ru))/1024:6.1f} MiB"
      f"   (skopeo {st.median(s):.0f} ms / {max(rs)/1024:.1f} MiB, umoci {st.median(u):.0f} ms / {max(ru)/1024:.1f} MiB)")
print(f"  ratio tender/skopeo+umoci {mt/msu:.2f}")
# Issue 15's memory target: tender's peak at most umoci's (the unpacking half).
print(f"  peak RSS tender/umoci {max(rt)/max(ru):.2f} (target: at most 1)")
PY
