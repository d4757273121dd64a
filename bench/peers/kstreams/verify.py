#!/usr/bin/env python3
"""verify.py - checks the peer's final KTable (run.sh --dump FILE) against the
simulator's truth file (twin-sim --truth FILE), so the benchmark compares an
engine that computes the same thing.

    verify.py DUMP.jsonl TRUTH.jsonl

Compared per product: accepted events, stage, owner, open recalls, odometer,
smallest brake pad, DTC set, last service work order, and the per-source
high-water marks (= events per source, since twin-sim numbers each source's
events 1, 2, 3, ...). Only meaningful for streams without --duplicates,
--reorder, --late, --garbage or --invalid: the peer's dedupe is a plain
high-water mark, and it has no DLQ.
Prints 'N passed, N failed' (products) and exits 1 on any mismatch.
"""
import json
import math
import sys


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    dump = {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            dump[d["product_id"]] = d
    passed = failed = 0
    shown = 0
    with open(sys.argv[2], encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            if t.get("summary"):
                continue
            pid = t["product_id"]
            d = dump.pop(pid, None)
            problems = []
            if d is None:
                if t["accepted"] == 0:
                    passed += 1
                    continue
                problems.append("missing from the peer's table")
            else:
                for k in ("accepted", "stage", "owner", "last_service_work_order"):
                    if d[k] != t[k]:
                        problems.append(f"{k}: peer {d[k]!r} truth {t[k]!r}")
                if sorted(d["open_recalls"]) != sorted(t["open_recalls"]):
                    problems.append(f"open_recalls: peer {d['open_recalls']} truth {t['open_recalls']}")
                if sorted(d["dtc_codes"] or []) != sorted(t["dtc_codes"] or []) or (
                    (d["dtc_codes"] is None) != (t["dtc_codes"] is None)
                ):
                    problems.append(f"dtc_codes: peer {d['dtc_codes']} truth {t['dtc_codes']}")
                for k in ("odometer_km", "min_brake_pad_mm"):
                    if not close(d[k], t[k]):
                        problems.append(f"{k}: peer {d[k]} truth {t[k]}")
                if d["sources"] != t["sources"]:
                    problems.append(f"sources: peer {d['sources']} truth {t['sources']}")
            if problems:
                failed += 1
                if shown < 10:
                    shown += 1
                    print(f"{pid}: " + "; ".join(problems))
            else:
                passed += 1
    for pid in list(dump)[:10]:
        print(f"{pid}: in the peer's table but not in the truth file")
    failed += len(dump)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
