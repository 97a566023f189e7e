#!/bin/sh
# mkblob.sh GOARCH...: builds the container's small init (cmd/tender-init)
# for each GOARCH (arm means GOARM=7, as the agent's builds) into
# blob/init-GOARCH.gz and blob/init-GOARCH.sha256 beside this script, for
# an agent built with -tags tender_small_init to embed. Run from anywhere;
# GO names the go command (default go).
#
# The init is built without inlining (-gcflags=all=-l): 5% smaller, and
# what it runs is system calls, not hot loops; and without VCS stamps, so
# that the blob only changes when the init's code does. Writes go through a private
# temporary directory and rename, so that concurrent runs from one tree
# (whose builds are identical with -trimpath) never leave a torn file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dir=$here/blob
tmp=$(mktemp -d "$dir/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for arch in "$@"; do
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=7 "${GO:-go}" build -trimpath -buildvcs=false -gcflags=all=-l \
		-ldflags "-s -w" -o "$tmp/init-$arch" ./cmd/tender-init)
	sha256sum <"$tmp/init-$arch" | cut -c1-64 >"$tmp/init-$arch.sha256"
	gzip -9n <"$tmp/init-$arch" >"$tmp/init-$arch.gz"
	mv -f "$tmp/init-$arch.gz" "$dir/init-$arch.gz"
	mv -f "$tmp/init-$arch.sha256" "$dir/init-$arch.sha256"
done
