#!/usr/bin/env python3
"""Find an app's peers through Sigma's Discovery, with nothing but pyzmq: a startup script's helper.

    peers.py APP [--count N] [--within SECONDS] [--ready | --members] [--discovery ENDPOINTS]

Waits (a blocking query, woken by Discovery when the app changes) until APP has at least N Running endpoints,
then prints them as JSON: [{"ordinal", "ip", "node", "idc", "host_ip", "state", "ready",
"ports": {name: [container, host]}}]. With --members: at least N endpoints in any state, each holding its IP
(every ordinal holds one from the start, Pending too): the full member list quorum software bootstraps from.
ENDPOINTS (comma-separated replicas) default to $SIGMA_DISCOVERY, which the node agent sets in every
instance, with $SIGMA_TOKEN_FILE or $SIGMA_TOKEN (who the instance is) and, when the control plane runs CURVE, $SIGMA_SERVER_KEY. Exit status 0 with the peers; 1 when they were not all there in time; 2 when no replica answered
or one refused (the status is printed on stderr).

It speaks docs/protocol.md directly: a DEALER socket, frames [b"", RequestHeader, ResolveRequest], and a
small protobuf wire codec below, so it needs no generated code.
"""
import argparse
import json
import os
import sys
import time

import zmq

STATUS = {0: "OK", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND", 6: "ALREADY_EXISTS",
          7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 12: "UNIMPLEMENTED",
          13: "INTERNAL", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}


# --- protobuf wire format: varints (type 0) and length-delimited fields (type 2) are all Resolve needs.

def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(fields):
    """fields: [(number, value)] with int/bool values (varint) or str/bytes values (length-delimited)."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, (str, bytes)):
            data = value.encode() if isinstance(value, str) else value
            out += varint(number << 3 | 2) + varint(len(data)) + data
        elif value:
            out += varint(number << 3) + varint(int(value))
    return bytes(out)


def decode(data):
    """{number: [values]}: ints for varints, bytes for length-delimited fields; other wire types skipped."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = read_varint(data, i)
        elif kind == 2:
            size, i = read_varint(data, i)
            value, i = data[i:i + size], i + size
        elif kind == 1:
            value, i = data[i:i + 8], i + 8
        elif kind == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError("unknown wire type %d" % kind)
        fields.setdefault(number, []).append(value)
    return fields


def read_varint(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def text(fields, number):
    return fields.get(number, [b""])[-1].decode()


def number(fields, index, signed=False):
    value = fields.get(index, [0])[-1]
    return value - (1 << 64) if signed and value >= 1 << 63 else value


# --- one Resolve call over a DEALER socket connected to every replica.

class Discovery:
    def __init__(self, endpoints, token="", server_key=""):
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if server_key:
            # The control plane runs CURVE: any key pair of our own; the token says who we are.
            public, secret = zmq.curve_keypair()
            self.socket.curve_serverkey = server_key.encode()
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret
        self.token = token
        for endpoint in endpoints:
            self.socket.connect(endpoint)
        self.next_id = 0

    def resolve(self, app, ready_only, wait_index, wait_ms):
        self.next_id += 1
        timeout_ms = wait_ms + 5000
        token = current_token(self.token)
        header = encode([(1, 1), (2, "Resolve"), (3, self.next_id), (4, timeout_ms)] + ([(5, token)] if token else []))
        body = encode([(1, app), (2, ready_only), (5, wait_index), (6, wait_ms)])
        self.socket.send_multipart([b"", header, body])
        deadline = time.monotonic() + timeout_ms / 1000 + 1
        while time.monotonic() < deadline:
            if not self.socket.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                break
            frames = self.socket.recv_multipart()
            if len(frames) != 3 or frames[0] != b"":
                continue
            reply = decode(frames[1])
            if number(reply, 2) != self.next_id:
                continue  # the answer to an earlier call that was given up
            status = number(reply, 3)
            if status != 0:
                raise RuntimeError("%s: %s" % (STATUS.get(status, status), text(reply, 4)))
            return decode(frames[2])
        raise RuntimeError("UNAVAILABLE: no Discovery replica answered")


def endpoint(raw):
    e = decode(raw)
    ports = {}
    for port in e.get(4, []):
        p = decode(port)
        ports[text(p, 1)] = [number(p, 2), number(p, 4)]
    return {"ordinal": number(e, 2, signed=True), "ip": text(e, 3), "node": text(e, 8), "idc": text(e, 9),
            "host_ip": text(e, 5), "state": text(e, 6), "ready": bool(number(e, 7)), "ports": ports}


def current_token(given):
    """The token in $SIGMA_TOKEN_FILE (read at every call: a restarted agent rewrites it), else the one given."""
    path = os.environ.get("SIGMA_TOKEN_FILE", "")
    try:
        with open(path) as f:
            return f.read().strip() or given
    except OSError:
        return given


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--within", type=float, default=120)
    parser.add_argument("--ready", action="store_true", help="only instances whose readiness check passes")
    parser.add_argument("--members", action="store_true", help="every ordinal, whatever its state, once it holds its IP")
    parser.add_argument("--discovery", default=os.environ.get("SIGMA_DISCOVERY", "tcp://127.0.0.1:7105"))
    args = parser.parse_args()
    discovery = Discovery([e for e in args.discovery.split(",") if e], token=os.environ.get("SIGMA_TOKEN", ""),
                          server_key=os.environ.get("SIGMA_SERVER_KEY", ""))
    deadline = time.monotonic() + args.within
    index, peers = 0, []
    try:
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            answer = discovery.resolve(args.app, args.ready, index, max(1, min(left_ms, 60000)) if index else 0)
            index = number(answer, 2)
            peers = [endpoint(e) for e in answer.get(3, [])]
            if args.members:
                peers = sorted((p for p in peers if p["ip"]), key=lambda p: p["ordinal"])
            else:
                peers = sorted((p for p in peers if p["state"] == "Running"), key=lambda p: p["ordinal"])
            if len(peers) >= args.count or left_ms <= 0:
                break
    except RuntimeError as error:
        print("peers.py: %s" % error, file=sys.stderr)
        return 2
    print(json.dumps(peers, indent=2, sort_keys=True))
    return 0 if len(peers) >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
