#!/bin/bash
# fetch.sh GUEST DIR: Debian's kernel, the kernel modules the guest needs
# and a static busybox for GUEST (amd64, arm64, armv7), into DIR:
#
#   DIR/vmlinuz   the kernel, as qemu's -kernel takes it
#   DIR/kver      its release (6.1.0-NN-amd64)
#   DIR/busybox   Debian's busybox-static for the guest's arch
#   DIR/modules/  lib/modules/KVER/... with the modules of MODULES and
#                 what they depend on (no modules.dep: the guest's
#                 busybox depmod writes it at boot)
#   DIR/config    the kernel's config, to look things up
#
# Nothing is installed: the packages are downloaded with apt-get download
# and unpacked with dpkg-deb -x. A foreign architecture is added only for
# the download and removed again. Everything is cached: a DIR that holds
# all of it is left alone.
set -euo pipefail

guest=${1:?usage: fetch.sh GUEST DIR}
dir=${2:?usage: fetch.sh GUEST DIR}

case $guest in
amd64) deb=amd64 kpkg=linux-image-amd64 ;;
arm64) deb=arm64 kpkg=linux-image-arm64 ;;
armv7) deb=armhf kpkg=linux-image-armmp-lpae ;;
*) echo "fetch.sh: unknown guest $guest (amd64, arm64, armv7)" >&2; exit 1 ;;
esac

# Modules the guests load (the rest the tests need is built into Debian's
# kernels): overlay for the containers' root filesystems, virtio-blk for
# the block device of the device-filter test and the agent's state disk,
# ext4 for that disk.
# ext4 for that disk, and crc32c_generic, which ext4 asks the crypto API
# for (no module dependency names it).
MODULES="overlay virtio_blk virtio_pci virtio_mmio ext4 crc32c_generic"

if [ -s "$dir/vmlinuz" ] && [ -s "$dir/busybox" ] && [ -s "$dir/kver" ] && [ -d "$dir/modules" ] &&
	[ "$(cat "$dir/modules.want" 2>/dev/null)" = "$MODULES" ]; then
	exit 0
fi

host=$(dpkg --print-architecture)
work=$(mktemp -d "${TMPDIR:-/tmp}/tender-vm-fetch.XXXXXX")
chmod 0755 "$work" # apt-get download hands the file to its _apt user
added=""
cleanup() {
	rm -rf "$work"
	if [ -n "$added" ]; then dpkg --remove-architecture "$added" 2>/dev/null || true; fi
}
trap cleanup EXIT

qual=""
if [ "$deb" != "$host" ]; then
	qual=":$deb"
	if ! dpkg --print-foreign-architectures | grep -qx "$deb"; then
		dpkg --add-architecture "$deb"
		added=$deb
	fi
fi

# One apt-get update when the package lists do not know the packages (yet).
# A foreign index that fails to download (a mirror's armhf index of the
# wrong size was seen) must not fail the build when what is needed came.
if ! apt-cache show "$kpkg$qual" >/dev/null 2>&1 || ! apt-cache show "busybox-static$qual" >/dev/null 2>&1; then
	apt-get update -qq || echo "fetch.sh: apt-get update failed; trying the downloads anyway" >&2
fi
kver_pkg=$(apt-cache depends "$kpkg$qual" | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n1)
if [ -z "$kver_pkg" ]; then
	echo "fetch.sh: $kpkg$qual names no versioned kernel package" >&2
	exit 1
fi
if ! (cd "$work" && apt-get download -qq "$kver_pkg$qual" "busybox-static$qual" 2>"$work/apt.err"); then
	cat "$work/apt.err" >&2
	echo "fetch.sh: apt-get download $kver_pkg$qual busybox-static$qual failed" >&2
	exit 1
fi

mkdir -p "$work/k" "$work/b"
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/b"
kver=$(ls "$work/k/lib/modules")
mods=$work/k/lib/modules/$kver

# The modules of MODULES and their dependencies, by the depends= field of
# each module's .modinfo section (NUL-separated key=value strings; read
# as bytes, so a foreign module reads as well as a native one).
declare -A want=()
add() {
	local name=$1 f dep
	name=${name//-/_}
	[ -n "${want[$name]:-}" ] && return 0
	f=$(find "$mods/kernel" -name "$name.ko" -o -name "$name.ko.xz" | head -n1)
	if [ -z "$f" ]; then
		# Built in (modules.builtin names it) or absent: nothing to copy.
		return 0
	fi
	want[$name]=$f
	for dep in $(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -n1 | tr , ' '); do
		add "$dep"
	done
}
for m in $MODULES; do add "$m"; done

rm -rf "$dir.new"
mkdir -p "$dir.new/modules/lib/modules/$kver"
for name in "${!want[@]}"; do
	f=${want[$name]}
	rel=${f#"$mods"/}
	mkdir -p "$dir.new/modules/lib/modules/$kver/$(dirname "$rel")"
	case $f in
	*.xz) xz -dc "$f" >"$dir.new/modules/lib/modules/$kver/${rel%.xz}" ;;
	*) cp "$f" "$dir.new/modules/lib/modules/$kver/$rel" ;;
	esac
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
	[ -f "$mods/$f" ] && cp "$mods/$f" "$dir.new/modules/lib/modules/$kver/"
done
cp "$work"/k/boot/vmlinuz-* "$dir.new/vmlinuz"
cp "$work"/k/boot/config-* "$dir.new/config"
cp "$work/b/bin/busybox" "$dir.new/busybox"
echo "$kver" >"$dir.new/kver"
echo "$MODULES" >"$dir.new/modules.want"
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "fetch.sh: $guest: kernel $kver, modules: ${!want[*]}"
