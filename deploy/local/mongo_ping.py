#!/usr/bin/env python3
"""mongo_ping.py - asks a MongoDB-protocol server for {ping: 1} over OP_MSG.

Used by stack.sh to tell when FerretDB answers. Python standard library
only, so it runs before anything is built. It speaks the real wire
protocol (OP_MSG, opcode 2013, one section of kind 0) and checks the
reply's `ok` field; it is no substitute for a driver beyond that.

Exit 0 when the server replied ok: 1 (prints the server's reply fields
with --verbose), 1 otherwise.
"""
import argparse
import socket
import struct
import sys
import time

OP_MSG = 2013


def bson_encode(doc):
    """Encodes a flat dict of str/int/float values as BSON."""
    body = b""
    for key, value in doc.items():
        name = key.encode() + b"\x00"
        if isinstance(value, bool):
            body += b"\x08" + name + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            body += b"\x10" + name + struct.pack("<i", value)
        elif isinstance(value, float):
            body += b"\x01" + name + struct.pack("<d", value)
        elif isinstance(value, str):
            raw = value.encode() + b"\x00"
            body += b"\x02" + name + struct.pack("<i", len(raw)) + raw
        else:
            raise TypeError("unsupported BSON value for %r" % key)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def bson_decode(data):
    """Decodes the top level of a BSON document; nested values come back
    as raw bytes. Enough to read ok/errmsg/code from a command reply."""
    (length,) = struct.unpack_from("<i", data, 0)
    if length != len(data) or data[-1] != 0:
        raise ValueError("malformed BSON document")
    out, i = {}, 4
    while data[i] != 0:
        etype = data[i]
        end = data.index(b"\x00", i + 1)
        name = data[i + 1 : end].decode()
        i = end + 1
        if etype == 0x01:
            (out[name],) = struct.unpack_from("<d", data, i)
            i += 8
        elif etype == 0x02:
            (n,) = struct.unpack_from("<i", data, i)
            out[name] = data[i + 4 : i + 3 + n].decode()
            i += 4 + n
        elif etype in (0x03, 0x04):
            (n,) = struct.unpack_from("<i", data, i)
            out[name] = data[i : i + n]
            i += n
        elif etype == 0x08:
            out[name] = data[i] != 0
            i += 1
        elif etype in (0x09, 0x12, 0x11):
            (out[name],) = struct.unpack_from("<q", data, i)
            i += 8
        elif etype == 0x10:
            (out[name],) = struct.unpack_from("<i", data, i)
            i += 4
        elif etype == 0x0A:
            out[name] = None
        elif etype == 0x07:
            out[name] = data[i : i + 12].hex()
            i += 12
        else:
            raise ValueError("BSON type 0x%02x not handled (field %s)" % (etype, name))
    return out


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def command(host, port, cmd, timeout):
    payload = struct.pack("<I", 0) + b"\x00" + bson_encode(cmd)
    request_id = int(time.time() * 1000) & 0x7FFFFFFF
    header = struct.pack("<iiii", 16 + len(payload), request_id, 0, OP_MSG)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(header + payload)
        length, _, response_to, opcode = struct.unpack("<iiii", recv_exact(sock, 16))
        body = recv_exact(sock, length - 16)
    if opcode != OP_MSG or response_to != request_id:
        raise ValueError("unexpected reply opcode %d / responseTo %d" % (opcode, response_to))
    if body[4] != 0:
        raise ValueError("reply section kind %d, expected 0" % body[4])
    return bson_decode(body[5:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=27017)
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per attempt")
    ap.add_argument("--command", default="ping", help="ping or buildInfo")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    try:
        reply = command(args.host, args.port, {args.command: 1, "$db": "admin"}, args.timeout)
    except (OSError, ValueError) as exc:
        if args.verbose:
            print("mongo_ping: %s:%d: %s" % (args.host, args.port, exc), file=sys.stderr)
        return 1
    if args.verbose:
        for key, value in reply.items():
            if not isinstance(value, bytes):
                print("%s: %s" % (key, value))
    return 0 if reply.get("ok") in (1, 1.0, True) else 1


if __name__ == "__main__":
    sys.exit(main())
