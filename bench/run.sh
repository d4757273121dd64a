#!/usr/bin/env bash
# bench/run.sh - twin-engine benchmarks, side by side with a Kafka Streams
# peer, on this machine, in one command. Prints a table and writes
# bench/results/<date>-<host>-<scale>.md.
#
#   bench/run.sh                     the issue's sizes (100,000 products, 10 M events; 1 M twins)
#   BENCH_SCALE=quick bench/run.sh   a smaller run (10,000 products, 500,000 events; 100,000 twins)
#
# Environment: BENCH_REPS (repetitions, default 3), BENCH_PEER_REPS (default:
# BENCH_REPS), BENCH_SEED (default 7), BENCH_SKIP="peer recovery ..." (phases
# to skip: core memory e2e freshness recovery peer), BENCH_RATE (events/s
# offered in the freshness / alert-latency phase; 100,000, quick 20,000),
# BENCH_ENGINE_SET="key=value ..." (extra engine settings, every phase),
# BENCH_SIM_NICE (niceness of twin-sim while it offers the fixed load in the
# freshness / alert-latency phase, default 10, 0 = none: it stands in for
# vehicles, which do not share the engine's cores), BENCH_FRESH_PRODUCTS
# (the fleet of the freshness phase; default the scale's, 20 on FerretDB),
# BENCH_FORCE_FERRETDB=1 (time every twin persisted at the end of the
# end-to-end runs on FerretDB too), TWIN_KAFKA_BOOTSTRAP,
# TWIN_MONGO_URI (default: the local stack, started if needed).
#
# A phase that fails is recorded as such in the table and the run goes on;
# the results file is written at the end, also after a failure or Ctrl-C.
# Freshness is measured from outside the engine (twin-bench-tool freshness:
# produced -> readable in MongoDB, produced -> alert read from Kafka) over
# BENCH_FRESH_PRODUCTS products (default: the scale's fleet on MongoDB, 20
# on FerretDB, which the local stack runs: it writes 25-65 twin
# snapshots a second here and scans its whole collection for every
# update, so a larger fleet would measure FerretDB). On FerretDB alert
# latency is also measured over the whole fleet with snapshots deferred.
# Recovery runs on both: start -> consuming does not touch the twins (lazy
# loading); start -> lag 0, which loads them, is measured on MongoDB only.
#
# Phases: 1 reducer core (one thread, no I/O; callgrind instructions per
# event when valgrind is installed), 2 end to end from a pre-loaded broker
# for 1 and 2 shards, 3 memory per twin at the large size, 4 freshness at a
# fixed offered load, 5 recovery after kill -9, 6 the Kafka Streams peer on
# the phase-2 stream, each of its runs paired with an engine run just before
# it for the ratio. Fixed seeds, a warm-up, several repetitions.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"

SCALE=${BENCH_SCALE:-full}
REPS=${BENCH_REPS:-3}
PEER_REPS=${BENCH_PEER_REPS:-$REPS}
SEED=${BENCH_SEED:-7}
SKIP=" ${BENCH_SKIP:-} "
SIM_NICE=${BENCH_SIM_NICE:-10}
[[ $SIM_NICE =~ ^[0-9]{1,2}$ && $SIM_NICE -le 19 ]] ||
  { echo "bench: BENCH_SIM_NICE must be a niceness from 0 to 19, not '$SIM_NICE'" >&2 && exit 2; }
FRESH_PRODUCTS=${BENCH_FRESH_PRODUCTS:-}
[[ -z $FRESH_PRODUCTS || ($FRESH_PRODUCTS =~ ^[1-9][0-9]{0,7}$ && $FRESH_PRODUCTS -le 10000000) ]] ||
  { echo "bench: BENCH_FRESH_PRODUCTS must be a fleet size from 1 to 10000000, not '$FRESH_PRODUCTS'" >&2 && exit 2; }
case $SCALE in
full) PRODUCTS=100000 EVENTS=10000000 BIG_PRODUCTS=1000000 BIG_EVENTS=10000000 RATE=100000 RATE_S=30 ;;
quick) PRODUCTS=10000 EVENTS=500000 BIG_PRODUCTS=100000 BIG_EVENTS=1000000 RATE=20000 RATE_S=15 ;;
*) echo "bench: BENCH_SCALE must be full or quick" >&2 && exit 2 ;;
esac
RATE=${BENCH_RATE:-$RATE}
BROKERS=${TWIN_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
MONGO=${TWIN_MONGO_URI:-mongodb://127.0.0.1:27017}
HTTP_PORT=${BENCH_HTTP_PORT:-18090}
RUN=$(date +%Y%m%d%H%M%S)
RUN_GIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")$(git -C "$REPO" diff --quiet HEAD -- twin-engine include bench 2>/dev/null || echo "+changes")
WORK=${BENCH_WORK:-$REPO/.bench}
CACHE=$WORK/cache
LOGS=$WORK/$RUN
mkdir -p "$CACHE" "$LOGS" "$HERE/results"
BIN=$REPO/build-bench/bin
ROWS=$LOGS/rows.md   # markdown table rows, appended by every phase
JSONL=$LOGS/results.jsonl
: >"$ROWS"
: >"$JSONL"

say() { printf '[bench] %s\n' "$*" >&2; }
skip() { [[ $SKIP == *" $1 "* ]]; }
row() { printf '%s\n' "$1" | tee -a "$ROWS"; }
json() { printf '%s\n' "$1" >>"$JSONL"; }
now() { date +%s.%N; }
# num N: N rounded, with thousands separators (whatever the locale).
num() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

say "scale $SCALE: $PRODUCTS products / $EVENTS events; large $BIG_PRODUCTS twins; $REPS repetitions; logs in $LOGS"
"$REPO/deploy/local/install-deps.sh" >/dev/null
cmake -S "$REPO" -B "$REPO/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$REPO/build-bench" twin-engine twin-sim twinctl twin-bench-reducer twin-bench-tool >/dev/null
if [[ -z ${TWIN_KAFKA_BOOTSTRAP:-} ]]; then "$REPO/deploy/local/stack.sh" up >/dev/null; fi

ENGINE=""
TOPICS_FILE=$LOGS/topics
: >"$TOPICS_FILE"
SERVER=$("$BIN/twin-bench-tool" server "$MONGO" admin 2>/dev/null || echo unknown)
cleanup() {
  [[ -n $ENGINE ]] && kill -9 "$ENGINE" 2>/dev/null || true
  if [[ -s $TOPICS_FILE ]]; then
    # shellcheck disable=SC2046
    "$BIN/twin-bench-tool" delete "$BROKERS" $(cat "$TOPICS_FILE") >/dev/null 2>&1 || true
  fi
  write_results
}
trap cleanup EXIT

# phase NAME FUNCTION: runs one phase in a subshell (its own engine, killed on
# the way out); a failure becomes a table row and the run goes on.
phase() {
  local name=$1 fn=$2
  skip "$name" && return 0
  (
    trap '[[ -n $ENGINE ]] && kill -9 "$ENGINE" 2>/dev/null || true' EXIT
    "$fn"
  ) || row "| $name | not measured: the phase failed (logs in ${LOGS#$REPO/}) | |"
}

# ---- helpers ------------------------------------------------------------------------

# record FILE PRODUCTS EVENTS [twin-sim options]: a twin-sim stream on disk,
# made once per size/seed.
record() {
  local f=$1 p=$2 e=$3
  shift 3
  [[ -s $f ]] || "$BIN/twin-sim" --no-kafka --seed "$SEED" --products "$p" --events "$e" --record "$f" --quiet "$@"
}

# The large fleet: every product ordered within the first 0.1 simulated
# years, so BIG_EVENTS (10 per product) reach all of them.
BIG_SIM=(--years 0.1)

metric_sum() { # metric_sum NAME [label filter regex]: sum of the samples of a metric
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="$1" -v f="${2:-}" '
    $1 ~ "^"n"({|$)" && (f == "" || $1 ~ f) { s += $2 } END { printf "%.0f", s }'
}

# quantile Q NAME: a quantile of a Prometheus histogram (buckets summed over
# labels), linear inside the bucket; ">X" when it is beyond the last bound.
quantile() {
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | python3 -c '
import re, sys
q, name = float(sys.argv[1]), sys.argv[2]
c = {}
for line in sys.stdin:
    m = re.match(name + r"_bucket\{.*le=\"([^\"]+)\".*\} (\S+)", line)
    if m:
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        c[le] = c.get(le, 0) + float(m.group(2))
total = c.get(float("inf"), 0)
if not total:
    print("n/a"); sys.exit()
want, prev, pc = q * total, 0.0, 0.0
for le in sorted(k for k in c if k != float("inf")):
    if c[le] >= want:
        f = (want - pc) / (c[le] - pc) if c[le] > pc else 1
        print("%.3f" % (prev + f * (le - prev))); sys.exit()
    prev, pc = le, c[le]
print(">%g" % prev)' "$1" "$2"
}

# le_share LE NAME: the percentage of a histogram's samples at or below the bound LE.
le_share() {
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v le="$1" -v n="$2" '
    $1 ~ "^"n"_bucket" && $1 ~ "le=\""le"\"" { a += $2 }
    $1 ~ "^"n"_bucket" && $1 ~ "le=\"\\+Inf\"" { t += $2 }
    END { if (t) printf "%.2f", 100 * a / t; else printf "n/a" }'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# BENCH_ENGINE_SET="key=value ...": extra settings for every engine the run starts.
ENGINE_SET=()
for kv in ${BENCH_ENGINE_SET:-}; do ENGINE_SET+=(--set "$kv"); done

# engine_start DB GROUP TELEMETRY LIFECYCLE SHARDS [extra --set ...]: background engine
engine_start() {
  local db=$1 group=$2 tel=$3 lc=$4 shards=$5
  shift 5
  "$BIN/twin-engine" run --set "kafka.bootstrap.servers=$BROKERS" --set "mongo.uri=$MONGO" \
    --set "mongo.database=$db" --set "kafka.group.id=$group" --set "topics.telemetry=$tel" \
    --set "topics.lifecycle=$lc" --set "topics.dlq=$tel.dlq" --set "topics.alerts=$tel.alerts" \
    --set "shards=$shards" --set "http.listen=127.0.0.1:$HTTP_PORT" "$@" "${ENGINE_SET[@]}" >>"$LOGS/engine-$db.log" 2>&1 &
  ENGINE=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
      kill -0 "$ENGINE" 2>/dev/null || { echo "bench: engine exited; see $LOGS/engine-$db.log" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: engine HTTP did not come up" >&2
  return 1
}

engine_stop() { # engine_stop SIGNAL
  kill "-$1" "$ENGINE" 2>/dev/null || true
  wait "$ENGINE" 2>/dev/null || true
  ENGINE=""
}

# topics NAME PARTITIONS: creates NAME.telemetry/lifecycle (+ .dlq, .alerts)
topics() {
  local n=$1 p=$2
  echo "$n.telemetry $n.lifecycle $n.telemetry.dlq $n.telemetry.alerts" >>"$TOPICS_FILE"
  "$BIN/twin-bench-tool" create "$BROKERS" "$n.telemetry:$p" "$n.lifecycle:$p" "$n.telemetry.dlq:3" \
    "$n.telemetry.alerts:$p"
}

stats() { # stats VALUES...: min median max of numbers (an even count's median: the middle two's mean)
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s\n", v[1], m, v[NR] }'
}

# ---- 1. reducer core ----------------------------------------------------------------
REC=$CACHE/core-$SEED-$PRODUCTS-$EVENTS.rec
phase_core() {
  say "1/6 reducer core: recording $EVENTS events of $PRODUCTS products (cached: $REC)"
  record "$REC" "$PRODUCTS" "$EVENTS"
  for alloc in arena malloc; do
    local label="fast decoder + arena" cmd out mn md mx ns
    [[ $alloc == malloc ]] && label="protobuf-c unpack + malloc (reference)"
    cmd="$BIN/twin-bench-reducer --record $REC --reps $REPS --alloc $alloc"
    out=$($cmd 2>"$LOGS/core-$alloc.log" | tail -1)
    json "$out"
    read -r mn md mx ns < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["events_per_s_min"], d["events_per_s_median"], d["events_per_s_max"], d["ns_per_event_median"])' "$out")
    row "| reducer core, 1 thread, $label | $(num "$md") events/s (min $(num "$mn"), max $(num "$mx")); $ns ns/event | \`${cmd/$REPO\//}\` |"
  done
  # Two processes side by side: per-core scaling of the core on this machine.
  local cmd="$BIN/twin-bench-reducer --record $REC --reps $REPS --alloc arena" sum
  $cmd 2>/dev/null | tail -1 >"$LOGS/core-par-a.json" &
  $cmd 2>/dev/null | tail -1 >"$LOGS/core-par-b.json"
  wait
  sum=$(python3 -c 'import json,sys; print(round(sum(json.load(open(f))["events_per_s_median"] for f in sys.argv[1:])))' \
    "$LOGS/core-par-a.json" "$LOGS/core-par-b.json")
  row "| reducer core, 2 processes at once (2 cores) | $(num "${sum%.*}") events/s together | same command twice, concurrently |"
  if command -v valgrind >/dev/null; then
    local small=$CACHE/core-$SEED-10000-200000.rec ir n
    record "$small" 10000 200000
    ir=$(valgrind --tool=callgrind --callgrind-out-file="$LOGS/callgrind.out" --toggle-collect=apply_all \
      "$BIN/twin-bench-reducer" --record "$small" --reps 1 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    n=$((2 * 200000)) # the warm-up pass and one repetition
    row "| reducer core, instructions (callgrind) | $((ir / n)) instructions/event | \`valgrind --tool=callgrind --toggle-collect=apply_all build-bench/bin/twin-bench-reducer --record <10,000 products, 200,000 events> --reps 1\` (warm-up + 1 pass) |"
    json "{\"bench\":\"reducer_instructions\",\"events\":$n,\"instructions\":$ir}"
  fi
}

# ---- 3. memory per twin (reducer, no Kafka) ---------------------------------------------
phase_memory() {
  local big=$CACHE/core-$SEED-$BIG_PRODUCTS-$BIG_EVENTS-y0.1.rec rec out
  say "3/6 memory: heap per twin at $PRODUCTS and $BIG_PRODUCTS products"
  record "$big" "$BIG_PRODUCTS" "$BIG_EVENTS" "${BIG_SIM[@]}"
  record "$REC" "$PRODUCTS" "$EVENTS"
  for rec in "$REC" "$big"; do
    out=$("$BIN/twin-bench-reducer" --record "$rec" --memory 2>/dev/null | tail -1)
    json "$out"
    read -r tw all tl wo sz < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["twins"], d["heap_bytes_per_twin"], d["timeline_bytes_per_twin"], d["bytes_per_twin_without_timeline"], d["sizeof_twin"])' "$out")
    row "| memory per twin at $(num "$tw") twins | $wo bytes without the timeline's entries ($all with them; the twin struct is $sz) | \`build-bench/bin/twin-bench-reducer --record <$(basename "$rec")> --memory\`: glibc heap in use after one pass, map table included |"
  done
}

# ---- 2. end to end from a pre-loaded broker -------------------------------------------
E2E=bench.$RUN.e2e
preload_e2e() {
  [[ -s $LOGS/e2e.total ]] && return 0
  say "2/6 end to end: pre-loading $EVENTS events into $E2E.* (12 partitions)"
  topics "$E2E" 12
  local t0
  t0=$(now)
  "$BIN/twin-sim" --seed "$SEED" --products "$PRODUCTS" --events "$EVENTS" --brokers "$BROKERS" \
    --telemetry-topic "$E2E.telemetry" --lifecycle-topic "$E2E.lifecycle" --quiet
  "$BIN/twin-bench-tool" count "$BROKERS" "$E2E.telemetry" "$E2E.lifecycle" >"$LOGS/e2e.total"
  say "   loaded $(cat "$LOGS/e2e.total") messages in $(secs "$t0" "$(now)") s"
}

# e2e_once NAME SHARDS TOTAL: one engine, from an empty database, over the
# pre-loaded stream until it has consumed TOTAL messages. Sets E2E_RATE
# (events/s, whole run), E2E_STEADY (10 %-90 %), E2E_HWM (peak RSS, KiB) and
# E2E_PERSISTED (start -> every twin persisted and checkpointed, s; empty on
# FerretDB).
e2e_once() {
  local name=$1 shards=$2 TOTAL=$3
  local db="bench_${RUN}_$name"
  # Snapshots are deferred to the end: FerretDB (the local MongoDB stand-in)
  # scans its whole collection per write, which would measure FerretDB,
  # not the engine. A graceful stop then writes every twin (timed below).
  engine_start "$db" "bench-$RUN-$name" "$E2E.telemetry" "$E2E.lifecycle" "$shards" \
    --set snapshot.interval.ms=600000 --set snapshot.max.dirty=10000000
  local t0 t10="" t90="" done_c="" c tn
  t0=$(now)
  while :; do
    c=$(metric_sum twin_events_total 'outcome="consumed"')
    tn=$(now)
    [[ -z $t10 && $c -ge $((TOTAL / 10)) ]] && t10=$tn
    [[ -z $t90 && $c -ge $((TOTAL * 9 / 10)) ]] && t90=$tn
    if [[ $c -ge $TOTAL ]]; then done_c=$tn && break; fi
    kill -0 "$ENGINE" || { echo "bench: engine died" >&2; return 1; }
    sleep 0.2
  done
  E2E_HWM=$(hwm_kib "$ENGINE")
  # Persisted and checkpointed: a graceful stop flushes every twin, then
  # the checkpoints. Not on FerretDB: its inserts scan the collection, so
  # the time would be FerretDB's.
  E2E_PERSISTED=""
  if [[ $SERVER == ferretdb && -z ${BENCH_FORCE_FERRETDB:-} ]]; then
    engine_stop KILL
  else
    engine_stop TERM
    E2E_PERSISTED=$(secs "$t0" "$(now)")
  fi
  E2E_RATE=$(awk -v n="$TOTAL" -v a="$t0" -v b="$done_c" 'BEGIN { printf "%.0f", n / (b - a) }')
  E2E_STEADY=$(awk -v n="$TOTAL" -v a="$t10" -v b="$t90" 'BEGIN { printf "%.0f", n * 0.8 / (b - a) }')
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
}

phase_e2e() {
  preload_e2e
  local TOTAL
  TOTAL=$(cat "$LOGS/e2e.total")
  for shards in 1 2; do
    local rates=() steady=() persisted=() hwms=()
    for rep in $(seq 1 "$REPS"); do
      e2e_once "e2e_${shards}_$rep" "$shards" "$TOTAL" || return 1
      hwms+=("$E2E_HWM")
      [[ -n $E2E_PERSISTED ]] && persisted+=("$E2E_PERSISTED")
      rates+=("$E2E_RATE")
      steady+=("$E2E_STEADY")
    done
    local mn md mx smn smd smx pmn pmd pmx hmd
    read -r mn md mx < <(stats "${rates[@]}")
    read -r smn smd smx < <(stats "${steady[@]}")
    read -r _ hmd _ < <(stats "${hwms[@]}")
    row "| end to end, $shards shard(s), whole run | $(num "$md") events/s (min $(num "$mn"), max $(num "$mx")) | $TOTAL messages pre-loaded (12 partitions), engine from an empty database |"
    row "| end to end, $shards shard(s), steady (10 %-90 %) | $(num "$smd") events/s (min $(num "$smn"), max $(num "$smx")) | |"
    if ((${#persisted[@]})); then
      read -r pmn pmd pmx < <(stats "${persisted[@]}")
      row "| end to end, $shards shard(s), start -> every twin persisted + checkpointed | $pmd s (min $pmn, max $pmx) | snapshots written once, at the graceful stop; peak RSS $((hmd / 1024)) MiB |"
    else
      row "| end to end, $shards shard(s), start -> every twin persisted + checkpointed | not measured on FerretDB (it scans its collection per write) | peak RSS $((hmd / 1024)) MiB |"
    fi
    json "{\"bench\":\"e2e\",\"shards\":$shards,\"events\":$TOTAL,\"events_per_s\":[${rates[*]// /,}],\"steady\":[${steady[*]// /,}],\"persisted_s\":[${persisted[*]// /,}],\"peak_rss_kib\":[${hwms[*]// /,}]}"
  done
}

# ---- engine memory at the large size --------------------------------------------------
phase_engine_memory() {
  local big=bench.$RUN.big db="bench_${RUN}_big" total base twins rss per
  say "3/6 engine memory: $BIG_PRODUCTS twins from $BIG_EVENTS events through Kafka"
  topics "$big" 12
  "$BIN/twin-sim" --seed "$SEED" --products "$BIG_PRODUCTS" --events "$BIG_EVENTS" --brokers "$BROKERS" \
    --telemetry-topic "$big.telemetry" --lifecycle-topic "$big.lifecycle" --quiet "${BIG_SIM[@]}"
  total=$("$BIN/twin-bench-tool" count "$BROKERS" "$big.telemetry" "$big.lifecycle")
  engine_start "$db" "bench-$RUN-big" "$big.telemetry" "$big.lifecycle" 2 --set snapshot.interval.ms=600000 \
    --set snapshot.max.dirty=10000000
  base=$(rss_kib "$ENGINE")
  while [[ $(metric_sum twin_events_total 'outcome="consumed"') -lt $total ]]; do sleep 0.5; done
  twins=$(metric_sum twin_twins_in_memory)
  rss=$(rss_kib "$ENGINE")
  per=$(((rss - base) * 1024 / (twins > 0 ? twins : 1)))
  row "| engine RSS growth per twin at $(num "$twins") twins | $per bytes (RSS $((rss / 1024)) MiB, $((base / 1024)) MiB at start) | the whole process through Kafka: twins with timelines, librdkafka queues, allocator slack |"
  json "{\"bench\":\"engine_memory\",\"twins\":$twins,\"bytes_per_twin\":$per,\"rss_kib\":$rss,\"base_kib\":$base}"
  engine_stop KILL # the point is the memory; persisting a million twins would measure the database
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
}

# ---- 5. recovery after kill -9 with the large store ------------------------------------
phase_recovery() {
  local big=bench.$RUN.rec db="bench_${RUN}_rec" total t0 t_resume twins mode seed=$((SEED + 1))
  local -a member
  topics "$big" 12
  "$BIN/twin-sim" --seed "$SEED" --products "$BIG_PRODUCTS" --events "$BIG_EVENTS" --brokers "$BROKERS" \
    --telemetry-topic "$big.telemetry" --lifecycle-topic "$big.lifecycle" --quiet "${BIG_SIM[@]}"
  engine_start "$db" "bench-$RUN-rec" "$big.telemetry" "$big.lifecycle" 2 --set snapshot.interval.ms=600000 \
    --set snapshot.max.dirty=10000000
  total=$("$BIN/twin-bench-tool" count "$BROKERS" "$big.telemetry" "$big.lifecycle")
  while [[ $(metric_sum twin_events_total 'outcome="consumed"') -lt $total ]]; do sleep 0.5; done
  twins=$(metric_sum twin_twins_in_memory) # all dirty: the stop persists every one
  t0=$(now)
  engine_stop TERM
  row "| recovery set-up: $(num "$twins") twins persisted and checkpointed at SIGTERM | $(secs "$t0" "$(now)") s | $(num "$total") events of $(num "$BIG_PRODUCTS") products, 2 shards, snapshots deferred to the stop |"
  # A restart after kill -9, twice: as a static member (kafka.group.instance.id)
  # it takes its partitions back at once; as a dynamic one (the default) the
  # group first waits for the killed member's session (kafka.session.timeout.ms,
  # librdkafka's 45 s) to expire. Static first, while the database is idle.
  for mode in static dynamic; do
    member=()
    [[ $mode == static ]] && member=(--set "kafka.group.instance.id=bench-$RUN-rec-1")
    say "5/6 recovery ($mode member): kill -9 with $twins twins persisted, 100,000 more events, restart"
    engine_start "$db" "bench-$RUN-rec" "$big.telemetry" "$big.lifecycle" 2 "${member[@]}"
    while [[ $(metric_sum twin_assigned_partitions) -eq 0 ]]; do sleep 0.1; done
    engine_stop KILL
    "$BIN/twin-sim" --seed "$seed" --products "$BIG_PRODUCTS" --events 100000 --brokers "$BROKERS" \
      --telemetry-topic "$big.telemetry" --lifecycle-topic "$big.lifecycle" --quiet "${BIG_SIM[@]}"
    seed=$((seed + 1))
    t0=$(now)
    engine_start "$db" "bench-$RUN-rec" "$big.telemetry" "$big.lifecycle" 2 --set snapshot.interval.ms=600000 \
      --set snapshot.max.dirty=10000000 "${member[@]}"
    while [[ $(metric_sum twin_events_total 'outcome="consumed"') -eq 0 ]]; do sleep 0.05; done
    t_resume=$(now)
    row "| recovery, $mode member, $(num "$twins") twins persisted: start -> consuming | $(secs "$t0" "$t_resume") s | kill -9, 100,000 new events, restart (lazy loading)${member:+; kafka.group.instance.id set} |"
    if [[ $SERVER == ferretdb ]]; then
      row "| recovery, $mode member: start -> lag 0 | not measured: FerretDB scans all $(num "$twins") twins for every lazy load | needs a real MongoDB: TWIN_MONGO_URI=mongodb://... bench/run.sh |"
    else
      while [[ $(metric_sum twin_consumer_lag) -gt 0 || $(metric_sum twin_assigned_partitions) -eq 0 ]]; do sleep 0.1; done
      row "| recovery, $mode member: start -> lag 0 | $(secs "$t0" "$(now)") s | |"
    fi
    engine_stop KILL
  done
  # FerretDB goes on with the killed engines' lazy loads, each a scan of every
  # twin (minutes at 1,000,000), and would answer the drop only after them:
  # the local stack's FerretDB is restarted, which ends them.
  if [[ $SERVER == ferretdb && -z ${TWIN_MONGO_URI:-} ]]; then
    "$REPO/deploy/local/stack.sh" down ferretdb >/dev/null && "$REPO/deploy/local/stack.sh" up ferretdb >/dev/null
  fi
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
}

# ---- 4. freshness at a fixed offered load -------------------------------------------------
# offer_load TOPIC_PREFIX [PRODUCTS]: twin-sim offers $RATE events/s for
# $RATE_S s at niceness $SIM_NICE (OFFERED says so in a row) over PRODUCTS
# products (default $PRODUCTS).
OFFERED="nice -n $SIM_NICE twin-sim --rate $RATE --duration $RATE_S"
offer_load() {
  nice -n "$SIM_NICE" "$BIN/twin-sim" --seed "$SEED" --products "${2:-$PRODUCTS}" --rate "$RATE" \
    --duration "$RATE_S" --brokers "$BROKERS" --telemetry-topic "$1.telemetry" --lifecycle-topic "$1.lifecycle" --quiet
}

# Freshness as a reader outside the engine sees it: twin-bench-tool freshness
# reads the input topics (each event's produce time: twin-sim's event times
# are simulated), the twins collection every 100 ms (an event is readable
# once its product's snapshot shows its source's seq) and the alerts topic
# (an alert names its event's time), from before the load starts until
# every event is in a snapshot. Its figures are upper bounds by up to one
# poll and the poll's own time.
phase_freshness() {
  local fr=bench.$RUN.fresh db="bench_${RUN}_fresh" n tool rc=0 j
  n=${FRESH_PRODUCTS:-$([[ $SERVER == ferretdb ]] && echo 20 || echo "$PRODUCTS")}
  say "4/6 freshness: $RATE events/s for $RATE_S s over $n products"
  topics "$fr" 12
  engine_start "$db" "bench-$RUN-fresh" "$fr.telemetry" "$fr.lifecycle" 2 --set snapshot.interval.ms=1000
  "$BIN/twin-bench-tool" freshness "$BROKERS" "$MONGO" "$db" "$fr.telemetry" "$fr.lifecycle" "$fr.telemetry.alerts" \
    100 120 >"$LOGS/freshness.out" 2>"$LOGS/freshness.err" &
  tool=$!
  for _ in $(seq 1 600); do
    grep -q '^ready' "$LOGS/freshness.out" && break
    kill -0 "$tool" 2>/dev/null || { echo "bench: twin-bench-tool freshness exited; see $LOGS/freshness.err" >&2; return 1; }
    sleep 0.1
  done
  offer_load "$fr" "$n"
  kill -INT "$tool"
  wait "$tool" || rc=$?
  [[ $rc -eq 0 || $rc -eq 3 ]] || { echo "bench: twin-bench-tool freshness failed ($rc); see $LOGS/freshness.err" >&2; return 1; }
  j=$(grep '^{' "$LOGS/freshness.out" | tail -1)
  [[ -n $j ]] || return 1
  get() { python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))' "$j" "$1"; }
  local where="$(num "$RATE") events/s offered over $(num "$n") vehicles"
  [[ $SERVER == ferretdb ]] && where="$where (FerretDB keeps up with about this many; TWIN_MONGO_URI runs the scale's $(num "$PRODUCTS"))"
  row "| freshness at $where: produced -> readable in MongoDB | **p50 $(get 'snapshot["p50_ms"]') ms, p99 $(get 'snapshot["p99_ms"]') ms, max $(get 'snapshot["max_ms"]') ms** (target p99 <= 1,500 ms: 1.5 x snapshot.interval.ms=1000); $(num "$(get 'snapshot["n"]')") events, $(get 'snapshot["unmatched"]') never read | twin-bench-tool freshness: each event's Kafka timestamp -> the first read of the twins collection (every $(get 'poll_ms') ms or, to keep the database busy at most a third of the time, twice a read's time: every $(get 'round(poll_period_ms_mean)') ms on average; a read took $(get 'poll_ms_mean') ms) whose snapshot holds it; 2 shards; $OFFERED |"
  row "| freshness: produced -> alert read from the alerts topic | p50 $(get 'alert["p50_ms"]') ms, p99 $(get 'alert["p99_ms"]') ms, max $(get 'alert["max_ms"]') ms; $(num "$(get 'alert["n"]')") alerts, $(get 'alert["unmatched"]') unmatched | the same run; a consumer of the alerts topic, the alert joined to its event by product and event time |"
  row "| freshness, the engine's own view: applied -> snapshot acknowledged; consumed -> alert acknowledged | p50 $(quantile 0.5 twin_snapshot_delay_seconds) s, p99 $(quantile 0.99 twin_snapshot_delay_seconds) s; p50 $(quantile 0.5 twin_alert_delay_seconds) s, p99 $(quantile 0.99 twin_alert_delay_seconds) s | the engine's twin_snapshot_delay_seconds and twin_alert_delay_seconds histograms |"
  json "$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); d.update(rate=int(sys.argv[2]), products=int(sys.argv[3]), server=sys.argv[4]); print(json.dumps(d))' "$j" "$RATE" "$n" "$SERVER")"
  engine_stop TERM
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
}

# Alert latency alone, on FerretDB: snapshots deferred (as in phase 2), so no
# flush, which would time FerretDB, holds a shard up between consuming an
# event and producing its alert.
phase_alert_latency() {
  local fr=bench.$RUN.alerts db="bench_${RUN}_alerts" sent
  say "4/6 alert latency: $RATE events/s for $RATE_S s, snapshots deferred"
  topics "$fr" 12
  engine_start "$db" "bench-$RUN-alerts" "$fr.telemetry" "$fr.lifecycle" 2 \
    --set snapshot.interval.ms=600000 --set snapshot.max.dirty=10000000
  offer_load "$fr"
  sent=$("$BIN/twin-bench-tool" count "$BROKERS" "$fr.telemetry" "$fr.lifecycle")
  for _ in $(seq 1 100); do
    [[ $(metric_sum twin_events_total 'outcome="consumed"') -ge $sent ]] && break
    sleep 0.2
  done
  sleep 2
  row "| alert latency at $(num "$RATE") events/s offered, snapshots deferred: consumed -> alert acknowledged by Kafka | p50 $(quantile 0.5 twin_alert_delay_seconds) s, p99 $(quantile 0.99 twin_alert_delay_seconds) s; $(le_share 0.05 twin_alert_delay_seconds) % within 50 ms | $(num "$(metric_sum twin_alert_delay_seconds_count)") alerts; $(num "$sent") events sent in $RATE_S s, $(num "$(metric_sum twin_events_total 'outcome="consumed"')") consumed; 2 shards; $OFFERED |"
  json "{\"bench\":\"alert_latency\",\"rate\":$RATE,\"sim_nice\":$SIM_NICE,\"seconds\":$RATE_S,\"sent\":$sent,\"alerts\":$(metric_sum twin_alert_delay_seconds_count),\"p50_s\":\"$(quantile 0.5 twin_alert_delay_seconds)\",\"p99_s\":\"$(quantile 0.99 twin_alert_delay_seconds)\",\"within_50ms_pct\":\"$(le_share 0.05 twin_alert_delay_seconds)\"}"
  engine_stop KILL
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
}

# ---- 6. the Kafka Streams peer on the phase-2 stream -------------------------------------
phase_peer() {
  preload_e2e
  local TOTAL
  TOTAL=$(cat "$LOGS/e2e.total")
  say "6/6 peer: Kafka Streams on $E2E.* ($TOTAL messages)"
  "$HERE/peers/kstreams/build.sh" >"$LOGS/peer-build.log" 2>&1 || { echo "bench: peer build failed, see $LOGS/peer-build.log" >&2; return 1; }
  # Each peer run is paired with an engine run just before it, with as many
  # shards as the peer has stream threads, on the same stream: the ratio of
  # a pair compares runs minutes apart, not phases half an hour apart (the
  # peer's rate has varied two-fold between runs on this VM).
  for threads in 1 2; do
    local prates=() erates=() ratios=() out mn md mx emn emd emx rmn rmd rmx
    for rep in $(seq 1 "$PEER_REPS"); do
      e2e_once "pair_${threads}_$rep" "$threads" "$TOTAL" || return 1
      erates+=("$E2E_RATE")
      out=$("$HERE/peers/kstreams/run.sh" --bootstrap "$BROKERS" --telemetry-topic "$E2E.telemetry" \
        --lifecycle-topic "$E2E.lifecycle" --threads "$threads" --application-id "bench-$RUN-peer-$threads-$rep" \
        --events "$TOTAL" 2>>"$LOGS/peer.log" | tail -1)
      json "$out"
      prates+=("$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["events_per_s"]))' "$out")")
      ratios+=("$(awk -v e="$E2E_RATE" -v p="${prates[-1]}" 'BEGIN { printf "%.1f", e / p }')")
      json "{\"bench\":\"peer_pair\",\"threads\":$threads,\"engine_events_per_s\":$E2E_RATE,\"peer_events_per_s\":${prates[-1]},\"ratio\":${ratios[-1]}}"
    done
    read -r mn md mx < <(stats "${prates[@]}")
    read -r emn emd emx < <(stats "${erates[@]}")
    read -r rmn rmd rmx < <(stats "${ratios[@]}")
    row "| Kafka Streams peer, $threads stream thread(s) | $(num "$md") events/s (min $(num "$mn"), max $(num "$mx")) | bench/peers/kstreams/run.sh, same topics, $PEER_REPS run(s) |"
    row "| twin-engine / peer, $threads shard(s) / $threads stream thread(s), paired runs | **${rmd}x** (min ${rmn}x, max ${rmx}x; target >= 20x) | each pair: an engine run ($(num "$emd") events/s median, min $(num "$emn"), max $(num "$emx")) then a peer run, back to back on the same stream |"
  done
}

# ---- results ---------------------------------------------------------------------------
write_results() {
  local out
  out=$HERE/results/$(date +%Y-%m-%d)-$(hostname)-$SCALE.md
  {
    echo "# twin-engine benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(hostname)"
    echo
    echo "Command: \`BENCH_SCALE=$SCALE BENCH_REPS=$REPS${BENCH_PEER_REPS:+ BENCH_PEER_REPS=$BENCH_PEER_REPS} BENCH_SEED=$SEED${BENCH_SKIP:+ BENCH_SKIP=\"$BENCH_SKIP\"}${BENCH_RATE:+ BENCH_RATE=$BENCH_RATE}${BENCH_FRESH_PRODUCTS:+ BENCH_FRESH_PRODUCTS=$BENCH_FRESH_PRODUCTS}${BENCH_SIM_NICE:+ BENCH_SIM_NICE=$BENCH_SIM_NICE}${BENCH_ENGINE_SET:+ BENCH_ENGINE_SET=\"$BENCH_ENGINE_SET\"} bench/run.sh\`; $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); Kafka and the database ($SERVER) on the same machine; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); built from git $RUN_GIT."
    echo
    echo "| what | result | how |"
    echo "|---|---|---|"
    cat "$ROWS"
    echo
    echo '```json'
    cat "$JSONL"
    echo '```'
  } >"$out"
  say "results in ${out#$REPO/}"
}

phase core phase_core
phase memory phase_memory
phase e2e phase_e2e
phase memory phase_engine_memory
[[ $SERVER == ferretdb ]] && phase freshness phase_alert_latency
phase freshness phase_freshness
phase recovery phase_recovery
phase peer phase_peer
