#!/usr/bin/env bash
# The main job until the fleet exists: load the demo image and run it under
# tender-agent with limits, printing each step. Usage: demo.sh AGENT IMAGE ROOT
set -euo pipefail
agent=${1:-build/tender-agent}
image=${2:-build/testimage.tar}
root=${3:-/var/lib/tender}
ta() { echo "+ tender-agent $*" >&2; "$agent" --root "$root" "$@"; }

if [ "$(id -u)" != 0 ]; then
	echo "demo: tender-agent runs containers as root; run 'sudo make run'" >&2
	exit 1
fi
ta version
ta load "$image"
ta images
ta rm -f demo >/dev/null 2>&1 || true

echo; echo "# a one-shot container: identity, capabilities, descriptors"
ta run --rm --name hello tender.test/workload:latest id
ta run --rm tender.test/workload:latest caps
ta run --rm tender.test/workload:latest fds

echo; echo "# limits: 32Mi of memory, allocating 16 MiB works, 64 MiB is OOM-killed (exit 137)"
ta run --rm --memory 32Mi tender.test/workload:latest alloc 16
set +e
ta run --rm --memory 32Mi tender.test/workload:latest alloc 64
echo "exit code: $?"
set -e

echo; echo "# a long-running service under limits (memory 64Mi, half a CPU, 32 pids), on the host network"
ta run -d --name demo --memory 64Mi --cpus 0.5 --pids 32 --net host tender.test/workload:latest serve 127.0.0.1:18080
healthz() { # a plain HTTP GET with bash alone
	exec 3<>/dev/tcp/127.0.0.1/18080 || return 1
	printf 'GET /healthz HTTP/1.0\r\nHost: demo\r\n\r\n' >&3
	tail -n 1 <&3
	exec 3<&-
}
for _ in $(seq 50); do
	out=$(healthz 2>/dev/null) && [ -n "$out" ] && break
	sleep 0.1
done
echo "GET /healthz -> ${out:-no answer}"
ta ps
ta stats
ta logs demo
echo; echo "# the agent daemon: it owns the app configs/apps/web.yaml (health-checked, restarted, rolled back)"
if ! "$agent" --root "$root" apps >/dev/null 2>&1; then
	nohup "$agent" --root "$root" daemon >"$root/daemon.log" 2>&1 &
	for _ in $(seq 100); do "$agent" --root "$root" apps >/dev/null 2>&1 && break; sleep 0.1; done
	echo "started: tender-agent daemon (log: $root/daemon.log)"
fi
ta apply -f "$(dirname "$0")/../configs/apps/web.yaml"
for _ in $(seq 150); do
	"$agent" --root "$root" apps 2>/dev/null | grep -q "^web .* running " && break
	sleep 0.2
done
ta apps

echo
echo "The daemon and the demo container keep running. Look at them with:"
echo "  $agent --root $root apps"
echo "  $agent --root $root ps"
echo "  $agent --root $root logs -f demo"
echo "  $agent --root $root stats"
echo "  $agent --root $root inspect demo"
echo "Stop them with: $agent --root $root rm -f demo; $agent --root $root app rm web; kill the daemon (SIGTERM)"
