#!/bin/sh
# install.sh — install tender-agent on a host without a package manager
# (or where no package fits), from a release directory: the binary of
# this host's architecture, checked against SHA256SUMS, its config and its
# systemd unit or OpenWrt procd script.
#
#   sh install.sh [OPTIONS]             install or upgrade (configs are kept)
#   sh install.sh --uninstall           remove the binary and the unit; keep
#                                       configs and /var/lib/tender
#   sh install.sh --uninstall --purge   also the configs and the state, but
#                                       never the apps' volumes nor anything
#                                       a running container uses
#
# Options:
#   --from DIR      the release directory (default: this script's)
#   --root DIR      install under DIR (an image being built); nothing is
#                   started, systemctl --root enables the unit if it can
#   --arch ARCH     amd64, arm64, armv7 or riscv64 (default: uname -m)
#   --init KIND     systemd, procd or none (default: what the host runs)
#   --prefix DIR    where bin/ goes (default /usr/local; /usr with procd)
#   --no-start      install and enable, do not start
#
# Every file taken from the release directory must be listed in its
# SHA256SUMS and match, or nothing is installed. Exit codes: 0 done, 1 bad
# input or a check failed, 2 an install step failed.
set -eu

prog=install.sh
say() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit "${2:-1}"; }

from=$(dirname "$0")
root=
arch=
init=
prefix=
start=yes
action=install
purge=no

while [ $# -gt 0 ]; do
	case $1 in
	--from) [ $# -ge 2 ] || die "--from needs a directory"; from=$2; shift ;;
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift ;;
	--arch) [ $# -ge 2 ] || die "--arch needs amd64, arm64, armv7 or riscv64"; arch=$2; shift ;;
	--init) [ $# -ge 2 ] || die "--init needs systemd, procd or none"; init=$2; shift ;;
	--prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift ;;
	--no-start) start=no ;;
	--uninstall) action=uninstall ;;
	--purge) purge=yes ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
[ "$purge" = no ] || [ "$action" = uninstall ] || die "--purge goes with --uninstall"
case $root in
"" | /) root= ;;
/*) root=${root%/} ;;
*) die "--root $root: must be an absolute path" ;;
esac
[ -n "$root" ] && start=no
[ "$(id -u)" = 0 ] || [ -n "$root" ] || die "run as root (or with --root DIR for an image)"

# The host's architecture, in the release's names.
if [ -z "$arch" ]; then
	m=$(uname -m)
	case $m in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	armv7* | armv8l) arch=armv7 ;;
	riscv64) arch=riscv64 ;;
	*) die "this machine is $m: tender-agent is built for x86_64, aarch64, armv7 and riscv64 (use --arch to choose)" ;;
	esac
fi
case $arch in
amd64 | arm64 | armv7 | riscv64) ;;
*) die "--arch $arch: want amd64, arm64, armv7 or riscv64" ;;
esac

# The init system of the target: OpenWrt's procd, systemd, or none.
if [ -z "$init" ]; then
	if [ -f "$root/etc/openwrt_release" ] || { [ -x "$root/sbin/procd" ] && [ -f "$root/etc/rc.common" ]; }; then
		init=procd
	elif [ -z "$root" ] && [ -d /run/systemd/system ]; then
		init=systemd
	elif [ -n "$root" ] && { [ -x "$root/lib/systemd/systemd" ] || [ -x "$root/usr/lib/systemd/systemd" ]; }; then
		init=systemd
	else
		init=none
	fi
fi
case $init in
systemd | procd | none) ;;
*) die "--init $init: want systemd, procd or none" ;;
esac
if [ -z "$prefix" ]; then
	if [ "$init" = procd ]; then prefix=/usr; else prefix=/usr/local; fi
fi
case $prefix in /*) prefix=${prefix%/} ;; *) die "--prefix $prefix: must be an absolute path" ;; esac

bin=$prefix/bin/tender-agent
unit=/etc/systemd/system/tender-agent.service
initd=/etc/init.d/tender-agent
uci=/etc/config/tender-agent
conf=/etc/tender/agent.yaml
policy=/etc/tender/policy.yaml
state=/var/lib/tender

# BEGIN purge_state — also the .deb's postrm purge (packaging/mkpkg copies
# it from here). Keeps $1/volumes (the apps' data) always, and while any
# container of this state directory still runs (their container monitor
# outlives the agent, and a removed agent leaves them running): its directory, the
# image store (its layers are the containers' lower layers) and the app
# lock directories. Removes the rest. Never crosses into a mount point.
purge_state() {
	dir=$1
	[ -d "$dir" ] || return 0
	running=
	add_running() {
		case " $running " in *" $1 "*) ;; *) running="$running $1" ;; esac
	}
	# A running container: a state.json that says running with a live pid
	# (the root's container monitor keeps it so until the container ends).
	for s in "$dir"/containers/*/state.json; do
		[ -f "$s" ] || continue
		grep -q '"status": "running"' "$s" || continue
		pid=$(sed -n 's/^  "pid": \([0-9][0-9]*\),*$/\1/p' "$s")
		if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then continue; fi
		id=${s%/state.json}
		add_running "${id##*/}"
	done
	mounted() { # is anything mounted at or under $1?
		awk -v p="$1" '$5 == p || index($5, p "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
	}
	remove() {
		if mounted "$1"; then
			printf 'tender-agent: kept %s: something is mounted in it\n' "$1"
			return 0
		fi
		rm -rf "$1"
	}
	for e in "$dir"/* "$dir"/.[!.]*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		case ${e##*/} in
		volumes) continue ;;
		images | locks) [ -n "$running" ] && continue ;;
		containers)
			if [ -n "$running" ]; then
				for c in "$e"/* "$e"/.[!.]*; do
					[ -e "$c" ] || [ -L "$c" ] || continue
					case " $running " in *" ${c##*/} "*) continue ;; esac
					[ "${c##*/}" = .lock ] && continue
					remove "$c"
				done
				continue
			fi
			;;
		esac
		remove "$e"
	done
	if [ -n "$running" ]; then
		n=$(echo "$running" | wc -w)
		printf 'tender-agent: %s container(s) of %s still run:%s\n' "$n" "$dir" "$running"
		printf 'tender-agent: kept their directories, %s/images and %s/locks; once they are stopped (or after a reboot) remove them by hand\n' "$dir" "$dir"
	fi
	if [ -d "$dir/volumes" ]; then
		rmdir "$dir/volumes" 2>/dev/null || printf 'tender-agent: kept %s/volumes: the apps'\'' data; remove it by hand when no app needs it\n' "$dir"
	fi
	rmdir "$dir" 2>/dev/null || true
}
# END purge_state

# check FILE...: every file must be listed in SHA256SUMS and match.
check() {
	[ -f "$from/SHA256SUMS" ] || die "$from/SHA256SUMS: missing: cannot check what would be installed"
	if command -v sha256sum >/dev/null 2>&1; then
		sum() { sha256sum "$1" | awk '{ print $1 }'; }
	elif command -v openssl >/dev/null 2>&1; then
		sum() { openssl dgst -sha256 "$1" | awk '{ print $NF }'; }
	else
		die "neither sha256sum nor openssl: cannot check the files"
	fi
	for f in "$@"; do
		[ -f "$from/$f" ] || die "$from/$f: missing"
		want=$(awk -v f="$f" '{ n = $2; sub(/^\*/, "", n) } n == f { print $1; exit }' "$from/SHA256SUMS")
		[ -n "$want" ] || die "$f: not listed in $from/SHA256SUMS"
		got=$(sum "$from/$f")
		[ "$got" = "$want" ] || die "$f: checksum mismatch (SHA256SUMS says $want, the file is $got): not installing anything"
	done
}

# put SRC DST MODE: install a file atomically (a running binary stays valid).
put() {
	mkdir -p "$(dirname "$root$2")"
	cp "$1" "$root$2.new.$$" || die "copy $1 to $root$2 failed" 2
	chmod "$3" "$root$2.new.$$"
	mv -f "$root$2.new.$$" "$root$2" || die "install $root$2 failed" 2
}

# keep SRC DST MODE: install a config file unless one is there already.
keep() {
	if [ -e "$root$2" ]; then
		say "kept $root$2 (yours); the shipped one is $1"
	else
		put "$1" "$2" "$3"
	fi
}

if [ "$action" = install ]; then
	files="tender-agent-linux-$arch agent.yaml policy.yaml"
	case $init in
	systemd) files="$files tender-agent.service" ;;
	procd) files="$files tender-agent.init tender-agent.uci" ;;
	esac
	# shellcheck disable=SC2086 # a list of plain names
	check $files
	say "checked $files against SHA256SUMS"

	put "$from/tender-agent-linux-$arch" "$bin" 0755
	mkdir -p "$root/etc/tender"
	chmod 0755 "$root/etc/tender"
	keep "$from/agent.yaml" "$conf" 0600
	keep "$from/policy.yaml" "$policy" 0644
	case $init in
	systemd)
		tmp=$(mktemp)
		sed "s|/usr/bin/tender-agent|$bin|" "$from/tender-agent.service" >"$tmp"
		put "$tmp" "$unit" 0644
		rm -f "$tmp"
		if [ -z "$root" ]; then
			systemctl daemon-reload
			systemctl enable tender-agent.service
			if [ "$start" = yes ]; then systemctl restart tender-agent.service; fi
		elif command -v systemctl >/dev/null 2>&1; then
			systemctl --root="$root" enable tender-agent.service
		else
			say "enable it in the image: systemctl enable tender-agent.service"
		fi
		;;
	procd)
		tmp=$(mktemp)
		sed "s|^PROG=.*|PROG=$bin|" "$from/tender-agent.init" >"$tmp"
		put "$tmp" "$initd" 0755
		rm -f "$tmp"
		keep "$from/tender-agent.uci" "$uci" 0644
		if [ -z "$root" ]; then
			"$initd" enable
			if [ "$start" = yes ]; then "$initd" restart; fi
		else
			mkdir -p "$root/etc/rc.d"
			ln -sf ../init.d/tender-agent "$root/etc/rc.d/S99tender-agent"
			ln -sf ../init.d/tender-agent "$root/etc/rc.d/K10tender-agent"
		fi
		;;
	none)
		say "no systemd or procd here: start the agent yourself, e.g. from your init: $bin daemon --config $conf"
		;;
	esac
	say "installed $bin ($arch, init: $init)"
	exit 0
fi

# --uninstall
case $init in
systemd)
	if [ -z "$root" ]; then
		systemctl disable --now tender-agent.service 2>/dev/null || true
	elif command -v systemctl >/dev/null 2>&1; then
		systemctl --root="$root" disable tender-agent.service 2>/dev/null || true
	fi
	rm -f "$root$unit"
	[ -n "$root" ] || systemctl daemon-reload || true
	;;
procd)
	if [ -z "$root" ] && [ -x "$initd" ]; then
		"$initd" stop || true
		"$initd" disable || true
	fi
	rm -f "$root$initd" "$root/etc/rc.d/S99tender-agent" "$root/etc/rc.d/K10tender-agent"
	;;
esac
rm -f "$root$bin"
say "removed $root$bin; containers that still run keep running"
if [ "$purge" = yes ]; then
	rm -f "$root$conf" "$root$policy" "$root$uci" \
		"$root/etc/tender/device.key" "$root/etc/tender/device.pem" "$root/etc/tender/fleet-ca.pem"
	rmdir "$root/etc/tender" 2>/dev/null || true
	purge_state "$root$state"
	say "purged the configs and $root$state"
else
	say "kept $root/etc/tender and $root$state (--purge removes them)"
fi
