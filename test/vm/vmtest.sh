#!/bin/bash
# vmtest.sh [--initramfs-root] GUEST...: boot each GUEST (amd64, arm64,
# armv7) in qemu's software emulation with Debian's kernel, cgroup v2
# only, and run tender-agent check and the tests of test/vm/tests.list in
# it. The results come back over the serial console; the log of a guest
# that failed is printed. Exit 0 only when every guest ran every test and
# all passed.
#
# --initramfs-root keeps the guests on the initramfs (no switch_root), as
# run-from-RAM devices are: the containers' pivot_root then fails with
# EINVAL unless the runtime falls back to moving the root (MS_MOVE).
#
# Environment: VM_TIMEOUT (seconds per guest, 900), VM_TESTS
# (test/vm/tests.list: which test binaries and tests run), and those of
# lib.sh.
set -euo pipefail

cd "$(dirname "$0")/../.."
. test/vm/lib.sh
VM_TIMEOUT=${VM_TIMEOUT:-900}
rootmode=tmpfs
list=test/vm/tests.list
if [ "${1:-}" = --initramfs-root ]; then
	rootmode=initramfs
	list=test/vm/tests-initramfs.list
	shift
fi
VM_TESTS=${VM_TESTS:-$list}
[ $# -gt 0 ] || set -- amd64 arm64 armv7
need_tools

# run GUEST DIR: boot it, wait, check the markers. Prints a summary line.
run() {
	local guest=$1 dir=$2 log=$2/console.log start end rc=0
	# The guest's disk: the device-filter test needs a block device with
	# data on it.
	head -c 4194304 /dev/zero | tr '\0' 'T' >"$dir/disk.img"
	qemu_cmd "$guest" "$dir" "$dir/disk.img" unsafe "tender.root=$rootmode"
	start=$(date +%s.%N)
	timeout --signal=KILL "$VM_TIMEOUT" "${QEMU[@]}" </dev/null >"$log" 2>&1 || rc=$?
	end=$(date +%s.%N)
	tr -d '\r' <"$log" >"$log.txt"
	local wall
	wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	local fail=""
	[ $rc -eq 0 ] || fail="qemu exit $rc$([ $rc -eq 137 ] && echo " (killed after ${VM_TIMEOUT}s)")"
	grep -q 'TENDER-VM BOOTED' "$log.txt" || fail="${fail:+$fail; }no boot marker"
	if ! grep -q '^TENDER-VM DONE rc=0' "$log.txt"; then
		fail="${fail:+$fail; }$(grep '^TENDER-VM DONE' "$log.txt" || echo "no DONE marker")"
	fi
	local want got
	want=$(grep -cv '^[[:space:]]*\(#\|$\)' "$VM_TESTS")
	got=$(grep -c '^TENDER-VM TEST ' "$log.txt" || true)
	[ "$got" -eq "$want" ] || fail="${fail:+$fail; }$got of $want test binaries reported"
	if grep -q '^TENDER-VM TEST .* rc=[1-9]' "$log.txt"; then
		fail="${fail:+$fail; }$(grep '^TENDER-VM TEST .* rc=[1-9]' "$log.txt" | awk '{ print $3, $4 }' | paste -sd, -)"
	fi
	grep -o 'TENDER-VM \(BOOTED\|CGROUP\|CHECK\|TEST\|DONE\).*' "$log.txt" | sed "s/^/[$guest] /"
	grep -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL)' "$log.txt" | sed "s/^/[$guest]   /"
	if [ -n "$fail" ]; then
		echo "[$guest] FAILED ($rootmode root, ${wall}s): $fail"
		echo "[$guest] ---- console log ($log.txt) ----"
		cat "$log.txt"
		echo "[$guest] ---- end of console log ----"
		return 1
	fi
	echo "[$guest] ok ($rootmode root, ${wall}s wall)"
}

status=0
for guest in "$@"; do
	goenv "$guest" >/dev/null
	dir=$BUILD/vm/$guest
	mkdir -p "$dir"
	t0=$(date +%s)
	build_initramfs "$guest" "$dir" ./test/e2e ./runtime/cgroups ./agent/daemon
	echo "[$guest] initramfs $(du -m "$dir/initramfs.cpio" | cut -f1) MiB built in $(($(date +%s) - t0))s"
	run "$guest" "$dir" || status=1
done
exit $status
