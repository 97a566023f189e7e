#!/bin/sh
# powercut-guest.sh: the guest's side of make vmtest-powercut (see
# powercut.sh), run by /init when the kernel command line says
# tender.mode=powercut. The agent's state lives on the virtio disk
# /dev/vda (ext4), mounted at /var/lib/tender; /run is a fresh tmpfs at
# every boot, as on a device, and there is no network.
#
# Every boot: start the daemon from its state and report, in TENDER-VM
# lines, what it runs once it has settled; then the step the host asked
# for with tender.step=:
#   install   the first boot: load the test image, apply version 1
#   update:N  apply version N, say APPLYING, and wait to be killed
#   reboot    stop the daemon (SIGTERM, as systemd does), unmount, power off
#   check     report only, then power off
say() { echo "TENDER-VM $*"; }
param() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }

state=/var/lib/tender
root=$state/root
sock=/run/tender/agent.sock
agent() { /tender/tender-agent --root "$root" --socket "$sock" "$@"; }

mkdir -p "$state" /run/tender
if ! mount -t ext4 -o noatime /dev/vda "$state"; then
	say "POWERCUT-ERROR the state disk does not mount"
	dmesg | tail -n 20
	poweroff -f
fi
step=$(param tender.step)
say "POWERCUT-BOOT step=$step"

# The app: an HTTP server with a health check, its version in the
# environment. The start period lets an emulated CPU start the server.
app() {
	cat <<EOF
name: web
version: "$1"
containers:
  - name: server
    image: tender.test/workload:latest
    args: ["serve", "127.0.0.1:8080"]
    env: {VERSION: "$1"}
    resources: {memory: 32Mi, pids: 32}
    restart: always
    health: {http: "http://127.0.0.1:8080/healthz", interval: 500ms, timeout: 3s, retries: 3, startPeriod: 30s}
rollout:
  healthyFor: 2s
EOF
}

[ -f "$state/agent.yaml" ] || printf 'reconcileInterval: 500ms\n' >"$state/agent.yaml"
# Not through agent(): $! must be the daemon, not a subshell.
/tender/tender-agent --root "$root" --socket "$sock" daemon --config "$state/agent.yaml" >>/run/agent.log 2>&1 &
daemon=$!
i=0
until agent apps >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 $daemon 2>/dev/null; then
		say "POWERCUT-ERROR the daemon does not answer"
		cat /run/agent.log
		poweroff -f
	fi
	sleep 0.1
done
say "POWERCUT-DAEMON up after $i polls corrupt_files=$(ls "$root"/agent.db.corrupt-* 2>/dev/null | wc -l)"

# settle [VERSION]: wait until the app is running (confirmed) or rolled
# back, with a container running (and at VERSION, when given), then report
# the version the agent says and the ones its running containers carry.
settle() {
	i=0
	while :; do
		line=$(agent apps 2>/dev/null | awk '$1 == "web" { print $2, $3, $4 }')
		# shellcheck disable=SC2086 # the fields, split on purpose
		set -- $line
		ids=$(agent ps -q --no-trunc 2>/dev/null)
		case ${3:-} in
		running) [ -n "$ids" ] && { [ -z "$want" ] || [ "$1" = "$want" ]; } && break ;;
		rolled-back) [ -n "$ids" ] && break ;;
		esac
		i=$((i + 1))
		if [ $i -gt 1200 ]; then
			say "POWERCUT-ERROR web did not settle: ${line:-no app}"
			agent apps
			agent ps -a
			tail -n 40 /run/agent.log
			return 1
		fi
		sleep 0.2
	done
	envs=""
	for id in $ids; do
		envs="$envs$(agent inspect "$id" | grep -o '"VERSION=[0-9]*"' | tr -d '"' | sed 's/VERSION=//') "
	done
	say "POWERCUT-APP version=$1 desired=$2 phase=$3 containers=$(echo $ids | wc -w) running_versions=$(echo $envs | tr ' ' ,) after_polls=$i"
}
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

want=""
case $step in
install)
	agent load /tender/testimage.tar >/dev/null || say "POWERCUT-ERROR load"
	app 1 >/run/app.yaml
	agent apply -f /run/app.yaml || say "POWERCUT-ERROR apply 1"
	settle || true
	sync
	say "POWERCUT-INSTALLED"
	;;
update:*)
	settle || true
	v=${step#update:}
	app "$v" >/run/app.yaml
	t0=$(ms)
	say "POWERCUT-APPLYING version=$v"
	agent apply -f /run/app.yaml >/dev/null 2>&1
	say "POWERCUT-APPLIED version=$v after_ms=$(($(ms) - t0))"
	# The host kills qemu at a moment of its choosing; until then the
	# update goes on.
	want=$v
	settle || true
	say "POWERCUT-UPDATED version=$v after_ms=$(($(ms) - t0))"
	sleep 600
	;;
reboot)
	settle || true
	kill -TERM $daemon
	wait $daemon
	say "POWERCUT-STOPPED daemon exit=$?"
	;;
*)
	settle || true
	;;
esac
# A shutdown: every process goes (containers included, as at a real
# power-off), then the containers' mounts and the state disk.
kill -TERM -1 2>/dev/null
sleep 1
kill -KILL -1 2>/dev/null
sleep 0.5
for m in $(awk -v s="$state/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r); do
	umount "$m" 2>/dev/null || umount -l "$m"
done
sync
if umount "$state"; then
	say "POWERCUT-OFF clean"
else
	say "POWERCUT-OFF state disk busy"
fi
poweroff -f
