#!/usr/bin/env bash
# test_bench_settings.sh - bench/run.sh refuses a bad BENCH_* setting before it
# builds or starts anything: exit 2 and a message that names the setting and
# what it allows. A good niceness or freshness fleet gets past its check to
# the scale's, which comes next (given a bad scale here, so nothing runs).
# Usage: test_bench_settings.sh <repo root>
set -uo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
fail=0
expect() { # expect WANT_RC WANT_TEXT VAR=VALUE...
  local want_rc=$1 want=$2 out rc
  shift 2
  out=$(env "$@" bash "$ROOT/bench/run.sh" 2>&1 </dev/null)
  rc=$?
  if [[ $rc -eq $want_rc && $out == *"$want"* ]]; then
    echo "ok   $*: exit $rc, \"$want\""
  else
    echo "FAIL $*: exit $rc (want $want_rc), output: $out"
    fail=1
  fi
}
for v in high -1 20 100 1.5; do
  expect 2 "BENCH_SIM_NICE must be a niceness from 0 to 19, not '$v'" BENCH_SIM_NICE="$v"
done
expect 2 "BENCH_SCALE must be full or quick" BENCH_SCALE=huge
for v in 0 -5 many 1.5 10000001 123456789; do
  expect 2 "BENCH_FRESH_PRODUCTS must be a fleet size from 1 to 10000000, not '$v'" BENCH_FRESH_PRODUCTS="$v"
done
# accepted VAR VALUE: a good value gets past its own check to the scale's,
# which comes after every setting's check (given a bad scale, so nothing runs).
accepted() {
  local out
  out=$(env "$1=$2" BENCH_SCALE=huge bash "$ROOT/bench/run.sh" 2>&1 </dev/null)
  if [[ $out == *"$1"* || $out != *"BENCH_SCALE must be full or quick"* ]]; then
    echo "FAIL $1=$2 refused: $out"
    fail=1
  else
    echo "ok   $1=$2 accepted"
  fi
}
for v in 0 10 19; do accepted BENCH_SIM_NICE "$v"; done
for v in 1 20 10000000; do accepted BENCH_FRESH_PRODUCTS "$v"; done
exit $fail
