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
# Environment: GO (go), BUILD (build), TESTIMAGE (the multi-arch test
# image, BUILD/testimage-multiarch.tar), VM_SMP (1), VM_MEM (1024M),
# VM_TIMEOUT (seconds per guest, 900), VM_TESTS (test/vm/tests.list).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
BUILD=${BUILD:-build}
TESTIMAGE=${TESTIMAGE:-$BUILD/testimage-multiarch.tar}
VM_SMP=${VM_SMP:-1}
VM_MEM=${VM_MEM:-1024M}
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_TESTS=${VM_TESTS:-test/vm/tests.list}
export CGO_ENABLED=0

rootmode=tmpfs
if [ "${1:-}" = --initramfs-root ]; then
	rootmode=initramfs
	shift
fi
[ $# -gt 0 ] || set -- amd64 arm64 armv7

for tool in qemu-system-x86_64 qemu-system-aarch64 qemu-system-arm cpio; do
	command -v "$tool" >/dev/null || { echo "vmtest: $tool missing (make vmtest installs it)" >&2; exit 1; }
done
[ -s "$TESTIMAGE" ] || { echo "vmtest: no $TESTIMAGE (make testimage builds it)" >&2; exit 1; }

# goenv GUEST: the GOARCH (and GOARM) of a guest.
goenv() {
	case $1 in
	amd64) echo "GOARCH=amd64" ;;
	arm64) echo "GOARCH=arm64" ;;
	armv7) echo "GOARCH=arm GOARM=7" ;;
	*) echo "vmtest: unknown guest $1 (amd64, arm64, armv7)" >&2; return 1 ;;
	esac
}

# build GUEST DIR: the initramfs DIR/initramfs.cpio of the guest.
build() {
	local guest=$1 dir=$2 root=$2/root
	./test/vm/fetch.sh "$guest" "$dir/kernel"
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tender/tests" "$root/lib"
	# The binaries, static, for the guest's arch (as make cross builds them).
	env $(goenv "$guest") "$GO" build -trimpath -ldflags "-s -w -X main.version=vmtest" -o "$root/tender/tender-agent" ./cmd/tender-agent
	env $(goenv "$guest") "$GO" test -c -trimpath -ldflags "-s -w" -o "$root/tender/tests/e2e.test" ./test/e2e
	env $(goenv "$guest") "$GO" test -c -trimpath -ldflags "-s -w" -o "$root/tender/tests/cgroups.test" ./runtime/cgroups
	env $(goenv "$guest") "$GO" test -c -trimpath -ldflags "-s -w" -o "$root/tender/tests/daemon.test" ./agent/daemon
	cp "$TESTIMAGE" "$root/tender/testimage.tar"
	cp "$VM_TESTS" "$root/tender/tests.list"
	cp "$dir/kernel/busybox" "$root/bin/busybox"
	cp -a "$dir/kernel/modules/lib/modules" "$root/lib/"
	cp test/vm/init "$root/init"
	chmod 0755 "$root/init" "$root/bin/busybox"
	printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\ndaemon:x:1:\ntty:x:5:\napp:x:1000:\n' >"$root/etc/group"
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$dir/initramfs.cpio"
	# The guest's disk: the device-filter test needs a block device with
	# data on it.
	rm -f "$dir/disk.img"
	head -c 4194304 /dev/zero | tr '\0' 'T' >"$dir/disk.img"
}

# qemu_cmd GUEST DIR: the qemu command line of the guest, into QEMU.
qemu_cmd() {
	local guest=$1 dir=$2 append
	append="panic=-1 loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 random.trust_cpu=on random.trust_bootloader=on tender.root=$rootmode"
	local common=(-m "$VM_MEM" -smp "$VM_SMP" -nographic -no-reboot -nic none
		-kernel "$dir/kernel/vmlinuz" -initrd "$dir/initramfs.cpio"
		-drive "file=$dir/disk.img,format=raw,if=none,id=d0,cache=unsafe" -device virtio-blk-pci,drive=d0)
	case $guest in
	amd64) QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -cpu "${VM_CPU:-max}" "${common[@]}" -append "console=ttyS0 $append") ;;
	arm64) QEMU=(qemu-system-aarch64 -machine virt -cpu "${VM_CPU:-cortex-a72}" "${common[@]}" -append "console=ttyAMA0 $append") ;;
	armv7) QEMU=(qemu-system-arm -machine virt -cpu "${VM_CPU:-cortex-a15}" "${common[@]}" -append "console=ttyAMA0 $append") ;;
	esac
}

# run GUEST DIR: boot it, wait, check the markers. Prints a summary line.
run() {
	local guest=$1 dir=$2 log=$2/console.log start end rc=0
	qemu_cmd "$guest" "$dir"
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
	build "$guest" "$dir"
	echo "[$guest] initramfs $(du -m "$dir/initramfs.cpio" | cut -f1) MiB built in $(($(date +%s) - t0))s"
	run "$guest" "$dir" || status=1
done
exit $status
