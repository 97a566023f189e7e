#!/bin/sh
# Propagation benchmark (issue 5): time from publishing a signed desired
# document to the container running and the matching report received,
# image already present, median and p99 over N updates (default 100), each
# changing an env var so a new container starts. Embedded broker (mochi),
# the real daemon, as root. Target: p99 < 300 ms.
#
#   test/bench/propagation.sh [N]
set -eu
cd "$(dirname "$0")/../e2e"
N=${1:-100}
TENDER_BENCH_PROPAGATION=$N exec go test -count=1 -run '^TestBench_Propagation$' -v . 2>&1 | grep -E 'propagation over|^(ok|FAIL|---)'
