#!/usr/bin/env bash
# stack.sh - the real local servers twin-engine's tests and demo run against:
# Apache Kafka (KRaft, single node: broker + controller) and FerretDB (MongoDB
# wire protocol, SQLite backend), both on loopback, both started in the
# background and owned through pid files in the stack folder. Besides their
# plain ports, Kafka has a SASL_SSL listener (PLAIN, SCRAM-SHA-256,
# SCRAM-SHA-512; user twin-test, password twin-test-secret) and FerretDB a TLS
# listener, with certificates from a CA of the stack's own (tls/ca.pem), so
# the tests can run the engine the way production connects.
#
#   stack.sh up [kafka|ferretdb]      install/fetch/build what is missing, start, wait, create topics
#   stack.sh down [kafka|ferretdb]    stop what this script started (pid files), wait for exit
#   stack.sh status [kafka|ferretdb]  what runs, ports, versions, logs; exit 0 only if all answer
#   stack.sh reset                    down, then delete the data (caches are kept)
#
# Environment:
#   TWIN_STACK_DIR   state + cache folder (default: <repo>/.stack)
#   TWIN_KAFKA_PORT  Kafka client port (9092); the controller uses TWIN_KAFKA_CONTROLLER_PORT (port+1)
#   TWIN_MONGO_PORT  FerretDB port (27017)
#   TWIN_KAFKA_SASL_PORT  Kafka SASL_SSL port (Kafka port + 2)
#   TWIN_MONGO_TLS_PORT   FerretDB TLS port (FerretDB port + 10)
#   TWIN_PARTITIONS  partitions of twin.telemetry, twin.lifecycle, twin.alerts (12)
#   TWIN_DLQ_PARTITIONS  partitions of twin.dlq (3)
#   TWIN_STACK_TIMEOUT   seconds to wait for each server to answer (120)
#
# Nothing here is a stand-in: the Kafka jars come from Maven Central (pom.xml
# beside this file), FerretDB is built from its Go module.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STACK=${TWIN_STACK_DIR:-$REPO/.stack}
KAFKA_PORT=${TWIN_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TWIN_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
MONGO_PORT=${TWIN_MONGO_PORT:-27017}
KAFKA_SASL_PORT=${TWIN_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
MONGO_TLS_PORT=${TWIN_MONGO_TLS_PORT:-$((MONGO_PORT + 10))}
# Test credentials of the SASL listener (fixtures, not secrets: loopback only).
SASL_USER=twin-test
SASL_PASSWORD=twin-test-secret
PARTITIONS=${TWIN_PARTITIONS:-12}
DLQ_PARTITIONS=${TWIN_DLQ_PARTITIONS:-3}
TIMEOUT=${TWIN_STACK_TIMEOUT:-120}

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
FERRETDB_VERSION=v1.24.2
FERRETDB_MODULE=github.com/FerretDB/FerretDB

# Caches survive `reset`; data does not.
CACHE=$STACK/cache
KAFKA_LIB=$CACHE/kafka-$KAFKA_VERSION-$(sha256sum "$HERE/pom.xml" | cut -c1-12)/lib
FERRETDB_BIN=$STACK/bin/ferretdb-$FERRETDB_VERSION
KDIR=$STACK/kafka
FDIR=$STACK/ferretdb
KAFKA_LOG=$KDIR/kafka.log
FERRETDB_LOG=$FDIR/ferretdb.log
TLS=$STACK/tls

say() { echo "stack: $*"; }
die() {
  echo "stack: error: $*" >&2
  exit 1
}
now() { date +%s; }

# ---- Process bookkeeping ------------------------------------------------------

# pid_of NAME: prints the pid from NAME's pid file if that process is alive and
# is still ours (its command line names our stack folder); else nothing.
pid_of() {
  local f=$STACK/$1/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STACK/"; then
    echo "$pid"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kafka_answers() { kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 3 -t __twin_probe >/dev/null 2>&1; }
mongo_answers() { python3 "$HERE/mongo_ping.py" --port "$MONGO_PORT" --timeout 2 >/dev/null 2>&1; }

# ---- Fetch / build (cached) ---------------------------------------------------

fetch_kafka() {
  if [[ -f $KAFKA_LIB/.complete ]]; then return 0; fi
  say "fetching Kafka $KAFKA_VERSION jars from Maven Central (deploy/local/pom.xml) ..."
  local t0 tmp
  t0=$(now)
  tmp=$KAFKA_LIB.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$STACK/mvn.log" 2>&1; then
    die "Maven could not fetch the Kafka jars; see $STACK/mvn.log"
  fi
  touch "$tmp/.complete"
  rm -rf "$KAFKA_LIB"
  mv "$tmp" "$KAFKA_LIB"
  say "Kafka jars cached in $KAFKA_LIB ($(($(now) - t0)) s)"
}

build_ferretdb() {
  if [[ -x $FERRETDB_BIN ]]; then return 0; fi
  say "building FerretDB $FERRETDB_VERSION from the Go module proxy ..."
  local t0 src dir
  t0=$(now)
  src=$(go mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $src && -d $src ]] || die "go mod download $FERRETDB_MODULE@$FERRETDB_VERSION gave no source dir"
  # The module cache is read-only, and FerretDB's packagers write
  # build/version/version.txt (embedded by the binary) before building.
  dir=$CACHE/ferretdb-src-$FERRETDB_VERSION
  rm -rf "$dir"
  mkdir -p "$CACHE"
  cp -r "$src" "$dir"
  chmod -R u+w "$dir"
  echo "$FERRETDB_VERSION" >"$dir/build/version/version.txt"
  echo "twin-engine-local" >"$dir/build/version/package.txt"
  mkdir -p "$STACK/bin"
  if ! (cd "$dir" && CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) >"$STACK/go-build.log" 2>&1; then
    die "building FerretDB failed; see $STACK/go-build.log"
  fi
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$dir"
  say "FerretDB built: $FERRETDB_BIN ($(($(now) - t0)) s)"
}

# ---- TLS: a CA of the stack's own, one certificate for 127.0.0.1 ----------------

# Kept across `reset` (like the caches); made again when missing or expiring
# within a day. Kafka reads the key and chain from one PEM file.
make_tls() {
  if [[ -f $TLS/server.pem && -f $TLS/ca.pem ]] &&
    openssl x509 -checkend 86400 -noout -in "$TLS/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  say "making a test CA and a certificate for 127.0.0.1 in $TLS"
  rm -rf "$TLS.tmp"
  mkdir -p "$TLS.tmp"
  (
    cd "$TLS.tmp" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=twin-engine local test CA" \
        -keyout ca.key -out ca.pem &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile ext.cnf -out server.pem &&
      openssl pkcs8 -topk8 -nocrypt -in server.key -out server-pkcs8.key &&
      cat server-pkcs8.key server.pem >kafka-keystore.pem
  ) >"$STACK/tls.log" 2>&1 || die "openssl could not make the test certificates; see $STACK/tls.log"
  chmod 600 "$TLS.tmp"/*.key
  rm -rf "$TLS"
  mv "$TLS.tmp" "$TLS"
}

# ---- Kafka --------------------------------------------------------------------

kafka_java() { # kafka_java MAINCLASS ARGS... : runs a Kafka tool quietly
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/tools-log4j2.xml" -cp "$KAFKA_LIB/*" "$@"
}

write_kafka_config() {
  mkdir -p "$KDIR/data"
  cat >"$KDIR/server.properties" <<EOF
# Written by deploy/local/stack.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
# The SASL_SSL listener: TLS with the stack's certificate, then PLAIN or SCRAM
# (SCRAM credentials are stored in the cluster metadata by add_scram_user).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS/kafka-keystore.pem
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KDIR/data
num.partitions=$PARTITIONS
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
EOF
  cat >"$KDIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="$KAFKA_LOG" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
  cat >"$KDIR/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console>
  </Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
EOF
}

start_kafka() {
  if [[ -n $(pid_of kafka) ]]; then
    say "Kafka already running (pid $(pid_of kafka))"
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    kafka_answers || die "port $KAFKA_PORT is taken by something that is not a Kafka broker"
    say "a Kafka broker not started by stack.sh already answers on 127.0.0.1:$KAFKA_PORT; using it"
    return 0
  fi
  port_open "$KAFKA_CONTROLLER_PORT" && die "Kafka controller port $KAFKA_CONTROLLER_PORT is taken (set TWIN_KAFKA_CONTROLLER_PORT)"
  port_open "$KAFKA_SASL_PORT" && die "Kafka SASL_SSL port $KAFKA_SASL_PORT is taken (set TWIN_KAFKA_SASL_PORT)"
  fetch_kafka
  make_tls
  write_kafka_config
  if [[ ! -f $KDIR/data/meta.properties ]]; then
    local id
    id=$(python3 -c 'import base64,uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"): print(s); break')
    say "formatting Kafka storage (cluster id $id)"
    kafka_java kafka.tools.StorageTool format --standalone -t "$id" \
      -c "$KDIR/server.properties" >>"$KDIR/format.log" 2>&1 ||
      die "formatting Kafka storage failed; see $KDIR/format.log"
  fi
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  echo "---- $(date -Is) start" >>"$KDIR/stdout.log"
  setsid nohup java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KDIR/log4j2.xml" \
    -Dkafka.logs.dir="$KDIR" -cp "$KAFKA_LIB/*" kafka.Kafka "$KDIR/server.properties" \
    >>"$KDIR/stdout.log" 2>&1 </dev/null &
  echo $! >"$KDIR/kafka.pid"
}

start_ferretdb() {
  if [[ -n $(pid_of ferretdb) ]]; then
    say "FerretDB already running (pid $(pid_of ferretdb))"
    return 0
  fi
  if port_open "$MONGO_PORT"; then
    mongo_answers || die "port $MONGO_PORT is taken by something that does not answer a MongoDB ping"
    say "a MongoDB-protocol server not started by stack.sh already answers on 127.0.0.1:$MONGO_PORT; using it"
    return 0
  fi
  port_open "$MONGO_TLS_PORT" && die "FerretDB TLS port $MONGO_TLS_PORT is taken (set TWIN_MONGO_TLS_PORT)"
  build_ferretdb
  make_tls
  mkdir -p "$FDIR/data" "$FDIR/state"
  say "starting FerretDB $FERRETDB_VERSION (SQLite) on 127.0.0.1:$MONGO_PORT, TLS on :$MONGO_TLS_PORT (log: $FERRETDB_LOG)"
  setsid nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$FDIR/data/" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$FDIR/state" \
    --listen-tls="127.0.0.1:$MONGO_TLS_PORT" --listen-tls-cert-file="$TLS/server.pem" \
    --listen-tls-key-file="$TLS/server.key" \
    --telemetry=disable --debug-addr=- --log-level=info --log-format=text \
    >>"$FERRETDB_LOG" 2>&1 </dev/null &
  echo $! >"$FDIR/ferretdb.pid"
}

# wait_for NAME PROBE LOG: polls PROBE until it succeeds; fails early if the
# process we started died, or after TIMEOUT seconds.
wait_for() {
  local name=$1 probe=$2 log=$3 deadline pid
  deadline=$(($(now) + TIMEOUT))
  while ! $probe; do
    pid=$(<"$STACK/$name/$name.pid") || true
    if [[ -f $STACK/$name/$name.pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "stack: error: $name exited during start-up (a damaged data folder? 'stack.sh reset' deletes it); last lines of $log:" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    if (($(now) >= deadline)); then
      die "$name did not answer on its port within ${TIMEOUT}s; see its log: $log"
    fi
    sleep 0.5
  done
}

# The SCRAM user of the SASL_SSL listener (both hash sizes); idempotent, so
# every `up` makes sure it is there, also on storage formatted before it was.
add_scram_user() {
  local m
  for m in SCRAM-SHA-256 SCRAM-SHA-512; do # one per request: the broker refuses two
    kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
      --add-config "$m=[password=$SASL_PASSWORD]" --entity-type users --entity-name "$SASL_USER" \
      >"$KDIR/scram.log" 2>&1 || die "adding the $m user $SASL_USER failed; see $KDIR/scram.log"
  done
}

# Creates the twin topics that are missing. Existing topics are left alone,
# but a partition count other than the configured one is reported, since
# twin.telemetry and twin.lifecycle must be co-partitioned.
create_topics() {
  local meta want=("twin.telemetry:$PARTITIONS" "twin.lifecycle:$PARTITIONS" "twin.alerts:$PARTITIONS"
    "twin.dlq:$DLQ_PARTITIONS") pids=() t name n have
  meta=$(kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 10 2>/dev/null) || die "cannot list Kafka topics"
  for t in "${want[@]}"; do
    name=${t%%:*} n=${t##*:}
    have=$(sed -n "s/^ *topic \"$name\" with \([0-9]*\) partitions:.*/\1/p" <<<"$meta")
    if [[ -n $have ]]; then
      [[ $have == "$n" ]] || say "warning: topic $name has $have partitions, configured $n (left as is)"
      continue
    fi
    say "creating topic $name ($n partitions)"
    # TopicCommand creates one topic per JVM; run them side by side.
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --create --if-not-exists --topic "$name" --partitions "$n" --replication-factor 1 \
      >"$KDIR/topic-$name.log" 2>&1 &
    pids+=("$!:$name")
  done
  for t in "${pids[@]}"; do
    wait "${t%%:*}" || die "creating topic ${t#*:} failed; see $KDIR/topic-${t#*:}.log"
  done
  # Return only once the broker's metadata shows every topic with leaders.
  local deadline=$(($(now) + 30)) missing
  while :; do
    meta=$(kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 5 2>/dev/null) || meta=""
    missing=""
    for t in "${want[@]}"; do
      name=${t%%:*}
      grep -q "^ *topic \"$name\" with [1-9][0-9]* partitions:" <<<"$meta" || missing+=" $name"
    done
    grep -q 'leader -1' <<<"$meta" && missing+=" (partitions without leader)"
    [[ -z $missing ]] && break
    (($(now) < deadline)) || die "topics not visible in Kafka metadata after 30 s:$missing; see $KAFKA_LOG"
    sleep 0.5
  done
}

# ---- Commands -----------------------------------------------------------------

owner() { # owner PID HOW
  if [[ -n $1 ]]; then
    echo "pid $1"
  elif [[ $2 == answers ]]; then
    echo "not started by stack.sh"
  else
    echo "stopped"
  fi
}

components() { if (($#)); then echo "$@"; else echo kafka ferretdb; fi; }

cmd_up() {
  local c t0
  t0=$(now)
  mkdir -p "$STACK"
  "$HERE/install-deps.sh"
  # A cold FerretDB build (CPU) overlaps the Kafka jar download (network).
  local build_pid=""
  if [[ " $(components "$@") " == *" ferretdb "* && ! -x $FERRETDB_BIN ]] && ! port_open "$MONGO_PORT"; then
    build_ferretdb &
    build_pid=$!
  fi
  for c in $(components "$@"); do
    case $c in
      kafka) start_kafka ;;
      ferretdb)
        if [[ -n $build_pid ]]; then wait "$build_pid" || exit 1; fi
        start_ferretdb
        ;;
      *) die "unknown component '$c' (kafka, ferretdb)" ;;
    esac
  done
  for c in $(components "$@"); do
    case $c in
      kafka)
        wait_for kafka kafka_answers "$KAFKA_LOG"
        create_topics
        [[ -n $(pid_of kafka) ]] && add_scram_user
        ;;
      ferretdb) wait_for ferretdb mongo_answers "$FERRETDB_LOG" ;;
    esac
  done
  say "up in $(($(now) - t0)) s"
  cmd_status "$@"
}

stop_one() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [[ -z $pid ]]; then
    rm -f "$STACK/$name/$name.pid"
    say "$name: not running (nothing started by stack.sh)"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do # up to 60 s: Kafka shuts down cleanly
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop within 60 s; killing pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$STACK/$name/$name.pid"
}

# shellcheck disable=SC2120  # `stack.sh down [component]` passes them
cmd_down() {
  local c
  for c in $(components "$@"); do
    case $c in
      kafka | ferretdb) stop_one "$c" ;;
      *) die "unknown component '$c' (kafka, ferretdb)" ;;
    esac
  done
}

cmd_status() {
  local c pid ok=0 how
  echo "stack folder: $STACK"
  for c in $(components "$@"); do
    pid=$(pid_of "$c")
    case $c in
      kafka)
        if kafka_answers; then how="answers"; else
          how="not answering"
          ok=1
        fi
        echo "kafka:    Apache Kafka $KAFKA_VERSION (KRaft), 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT): $how, $(owner "$pid" "$how")"
        [[ -n $pid ]] && echo "          SASL_SSL 127.0.0.1:$KAFKA_SASL_PORT (PLAIN, SCRAM-SHA-256/512; $SASL_USER / $SASL_PASSWORD; CA $TLS/ca.pem)"
        echo "          log $KAFKA_LOG, data $KDIR/data"
        if [[ $how == answers ]]; then
          kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 5 2>/dev/null |
            sed -n 's/^ *topic "\(twin\.[^"]*\)" with \([0-9]*\) partitions:.*/          topic \1: \2 partitions/p'
        fi
        ;;
      ferretdb)
        if mongo_answers; then how="answers"; else
          how="not answering"
          ok=1
        fi
        echo "ferretdb: FerretDB $FERRETDB_VERSION (SQLite), mongodb://127.0.0.1:$MONGO_PORT: $how, $(owner "$pid" "$how")"
        [[ -n $pid ]] && echo "          TLS mongodb://127.0.0.1:$MONGO_TLS_PORT/?tls=true&tlsCAFile=$TLS/ca.pem"
        echo "          log $FERRETDB_LOG, data $FDIR/data"
        ;;
      *) die "unknown component '$c' (kafka, ferretdb)" ;;
    esac
  done
  return $ok
}

cmd_reset() {
  cmd_down
  say "deleting data in $KDIR and $FDIR (caches kept)"
  rm -rf "$KDIR" "$FDIR"
}

case ${1:-} in
  up | down | status | reset)
    cmd=$1
    shift
    "cmd_$cmd" "$@"
    ;;
  *)
    sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
