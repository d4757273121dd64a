#!/usr/bin/env bash
# test_proto_langs.sh - checks that Debian's protoc accepts the public contracts
# under proto/ for the languages other teams write producers in (C++, Java,
# Python), and that it accepts them with proto3 `optional` as written.
# Usage: test_proto_langs.sh <repo root>
set -euo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v protoc >/dev/null || { echo "protoc not found (Debian package protobuf-compiler)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protos=(twin/v1/events.proto twin/v1/alerts.proto)
echo "$(protoc --version); checking ${protos[*]}"
fail=0
for lang in cpp java python; do
  mkdir -p "$out/$lang"
  # --experimental_allow_proto3_optional is accepted (and needed) by protoc 3.12-3.14
  # only; Debian 12's 3.21 takes proto3 optional as is.
  if protoc --proto_path="$ROOT/proto" --"${lang}_out"="$out/$lang" "${protos[@]}"; then
    n=$(find "$out/$lang" -type f | wc -l)
    if ((n == 0)); then echo "FAIL $lang: protoc wrote no files"; fail=1; else echo "ok   $lang: $n files"; fi
  else
    echo "FAIL $lang: protoc rejected the contracts"
    fail=1
  fi
done
# A descriptor set with imports + source info: what schema registries consume.
if protoc --proto_path="$ROOT/proto" --include_imports --include_source_info \
  --descriptor_set_out="$out/twin.desc" "${protos[@]}"; then
  echo "ok   descriptor_set"
else
  echo "FAIL descriptor_set"
  fail=1
fi
exit $fail
