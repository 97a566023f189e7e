#!/bin/sh
# What the agent binary weighs and what weighs in it: the stripped size of
# build/tender-agent for each gateway architecture (built by `make cross`,
# the Makefile's flags), then, from an unstripped build for this machine,
# the packages whose symbols take the most room, and whether the linker
# could drop unused methods. A report: it never fails on a size.
#
#   test/bench/size.sh [TOP]      TOP packages listed (default 25)
set -eu
cd "$(dirname "$0")/../.."
top=${1:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0

mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

echo "== stripped tender-agent per architecture (budget: under 15 MiB; aim: 12 MiB)"
make -s BUILD="$tmp" cross >/dev/null
for f in "$tmp"/tender-agent-linux-*; do
	b=$(stat -c %s "$f")
	printf '  %-8s %10d bytes  %s\n' "${f##*-linux-}" "$b" "$(mib "$b")"
done

# The same flags without -s -w, to keep the symbol table; -dumpdep shows
# why the linker kept what it kept.
make -s BUILD="$tmp" LDFLAGS="-X main.version=size -dumpdep" "$tmp/tender-agent" >/dev/null 2>"$tmp/dumpdep"
bin="$tmp/tender-agent"
go tool nm -size "$bin" >"$tmp/nm"
bss=$(awk '$4 == "runtime.bss" { print $1 }' "$tmp/nm")

echo
echo "== top $top packages by symbol size ($(go env GOARCH), text+rodata+data, bss left out)"
# A symbol's package: its name without type:/go:itab. prefixes, cut before
# the first ( [ or , and before the first dot after the last slash.
awk -v bss="$bss" '
function hex(h,   i, v) { v = 0; h = tolower(h); for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
function pkgof(n,   i, p) {
	sub(/^type:\.(eq|hash)\./, "", n); sub(/^type:/, "", n); sub(/^go:itab\./, "", n)
	sub(/^go:(string|func|cuinfo|info|map)\.?/, "", n)
	while (substr(n, 1, 1) == "*") n = substr(n, 2)
	i = match(n, /[\[\( ,;]/); if (i > 0) n = substr(n, 1, i - 1)
	p = ""; i = match(n, /\/[^\/]*$/)
	if (i > 0) { p = substr(n, 1, i); n = substr(n, i + 1) }
	i = index(n, "."); if (i == 0) return "(no-package:closures,data)"
	return p substr(n, 1, i - 1)
}
BEGIN { limit = hex(bss) }
NF >= 4 && hex($1) < limit { sz[pkgof($4)] += $2; total += $2 }
END {
	for (p in sz) printf "%d %s\n", sz[p], p
	printf "%d (all symbols)\n", total
}' "$tmp/nm" | sort -rn | awk -v top="$top" '
NR == 1 { total = $1; printf "  %10d  %s\n", $1, "all symbols"; next }
NR <= top + 1 { printf "  %10d  %5.1f%%  %s\n", $1, 100 * $1 / total, $2 }'

echo
echo "== by module (sum of its packages), top 15"
awk -v bss="$bss" '
function hex(h,   i, v) { v = 0; h = tolower(h); for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
BEGIN { limit = hex(bss) }
NF >= 4 && hex($1) < limit && $4 ~ /^(type:\*?)?[a-z0-9.-]+\.[a-z]+\// {
	n = $4; sub(/^type:\*?/, "", n); split(n, a, "/")
	if (a[1] ~ /^(github\.com|golang\.org|gopkg\.in)$/) { sub(/\..*$/, "", a[3]); m = a[1] "/" a[2] "/" a[3] }
	else { sub(/\..*$/, "", a[2]); m = a[1] "/" a[2] }
	sz[m] += $2
}
END { for (m in sz) printf "%d %s\n", sz[m], m }' "$tmp/nm" | sort -rn | head -15 | awk '{ printf "  %10d  %s\n", $1, $2 }'

echo
echo "== dead-code elimination of methods"
# One function that calls reflect Method/MethodByName with a computed
# name makes the linker keep every exported method of every reachable
# type. dumpdep marks such functions <ReflectMethod>; reflect's own
# Methods iterators are only a problem if something names "Methods".
# In the order the linker reached them: the first is the cause.
rm_syms=$(grep -o -- '-> [^ ]* <[A-Za-z]*ReflectMethod>' "$tmp/dumpdep" | awk '!seen[$2]++ { print $2 }')
if [ -z "$rm_syms" ]; then
	echo "  full: no reachable function asks reflect for methods by computed name"
else
	echo "  DISABLED (every exported method of reachable types is kept), by $(echo "$rm_syms" | wc -l) functions, first:"
	echo "$rm_syms" | head -8 | sed 's/^/    /'
	echo "  why: go build -ldflags=-dumpdep ./cmd/tender-agent 2>&1 | whydeadcode (github.com/aarzilli/whydeadcode)"
fi
