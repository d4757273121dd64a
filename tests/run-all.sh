#!/usr/bin/env bash
# run-all.sh - everything CI checks, from a fresh clone on Debian 12:
#   1. install missing packages (deploy/local/install-deps.sh)
#   2. configure + build build/ (Ninja, RelWithDebInfo)
#   3. clang-format-14 check of every .c/.h file
#   4. the local stack up (Kafka + FerretDB, deploy/local/stack.sh)
#   5. ctest in build/: unit tests (parallel)
#   6. ASan+UBSan build in build-asan/: unit and integration tests, the
#      crash scenarios included (the tests start build-asan's sanitized
#      binaries; a report fails the test); the fault suite runs there too, last
#   7. TSan build in build-tsan/, tests labelled "tsan" (the reducer and the
#      multi-shard engine tests, running build-tsan's engine)
#   8. libFuzzer targets (clang-14, ASan+UBSan) in build-fuzz/, each run for
#      TWIN_FUZZ_SECONDS (default 60) on tests/fuzz/corpus; any crash fails
#   9. ctest in build/: every other test (serial), then the fault suite
#      (tests/faults, label "faults"; in build-asan/ unless the sanitizer
#      builds were skipped), which restarts the servers, last
# and takes the stack down at the end, also on failure, but only the parts it
# started itself. Exit code 0 only when every step passed.
#
# Environment: TWIN_KAFKA_PORT, TWIN_MONGO_PORT, TWIN_STACK_DIR (see
# deploy/local/stack.sh); TWIN_SKIP_SANITIZERS=1 skips steps 6-8 (quick local runs);
# TWIN_FUZZ_SECONDS: seconds per fuzz target (default 60).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
STACK_SH=$REPO/deploy/local/stack.sh
export TWIN_KAFKA_BOOTSTRAP=${TWIN_KAFKA_BOOTSTRAP:-127.0.0.1:${TWIN_KAFKA_PORT:-9092}}
export TWIN_MONGO_URI=${TWIN_MONGO_URI:-mongodb://127.0.0.1:${TWIN_MONGO_PORT:-27017}}
JOBS=$(nproc 2>/dev/null || echo 2)

T_START=$SECONDS
STARTED_AT=$(mktemp) # its mtime: files newer than it were written by this run
RESULTS=()   # "status|seconds|name"
FAILED=0
TESTS_PASSED=0
TESTS_FAILED=0
STARTED=()   # stack components this run started
SUMMARY_DONE=0
FAULTS_TSV=build/faults-summary.tsv # the fault suite's table, written by its ctest run

banner() { printf '\n==== %s ====\n' "$*"; }

# step NAME CMD...: runs CMD, records pass/fail and time; never aborts the run.
step() {
  local name=$1 t0=$SECONDS rc
  shift
  banner "$name"
  "$@"
  rc=$?
  if ((rc == 0)); then
    RESULTS+=("PASS|$((SECONDS - t0))|$name")
  else
    RESULTS+=("FAIL|$((SECONDS - t0))|$name (exit $rc)")
    FAILED=1
  fi
  return $rc
}

skip() { RESULTS+=("SKIP|0|$1"); }

# run_ctest DIR ARGS...: ctest with its output shown; adds its counts to the totals.
run_ctest() {
  local dir=$1 out rc p f wrap=()
  shift
  # GCC 12's TSan cannot map its shadow memory under high ASLR entropy
  # (vm.mmap_rnd_bits > 28 on newer kernels): run it with ASLR off.
  [[ $dir == build-tsan ]] && wrap=(setarch "$(uname -m)" -R)
  out=$(mktemp)
  (cd "$dir" && "${wrap[@]}" ctest --output-on-failure --no-tests=error "$@") 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  # "100% tests passed, 0 tests failed out of 12"
  f=$(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\1/p' "$out" | tail -n1)
  p=$(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\2/p' "$out" | tail -n1)
  if [[ -n $p ]]; then
    TESTS_FAILED=$((TESTS_FAILED + f))
    TESTS_PASSED=$((TESTS_PASSED + p - f))
  elif ((rc != 0)); then
    TESTS_FAILED=$((TESTS_FAILED + 1))
  fi
  rm -f "$out"
  return "$rc"
}

configure_and_build() { # DIR [cmake args...]
  local dir=$1
  shift
  cmake -S "$REPO" -B "$REPO/$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
    ninja -C "$REPO/$dir"
}

format_check() {
  local files=() bad=() f
  while IFS= read -r f; do files+=("$f"); done < <(
    find . \( -path ./.git -o -path './build*' -o -path ./.stack \) -prune -o \
      -type f \( -name '*.c' -o -name '*.h' \) -print | sort
  )
  for f in "${files[@]}"; do
    clang-format-14 --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("${f#./}")
  done
  if ((${#bad[@]})); then
    echo "clang-format-14: ${#bad[@]} of ${#files[@]} files are not formatted:"
    printf '  %s\n' "${bad[@]}"
    echo "fix with: clang-format-14 -i ${bad[*]}"
    return 1
  fi
  echo "clang-format-14: all ${#files[@]} files formatted"
}

stack_up() {
  local c
  for c in kafka ferretdb; do
    "$STACK_SH" status "$c" >/dev/null 2>&1 || STARTED+=("$c")
  done
  "$STACK_SH" up
}

summary() {
  ((SUMMARY_DONE)) && return
  SUMMARY_DONE=1
  banner "summary"
  local r
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r st secs name <<<"$r"
    printf '  %-4s %5ss  %s\n' "$st" "$secs" "$name"
  done
  printf '  total %ss\n' "$((SECONDS - T_START))"
  # The fault suite's table (tests/faults/), written by this run's ctest.
  if [[ -s $FAULTS_TSV && $FAULTS_TSV -nt $STARTED_AT ]]; then
    tests/faults/summary.sh "$FAULTS_TSV" || true
  fi
  if ((FAILED)); then echo "run-all: FAILED"; else echo "run-all: all steps passed"; fi
  echo "tests: $TESTS_PASSED passed, $TESTS_FAILED failed"
}

cleanup() {
  if ((${#STARTED[@]})); then
    banner "stack down (${STARTED[*]})"
    "$STACK_SH" down "${STARTED[@]}" || FAILED=1
  fi
  summary
  rm -f "$STARTED_AT"
}
trap cleanup EXIT
trap 'echo "run-all: interrupted" >&2; FAILED=1; exit 130' INT TERM

# ---- 1-3: dependencies, build, format ----------------------------------------------
step "install dependencies" "$REPO/deploy/local/install-deps.sh" || exit 1
step "build (build/, RelWithDebInfo)" configure_and_build build || exit 1
step "format (clang-format-14)" format_check

# ---- 4-5: stack + all tests ------------------------------------------------------
step "stack up" stack_up
step "unit tests (build/)" run_ctest build -L unit -j "$JOBS"

# ---- 6-8: sanitizers and fuzzing (before the fault suite, which restarts the
# broker and FerretDB) ---------------------------------------------------------------
# CI has 90 minutes on 2 cores: under the sanitizers test_engine's kill -9
# scenario runs on a shorter stream (sanitized engines consume several times
# slower; the other scenarios run at full size).
if [[ ${TWIN_SKIP_SANITIZERS:-0} == 1 ]]; then
  skip "sanitizer builds (TWIN_SKIP_SANITIZERS=1)"
else
  # A report aborts the process (engines, twin-sim, twinctl too): the tests
  # check exit statuses, and the harness fails on a report in any log.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  crash_events_was=${TWIN_TEST_CRASH_EVENTS-unset}
  export TWIN_TEST_CRASH_EVENTS=${TWIN_TEST_CRASH_EVENTS:-30000}
  if step "build (build-asan/, address,undefined)" configure_and_build build-asan -DTWIN_SANITIZE=address,undefined; then
    step "unit tests (ASan+UBSan)" run_ctest build-asan -L unit -j "$JOBS"
    step "integration tests (ASan+UBSan)" run_ctest build-asan -LE "unit|faults"
  fi
  if [[ -n $(cd build && ctest -N -L tsan | sed -n 's/^Total Tests: \([1-9][0-9]*\)$/\1/p') ]]; then
    if step "build (build-tsan/, thread)" configure_and_build build-tsan -DTWIN_SANITIZE=thread; then
      export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
      step "tsan tests (TSan)" run_ctest build-tsan -L tsan
    fi
  else
    skip "TSan build (no tests labelled tsan)"
  fi
  if step "build (build-fuzz/, clang-14 libFuzzer, address,undefined)" configure_and_build build-fuzz \
    -DCMAKE_C_COMPILER=clang-14 -DTWIN_FUZZ=ON -DTWIN_SANITIZE=address,undefined -DBUILD_TESTING=OFF; then
    step "fuzz (${TWIN_FUZZ_SECONDS:-60} s per target)" "$REPO/tests/fuzz/run.sh" "$REPO/build-fuzz"
  fi
  [[ $crash_events_was == unset ]] && unset TWIN_TEST_CRASH_EVENTS
fi

# ---- 9: integration tests, then the fault suite ---------------------------------
if [[ -n $(cd build && ctest -N -LE "unit|faults" | sed -n 's/^Total Tests: \([1-9][0-9]*\)$/\1/p') ]]; then
  step "integration + other tests (build/)" run_ctest build -LE "unit|faults"
else
  skip "integration + other tests (none registered)"
fi
# The fault suite runs once: under ASan+UBSan when the sanitizer builds ran
# (their engines, twin-sim and twinctl, with the same options as step 6), so
# the whole ctest suite passes under the sanitizers; otherwise in build/.
if [[ ${TWIN_SKIP_SANITIZERS:-0} != 1 && -x build-asan/bin/twin-engine ]]; then
  step "fault suite (build-asan/, ASan+UBSan, tests/faults)" run_ctest build-asan -L faults
  FAULTS_TSV=build-asan/faults-summary.tsv
else
  step "fault suite (build/, tests/faults)" run_ctest build -L faults
fi

exit "$FAILED"
