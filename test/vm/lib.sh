# shellcheck shell=bash disable=SC2046,SC2054,SC2034
# (GOARCH words split on purpose; commas are qemu's; QEMU is for the caller.)
# lib.sh: what vmtest.sh and powercut.sh share (sourced, not run): the
# guests' Go architectures, their initramfs and their qemu command lines.
#
# Environment: GO (go), BUILD (build), TESTIMAGE (the multi-arch test
# image, BUILD/testimage-multiarch.tar), VM_SMP (1), VM_MEM (1024M),
# VM_CPU (qemu's -cpu; per guest by default), VM_AGENT_SRC (the checkout
# the agent is built from; this one by default).

GO=${GO:-go}
BUILD=${BUILD:-build}
TESTIMAGE=${TESTIMAGE:-$BUILD/testimage-multiarch.tar}
VM_SMP=${VM_SMP:-1}
VM_MEM=${VM_MEM:-1024M}
export CGO_ENABLED=0

# need_tools: qemu for every guest, cpio, and the test image.
need_tools() {
	local tool
	for tool in qemu-system-x86_64 qemu-system-aarch64 qemu-system-arm cpio; do
		command -v "$tool" >/dev/null || { echo "vmtest: $tool missing (make vm-deps installs it)" >&2; exit 1; }
	done
	[ -s "$TESTIMAGE" ] || { echo "vmtest: no $TESTIMAGE (make testimage builds it)" >&2; exit 1; }
}

# goenv GUEST: the GOARCH (and GOARM) of a guest.
goenv() {
	case $1 in
	amd64) echo "GOARCH=amd64" ;;
	arm64) echo "GOARCH=arm64" ;;
	armv7) echo "GOARCH=arm GOARM=7" ;;
	*) echo "vmtest: unknown guest $1 (amd64, arm64, armv7)" >&2; return 1 ;;
	esac
}

# kernel GUEST: the directory of the guest's kernel, modules and busybox
# (fetch.sh fills it once).
kernel() { echo "$BUILD/vm/kernel-$1"; }

# build_initramfs GUEST DIR [PKG...]: DIR/initramfs.cpio of the guest: its
# kernel's modules, busybox, /init, the agent and the test image for its
# arch, and the test binaries of the Go packages PKG (go test -c) under
# /tender/tests as NAME.test.
build_initramfs() {
	local guest=$1 dir=$2 root=$2/root pkg k
	shift 2
	k=$(kernel "$guest")
	./test/vm/fetch.sh "$guest" "$k"
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tender/tests" "$root/lib"
	# Static binaries for the guest's arch, as make cross builds them. The
	# agent comes from VM_AGENT_SRC, another checkout of the module, when
	# given (to try a branch's runtime in the guests).
	local out
	out=$(cd "$root/tender" && pwd)/tender-agent
	# With its small init (cmd/tender-init) built for the guest's arch and
	# embedded, as the Makefile builds it; so are the test binaries.
	local ga
	ga=$(env $(goenv "$guest") "$GO" env GOARCH)
	(cd "${VM_AGENT_SRC:-.}" && GO=$GO ./runtime/initproc/initbin/mkblob.sh "$ga" &&
		env $(goenv "$guest") "$GO" build -tags tender_small_init -trimpath -ldflags "-s -w -X main.version=vmtest" -o "$out" ./cmd/tender-agent)
	if [ -n "${VM_AGENT_SRC:-}" ]; then GO=$GO ./runtime/initproc/initbin/mkblob.sh "$ga"; fi
	for pkg in "$@"; do
		env $(goenv "$guest") "$GO" test -c -tags tender_small_init -trimpath -ldflags "-s -w" -o "$root/tender/tests/$(basename "$pkg").test" "$pkg"
	done
	cp "$TESTIMAGE" "$root/tender/testimage.tar"
	cp "$k/busybox" "$root/bin/busybox"
	cp -a "$k/modules/lib/modules" "$root/lib/"
	cp test/vm/init "$root/init"
	cp test/vm/powercut-guest.sh "$root/tender/powercut-guest.sh"
	chmod 0755 "$root/init" "$root/bin/busybox" "$root/tender/powercut-guest.sh"
	printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\ndaemon:x:1:\ntty:x:5:\napp:x:1000:\n' >"$root/etc/group"
	if [ -n "${VM_TESTS:-}" ]; then cp "$VM_TESTS" "$root/tender/tests.list"; fi
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$dir/initramfs.cpio"
}

# qemu_cmd GUEST DIR DISK CACHE APPEND: the qemu command line of the guest
# into the array QEMU: DISK as its virtio disk (/dev/vda) with qemu's
# cache mode CACHE, APPEND added to the kernel's command line (cgroup v2
# only, no network).
qemu_cmd() {
	local guest=$1 dir=$2 disk=$3 cache=$4 append
	append="panic=-1 loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 random.trust_cpu=on random.trust_bootloader=on $5"
	local common=(-m "$VM_MEM" -smp "$VM_SMP" -nographic -no-reboot -nic none
		-kernel "$(kernel "$guest")/vmlinuz" -initrd "$dir/initramfs.cpio"
		-drive "file=$disk,format=raw,if=none,id=d0,cache=$cache" -device virtio-blk-pci,drive=d0)
	case $guest in
	amd64) QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -cpu "${VM_CPU:-max}" "${common[@]}" -append "console=ttyS0 $append") ;;
	arm64) QEMU=(qemu-system-aarch64 -machine virt -cpu "${VM_CPU:-cortex-a72}" "${common[@]}" -append "console=ttyAMA0 $append") ;;
	armv7) QEMU=(qemu-system-arm -machine virt -cpu "${VM_CPU:-cortex-a15}" "${common[@]}" -append "console=ttyAMA0 $append") ;;
	esac
}
