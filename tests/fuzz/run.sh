#!/usr/bin/env bash
# run.sh - runs every libFuzzer target for a bounded time on a copy of its
# seed corpus (tests/fuzz/corpus/<target without fuzz_>/) and prints its executions.
#   tests/fuzz/run.sh BUILD_DIR          (built with -DTWIN_FUZZ=ON)
# TWIN_FUZZ_SECONDS: seconds per target (default 60). Exit 1 when any target
# finds a crash, a leak or a sanitizer report; the reproducer is kept under
# BUILD_DIR/fuzz-artifacts/<target>/ (rerun: BUILD_DIR/bin/<target> FILE).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:?usage: run.sh BUILD_DIR}
SECS=${TWIN_FUZZ_SECONDS:-60}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
declare -A MAXLEN=([fuzz_envelope]=16384 [fuzz_decode]=4096 [fuzz_config]=8192 [fuzz_http]=8192)
declare -A DICT=([fuzz_config]=$HERE/config.dict)
rc=0
for t in fuzz_envelope fuzz_decode fuzz_config fuzz_http; do
  work=$BUILD/fuzz-work/$t art=$BUILD/fuzz-artifacts/$t
  rm -rf "$work" "$art" && mkdir -p "$work" "$art"
  cp "$HERE/corpus/${t#fuzz_}"/* "$work/"
  log=$BUILD/fuzz-$t.log
  "$BUILD/bin/$t" -max_total_time="$SECS" -max_len="${MAXLEN[$t]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" ${DICT[$t]:+-dict="${DICT[$t]}"} "$work" >"$log" 2>&1
  st=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  if ((st != 0)); then
    rc=1
    echo "$t: FAILED after ${execs:-?} executions (exit $st); reproducer: $(ls "$art" | head -n1)"
    grep -m1 -A30 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY' "$log"
  else
    echo "$t: ${execs:-?} executions in ${SECS} s, no crash (${cov:-cov ?}, corpus $(ls "$work" | wc -l) inputs)"
  fi
done
exit $rc
