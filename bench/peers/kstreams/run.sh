#!/usr/bin/env bash
# run.sh - runs the Kafka Streams peer over a telemetry + lifecycle topic pair
# until it has processed N records, then prints the rate (bench/peers/README.md).
#
#   bench/peers/kstreams/run.sh [options] [-- extra PeerApp options]
#   bench/peers/kstreams/run.sh topics create|delete|count BOOTSTRAP ...   (Admin API helper)
#
# options (each also read from the environment variable shown):
#   --bootstrap B          PEER_BOOTSTRAP        brokers (127.0.0.1:9092)
#   --telemetry-topic T    PEER_TELEMETRY_TOPIC  (twin.telemetry)
#   --lifecycle-topic L    PEER_LIFECYCLE_TOPIC  (twin.lifecycle)
#   --application-id ID    PEER_APP_ID           Streams application.id = consumer group; must be new so
#                                                the run reads from the beginning (default: unique per run)
#   --threads K            PEER_THREADS          num.stream.threads (1)
#   --events N             PEER_EVENTS           stop after N records; 0 = all records in the topics at start (0)
#   --timeout-s S          PEER_TIMEOUT_S        give up after S seconds (1800)
#   --dump FILE            PEER_DUMP             write the final KTable as JSON lines (for verify.py)
#   --keep-internal-topics                       keep the changelog topic and consumer group
#   JAVA_OPTS                                    JVM options (default -Xmx1g; JAVA_OPTS= for the JVM's
#                                                own defaults: a heap of up to 1/4 of RAM, which here was
#                                                slower and used twice the memory)
#
# The app prints `processed=N elapsed_ms=T events_per_s=R steady_events_per_s=S ...`, closes
# Kafka Streams, deletes its local RocksDB state dir, its changelog topic and consumer group,
# and prints one JSON line last:
#   {"peer":"kafka-streams","threads":..,"events":..,"elapsed_ms":..,"events_per_s":..,
#    "steady_events_per_s":..,"peak_rss_kb":..,...}
# Exit code 0 only when all N records were processed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Build if needed (quiet when up to date); the last line is CLASSPATH=...
cp_line=$("$HERE/build.sh" 2>/tmp/kstreams-peer-build.$$.log | tail -1) || {
  cat /tmp/kstreams-peer-build.$$.log >&2
  rm -f /tmp/kstreams-peer-build.$$.log
  exit 1
}
rm -f /tmp/kstreams-peer-build.$$.log
CP=${cp_line#CLASSPATH=}

JAVA_OPTS=${JAVA_OPTS--Xmx1g}
# shellcheck disable=SC2086  # JAVA_OPTS is a list of options
if [[ ${1:-} == topics ]]; then
  shift
  exec java ${JAVA_OPTS:-} -cp "$CP" io.twinengine.bench.kstreams.Topics "$@"
fi

bootstrap=${PEER_BOOTSTRAP:-127.0.0.1:9092}
telemetry=${PEER_TELEMETRY_TOPIC:-twin.telemetry}
lifecycle=${PEER_LIFECYCLE_TOPIC:-twin.lifecycle}
app_id=${PEER_APP_ID:-twin-kstreams-peer-$(date +%Y%m%d%H%M%S)-$$}
threads=${PEER_THREADS:-1}
events=${PEER_EVENTS:-0}
timeout_s=${PEER_TIMEOUT_S:-1800}
dump=${PEER_DUMP:-}
extra=()
while (($#)); do
  case $1 in
    --bootstrap) bootstrap=$2; shift 2 ;;
    --telemetry-topic) telemetry=$2; shift 2 ;;
    --lifecycle-topic) lifecycle=$2; shift 2 ;;
    --application-id) app_id=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --timeout-s) timeout_s=$2; shift 2 ;;
    --dump) dump=$2; shift 2 ;;
    --keep-internal-topics | --quiet) extra+=("$1"); shift ;;
    --) shift; extra+=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) echo "run: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $dump ]] && extra+=(--dump "$dump")

echo "run: kafka-streams peer: bootstrap=$bootstrap topics=$telemetry,$lifecycle application.id=$app_id threads=$threads events=$events JAVA_OPTS=$JAVA_OPTS" >&2
# shellcheck disable=SC2086
exec java ${JAVA_OPTS:-} -cp "$CP" io.twinengine.bench.kstreams.PeerApp \
  --bootstrap "$bootstrap" --telemetry-topic "$telemetry" --lifecycle-topic "$lifecycle" \
  --application-id "$app_id" --threads "$threads" --events "$events" --timeout-s "$timeout_s" \
  "${extra[@]}"
