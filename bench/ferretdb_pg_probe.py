#!/usr/bin/env python3
"""ferretdb_pg_probe.py - times the store's MongoDB operations against a
MongoDB-protocol server at growing collection sizes.

It answers one question: does the cost of the operations twin-engine's
store (twin-engine/core/store.c) runs per batch depend on the collection's
size? On FerretDB 1.24 with the SQLite backend it does (a scan per
operation); the probe runs the same operations on any other server, e.g.
FerretDB with the PostgreSQL backend, for comparison.

Operations, each timed at every size (ms per operation, median of reps):
  a  replace_one({_id: X, seen: {$lt: N}}, doc)            one guarded replace
  b  find({_id: {$in: [500 ids]}})                          a lazy load
  c  delete_many({$or: [{_id: A, seen: {$lt: n}}, ... 500]}) replace_by_insert's delete
  d  insert_many(500 docs, ordered=False)                   replace_by_insert's insert
  e  bulk_write(500 x ReplaceOne/UpdateOne(filter {_id, seen: {$lt}},
     upsert=True), ordered=False)                           run_guarded (the MongoDB path)

Documents are shaped like a twin snapshot (schemas/twin.schema.json): a
17-character VIN as _id, an int64 `seen`, nested telemetry, arrays, a
timeline; about 4 KB of BSON each (3,966 bytes). The collection keeps its size through
the run: (c) deletes 500 documents that (d) inserts again, (a) and (e)
match existing documents with a newer `seen`. Above --scan-max, b and c are
skipped and (d) inserts 500 new ids per repetition that stay (at most
reps x 500 more documents).

(e) is sent as commands of --e-chunk (40) statements: FerretDB 1.24 keeps
each update statement's query (and its backend connection) open until the
whole command ends (internal/handler/msg_update.go: a defer in the loop),
and its PostgreSQL pool has 50 connections, so one update command of 500
statements never returns there and leaves the pool exhausted.

When an operation type would take longer than --budget seconds at a size,
it runs fewer repetitions; a 500-op bulk (e) that would exceed the budget
runs with fewer ops and its time is scaled to 500 (marked `~`).

Usage:
  /usr/bin/python3 bench/ferretdb_pg_probe.py --port 27019 --sizes 1000,10000,100000
Needs python3-pymongo (Debian package; run /usr/bin/python3 when another
python3 comes first on PATH). Drops and refills the collection --db.--coll
(default probe.twins) on the server it is pointed at.
"""
import argparse
import json
import random
import statistics
import sys
import time

try:
    import bson
    from bson.int64 import Int64
    from pymongo import MongoClient, ReplaceOne, UpdateOne
except ImportError:
    sys.exit("ferretdb_pg_probe: needs pymongo (apt-get install python3-pymongo)")

BATCH = 500
EXTRA_IDS = 10**10  # ids of (d)'s inserts above --scan-max: apart from the 0..size-1 ones
STAGES = ["MANUFACTURED", "QUALITY_CHECK", "SHIPPED", "DELIVERED", "IN_SERVICE", "RETIRED"]
SCALARS = ["speed_kmh", "odometer_km", "battery_soc_pct", "battery_soh_pct", "battery_voltage_v",
           "coolant_temp_c", "oil_temp_c", "oil_pressure_kpa", "engine_rpm", "fuel_level_pct",
           "ambient_temp_c", "cabin_temp_c", "latitude", "longitude", "heading_deg",
           "throttle_pct", "brake_pressure_kpa", "steering_angle_deg"]
INDEX_KEYS = ["stage", "owner", "timeline.site", "alerts.active.rule", "open_recalls",
              "active_dtcs", "min_brake_pad_mm"]


def vin(i):
    """A 17-character VIN-like id (WMI + serial)."""
    return "WVWZZZ%011d" % i


def make_doc(i, seen, rng):
    at = 1_700_000_000_000 + seen
    tel = {}
    for k, name in enumerate(SCALARS):
        tel[name] = {"value": rng.random() * 100, "at_ms": Int64(at - k), "seq": Int64(seen)}
    tel["tire_pressure_kpa"] = {"values": [rng.random() * 250 for _ in range(4)], "at_ms": Int64(at)}
    tel["brake_pad_mm"] = {"values": [rng.random() * 12 for _ in range(4)], "at_ms": Int64(at)}
    tel["dtc_codes"] = {"values": ["P0301", "U0100"], "at_ms": Int64(at)}
    tel["firmware_version"] = {"value": "4.2.%d" % (i % 50), "at_ms": Int64(at)}
    tel["metrics"] = {"m%d" % k: {"value": rng.random(), "at_ms": Int64(at)} for k in range(4)}
    timeline = []
    for k in range(8):
        timeline.append({"kind": ["MANUFACTURED", "SHIPPED", "DELIVERED", "SERVICED"][k % 4],
                         "event_time_ms": Int64(at - 86_400_000 * (8 - k)), "source": "plant-%d" % (k % 3),
                         "seq": Int64(k), "status": "applied", "site": "site-%03d" % ((i + k) % 200),
                         "actor": "user-%05d" % (i % 9973), "detail": "routine event number %d" % k})
    return {
        "_id": vin(i),
        "stage": STAGES[i % len(STAGES)],
        "model": "model-%d" % (i % 12),
        "owner": "owner-%06d" % (i % 50000),
        "rev": Int64(seen),
        "seen": Int64(seen),
        "quality_hold": False,
        "telemetry": tel,
        "active_dtcs": ["P0301", "U0100"] if i % 7 == 0 else [],
        "min_brake_pad_mm": rng.random() * 12,
        "odometer_since_service_km": rng.random() * 20000,
        "battery_health": {"soh_pct": 97.5, "trend_pct_per_year": -1.2, "samples": Int64(40),
                           "t0_ms": Int64(at - 10**9)},
        "brake_wear": {"mm_per_day": 0.01, "mm_per_1000_km": 0.2, "samples": Int64(30),
                       "t0_ms": Int64(at - 10**9), "last_at_ms": Int64(at), "last_mm": 8.1,
                       "sum_t": 1.0, "sum_y": 2.0, "sum_tt": 3.0, "sum_ty": 4.0},
        "alerts": {"active": [{"rule": "brake_pad_low", "alert_id": "%s-brake_pad_low-1" % vin(i),
                               "severity": "WARNING", "since": Int64(at), "value": 2.9,
                               "threshold": 3.0, "unit": "mm", "predicted_at_ms": None,
                               "message": "brake pad below 3 mm", "leaf": 2}],
                   "cycles": {"brake_pad_low": Int64(1)}},
        "open_recalls": ["R-2024-%03d" % (i % 40)] if i % 5 == 0 else [],
        "timeline": timeline,
        "updated_at": Int64(at),
    }


class Seen:
    """Hands out ever larger `seen` values, so every guarded write matches."""

    def __init__(self):
        self.v = int(time.time() * 1000) - 1_700_000_000_000  # above any earlier run's

    def next(self):
        self.v += 1
        return self.v


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def fill(coll, start, end, seen, rng):
    t0 = time.perf_counter()
    for lo in range(start, end, 1000):
        docs = [make_doc(i, seen.next(), rng) for i in range(lo, min(end, lo + 1000))]
        coll.insert_many(docs, ordered=False)
    return time.perf_counter() - t0


def explain(db, coll, filt):
    """FerretDB reports whether it pushed the filter down to its backend."""
    try:
        r = db.command("explain", {"find": coll, "filter": filt}, verbosity="queryPlanner")
    except Exception as e:  # not every server explains the same way
        return "explain failed: %s" % e
    out = {k: r[k] for k in ("filterPushdown", "pushdown") if k in r}
    return out or "no pushdown field"


def run_size(db, coll, n, args, seen, rng, results):
    budget = args.budget * 1000.0
    row = {"size": n}
    ids = lambda k: [vin(i) for i in rng.sample(range(n), k)]

    # (a) one guarded replace
    times = []
    while len(times) < args.reps_a and sum(times) < budget:
        i = rng.randrange(n)
        s = seen.next()
        ms, r = timed(lambda: coll.replace_one({"_id": vin(i), "seen": {"$lt": Int64(s)}}, make_doc(i, s, rng)))
        assert r.matched_count == 1, r.raw_result
        times.append(ms)
    row["a_replace_one"] = (statistics.median(times), len(times))

    # (b) lazy load of 500 ids
    times = [float("nan")] if n > args.scan_max else []
    while n <= args.scan_max and len(times) < args.reps and sum(times) < budget:
        want = ids(BATCH)
        ms, got = timed(lambda: list(coll.find({"_id": {"$in": want}})))
        assert len(got) == BATCH, len(got)
        times.append(ms)
    row["b_find_in_500"] = (statistics.median(times), len(times))

    # (c) guarded delete of 500, then (d) insert of the same 500, newer
    tc, td = [], []
    extra = 0
    if n > args.scan_max:  # (d) alone: 500 new ids, left in (any delete would scan)
        while len(td) < args.reps and sum(td) < budget:
            docs = [make_doc(i, seen.next(), rng) for i in range(EXTRA_IDS + extra, EXTRA_IDS + extra + BATCH)]
            ms, r = timed(lambda: coll.insert_many(docs, ordered=False))
            assert len(r.inserted_ids) == BATCH
            td.append(ms)
            extra += BATCH
        tc = [float("nan")]
    while n <= args.scan_max and len(tc) < args.reps and sum(tc) + sum(td) < budget:
        idx = rng.sample(range(n), BATCH)
        docs = [make_doc(i, seen.next(), rng) for i in idx]
        filt = {"$or": [{"_id": d["_id"], "seen": {"$lt": d["seen"]}} for d in docs]}
        ms, r = timed(lambda: coll.delete_many(filt))
        assert r.deleted_count == BATCH, r.raw_result
        tc.append(ms)
        ms, r = timed(lambda: coll.insert_many(docs, ordered=False))
        assert len(r.inserted_ids) == BATCH
        td.append(ms)
    row["c_delete_or_500"] = (statistics.median(tc), len(tc))
    row["d_insert_many_500"] = (statistics.median(td), len(td))

    # (e) bulk of guarded upserts; ReplaceOne is what store.c's run_guarded sends,
    # UpdateOne($set) is the variant the question names.
    for key, kind in (("e_bulk_replace_upsert_500", "replace"), ("e_bulk_update_upsert_500", "update")):
        est = row["a_replace_one"][0] * BATCH
        k = BATCH if est <= budget else max(10, int(budget / row["a_replace_one"][0]))
        times = []
        while len(times) < args.reps_e and sum(times) < budget:
            idx = rng.sample(range(n), k)
            ops = []
            for i in idx:
                s = seen.next()
                f = {"_id": vin(i), "seen": {"$lt": Int64(s)}}
                if kind == "replace":
                    ops.append(ReplaceOne(f, make_doc(i, s, rng), upsert=True))
                else:
                    ops.append(UpdateOne(f, {"$set": {"seen": Int64(s), "rev": Int64(s),
                                                      "telemetry.speed_kmh.value": rng.random() * 100}},
                                         upsert=True))
            ms, matched = 0.0, 0
            for lo in range(0, k, args.e_chunk):
                t, r = timed(lambda: coll.bulk_write(ops[lo:lo + args.e_chunk], ordered=False))
                assert r.upserted_count == 0, r.bulk_api_result
                ms, matched = ms + t, matched + r.matched_count
            assert matched == k, matched
            times.append(ms * BATCH / k)
        row[key] = (statistics.median(times), len(times), k)

    row["extra_docs"] = extra
    results.append(row)


def fmt(v):
    if v[0] != v[0]:
        return "skipped"
    if len(v) == 3 and v[2] != BATCH:
        return "~%.0f (%d ops scaled)" % (v[0], v[2])
    return "%.1f" % v[0] if v[0] < 100 else "%.0f" % v[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=27019)
    ap.add_argument("--db", default="probe")
    ap.add_argument("--coll", default="twins")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of b, c, d")
    ap.add_argument("--reps-a", type=int, default=30, help="repetitions of a")
    ap.add_argument("--reps-e", type=int, default=3, help="repetitions of e")
    ap.add_argument("--e-chunk", type=int, default=40,
                    help="update statements per command in e (see above: 500 in one command hang "
                         "FerretDB 1.24 on PostgreSQL)")
    ap.add_argument("--scan-max", type=int, default=10**9,
                    help="skip b and c (filters FerretDB does not push down) above this size")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per operation type and size")
    ap.add_argument("--no-indexes", action="store_true", help="skip the engine's list indexes")
    ap.add_argument("--keep", type=int, default=0, metavar="N",
                    help="keep the collection, which holds ids 0..N-1 from an earlier run (counting "
                         "them would scan), and grow it")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    rng = random.Random(42)
    client = MongoClient(args.host, args.port, serverSelectionTimeoutMS=5000)
    bi = client.admin.command("buildInfo")
    server = "FerretDB %s (%s)" % (bi["ferretdbVersion"], bi.get("ferretdbFeatures", {})) if "ferretdbVersion" in bi \
        else "MongoDB %s" % bi.get("version")
    print("server: %s, port %d, %s" % (server, args.port, args.label), flush=True)
    db = client[args.db]
    coll = db[args.coll]
    have = args.keep
    if not args.keep:
        db.drop_collection(args.coll)
    sample = bson.encode(make_doc(0, 1, rng))
    print("document: %d bytes of BSON" % len(sample), flush=True)

    if not args.no_indexes and not args.keep:
        # One createIndexes per index, as the engine does (twin-engine/engine/http.c).
        db.create_collection(args.coll)
        for k in INDEX_KEYS:
            ms, _ = timed(lambda: db.command("createIndexes", args.coll,
                                             indexes=[{"key": {k: 1}, "name": k + "_1"}]))
            print("createIndexes %s_1: ok (%.0f ms)" % (k, ms), flush=True)
        ms, _ = timed(lambda: db.command("createIndexes", args.coll,
                                         indexes=[{"key": {"stage": 1}, "name": "stage_1"}]))
        print("createIndexes stage_1 again: ok (%.0f ms)" % ms, flush=True)
        print("indexes: %s" % sorted(ix["name"] for ix in coll.list_indexes()), flush=True)

    seen = Seen()
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        if have < n:
            secs = fill(coll, have, n, seen, rng)
            print("filled %d -> %d documents in %.1f s (%.0f docs/s)" % (have, n, secs, (n - have) / secs),
                  flush=True)
            have = n
        if n == int(args.sizes.split(",")[0]):
            for name, f in (("_id eq", {"_id": vin(1)}),
                            ("_id eq + seen $lt", {"_id": vin(1), "seen": {"$lt": Int64(10**12)}}),
                            ("_id $in", {"_id": {"$in": [vin(1), vin(2)]}}),
                            ("$or of _id+seen", {"$or": [{"_id": vin(1), "seen": {"$lt": Int64(10**12)}},
                                                         {"_id": vin(2), "seen": {"$lt": Int64(10**12)}}]})):
                print("explain %-18s %s" % (name + ":", explain(db, args.coll, f)), flush=True)
        run_size(db, coll, n, args, seen, rng, results)
        row = results[-1]
        print("size %7d: a %s | b %s | c %s | d %s | e-replace %s | e-update %s  (ms per op)" % (
            n, fmt(row["a_replace_one"]), fmt(row["b_find_in_500"]), fmt(row["c_delete_or_500"]),
            fmt(row["d_insert_many_500"]), fmt(row["e_bulk_replace_upsert_500"]),
            fmt(row["e_bulk_update_upsert_500"])), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"server": server, "port": args.port, "label": args.label, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
