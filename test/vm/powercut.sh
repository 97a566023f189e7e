#!/bin/bash
# powercut.sh [ROUNDS [SEED]]: reboots and power cuts of an amd64 guest
# whose agent keeps its state on a virtio disk (ext4 on a raw image, qemu
# cache=writeback), with no network. powercut-guest.sh is the guest's side.
#
#  1. install: the test image loaded, app web version 1 applied; a clean
#     shutdown (the daemon stopped with SIGTERM, the disk unmounted).
#  2. reboot: the guest boots, the agent starts from its state and must
#     run version 1 again; then a clean shutdown again.
#  3. ROUNDS (20) power cuts: each boot settles (reports what runs), then
#     applies version N; the host kills qemu with SIGKILL at a random
#     moment 0-VM_CUT_MAX_MS (6000) ms after the apply was issued (every
#     third one within 300 ms: during the apply's own writes). The
#     moments come from SEED (the same seed, the same moments; the guest's
#     speed still varies). The next boot must run, in one container, a
#     version the agent was told: the one being applied at the cut or the
#     one that ran before it.
#  4. a last boot reports the last cut's outcome; e2fsck checks the disk.
#
# Counted: state files set aside as corrupt (agent.db.corrupt-*), rounds
# where the cut version won, where the previous one stayed. Exit 0 when
# every boot ran a version it was told, in exactly one container.
set -euo pipefail

cd "$(dirname "$0")/../.."
. test/vm/lib.sh
rounds=${1:-20}
seed=${2:-20261130}
VM_CUT_MAX_MS=${VM_CUT_MAX_MS:-6000}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
need_tools
command -v mkfs.ext4 >/dev/null || { echo "powercut: mkfs.ext4 missing (e2fsprogs)" >&2; exit 1; }

guest=amd64
dir=$BUILD/vm/powercut
mkdir -p "$dir"
build_initramfs "$guest" "$dir"
disk=$dir/state.img
rm -f "$disk"
truncate -s 512M "$disk"
mkfs.ext4 -q -F "$disk"

RANDOM=$seed
fail=0
pid=""

# boot STEP LOG: start the guest in the background with tender.step=STEP.
boot() {
	qemu_cmd "$guest" "$dir" "$disk" writeback "tender.mode=powercut tender.step=$1"
	"${QEMU[@]}" </dev/null >"$2" 2>&1 &
	pid=$!
}

# wait_for LOG PATTERN SECONDS: until LOG has a line matching PATTERN, or
# the guest ended, or SECONDS passed. Status 0 when the line came.
wait_for() {
	local log=$1 pattern=$2 n=$(($3 * 10))
	while [ $n -gt 0 ]; do
		if tr -d '\r' <"$log" | grep -aq "$pattern"; then return 0; fi
		kill -0 "$pid" 2>/dev/null || { tr -d '\r' <"$log" | grep -aq "$pattern"; return; }
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# finish: wait for the guest to power off by itself (bounded).
finish() {
	local n=$((BOOT_TIMEOUT * 10))
	while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
	if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
	wait "$pid" 2>/dev/null || true
}

# app LOG: the POWERCUT-APP fields of a boot, as "version phase containers running_versions".
app() {
	tr -d '\r' <"$1" | grep -ao 'TENDER-VM POWERCUT-APP .*' | head -n1 |
		sed 's/.*version=\([^ ]*\) desired=[^ ]* phase=\([^ ]*\) containers=\([^ ]*\) running_versions=\([^ ]*\).*/\1 \2 \3 \4/'
}

bad() {
	echo "powercut: FAIL: $*"
	echo "---- console log $log ----"
	tr -d '\r' <"$log"
	echo "---- end ----"
	fail=1
}

# 1. install, 2. reboot.
for step in install reboot; do
	log=$dir/$step.log
	boot "$step" "$log"
	finish
	read -r v phase n running _ <<<"$(app "$log") - - - -"
	echo "powercut: $step: version $v $phase, $n container(s) running version(s) $running; $(tr -d '\r' <"$log" | grep -ao 'POWERCUT-OFF.*' | head -n1)"
	if [ "$v" != 1 ] || [ "$phase" != running ] || [ "$n" != 1 ] || [ "$running" != 1 ]; then
		bad "$step: want version 1 running in one container"
	fi
done
[ $fail -eq 0 ] || exit 1

# 3. the cuts.
prev=1
cut_won=0
prev_stayed=0
declare -a moments=()
for r in $(seq 1 "$rounds"); do
	v=$((r + 1))
	log=$dir/cut-$r.log
	boot "update:$v" "$log"
	if ! wait_for "$log" "POWERCUT-APPLYING version=$v" "$BOOT_TIMEOUT"; then
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		bad "round $r: the guest never started applying version $v"
		break
	fi
	# Every third cut falls within the first 300 ms, while the apply
	# itself writes the state (it returns after about 100-250 ms here).
	if [ $((r % 3)) -eq 0 ]; then ms=$((RANDOM % 300)); else ms=$((RANDOM % VM_CUT_MAX_MS)); fi
	moments+=("$ms")
	sleep "$(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')"
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	done_marker=$(tr -d '\r' <"$log" | grep -ao 'POWERCUT-\(APPLIED\|UPDATED\) .*' | tail -n1 || true)
	# What ran at the start of this boot is the outcome of the last cut.
	read -r got phase n running _ <<<"$(app "$log") - - - -"
	corrupt=$(tr -d '\r' <"$log" | grep -ao 'corrupt_files=[0-9]*' | head -n1 | cut -d= -f2)
	echo "powercut: round $r: booted running version $got ($phase, $n container(s), versions $running; corrupt files ${corrupt:-?}); applied $v, cut after ${ms} ms (${done_marker:-before the apply returned})"
	if [ "$r" -gt 1 ]; then
		if [ "$got" = "$last_cut" ]; then cut_won=$((cut_won + 1)); elif [ "$got" = "$prev" ]; then prev_stayed=$((prev_stayed + 1)); fi
		if [ "$got" != "$last_cut" ] && [ "$got" != "$prev" ]; then
			bad "round $r: version $got runs; the agent was told $prev, then $last_cut"
		fi
		prev=$got
	fi
	if [ "$n" != 1 ] || [ "$running" != "$got" ]; then
		bad "round $r: want one container of version $got, got $n running $running"
	fi
	last_cut=$v
done

# 4. the outcome of the last cut, then the disk.
log=$dir/final.log
boot check "$log"
finish
read -r got phase n running _ <<<"$(app "$log") - - - -"
corrupt=$(tr -d '\r' <"$log" | grep -ao 'corrupt_files=[0-9]*' | head -n1 | cut -d= -f2)
echo "powercut: final boot: version $got ($phase, $n container(s), versions $running); state files set aside as corrupt: ${corrupt:-?}"
if [ "$got" = "${last_cut:-}" ]; then cut_won=$((cut_won + 1)); elif [ "$got" = "$prev" ]; then prev_stayed=$((prev_stayed + 1)); else bad "final: version $got runs; the agent was told $prev, then ${last_cut:-}"; fi
if [ "$n" != 1 ] || [ "$running" != "$got" ]; then bad "final: want one container of version $got, got $n running $running"; fi
fsck=$(e2fsck -fn "$disk" 2>&1 | tail -n1) || true
echo "powercut: e2fsck -fn: $fsck"
echo "powercut: seed $seed, $rounds cuts at ${moments[*]} ms after the apply: the cut version ran after $cut_won, the previous one after $prev_stayed; state files set aside as corrupt: ${corrupt:-?}"
exit $fail
