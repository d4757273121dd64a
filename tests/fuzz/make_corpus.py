#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpora under tests/fuzz/corpus/.

  tests/fuzz/make_corpus.py BUILD_BIN_DIR

envelope/: messages from a seeded twin-sim run (duplicates, reordering,
garbage and invalid transitions included), grouped per product in the
fuzz_envelope input format (u16le length + bytes, repeated); decode/: some
of the same messages alone, for fuzz_decode.
config/: YAML config files (deploy/k8s/configmap.yaml's and alert rules).
http/: raw HTTP requests for every route (first byte: 0 = no auth, 1 =
bearer tokens on). The output is deterministic: rerunning it rewrites the
same files."""
import os, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"TWINREC1", path
    i = 8
    while i < len(data):
        fields = []
        for _ in range(3):
            (n,) = struct.unpack_from("<I", data, i)
            fields.append(data[i + 4:i + 4 + n])
            i += 4 + n
        yield fields


def envelopes(bin_dir):
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "fleet.rec")
        subprocess.run([os.path.join(bin_dir, "twin-sim"), "--no-kafka", "--quiet", "--seed", "7",
                        "--products", "12", "--events", "1500", "--duplicates", "0.05", "--reorder", "0.05",
                        "--late", "0.02", "--garbage", "0.03", "--invalid", "0.03", "--record", rec],
                       check=True)
        by_key = {}
        for _topic, key, value in records(rec):
            by_key.setdefault(key, []).append(value)
    n = 0
    for key in sorted(by_key):
        msgs = by_key[key]
        for start in range(0, min(len(msgs), 96), 12):
            chunk = msgs[start:start + 12]
            out = b"".join(struct.pack("<H", len(m)) + m for m in chunk)
            write("envelope", "sim-%03d" % n, out)
            n += 1
    # decode/: single messages as they are on the wire, for fuzz_decode.
    m = 0
    for key in sorted(by_key):
        for value in by_key[key][:6]:
            write("decode", "msg-%03d" % m, value)
            m += 1


CONFIGS = {
    "minimal": "shards: 2\n",
    "full": """kafka:
  bootstrap.servers: 127.0.0.1:9092
  group.id: twin-engine
  security.protocol: plaintext
topics:
  telemetry: twin.telemetry
  lifecycle: twin.lifecycle
  alerts: twin.alerts
  dlq: twin.dlq
mongo:
  uri: mongodb://127.0.0.1:27017
  database: twin
shards: 4
snapshot.interval.ms: 1000
snapshot.max.dirty: 20000
seq.window: 128
message.max.bytes: 65536
http:
  listen: 0.0.0.0:8080
  tokens: a,b
  max.limit: 500
log:
  level: info
  format: json
""",
    "rules": """alerts:
  defaults: true
  rules:
    - id: coolant_hot
      severity: critical
      condition: metrics.coolant_temp_c > 110 and stage == IN_SERVICE
      clear: metrics.coolant_temp_c < 100
      message: "Coolant at {value} degC"
    - id: dtc_active
      enabled: false
    - id: brake_pad_low
      severity: WARNING
    - id: low_soc
      condition: battery_soc_pct < 10 or (battery_temp_c >= 60 and speed_kph != 0)
      message: "{rule} {value} {threshold} {unit}"
""",
    "bad-rule": "alerts:\n  rules:\n    - id: x\n      condition: battery_temp_c >> 60\n",
    "flow": "{shards: 3, topics: {dlq: d, alerts: a}, kafka: {linger.ms: 5}}\n",
    "anchors": "base: &b {level: debug}\nlog: *b\n",
}

HTTP = [
    b"\x00GET /v1/twins/VIN0001 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /v1/twins/VIN0001/timeline HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /v1/twins/m%C3%BC%2Fx HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /v1/twins?stage=IN_SERVICE&owner=o1&limit=10&after=VIN1&brake_below=3.5 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /v1/twins?dtc=P0420&recall=R1&site=d1&alert=brake_pad_low HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00GET /healthz HTTP/1.0\r\n\r\n",
    b"\x00GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"\x00POST /v1/twins HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
    b"\x00GET /v1/twins/a HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/twins/b/timeline HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x01GET /v1/twins/VIN0001 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n",
    b"\x01GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Zm9v\r\n\r\n",
    b"\x00GET /v1/twins/VIN%00 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py BUILD_BIN_DIR (with twin-sim)")
    envelopes(sys.argv[1])
    for name, text in CONFIGS.items():
        write("config", name + ".yaml", text.encode())
    with open(os.path.join(ROOT, "deploy/k8s/configmap.yaml")) as f:
        lines = f.read().split("twin.yaml: |\n", 1)[1].splitlines()
    write("config", "k8s.yaml", "".join(l[4:] + "\n" for l in lines).encode())
    for i, req in enumerate(HTTP):
        write("http", "req-%02d" % i, req)


if __name__ == "__main__":
    main()
