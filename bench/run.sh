#!/usr/bin/env bash
# bench/run.sh - twin-engine benchmarks, side by side with a Kafka Streams
# peer, on this machine, in one command. Prints a table and writes
# bench/results/<date>-<host>.md.
#
#   bench/run.sh                     the issue's sizes (100,000 products, 10 M events; 1 M twins)
#   BENCH_SCALE=quick bench/run.sh   a smaller run (10,000 products, 500,000 events; 100,000 twins)
#
# Environment: BENCH_REPS (repetitions, default 3), BENCH_SEED (default 7),
# BENCH_SKIP="peer recovery ..." (phases to skip), TWIN_KAFKA_BOOTSTRAP,
# TWIN_MONGO_URI (default: the local stack, started if needed).
#
# Phases: 1 reducer core (one thread, no I/O; callgrind instructions per
# event when valgrind is installed), 2 end to end from a pre-loaded broker
# for 1 and 2 shards, 3 memory per twin at the large size, 4 freshness at a
# fixed offered load, 5 recovery after kill -9, 6 the Kafka Streams peer on
# the phase-2 stream. Fixed seeds, a warm-up, several repetitions.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"

SCALE=${BENCH_SCALE:-full}
REPS=${BENCH_REPS:-3}
SEED=${BENCH_SEED:-7}
SKIP=" ${BENCH_SKIP:-} "
case $SCALE in
full) PRODUCTS=100000 EVENTS=10000000 BIG_PRODUCTS=1000000 BIG_EVENTS=3000000 RATE=100000 RATE_S=30 ;;
quick) PRODUCTS=10000 EVENTS=500000 BIG_PRODUCTS=100000 BIG_EVENTS=300000 RATE=20000 RATE_S=15 ;;
*) echo "bench: BENCH_SCALE must be full or quick" >&2 && exit 2 ;;
esac
BROKERS=${TWIN_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
MONGO=${TWIN_MONGO_URI:-mongodb://127.0.0.1:27017}
HTTP_PORT=${BENCH_HTTP_PORT:-18090}
RUN=$(date +%Y%m%d%H%M%S)
WORK=${BENCH_WORK:-$REPO/.bench}
CACHE=$WORK/cache
LOGS=$WORK/$RUN
mkdir -p "$CACHE" "$LOGS" "$HERE/results"
BIN=$REPO/build-bench/bin
RESULTS=()   # markdown table rows
JSON=()      # machine-readable lines

say() { printf '[bench] %s\n' "$*" >&2; }
skip() { [[ $SKIP == *" $1 "* ]]; }
row() { RESULTS+=("$1"); printf '%s\n' "$1"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

say "scale $SCALE: $PRODUCTS products / $EVENTS events; large $BIG_PRODUCTS twins; $REPS repetitions; logs in $LOGS"
"$REPO/deploy/local/install-deps.sh" >/dev/null
cmake -S "$REPO" -B "$REPO/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$REPO/build-bench" twin-engine twin-sim twinctl twin-bench-reducer twin-bench-tool >/dev/null
if [[ -z ${TWIN_KAFKA_BOOTSTRAP:-} ]]; then "$REPO/deploy/local/stack.sh" up >/dev/null; fi

ENGINE=""
TOPICS=()
cleanup() {
  [[ -n $ENGINE ]] && kill -9 "$ENGINE" 2>/dev/null || true
  ((${#TOPICS[@]})) && "$BIN/twin-bench-tool" delete "$BROKERS" "${TOPICS[@]}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- helpers ------------------------------------------------------------------------

# record FILE PRODUCTS EVENTS: a twin-sim stream on disk, made once per size/seed.
record() {
  [[ -s $1 ]] || "$BIN/twin-sim" --no-kafka --seed "$SEED" --products "$2" --events "$3" --record "$1" --quiet
}

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

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# engine_start DB GROUP TELEMETRY LIFECYCLE SHARDS [extra --set ...]: background engine
engine_start() {
  local db=$1 group=$2 tel=$3 lc=$4 shards=$5
  shift 5
  "$BIN/twin-engine" run --set "kafka.bootstrap.servers=$BROKERS" --set "mongo.uri=$MONGO" \
    --set "mongo.database=$db" --set "kafka.group.id=$group" --set "topics.telemetry=$tel" \
    --set "topics.lifecycle=$lc" --set "topics.dlq=$tel.dlq" --set "topics.alerts=$tel.alerts" \
    --set "shards=$shards" --set "http.listen=127.0.0.1:$HTTP_PORT" "$@" >>"$LOGS/engine-$db.log" 2>&1 &
  ENGINE=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$ENGINE" 2>/dev/null || { echo "bench: engine exited; see $LOGS/engine-$db.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: engine HTTP did not come up" >&2
  exit 1
}

engine_stop() { # engine_stop SIGNAL
  kill "-$1" "$ENGINE" 2>/dev/null || true
  wait "$ENGINE" 2>/dev/null || true
  ENGINE=""
}

# topics NAME PARTITIONS: creates NAME.telemetry/lifecycle (+ .dlq, .alerts)
topics() {
  local n=$1 p=$2
  TOPICS+=("$n.telemetry" "$n.lifecycle" "$n.telemetry.dlq" "$n.telemetry.alerts")
  "$BIN/twin-bench-tool" create "$BROKERS" "$n.telemetry:$p" "$n.lifecycle:$p" "$n.telemetry.dlq:3" \
    "$n.telemetry.alerts:$p"
}

stats() { # stats VALUES...: min median max of numbers
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%s %s %s\n", v[1], v[int((NR + 1) / 2)], v[NR] }'
}

# ---- 1. reducer core ----------------------------------------------------------------
if ! skip core; then
  REC=$CACHE/core-$SEED-$PRODUCTS-$EVENTS.rec
  say "1/6 reducer core: recording $EVENTS events of $PRODUCTS products (cached: $REC)"
  record "$REC" "$PRODUCTS" "$EVENTS"
  for alloc in arena malloc; do
    cmd="$BIN/twin-bench-reducer --record $REC --reps $REPS --alloc $alloc"
    out=$($cmd 2>"$LOGS/core-$alloc.log" | tail -1)
    JSON+=("$out")
    read -r mn md mx ns < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["events_per_s_min"], d["events_per_s_median"], d["events_per_s_max"], d["ns_per_event_median"])' "$out")
    row "| reducer core, 1 thread, $alloc decode | $(printf "%'.0f" "$md") events/s (min $(printf "%'.0f" "$mn"), max $(printf "%'.0f" "$mx")); $ns ns/event | \`${cmd/$REPO\//}\` |"
  done
  # Two processes side by side: per-core scaling of the core on this machine.
  cmd="$BIN/twin-bench-reducer --record $REC --reps $REPS --alloc arena"
  $cmd 2>/dev/null | tail -1 >"$LOGS/core-par-a.json" &
  $cmd 2>/dev/null | tail -1 >"$LOGS/core-par-b.json"
  wait
  sum=$(python3 -c 'import json,sys; print(round(sum(json.load(open(f))["events_per_s_median"] for f in sys.argv[1:])))' \
    "$LOGS/core-par-a.json" "$LOGS/core-par-b.json")
  row "| reducer core, 2 processes at once (2 cores) | $(printf "%'.0f" "${sum%.*}") events/s together | same command twice, concurrently |"
  if command -v valgrind >/dev/null; then
    SMALL=$CACHE/core-$SEED-10000-200000.rec
    record "$SMALL" 10000 200000
    ir=$(valgrind --tool=callgrind --callgrind-out-file="$LOGS/callgrind.out" --toggle-collect=apply_all \
      "$BIN/twin-bench-reducer" --record "$SMALL" --reps 1 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    row "| reducer core, instructions (callgrind) | $((ir / 400000)) instructions/event | \`valgrind --tool=callgrind --toggle-collect=apply_all build-bench/bin/twin-bench-reducer --record <200k events> --reps 1\` (warm-up + 1 pass) |"
  fi
fi

# ---- 2. end to end from a pre-loaded broker -------------------------------------------
E2E=bench.$RUN.e2e
if ! skip e2e || ! skip peer; then
  say "2/6 end to end: pre-loading $EVENTS events into $E2E.* (12 partitions)"
  topics "$E2E" 12
  t0=$(now)
  "$BIN/twin-sim" --seed "$SEED" --products "$PRODUCTS" --events "$EVENTS" --brokers "$BROKERS" \
    --telemetry-topic "$E2E.telemetry" --lifecycle-topic "$E2E.lifecycle" --quiet
  TOTAL=$("$BIN/twin-bench-tool" count "$BROKERS" "$E2E.telemetry" "$E2E.lifecycle")
  say "   loaded $TOTAL messages in $(secs "$t0" "$(now)") s"
fi
if ! skip e2e; then
  for shards in 1 2; do
    rates=() steady=() persisted=() hwms=()
    for rep in $(seq 1 "$REPS"); do
      db="bench_${RUN}_e2e_${shards}_$rep"
      # Snapshots are deferred to the end: FerretDB (the local MongoDB stand-in)
      # scans its whole collection per write, which would measure FerretDB,
      # not the engine. A graceful stop then writes every twin (timed below).
      engine_start "$db" "bench-$RUN-e2e-$shards-$rep" "$E2E.telemetry" "$E2E.lifecycle" "$shards" \
        --set snapshot.interval.ms=600000 --set snapshot.max.dirty=10000000
      t0=$(now) t10="" t90="" done_c=""
      while :; do
        c=$(metric_sum twin_events_total 'outcome="consumed"')
        tn=$(now)
        [[ -z $t10 && $c -ge $((TOTAL / 10)) ]] && t10=$tn
        [[ -z $t90 && $c -ge $((TOTAL * 9 / 10)) ]] && t90=$tn
        if [[ $c -ge $TOTAL ]]; then done_c=$tn && break; fi
        kill -0 "$ENGINE" || { echo "bench: engine died" >&2; exit 1; }
        sleep 0.2
      done
      hwms+=("$(hwm_kib "$ENGINE")")
      # Persisted and checkpointed: a graceful stop flushes every twin, then
      # the checkpoints.
      engine_stop TERM
      t_persist=$(now)
      rates+=("$(awk -v n="$TOTAL" -v a="$t0" -v b="$done_c" 'BEGIN { printf "%.0f", n / (b - a) }')")
      steady+=("$(awk -v n="$TOTAL" -v a="$t10" -v b="$t90" 'BEGIN { printf "%.0f", n * 0.8 / (b - a) }')")
      persisted+=("$(secs "$t0" "$t_persist")")
      "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
    done
    read -r mn md mx < <(stats "${rates[@]}")
    read -r smn smd smx < <(stats "${steady[@]}")
    read -r pmn pmd pmx < <(stats "${persisted[@]}")
    read -r _ hmd _ < <(stats "${hwms[@]}")
    row "| end to end, $shards shard(s), whole run | $(printf "%'.0f" "$md") events/s (min $(printf "%'.0f" "$mn"), max $(printf "%'.0f" "$mx")) | $TOTAL messages pre-loaded, engine from an empty database |"
    row "| end to end, $shards shard(s), steady (10 %-90 %) | $(printf "%'.0f" "$smd") events/s (min $(printf "%'.0f" "$smn"), max $(printf "%'.0f" "$smx")) | |"
    row "| end to end, $shards shard(s), start -> every twin persisted + checkpointed | $pmd s (min $pmn, max $pmx) | snapshots written once at the end (FerretDB); peak RSS $((hmd / 1024)) MiB |"
    JSON+=("{\"bench\":\"e2e\",\"shards\":$shards,\"events\":$TOTAL,\"events_per_s\":[${rates[*]// /,}],\"steady\":[${steady[*]// /,}],\"persisted_s\":[${persisted[*]// /,}],\"peak_rss_kib\":[${hwms[*]// /,}]}")
  done
fi

# ---- 3. memory per twin at the large size ---------------------------------------------
BIG=bench.$RUN.big
if ! skip memory || ! skip recovery; then
  say "3/6 memory: $BIG_PRODUCTS twins from $BIG_EVENTS events"
  topics "$BIG" 12
  "$BIN/twin-sim" --seed "$SEED" --products "$BIG_PRODUCTS" --events "$BIG_EVENTS" --brokers "$BROKERS" \
    --telemetry-topic "$BIG.telemetry" --lifecycle-topic "$BIG.lifecycle" --quiet
  BIG_TOTAL=$("$BIN/twin-bench-tool" count "$BROKERS" "$BIG.telemetry" "$BIG.lifecycle")
  BIGDB="bench_${RUN}_big"
  engine_start "$BIGDB" "bench-$RUN-big" "$BIG.telemetry" "$BIG.lifecycle" 2 --set snapshot.interval.ms=600000 \
    --set snapshot.max.dirty=10000000
  base=$(rss_kib "$ENGINE")
  while [[ $(metric_sum twin_events_total 'outcome="consumed"') -lt $BIG_TOTAL ]]; do sleep 0.5; done
  twins=$(metric_sum twin_twins_in_memory)
  rss=$(rss_kib "$ENGINE")
  per=$(((rss - base) * 1024 / (twins > 0 ? twins : 1)))
  row "| memory per twin at $(printf "%'d" "$twins") twins | $per bytes (RSS $((rss / 1024)) MiB, $((base / 1024)) MiB before) | vehicle twins from twin-sim, timelines included |"
  JSON+=("{\"bench\":\"memory\",\"twins\":$twins,\"bytes_per_twin\":$per,\"rss_kib\":$rss,\"base_kib\":$base}")
  say "   writing all $twins snapshots to MongoDB (graceful stop)"
  t0=$(now)
  engine_stop TERM
  row "| persisting $(printf "%'d" "$twins") new twins (graceful stop) | $(secs "$t0" "$(now)") s | FerretDB insert path |"
fi

# ---- 5. recovery after kill -9 with the large store ------------------------------------
if ! skip recovery; then
  say "5/6 recovery: kill -9 with $twins twins persisted, 100,000 more events, restart"
  engine_start "$BIGDB" "bench-$RUN-big" "$BIG.telemetry" "$BIG.lifecycle" 2
  while [[ $(metric_sum twin_assigned_partitions) -eq 0 ]]; do sleep 0.1; done
  engine_stop KILL
  "$BIN/twin-sim" --seed "$((SEED + 1))" --products "$BIG_PRODUCTS" --events 100000 --brokers "$BROKERS" \
    --telemetry-topic "$BIG.telemetry" --lifecycle-topic "$BIG.lifecycle" --quiet
  BIG_TOTAL=$("$BIN/twin-bench-tool" count "$BROKERS" "$BIG.telemetry" "$BIG.lifecycle")
  t0=$(now)
  engine_start "$BIGDB" "bench-$RUN-big" "$BIG.telemetry" "$BIG.lifecycle" 2 --set snapshot.interval.ms=600000 \
    --set snapshot.max.dirty=10000000
  while [[ $(metric_sum twin_events_total 'outcome="consumed"') -eq 0 ]]; do sleep 0.05; done
  t_resume=$(now)
  while [[ $(metric_sum twin_consumer_lag) -gt 0 || $(metric_sum twin_assigned_partitions) -eq 0 ]]; do sleep 0.1; done
  row "| recovery with $(printf "%'d" "$twins") twins persisted: start -> consuming | $(secs "$t0" "$t_resume") s | kill -9, 100,000 new events, restart (lazy loading) |"
  row "| recovery: start -> lag 0 | $(secs "$t0" "$(now)") s | |"
  engine_stop KILL
fi
[[ -n $ENGINE ]] && engine_stop TERM
if ! skip memory || ! skip recovery; then "$BIN/twin-bench-tool" dropdb "$MONGO" "$BIGDB" >/dev/null; fi

# ---- 4. freshness at a fixed offered load -------------------------------------------------
if ! skip freshness; then
  FR=bench.$RUN.fresh
  say "4/6 freshness: $RATE events/s for $RATE_S s"
  topics "$FR" 12
  db="bench_${RUN}_fresh"
  engine_start "$db" "bench-$RUN-fresh" "$FR.telemetry" "$FR.lifecycle" 2
  "$BIN/twin-sim" --seed "$SEED" --products "$PRODUCTS" --rate "$RATE" --duration "$RATE_S" --brokers "$BROKERS" \
    --telemetry-topic "$FR.telemetry" --lifecycle-topic "$FR.lifecycle" --quiet
  sleep 3
  row "| freshness at $(printf "%'d" "$RATE") events/s: applied -> snapshot acknowledged | p50 $(quantile 0.5 twin_snapshot_delay_seconds) s, p99 $(quantile 0.99 twin_snapshot_delay_seconds) s | snapshot.interval.ms=1000; twin-sim --rate $RATE --duration $RATE_S |"
  row "| freshness: consumed -> alert acknowledged by Kafka | p50 $(quantile 0.5 twin_alert_delay_seconds) s, p99 $(quantile 0.99 twin_alert_delay_seconds) s | $(metric_sum twin_alert_delay_seconds_count) alerts |"
  engine_stop TERM
  "$BIN/twin-bench-tool" dropdb "$MONGO" "$db" >/dev/null
fi

# ---- 6. the Kafka Streams peer on the phase-2 stream -------------------------------------
if ! skip peer; then
  say "6/6 peer: Kafka Streams on $E2E.* ($TOTAL messages)"
  "$HERE/peers/kstreams/build.sh" >"$LOGS/peer-build.log" 2>&1 || { echo "bench: peer build failed, see $LOGS/peer-build.log" >&2; exit 1; }
  for threads in 1 2; do
    prates=()
    for rep in $(seq 1 "$REPS"); do
      out=$("$HERE/peers/kstreams/run.sh" --bootstrap "$BROKERS" --telemetry-topic "$E2E.telemetry" \
        --lifecycle-topic "$E2E.lifecycle" --threads "$threads" --application-id "bench-$RUN-peer-$threads-$rep" \
        --events "$TOTAL" 2>>"$LOGS/peer.log" | tail -1)
      JSON+=("$out")
      prates+=("$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["events_per_s"]))' "$out")")
    done
    read -r mn md mx < <(stats "${prates[@]}")
    row "| Kafka Streams peer, $threads thread(s) | $(printf "%'.0f" "$md") events/s (min $(printf "%'.0f" "$mn"), max $(printf "%'.0f" "$mx")) | bench/peers/kstreams/run.sh, same topics |"
  done
fi

# ---- results ---------------------------------------------------------------------------
OUT=$HERE/results/$(date +%Y-%m-%d)-$(hostname).md
{
  echo "# twin-engine benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(hostname)"
  echo
  echo "Command: \`BENCH_SCALE=$SCALE BENCH_REPS=$REPS BENCH_SEED=$SEED bench/run.sh\`; $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); Kafka and FerretDB on the same machine."
  echo
  echo "| what | result | how |"
  echo "|---|---|---|"
  printf '%s\n' "${RESULTS[@]}"
  echo
  echo '```json'
  printf '%s\n' "${JSON[@]}"
  echo '```'
} >"$OUT"
say "results in ${OUT#$REPO/}"
