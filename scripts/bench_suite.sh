#!/usr/bin/env bash
# The suite's wall time, install included, old and new commits alternated on this machine.
#
#   bash scripts/bench_suite.sh OLD_COMMIT NEW_COMMIT [ROUNDS]
#
# Each run is `make test` in a fresh clone with a new user's clean environment (as
# .ci/run), so the venv is built from nothing each time. Prints one line per run and
# keeps each log in /tmp/bench-suite/. Timings here vary 2x from day to day: compare
# the two commits within one invocation only.
set -euo pipefail
old=${1:?old commit}
new=${2:?new commit}
rounds=${3:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=/tmp/bench-suite
mkdir -p "$out"
for round in $(seq "$rounds"); do
  for rev in "$old" "$new"; do
    dir=$(mktemp -d /tmp/bench-suite/clone-XXXX)
    git clone -q "$repo" "$dir"
    git -C "$dir" checkout -q "$rev"
    start=$(date +%s)
    if (cd "$dir" && env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin \
          bash .ci/run >"$out/$rev-$round.log" 2>&1); then rc=0; else rc=$?; fi
    end=$(date +%s)
    summary=$(grep -E "passed|failed" "$out/$rev-$round.log" | tail -1)
    echo "round $round $rev: $((end - start)) s, exit $rc: $summary"
    rm -rf "$dir"
  done
done
