#!/usr/bin/env bash
# summary.sh FILE [--reset] - the fault suite's summary table.
#   summary.sh FILE --reset   empty FILE (ctest fixture set-up, before the scenarios)
#   summary.sh FILE           print FILE as a table; exit 1 if a scenario failed or
#                             lost or duplicated anything, or if FILE has no line
# Each scenario (tests/faults/faults.c) appends a tab-separated line when it
# starts (scenario, "-" x 8, UNFINISHED) and one from its end check: scenario,
# events, faults injected, events lost, events duplicated, expected alert
# transitions, of those missing, repeated alerts, seconds, ok|FAIL.
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
  # A scenario writes an UNFINISHED line when it starts and its result when
  # it ends: the last line of each scenario counts.
  {
    if (!($1 in line)) order[n++] = $1
    line[$1] = $0
  }
  END {
    for (i = 0; i < n; i++) {
      split(line[order[i]], f, "\t")
      printf fmt, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10]
      ev += f[2]; fa += f[3]; lo += f[4]; du += f[5]; al += f[6]; am += f[7]; ar += f[8]; s += f[9]
      if (f[10] != "ok" || f[4] != 0 || f[5] != 0 || f[7] != 0) bad++
    }
    printf fmt, "total", ev, fa, lo, du, al, am, ar, sprintf("%.1f", s), bad ? bad " FAILED" : "all ok"
    printf "(lost/dup: events; alerts: expected transitions, a.lost: of them not on the topic,\n"
    printf " a.repeat: copies sent again after a crash or by two owners during a rebalance,\n"
    printf " which consumers drop by alert_id)\n"
    exit bad ? 1 : 0
  }' "$file"
