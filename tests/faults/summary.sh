#!/usr/bin/env bash
# summary.sh FILE [--reset] - the fault suite's summary table.
#   summary.sh FILE --reset   empty FILE (ctest fixture set-up, before the scenarios)
#   summary.sh FILE           print FILE as a table; exit 1 if a scenario failed or
#                             lost or duplicated anything, or if FILE has no line
# Each scenario (tests/faults/faults.c, f_finish) appends one tab-separated line:
# scenario, events, faults injected, events lost, events duplicated, expected
# alert transitions, of those missing, repeated alerts, seconds, ok|FAIL.
set -uo pipefail
file=$1
if [[ ${2:-} == --reset ]]; then
  : >"$file"
  exit 0
fi
if [[ ! -s $file ]]; then
  echo "fault suite: no scenario wrote to $file"
  exit 1
fi
awk -F'\t' '
  BEGIN {
    fmt = "%-28s %9s %7s %6s %6s %8s %8s %8s %8s  %s\n"
    printf "\nfault suite summary\n"
    printf fmt, "scenario", "events", "faults", "lost", "dup", "alerts", "a.lost", "a.repeat", "seconds", ""
  }
  {
    printf fmt, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
    ev += $2; fa += $3; lo += $4; du += $5; al += $6; am += $7; ar += $8; s += $9
    if ($10 != "ok" || $4 != 0 || $5 != 0 || $7 != 0) bad++
  }
  END {
    printf fmt, "total", ev, fa, lo, du, al, am, ar, sprintf("%.1f", s), bad ? bad " FAILED" : "all ok"
    printf "(lost/dup: events; alerts: expected transitions, a.lost: of them not on the topic,\n"
    printf " a.repeat: copies sent again after a crash or by two owners during a rebalance,\n"
    printf " which consumers drop by alert_id)\n"
    exit bad ? 1 : 0
  }' "$file"
