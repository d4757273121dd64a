#!/usr/bin/env bash
# demo.sh - from a fresh clone to a running twin-engine on this machine:
# installs what is missing, builds, brings the local stack up (Kafka + FerretDB
# on loopback), then runs the simulator and the engine and shows twins.
#
# The stack stays up afterwards; stop it with deploy/local/stack.sh down.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"

echo "== 1/5 dependencies"
"$HERE/install-deps.sh"

echo "== 2/5 build (build/)"
cmake -S "$REPO" -B "$REPO/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$REPO/build"

echo "== 3/5 local stack (emptied first: the demo starts from no data; DEMO_KEEP=1 keeps it)"
if [[ -z ${DEMO_KEEP:-} ]]; then "$HERE/stack.sh" reset; fi
"$HERE/stack.sh" up

# ---- engine + simulator ---------------------------------------------------------
PRODUCTS=${DEMO_PRODUCTS:-10000}
RATE=${DEMO_RATE:-20000}
SECONDS_=${DEMO_SECONDS:-30}
LOGS="$REPO/.stack/demo"
mkdir -p "$LOGS"
BIN="$REPO/build/bin"

echo "== 4/5 engine + simulator: $PRODUCTS vehicles, $RATE events/s for $SECONDS_ s"
# FerretDB (the local MongoDB stand-in) scans the whole collection for every
# delete or update, so the demo flushes rarely: twins stay in memory while the
# fleet streams and are written when the engine stops. Against MongoDB the
# defaults (every second) are the right choice.
"$BIN/twin-engine" run --set snapshot.interval.ms=120000 --set snapshot.max.dirty=1000000 \
  >"$LOGS/engine.log" 2>&1 &
ENGINE=$!
trap 'kill -TERM $ENGINE 2>/dev/null || true' EXIT
"$BIN/twin-sim" --seed "${DEMO_SEED:-1}" --products "$PRODUCTS" --rate "$RATE" --duration "$SECONDS_" \
  --duplicates 0.01 --reorder 0.01 --invalid 0.002 --garbage 0.001 2>&1 | tee "$LOGS/sim.log" | grep -E "done|error" || true
SENT=$(sed -n 's/.*done: \([0-9]*\) messages.*/\1/p' "$LOGS/sim.log" | tail -1)
[[ -n $SENT ]] || { echo "demo: twin-sim failed, see $LOGS/sim.log" >&2; exit 1; }

# Wait until the engine has consumed everything the simulator sent.
consumed() { sed -n 's/.*\[stats\] consumed=\([0-9]*\).*/\1/p' "$LOGS/engine.log" | tail -1; }
T0=$(date +%s.%N)
for ((i = 0; i < 600; i++)); do
  c=$(consumed)
  [[ -n $c && $c -ge $SENT ]] && break
  kill -0 $ENGINE 2>/dev/null || { echo "demo: the engine stopped, see $LOGS/engine.log" >&2; exit 1; }
  sleep 1
done
echo "demo: engine consumed ${c:-0} of $SENT messages; stopping it (a graceful stop flushes every twin to MongoDB)"
t0=$(date +%s)
kill -TERM $ENGINE
wait $ENGINE || true
trap - EXIT
echo "demo: final flush took $(($(date +%s) - t0)) s"
grep -E "\[stats\] final" "$LOGS/engine.log" | sed 's/.*\[stats\] final /engine counters: /'

echo "== 5/5 twins in MongoDB (database twin, collection twins)"
show() { # show TITLE twinctl-args...
  local title=$1 json
  shift
  echo "-- $title"
  json=$("$BIN/twinctl" list "$@" --json --limit 1)
  if [[ -z $json ]]; then
    echo "   (none in this fleet)"
    return
  fi
  python3 -c 'import json,sys
d = json.loads(sys.stdin.read())
print(json.dumps({k: d.get(k) for k in ("_id", "stage", "model", "owner", "rev", "open_recalls",
    "min_brake_pad_mm", "active_dtcs", "last_service", "counters")}, indent=1))
print(" timeline:", ", ".join(e["kind"] + ("(REJECTED: " + e["reason"] + ")" if e["status"] == "rejected" else "")
                              for e in d.get("timeline", [])))' <<<"$json"
}
show "one in production" --stage IN_PRODUCTION
show "one in service with brake pads below 3 mm (alert-worthy)" --stage IN_SERVICE --brake-below 3
show "one decommissioned" --stage DECOMMISSIONED

echo "== maintenance alerts the engine produced (topic twin.alerts)"
# The engine's rules ran on every twin as events arrived; RAISED and CLEARED
# went to twin.alerts. Counted per rule, then the latest few.
"$BIN/twinctl" alerts --dedupe --json | python3 -c 'import collections, json, sys
c = collections.Counter()
for line in sys.stdin:
    a = json.loads(line)
    c[(a["rule_id"], a["state"])] += 1
rules = sorted({r for r, _ in c})
print("  %-22s %8s %8s" % ("rule", "raised", "cleared"))
for r in rules:
    print("  %-22s %8d %8d" % (r, c[(r, "RAISED")], c[(r, "CLEARED")]))
print("  %d alerts in all" % sum(c.values()))'
echo "-- the latest 10"
"$BIN/twinctl" alerts --dedupe --limit 10
echo
echo "demo: done. Logs in $LOGS. More: build/bin/twinctl --help; stop the stack with deploy/local/stack.sh down"
echo "demo: to look at the twins in a browser, run build/bin/twin-engine run and open http://127.0.0.1:8080/ (the twin viewer)"
