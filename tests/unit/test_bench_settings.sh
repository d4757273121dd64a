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
# Accepted fleet sizes reach the next check, the scale's.
for v in 1 20 10000000; do
  out=$(env BENCH_FRESH_PRODUCTS=$v BENCH_SCALE=huge bash "$ROOT/bench/run.sh" 2>&1 </dev/null)
  if [[ $out == *BENCH_FRESH_PRODUCTS* || $out != *"BENCH_SCALE must be full or quick"* ]]; then
    echo "FAIL BENCH_FRESH_PRODUCTS=$v refused: $out"
    fail=1
  else
    echo "ok   BENCH_FRESH_PRODUCTS=$v accepted"
  fi
done
# Accepted niceness values reach the next check (the scale), not the niceness one.
for v in 0 10 19; do
  out=$(env BENCH_SIM_NICE=$v BENCH_SCALE=huge bash "$ROOT/bench/run.sh" 2>&1 </dev/null)
  if [[ $out == *BENCH_SIM_NICE* || $out != *"BENCH_SCALE must be full or quick"* ]]; then
    echo "FAIL BENCH_SIM_NICE=$v refused: $out"
    fail=1
  else
    echo "ok   BENCH_SIM_NICE=$v accepted"
  fi
done
exit $fail
