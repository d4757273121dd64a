#!/usr/bin/python3
"""HTTP checks against a running twin-engine (run by test_http.c).

Usage: test_http.py MODE --base URL --docs twins.jsonl --schema twin.schema.json
                    --max-limit N [--token T]... [--cafile PEM] [--truth FILE]

MODE main: every route, filter, error, header and auth case, with bearer
tokens on; --docs holds every stored twin (relaxed extended JSON, sorted by
_id) read by the C side from MongoDB, so expected list results are computed
here independently of the server. MODE live: twins from memory while new
events arrive (--truth: twin-sim's truth file of that run). MODE tls: HTTPS
with --cafile, no tokens. MODE down: the port is closed.

Only Debian packages: the standard library, python3-jsonschema and
python3-prometheus-client. Exits 1 after printing every failed check.
"""
import argparse
import http.client
import json
import re
import socket
import ssl
import sys
import time
import urllib.parse

import jsonschema
from prometheus_client.parser import text_string_to_metric_families

FAILURES = []
CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return cond


class Client:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, base, cafile=None):
        u = urllib.parse.urlsplit(base)
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=cafile) if u.scheme == "https" else None
        self.conn = None
        self.connects = 0

    def _connect(self):
        self.connects += 1
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=60, context=self.ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, token=None, headers=None, body=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        for attempt in range(2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                chunked = body is not None and not isinstance(body, (bytes, str))
                self.conn.request(method, path, body=body, headers=h, encode_chunked=chunked)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token, **kw)

    def json(self, path, token=None, want=200):
        status, hdr, data = self.get(path, token)
        check(status == want, f"GET {path[:120]}: status {status}, want {want}: {data[:300]!r}")
        check(hdr.get("content-type") == "application/json", f"GET {path[:120]}: content-type {hdr.get('content-type')}")
        try:
            return json.loads(data), hdr
        except ValueError as e:
            check(False, f"GET {path[:120]}: body is not JSON ({e}): {data[:200]!r}")
            return None, hdr


def q(s):
    return urllib.parse.quote(s, safe="")


def error_shape(body, hdr, status, what, must_contain=None):
    """Every error: JSON {"error": "...", "status": N}."""
    check(hdr.get("content-type") == "application/json", f"{what}: content-type {hdr.get('content-type')}")
    try:
        j = json.loads(body)
    except ValueError:
        check(False, f"{what}: error body is not JSON: {body[:200]!r}")
        return
    check(isinstance(j, dict) and set(j) == {"error", "status"}, f"{what}: error keys {sorted(j) if isinstance(j, dict) else j}")
    check(j.get("status") == status and isinstance(j.get("error"), str) and j["error"], f"{what}: error body {j}")
    if must_contain:
        check(must_contain in j.get("error", ""), f"{what}: error {j.get('error')!r} does not name {must_contain!r}")


def expect_error(c, method, path, status, token=None, must_contain=None, headers=None, body=None):
    st, hdr, data = c.request(method, path, token=token, headers=headers, body=body)
    what = f"{method} {path[:100]}"
    check(st == status, f"{what}: status {st}, want {status}: {data[:200]!r}")
    if method != "HEAD":
        error_shape(data, hdr, status, what, must_contain)
    return hdr


# ---- Expected results, computed from the stored documents -------------------------

def any_eq(arr, pred):
    return any(pred(x) for x in (arr or []))


FILTERS = {
    "stage": lambda d, v: d.get("stage") == v,
    "owner": lambda d, v: d.get("owner") == v,
    "site": lambda d, v: any_eq(d.get("timeline"), lambda e: isinstance(e, dict) and e.get("site") == v),
    "alert": lambda d, v: any_eq((d.get("alerts") or {}).get("active"), lambda a: a.get("rule") == v),
    "recall": lambda d, v: v in (d.get("open_recalls") or []),
    "dtc": lambda d, v: v in (d.get("active_dtcs") or []),
    "brake_below": lambda d, v: isinstance(d.get("min_brake_pad_mm"), (int, float)) and d["min_brake_pad_mm"] < float(v),
    "prefix": lambda d, v: d["_id"].startswith(v),
}


def expected_ids(docs, params):
    out = []
    for d in docs:
        if all(FILTERS[k](d, v) for k, v in params.items()):
            out.append(d["_id"])
    return out


def list_all(c, token, params, limit):
    """Pages through /v1/twins with after=next; returns ids and items."""
    ids, items, after, pages = [], [], None, 0
    while True:
        p = dict(params, limit=str(limit))
        if after is not None:
            p["after"] = after
        body, hdr = c.json("/v1/twins?" + urllib.parse.urlencode(p), token)
        if body is None:
            return ids, items
        pages += 1
        check(set(body) == {"items", "next", "limit"}, f"list keys {sorted(body)}")
        check(body["limit"] == limit, f"list limit {body['limit']} != {limit}")
        check(len(body["items"]) <= limit, f"page of {len(body['items'])} > limit {limit}")
        check(hdr.get("x-twin-source") == "mongodb", f"list X-Twin-Source {hdr.get('x-twin-source')}")
        for it in body["items"]:
            ids.append(it["_id"])
            items.append(it)
        if body["next"] is None:
            break
        check(len(body["items"]) == limit, f"a page with next has {len(body['items'])} items, not {limit}")
        check(body["next"] == body["items"][-1]["_id"], f"next {body['next']!r} is not the last id on the page")
        after = body["next"]
        if pages > 1000:
            check(False, "more than 1000 pages")
            break
    return ids, items


# ---- Modes -------------------------------------------------------------------------

def wait_ready(c, timeout=60):
    deadline = time.time() + timeout
    while True:
        st, hdr, data = c.get("/readyz")
        if st == 200:
            check(json.loads(data) == {"status": "ready"}, f"/readyz body {data!r}")
            return True
        check(st == 503, f"/readyz status {st}")
        error_shape(data, hdr, 503, "/readyz (not ready)", "not ready")
        if time.time() > deadline:
            return check(False, f"not ready after {timeout} s: {data!r}")
        time.sleep(0.5)


def mode_main(a, validator):
    c = Client(a.base)
    tok, tok2 = a.token[0], a.token[-1]
    docs = [json.loads(line) for line in open(a.docs) if line.strip()]
    by_id = {d["_id"]: d for d in docs}
    db_only = [i for i in by_id if i.startswith("ZZ-HTTP-DB-ONLY") or i.startswith("HTTP/")]
    engine_ids = [i for i in by_id if i not in db_only]
    check(len(db_only) == 2 and len(engine_ids) >= 30, f"fixture: {len(db_only)} db-only, {len(engine_ids)} engine twins")

    # -- probes, never behind the tokens
    body, hdr = c.json("/healthz")
    check(body == {"status": "ok"}, f"/healthz body {body}")
    wait_ready(c)
    st, hdr, data = c.request("HEAD", "/healthz")
    check(st == 200 and data == b"", f"HEAD /healthz: {st} {data!r}")

    # -- auth
    protected = ["/v1/twins", "/v1/twins/" + q(engine_ids[0]), "/v1/twins/" + q(engine_ids[0]) + "/timeline", "/metrics"]
    for path in protected:
        hdr = expect_error(c, "GET", path, 401, must_contain="bearer token")
        check(hdr.get("www-authenticate", "").startswith("Bearer"), f"{path}: WWW-Authenticate {hdr.get('www-authenticate')}")
        hdr = expect_error(c, "GET", path, 401, token="wrong-" + tok)
        check('error="invalid_token"' in hdr.get("www-authenticate", ""), f"{path}: wrong token WWW-Authenticate {hdr.get('www-authenticate')}")
        expect_error(c, "GET", path, 401, token=tok[:-1])
        expect_error(c, "GET", path, 401, token=tok + "x")
        expect_error(c, "GET", path, 401, headers={"Authorization": "Basic " + tok})
        expect_error(c, "GET", path, 401, headers={"Authorization": "Bearer"})
        for t in (tok, tok2):
            st, hdr, data = c.get(path, t)
            check(st == 200, f"{path} with a valid token: {st} {data[:200]!r}")
            check(t.encode() not in data, f"{path}: response echoes the token")
    st, _, _ = c.get("/healthz", "wrong")
    check(st == 200, f"/healthz with a wrong token: {st}")
    st, _, _ = c.get("/readyz", "wrong")
    check(st == 200, f"/readyz with a wrong token: {st}")
    st, _, _ = c.request("GET", "/v1/twins?limit=1", headers={"Authorization": "bearer " + tok})
    check(st == 200, f"scheme 'bearer' (lower case): {st}")

    # -- the twin route: engine twins from memory, with freshness headers
    sources = {}
    for pid in engine_ids:
        st, hdr, data = c.get("/v1/twins/" + q(pid), tok)
        if not check(st == 200, f"GET twin {pid}: {st} {data[:200]!r}"):
            continue
        check(hdr.get("content-type") == "application/json", f"twin {pid}: content-type {hdr.get('content-type')}")
        doc = json.loads(data)
        src = hdr.get("x-twin-source")
        sources[src] = sources.get(src, 0) + 1
        errs = list(validator.iter_errors(doc))
        check(not errs, f"twin {pid} ({src}) invalid: {[e.message for e in errs[:3]]}")
        stored = by_id[pid]
        for k in ("_id", "rev", "seen", "stage", "owner", "timeline", "telemetry", "alerts", "last_event_ms"):
            check(doc.get(k) == stored.get(k), f"twin {pid} ({src}): {k} differs from MongoDB after catching up")
        if src == "memory":
            check(hdr.get("x-twin-dirty") == "false", f"twin {pid}: X-Twin-Dirty {hdr.get('x-twin-dirty')} after catching up")
            check(hdr.get("x-twin-last-event-ms") == str(doc["last_event_ms"]), f"twin {pid}: X-Twin-Last-Event-Ms {hdr.get('x-twin-last-event-ms')} vs {doc['last_event_ms']}")
            check(re.fullmatch(r"\d+", hdr.get("x-twin-shard", "")) is not None, f"twin {pid}: X-Twin-Shard {hdr.get('x-twin-shard')}")
            check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", hdr.get("x-twin-flushed-at", "")) is not None,
                  f"twin {pid}: X-Twin-Flushed-At {hdr.get('x-twin-flushed-at')}")
    print(f"twin route sources for engine twins: {sources}")
    check(sources.get("memory", 0) == len(engine_ids), f"engine twins must come from memory: {sources}")

    # -- twins only MongoDB holds; ids that need percent-encoding
    for pid in db_only:
        st, hdr, data = c.get("/v1/twins/" + q(pid), tok)
        if not check(st == 200, f"GET db-only twin {pid!r}: {st} {data[:200]!r}"):
            continue
        doc = json.loads(data)
        check(doc == by_id[pid], f"db-only twin {pid!r}: body differs from the stored document")
        check(hdr.get("x-twin-source") == "mongodb", f"db-only twin: X-Twin-Source {hdr.get('x-twin-source')}")
        check(hdr.get("x-twin-updated-at") == by_id[pid]["updated_at"]["$date"], f"X-Twin-Updated-At {hdr.get('x-twin-updated-at')} vs {by_id[pid]['updated_at']}")
        check("x-twin-dirty" not in hdr, "db-only twin has X-Twin-Dirty")
        body, hdr = c.json("/v1/twins/" + q(pid) + "/timeline", tok)
        check(body == {"product_id": pid, "timeline": by_id[pid]["timeline"]}, f"timeline of {pid!r} differs")
        check(hdr.get("x-twin-source") == "mongodb", f"db-only timeline: X-Twin-Source {hdr.get('x-twin-source')}")
    # HEAD: headers, no body
    st, hdr, data = c.request("HEAD", "/v1/twins/" + q(engine_ids[0]), token=tok)
    check(st == 200 and data == b"" and int(hdr.get("content-length", "0")) > 100, f"HEAD twin: {st} {hdr.get('content-length')} {data[:50]!r}")

    # -- timelines, oldest first, from memory
    for pid in engine_ids[:10]:
        body, hdr = c.json("/v1/twins/" + q(pid) + "/timeline", tok)
        if body is None:
            continue
        check(list(body) == ["product_id", "timeline"], f"timeline keys {list(body)}")
        check(body["product_id"] == pid and body["timeline"] == by_id[pid]["timeline"], f"timeline of {pid} differs")
        times = [e["event_time_ms"] for e in body["timeline"]]
        check(times == sorted(times), f"timeline of {pid}: not oldest first")
        check(hdr.get("x-twin-source") == "memory", f"timeline {pid}: X-Twin-Source {hdr.get('x-twin-source')}")

    # -- not found
    expect_error(c, "GET", "/v1/twins/NO-SUCH-VIN", 404, tok, "NO-SUCH-VIN")
    expect_error(c, "GET", "/v1/twins/NO-SUCH-VIN/timeline", 404, tok)
    expect_error(c, "GET", "/v1/twins/" + q('{"$gt":""}'), 404, tok)

    # -- the list: all pages, every twin once, in _id order
    all_ids = [d["_id"] for d in docs]
    for limit in (7, 1, MAX_LIMIT(a)):
        ids, items = list_all(c, tok, {}, limit)
        check(ids == all_ids, f"pages of {limit}: {len(ids)} ids, want {len(all_ids)} in _id order (gaps or repeats)")
    ids, items = list_all(c, tok, {}, 7)
    for it in items:
        errs = list(validator.iter_errors(it))
        check(not errs, f"list item {it.get('_id')} invalid: {[e.message for e in errs[:3]]}")
        check(it == by_id.get(it["_id"]), f"list item {it.get('_id')} differs from the stored document")
    body, _ = c.json("/v1/twins", tok)
    check(body and body["limit"] == 50 and len(body["items"]) == min(50, len(docs)), "default limit 50")
    body, _ = c.json("/v1/twins?after=" + q(all_ids[-1]), tok)
    check(body == {"items": [], "next": None, "limit": 50}, f"after the last id: {body}")
    body, _ = c.json("/v1/twins?after=" + q(all_ids[2]) + "&limit=2", tok)
    check(body and [i["_id"] for i in body["items"]] == all_ids[3:5], "after= starts after that id")

    # -- every filter against the documents
    def pick(values):
        values = [v for v in values if v]
        return max(set(values), key=values.count) if values else None

    cases = []
    for st_name in sorted({d["stage"] for d in docs}) + ["DECOMMISSIONED", "ORDERED"]:
        cases.append({"stage": st_name})
    owner = pick([d.get("owner") for d in docs])
    sites = [e.get("site") for d in docs for e in d.get("timeline", [])]
    dealer = pick([s for s in sites if s and s.startswith("DLR-")])
    alert = pick([al["rule"] for d in docs for al in d.get("alerts", {}).get("active", [])])
    recall = pick([r for d in docs for r in d.get("open_recalls", [])])
    dtc = pick([x for d in docs for x in d.get("active_dtcs", [])])
    check(all([owner, dealer, alert, recall, dtc]), f"fixture lacks a value: owner {owner} site {dealer} alert {alert} recall {recall} dtc {dtc}")
    cases += [{"owner": owner}, {"site": dealer}, {"site": "OEM-QUALITY"}, {"alert": alert}, {"recall": recall},
              {"dtc": dtc}, {"brake_below": "6"}, {"brake_below": "4.5"}, {"stage": "IN_SERVICE", "brake_below": "6.0"},
              {"stage": "IN_SERVICE", "owner": owner}, {"stage": "IN_SERVICE", "dtc": dtc, "site": dealer},
              {"alert": "no_such_rule"}, {"owner": "NO-SUCH-OWNER"}]
    # Values are only ever strings: operator-looking input matches nothing.
    cases += [{"owner": '{"$ne":1}'}, {"owner": "$ne"}, {"site": '{"$exists":true}'}, {"dtc": '{"$gt":""}'},
              {"recall": "[]"}]
    # prefix: ids that start with it (the viewer's VIN search), with paging and other filters.
    cases += [{"prefix": engine_ids[0][:9]}, {"prefix": engine_ids[0][:3]}, {"prefix": engine_ids[0]},
              {"prefix": "ZZ-HTTP"}, {"prefix": "HTTP/DB only \u00df"}, {"prefix": "HTTP/DB only \u00e0"},
              {"prefix": engine_ids[0][:3], "stage": "IN_SERVICE"}, {"prefix": "NO-SUCH-PREFIX"}, {"prefix": ".*"},
              {"prefix": '{"$gt":""}'}]
    nonempty = 0
    for params in cases:
        want = expected_ids(docs, params)
        ids, items = list_all(c, tok, params, 5)
        nonempty += bool(want)
        check(ids == want, f"filter {params}: got {len(ids)} {ids[:5]}, want {len(want)} {want[:5]}")
        for it in items:
            check(all(FILTERS[k](it, v) for k, v in params.items()), f"filter {params}: item {it['_id']} does not match")
    check(nonempty >= 10, f"only {nonempty} filter cases had results")
    print(f"{len(cases)} filter cases, {nonempty} with results")

    check_stats(c, tok, docs)
    check_viewer_files(c)

    # -- bad requests
    mx = MAX_LIMIT(a)
    bad = [
        ("/v1/twins?stage=FOO", "stage"), ("/v1/twins?stage=in_service", "IN_SERVICE"),
        ("/v1/twins?limit=0", "limit"), (f"/v1/twins?limit={mx + 1}", str(mx)), ("/v1/twins?limit=-1", "limit"),
        ("/v1/twins?limit=abc", "limit"), ("/v1/twins?limit=1.5", "limit"), ("/v1/twins?limit=", "limit"),
        ("/v1/twins?limit=99999999999999999999999", "limit"),
        ("/v1/twins?bogus=1", "bogus"), ("/v1/twins?owner[$ne]=1", "owner[$ne]"), ("/v1/twins?Stage=BUILT", "Stage"),
        ("/v1/twins?owner=a&owner=b", "owner"), ("/v1/twins?owner=", "owner"), ("/v1/twins?after=", "after"),
        ("/v1/twins?brake_below=soon", "brake_below"), ("/v1/twins?brake_below=nan", "brake_below"),
        ("/v1/twins?owner=%zz", "owner"), ("/v1/twins?owner=%00x", "owner"), ("/v1/twins?owner=%ff", "owner"),
        ("/v1/twins/" + q(engine_ids[0]) + "?verbose=1", "verbose"),
        ("/v1/twins/%zz", "product_id"), ("/v1/twins/abc%00def", "product_id"), ("/v1/twins/%ff%fe", "product_id"),
        ("/v1/twins/%C3", "product_id"), ("/v1/twins/", "product_id"), ("/v1/twins//timeline", "product_id"),
        ("/v1/twins/" + "A" * 257, "256"), ("/v1/twins/" + "%C3%9F" * 129, "256"),
    ]
    for path, name in bad:
        expect_error(c, "GET", path, 400, tok, name)
    body, _ = c.json("/v1/twins/" + "A" * 256, tok, want=404)  # 256 bytes is allowed
    body, _ = c.json(f"/v1/twins?limit={mx}", tok)
    check(body and body["limit"] == mx, f"limit={mx} (the maximum) is allowed")
    for path in ("/v1", "/v1/twin", "/v2/twins", "/v1/twins/x/y", "/v1/twins/x/timeline/", "/metrics/x",
                 "/healthz/", "/v1/twins/x/TIMELINE", "/v1/stats/x", "/twins/", "/twins/x/y", "/fleet/", "/ui/",
                 "/ui/nope.js", "/ui/index.html", "/ui/../index.html", "/index.html"):
        expect_error(c, "GET", path, 404, tok)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/v1/twins", "/v1/twins/" + q(engine_ids[0]), "/metrics", "/healthz"):
            hdr = expect_error(c, method, path, 405, tok, method, body=b"{}" if method in ("POST", "PUT") else None)
            check(hdr.get("allow") == "GET, HEAD", f"{method} {path}: Allow {hdr.get('allow')}")
    expect_error(c, "GET", "/v1/twins", 413, tok, "bodies", body=b'{"stage":"BUILT"}')
    expect_error(c, "GET", "/v1/twins", 413, tok, "bodies", headers={"Transfer-Encoding": "chunked"}, body=iter([b"x"]))
    expect_error(c, "GET", "/v1/twins?owner=" + "x" * 5000, 414, tok, "4096")
    expect_error(c, "GET", "/v1/twins/" + "A" * 9000, 414, tok, "8192")
    # Larger than the connection's buffer: libmicrohttpd answers 414 itself.
    st, _, _ = c.get("/v1/twins/" + "A" * 100000, tok)
    check(st in (413, 414, 431), f"a 100 KB URI: {st}")
    # Keep-alive survived all of that, or the client reconnected.
    st, _, _ = c.get("/healthz")
    check(st == 200, "server still answers")

    # -- metrics
    st, hdr, data = c.get("/metrics", tok)
    check(st == 200, f"/metrics: {st}")
    check(hdr.get("content-type", "").startswith("text/plain; version=0.0.4"), f"/metrics content-type {hdr.get('content-type')}")
    text = data.decode()
    fams = {}
    try:
        for f in text_string_to_metric_families(text):
            fams[f.name] = f
    except Exception as e:  # the parser raises ValueError and others
        check(False, f"/metrics does not parse: {e}")
    check("twin_http_requests" in fams, f"no twin_http_requests_total in {sorted(fams)[:20]}")
    if "twin_http_requests" in fams:
        seen = {(s.labels["route"], s.labels["code"]): s.value for s in fams["twin_http_requests"].samples if s.name.endswith("_total")}
        for key in (("/v1/twins", "200"), ("/v1/twins", "400"), ("/v1/twins/{id}", "200"), ("/v1/twins/{id}", "404"),
                    ("/v1/twins/{id}/timeline", "200"), ("/v1/twins", "401"), ("/healthz", "200"), ("/readyz", "200"),
                    ("other", "404"), ("/v1/twins", "405"), ("/v1/twins", "413"), ("/v1/stats", "200"),
                    ("/v1/stats", "401"), ("viewer", "200"), ("viewer", "304")):
            check(seen.get(key, 0) >= 1, f"twin_http_requests_total{{route={key[0]},code={key[1]}}} missing: {sorted(seen)}")
    check("twin_http_request_duration_seconds" in fams, "no request duration histogram")
    # Snapshot freshness can be read at 1, 1.5 and 2 default intervals without interpolating.
    if "twin_snapshot_delay_seconds" in fams:
        les = {float(s.labels["le"]) for s in fams["twin_snapshot_delay_seconds"].samples if s.name.endswith("_bucket")}
        for le in (0.75, 1.0, 1.5, 2.0):
            check(le in les, f"twin_snapshot_delay_seconds has no le={le} bucket: {sorted(les)}")
    else:
        check(False, "no twin_snapshot_delay_seconds histogram")
    check(len(fams) > 3, f"only {len(fams)} metric families (the engine's are missing?)")
    for t in a.token:
        check(t not in text, "/metrics shows a token")
    print(f"/metrics: {len(fams)} families")
    print(f"keep-alive: {c.connects} connections for all requests")


SOH_EDGES = [80, 82, 84, 86, 88, 90, 92, 94, 96, 98]
STAGES = ["NONE", "ORDERED", "IN_PRODUCTION", "BUILT", "IN_TRANSIT", "AT_DEALER", "IN_SERVICE", "DECOMMISSIONED"]


def check_stats(c, tok, docs):
    """/v1/stats against figures counted here from the stored documents."""
    expect_error(c, "GET", "/v1/stats", 401, must_contain="bearer token")
    expect_error(c, "GET", "/v1/stats?limit=3", 400, tok, "limit")
    body, hdr = c.json("/v1/stats", tok)
    if body is None:
        return
    check(hdr.get("x-twin-source") == "mongodb" and re.fullmatch(r"\d+", hdr.get("age", "")) is not None,
          f"/v1/stats headers: source {hdr.get('x-twin-source')} age {hdr.get('age')}")
    check(list(body) == ["twins", "by_stage", "alerts_active", "alerts_by_rule", "battery_soh", "brake_service_soonest",
                         "computed_at"], f"/v1/stats keys {list(body)}")
    check(body.get("twins") == len(docs), f"stats twins {body.get('twins')} != {len(docs)} stored")
    want_stage = {s: sum(d["stage"] == s for d in docs) for s in STAGES}
    check(body.get("by_stage") == want_stage, f"stats by_stage {body.get('by_stage')} != {want_stage}")
    rules = {}
    for d in docs:
        for al in d["alerts"]["active"]:
            rules.setdefault(al["rule"], [al["severity"], 0])[1] += 1
    want_rules = sorted(({"rule": r, "severity": v[0], "count": v[1]} for r, v in rules.items()),
                        key=lambda x: (-x["count"], x["rule"]))
    check(body.get("alerts_by_rule") == want_rules, f"stats alerts_by_rule {body.get('alerts_by_rule')} != {want_rules}")
    check(body.get("alerts_active") == sum(v[1] for v in rules.values()), f"stats alerts_active {body.get('alerts_active')}")
    check(len(rules) >= 2, f"fixture has only {len(rules)} alert rules active")
    bins = [0] * (len(SOH_EDGES) + 1)
    none = 0
    for d in docs:
        v = d["battery_health"]["soh_pct"]
        if not isinstance(v, (int, float)):
            none += 1
            continue
        bins[sum(v >= e for e in SOH_EDGES)] += 1
    edges = [None] + SOH_EDGES + [None]
    want_bins = [{"from": edges[i], "to": edges[i + 1], "count": bins[i]} for i in range(len(bins))]
    got = body.get("battery_soh", {})
    check(got.get("unit") == "%" and got.get("bins") == want_bins and got.get("no_data") == none,
          f"stats battery_soh {got} != bins {want_bins}, no_data {none}")
    check(sum(bins) >= 30 and sum(1 for b in bins if b) >= 3, f"battery fixture too narrow: {bins}")
    pred = sorted((al["predicted_at_ms"], d["_id"], d) for d in docs for al in d["alerts"]["active"]
                  if al["rule"] == "brake_wear_predicted" and al["predicted_at_ms"])
    want_brake = [{"product_id": i, "model": d["model"], "owner": d["owner"], "predicted_at_ms": p,
                   "min_brake_pad_mm": d["min_brake_pad_mm"]} for p, i, d in pred[:10]]
    check(body.get("brake_service_soonest") == want_brake,
          f"stats brake_service_soonest {body.get('brake_service_soonest')} != {want_brake}")
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body.get("computed_at", "")) is not None,
          f"stats computed_at {body.get('computed_at')}")
    print(f"/v1/stats: {body['twins']} twins, {len(want_rules)} rules, bins {bins}, {len(want_brake)} brake predictions")


def check_viewer_files(c):
    """The viewer's built-in files: no token, types, ETag revalidation, CSP, nothing external."""
    pages = {}
    for path in ("/", "/fleet", "/twins/W1TEST", "/twins/" + q("HTTP/DB only \u00df"), "/?by=vin&q=W1"):
        st, hdr, data = c.get(path)  # no token: the page holds no data
        check(st == 200 and hdr.get("content-type") == "text/html; charset=utf-8", f"GET {path}: {st} {hdr.get('content-type')}")
        check("script-src 'self'" in hdr.get("content-security-policy", "") and hdr.get("x-frame-options") == "DENY",
              f"GET {path}: CSP {hdr.get('content-security-policy')}")
        check(hdr.get("cache-control") == "no-cache" and re.fullmatch(r'"[0-9a-f]{20}"', hdr.get("etag", "")) is not None,
              f"GET {path}: cache-control {hdr.get('cache-control')} etag {hdr.get('etag')}")
        pages[path] = (hdr.get("etag"), data)
    check(len({v for v in pages.values()}) == 1, "the page routes serve different documents")
    html = pages["/"][1].decode()
    assets = re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)
    check(set(assets) >= {"/ui/app.js", "/ui/app.css", "/ui/icon.svg"}, f"page references {assets}")
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    for path in assets:
        st, hdr, data = c.get(path)
        ext = path[path.rfind("."):]
        check(st == 200 and hdr.get("content-type") == types[ext] and len(data) > 100, f"GET {path}: {st} {hdr.get('content-type')}")
        etag = hdr.get("etag")
        st, hdr2, data2 = c.get(path, headers={"If-None-Match": etag})
        check(st == 304 and data2 == b"" and hdr2.get("etag") == etag, f"GET {path} If-None-Match: {st} {data2[:50]!r}")
        st, _, data3 = c.get(path, headers={"If-None-Match": '"0000"'})
        check(st == 200 and data3 == data, f"GET {path} with a stale ETag: {st}")
        st, hdr, data4 = c.request("HEAD", path)
        check(st == 200 and data4 == b"" and int(hdr.get("content-length", "0")) == len(data), f"HEAD {path}: {st}")
        text = data.decode()
        # Nothing loaded from elsewhere: the only absolute URL is the SVG namespace name.
        external = [u for u in re.findall(r"https?://[^\s'\")]+", text) if u != "http://www.w3.org/2000/svg"]
        check(not external, f"{path} names external URLs: {external[:3]}")
    check(not [u for u in re.findall(r"https?://[^\s'\")]+", html)], "index.html names external URLs")
    for method in ("POST", "DELETE"):
        hdr = expect_error(c, method, "/", 405, body=b"{}" if method == "POST" else None)
        check(hdr.get("allow") == "GET, HEAD", f"{method} /: Allow {hdr.get('allow')}")
    print(f"viewer: {len(pages)} page routes, {len(assets)} files")


def mode_live(a, validator):
    """New products' twins, from memory, as the engine applies their events."""
    c = Client(a.base)
    tok = a.token[0]
    truth = [json.loads(line) for line in open(a.truth) if line.strip()]
    truth = [t for t in truth if "product_id" in t and t.get("accepted", 0) > 0]
    check(len(truth) >= 20, f"truth has {len(truth)} products")
    pending = {t["product_id"]: t for t in truth}
    deadline = time.time() + 180
    dirty_seen = mongo_seen = 0
    while pending and time.time() < deadline:
        for pid, t in list(pending.items()):
            st, hdr, data = c.get("/v1/twins/" + q(pid), tok)
            if st == 404:
                continue
            if not check(st == 200, f"live twin {pid}: {st} {data[:200]!r}"):
                pending.pop(pid)
                continue
            doc = json.loads(data)
            if hdr.get("x-twin-source") != "memory":
                mongo_seen += 1
                continue
            dirty_seen += hdr.get("x-twin-dirty") == "true"
            check(hdr.get("x-twin-last-event-ms") == str(doc["last_event_ms"]), f"live {pid}: X-Twin-Last-Event-Ms")
            if doc["rev"] == t["accepted"]:
                errs = list(validator.iter_errors(doc))
                check(not errs, f"live twin {pid} invalid: {[e.message for e in errs[:3]]}")
                check(doc["stage"] == t["stage"] and doc.get("owner") == t.get("owner"), f"live twin {pid}: stage/owner differ from the truth")
                pending.pop(pid)
            else:
                check(doc["rev"] < t["accepted"], f"live twin {pid}: rev {doc['rev']} > truth {t['accepted']}")
        time.sleep(0.2)
    check(not pending, f"{len(pending)} twins never reached their final rev in memory: {list(pending)[:5]}")
    print(f"live: {len(truth)} twins reached their final state in memory; dirty answers {dirty_seen}, "
          f"MongoDB answers {mongo_seen}")


def mode_tls(a, validator):
    c = Client(a.base, cafile=a.cafile)
    body, _ = c.json("/healthz")
    check(body == {"status": "ok"}, "https /healthz")
    wait_ready(c)
    docs = [json.loads(line) for line in open(a.docs) if line.strip()]
    ids, items = list_all(c, None, {}, MAX_LIMIT(a))  # no tokens configured: open
    # The live test added twins since docs was written: a superset, in order.
    check(ids == sorted(set(ids)) and set(d["_id"] for d in docs) <= set(ids),
          f"https list without a token: {len(ids)} twins, not a sorted superset of the {len(docs)} stored before")
    for it in items[:5]:
        check(not list(validator.iter_errors(it)), f"https list item {it['_id']} invalid")
    body, hdr = c.json("/v1/twins/" + q(docs[0]["_id"]), None)
    check(body and body["_id"] == docs[0]["_id"], "https twin without a token")
    st, _, _ = c.get("/metrics", "any-token-is-ignored")
    check(st == 200, f"https /metrics with auth off: {st}")
    # The certificate is checked: without the CA the handshake fails.
    try:
        Client(a.base).get("/healthz")
        check(False, "https without the CA: the handshake succeeded")
    except ssl.SSLError:
        pass
    # Plain HTTP to the TLS port gets no HTTP answer.
    u = urllib.parse.urlsplit(a.base)
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        check(r.status != 200, f"plain http to the https port answered {r.status}")
    except (http.client.HTTPException, OSError):
        pass


def mode_down(a, validator):
    u = urllib.parse.urlsplit(a.base)
    try:
        socket.create_connection((u.hostname, u.port), timeout=5).close()
        check(False, f"{a.base} still accepts connections after the engine stopped")
    except OSError:
        check(True, "port closed")


def MAX_LIMIT(a):
    return a.max_limit


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["main", "live", "tls", "down"])
    p.add_argument("--base", required=True)
    p.add_argument("--docs")
    p.add_argument("--schema")
    p.add_argument("--max-limit", type=int, default=1000)
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--cafile")
    p.add_argument("--truth")
    a = p.parse_args()
    validator = jsonschema.Draft202012Validator(json.load(open(a.schema))) if a.schema else None
    t0 = time.time()
    {"main": mode_main, "live": mode_live, "tls": mode_tls, "down": mode_down}[a.mode](a, validator)
    print(f"test_http.py {a.mode}: {CHECKS} checks, {len(FAILURES)} failed ({time.time() - t0:.1f} s)")
    sys.exit(1 if FAILURES else 0)


main()
