#!/usr/bin/env python3
"""Call any Sigma method with nothing but pyzmq and protobuf, from docs/protocol.md alone.

    sigma_call.py ENDPOINT METHOD [REQUEST_JSON] [--types REQUEST,RESPONSE] [--timeout-ms N] [--header-only]
                  [--token T] [--proto-dir DIR]

REQUEST_JSON is the request message in protobuf's JSON form (field names as in the .proto files; bytes as
base64). The message types are METHOD + "Request" and METHOD + "Response" unless --types names others, as the
method tables of docs/protocol.md give them (GetApp: --types AppRequest,AppResponse). --header-only sends the
header without the body frame (a malformed request). Prints one JSON object:
{"status": "OK", "message": "", "request_id": 42, "response": {...}}, the response with the .proto's field
names; exit 0 for any reply, 2 when none came.
"""
import argparse
import glob
import importlib
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
    """Generates Python code for every .proto of sigma/v1 and imports it."""
    protos = sorted(os.path.relpath(p, proto_dir) for p in glob.glob(os.path.join(proto_dir, "sigma/v1/*.proto")))
    subprocess.run(["protoc", f"--python_out={GENERATED.name}", f"-I{proto_dir}"] + protos, check=True)
    sys.path.insert(0, GENERATED.name)
    return [importlib.import_module("sigma.v1." + os.path.basename(p)[:-len(".proto")] + "_pb2") for p in protos]


def message_type(modules, name):
    for module in modules:
        if name in module.DESCRIPTOR.message_types_by_name:
            return getattr(module, name)
    raise SystemExit(f"no message sigma.v1.{name}; give --types REQUEST,RESPONSE as docs/protocol.md names them")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("method")
    parser.add_argument("request", nargs="?", default="{}")
    parser.add_argument("--types")
    parser.add_argument("--timeout-ms", type=int, default=5000)
    parser.add_argument("--header-only", action="store_true")
    parser.add_argument("--token", default="")
    parser.add_argument("--proto-dir", default=os.path.join(ROOT, "Shared/Protocol/proto"))
    args = parser.parse_args()
    modules = generated_modules(args.proto_dir)
    envelope = importlib.import_module("sigma.v1.envelope_pb2")
    request_name, response_name = (args.types.split(",") if args.types
                                   else (args.method + "Request", args.method + "Response"))
    request = json_format.Parse(args.request, message_type(modules, request_name)())
    response_type = message_type(modules, response_name)

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    header = envelope.RequestHeader(protocol_version=1, method=args.method, request_id=42,
                                    timeout_ms=args.timeout_ms, token=args.token)
    frames = [b"", header.SerializeToString()]
    if not args.header_only:
        frames.append(request.SerializeToString())
    sock.send_multipart(frames)
    if not sock.poll(args.timeout_ms + 1000):
        print(json.dumps({"status": "NO_REPLY"}))
        return 2
    reply_frames = sock.recv_multipart()
    assert len(reply_frames) == 3 and reply_frames[0] == b"", reply_frames
    reply = envelope.ReplyHeader.FromString(reply_frames[1])
    result = {"status": envelope.StatusCode.Name(reply.status), "message": reply.message, "request_id": reply.request_id}
    if reply.status == envelope.OK:
        result["response"] = json_format.MessageToDict(response_type.FromString(reply_frames[2]),
                                                       preserving_proto_field_name=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
