#!/usr/bin/env python3
"""Call a Sigma method with nothing but pyzmq and protobuf, from docs/protocol.md alone.

    sigma_call.py ENDPOINT METHOD [--proto-dir DIR] [--timeout-ms N]

Prints one JSON object: {"status": "OK", "message": "", "response": {...}}. Methods Health and Metrics are
known; the code for the messages is generated with protoc --python_out from Shared/Protocol/proto.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import zmq
from google.protobuf import json_format

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


GENERATED = tempfile.TemporaryDirectory(prefix="sigma-py-")  # removed when the program ends


def generated_modules(proto_dir):
    out = GENERATED.name
    protos = ["sigma/v1/envelope.proto", "sigma/v1/health.proto"]
    subprocess.run(["protoc", f"--python_out={out}", f"-I{proto_dir}"] + protos, check=True)
    sys.path.insert(0, out)
    from sigma.v1 import envelope_pb2, health_pb2
    return envelope_pb2, health_pb2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("method")
    parser.add_argument("--proto-dir", default=os.path.join(ROOT, "Shared/Protocol/proto"))
    parser.add_argument("--timeout-ms", type=int, default=5000)
    args = parser.parse_args()
    envelope, health = generated_modules(args.proto_dir)
    requests = {"Health": (health.HealthRequest, health.HealthResponse),
                "Metrics": (health.MetricsRequest, health.MetricsResponse)}
    request_type, response_type = requests.get(args.method, (health.HealthRequest, health.HealthResponse))

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    header = envelope.RequestHeader(protocol_version=1, method=args.method, request_id=42,
                                    timeout_ms=args.timeout_ms)
    sock.send_multipart([b"", header.SerializeToString(), request_type().SerializeToString()])
    if not sock.poll(args.timeout_ms + 1000):
        print(json.dumps({"status": "NO_REPLY"}))
        return 2
    frames = sock.recv_multipart()
    assert len(frames) == 3 and frames[0] == b"", frames
    reply = envelope.ReplyHeader.FromString(frames[1])
    assert reply.request_id == 42, reply
    result = {"status": envelope.StatusCode.Name(reply.status), "message": reply.message}
    if reply.status == envelope.OK:
        result["response"] = json_format.MessageToDict(response_type.FromString(frames[2]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
