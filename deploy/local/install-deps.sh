#!/usr/bin/env bash
# install-deps.sh - installs the Debian 12 packages twin-engine needs to build,
# test and run its local stack, and checks the toolchains apt cannot give.
#
# Called by stack.sh, tests/run-all.sh and demo.sh; safe to run again (it only
# installs what is missing, and runs `apt-get update` at most once). As root it
# installs; otherwise it prints the apt command to run and fails.
set -euo pipefail

# Build + test: compiler, CMake/Ninja, the client libraries, protobuf-c,
# cmocka, clang (fuzzing, sanitizers), clang-format 14 (the CI format check),
# protoc (checks the contracts for other languages).
PACKAGES=(
  build-essential cmake ninja-build pkg-config
  librdkafka-dev libmongoc-dev libbson-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libcmocka-dev libyaml-dev libmicrohttpd-dev libzstd-dev zstd libjemalloc-dev
  clang clang-14 libclang-rt-14-dev clang-format-14
  # Local stack: kcat (Kafka metadata probe), Maven (fetches the Kafka jars),
  # python3 (the MongoDB ping probe).
  kcat maven python3
  # the local stack's test CA and certificates (Kafka SASL_SSL, FerretDB TLS).
  openssl
  # the JSON Schema check of stored twins (tests/tools/validate_schema.py).
  python3-jsonschema
  # the /metrics parser of the HTTP API test (tests/integration/test_http.py).
  python3-prometheus-client
  # YAML parser of the deployment files check (tests/deploy/validate_deploy.py).
  python3-yaml
  # the twin viewer's browser test (tests/ui, test_ui): headless Chromium,
  # driven by playwright-core from npm (tests/ui/install.sh).
  chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Kafka needs a Java 17+ runtime; keep whatever java is already there.
if ! command -v java >/dev/null 2>&1; then
  missing+=(openjdk-17-jre-headless)
fi

if ((${#missing[@]})); then
  cmd="apt-get install -y --no-install-recommends ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: run as root:  apt-get update && $cmd" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kafka 4 brokers need Java 17 or newer.
jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [[ -z $jv || ${jv%%.*} -lt 17 ]]; then
  echo "install-deps: Kafka 4 needs Java >= 17, but 'java' is ${jv:-unknown}; install openjdk-17-jre-headless and make it the default (update-alternatives --config java)." >&2
  exit 1
fi

# Go is not taken from Debian: bookworm's golang (1.19) is too old for
# FerretDB 1.24 (go.mod: go 1.24). Any Go >= 1.21 works, since it fetches the
# toolchain go.mod asks for from the Go module proxy.
if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: 'go' (Go >= 1.21) is not on PATH; FerretDB is built from source with it." >&2
  echo "install-deps: install Go from the official distribution and put its bin/ on PATH." >&2
  exit 1
fi
gov=$(go env GOVERSION 2>/dev/null || echo go0)
gov=${gov#go}
if [[ $(printf '%s\n' "1.21" "$gov" | sort -V | head -n1) != "1.21" ]]; then
  echo "install-deps: Go $gov is too old; FerretDB 1.24 needs Go >= 1.21 (with toolchain download)." >&2
  exit 1
fi
