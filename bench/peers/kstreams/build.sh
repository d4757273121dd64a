#!/usr/bin/env bash
# build.sh - builds the Kafka Streams peer (bench/peers/README.md).
#
#   bench/peers/kstreams/build.sh [--force]
#
# Needs Java 17+, Maven and Debian's protoc (package protobuf-compiler, 3.21.x;
# protobuf-java in pom.xml is pinned to the same release). Jars come from Maven
# Central into ~/.m2: offline first (`mvn -o`, no network when the cache is
# warm), online only if that fails. Idempotent: does nothing when the jar is
# newer than every input (pom, sources, proto/twin/v1/events.proto); --force
# rebuilds anyway.
#
# Prints the classpath on the last line:  CLASSPATH=<jar>:<lib>/*
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
JAR=$HERE/target/twin-kstreams-peer.jar
LIB=$HERE/target/lib
say() { echo "build: $*" >&2; }
die() {
  echo "build: error: $*" >&2
  exit 1
}

command -v java >/dev/null || die "no java (17+) on PATH"
command -v mvn >/dev/null || die "no mvn on PATH (Debian: apt-get install maven)"
command -v protoc >/dev/null || die "no protoc on PATH (Debian: apt-get install protobuf-compiler)"
jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
((${jv%%.*} >= 17)) || die "Java $jv found, 17+ needed"
pv=$(protoc --version | awk '{print $2}')
want=$(sed -n 's:.*<protobuf.version>\(.*\)</protobuf.version>.*:\1:p' "$HERE/pom.xml")
if [[ ${pv%.*} != "${want%.*}" ]]; then
  say "warning: protoc $pv but protobuf-java $want in pom.xml; generated code may not match the runtime"
fi

stale=1
if [[ ${1:-} != --force && -f $JAR && -f $LIB/.complete ]]; then
  newer=$(find "$HERE/pom.xml" "$HERE/src" "$REPO/proto/twin/v1/events.proto" -newer "$JAR" -type f | head -1)
  [[ -z $newer ]] && stale=0
fi

if ((stale)); then
  t0=$(date +%s)
  rm -rf "$LIB"
  log=$HERE/target/mvn.log
  mkdir -p "$HERE/target"
  if mvn -B -q -o -f "$HERE/pom.xml" package >"$log" 2>&1; then
    say "built offline from ~/.m2 ($(($(date +%s) - t0)) s)"
  else
    say "offline build failed (cache cold?); building online, jars from Maven Central ..."
    mvn -B -q -f "$HERE/pom.xml" package >"$log" 2>&1 || {
      tail -40 "$log" >&2
      die "Maven build failed; see $log"
    }
    say "built online ($(($(date +%s) - t0)) s)"
  fi
  touch "$LIB/.complete" "$JAR"
else
  say "up to date"
fi
say "jar: $JAR"
say "runtime jars: $LIB ($(find "$LIB" -name '*.jar' | wc -l) jars)"
echo "CLASSPATH=$JAR:$LIB/*"
