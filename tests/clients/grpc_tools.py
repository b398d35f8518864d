"""What operators point at the gRPC port: a grpc_health_probe-style check
(grpcio-health-checking) and the README's grpcurl commands, replayed the
way grpcurl runs them: services and messages from server reflection
(grpcio-reflection), request JSON parsed into the reflected message type,
the answer printed as JSON. No .proto file and no generated code.

usage: grpc_tools.py ADDRESS README EXPECTED_LABEL
  ADDRESS         127.0.0.1:PORT of the gRPC listener
  README          the README whose ```sh blocks hold grpcurl commands
  EXPECTED_LABEL  the digits label of the README's example row
"""

import json
import re
import shlex
import sys

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from common import check

README_ADDRESS = "127.0.0.1:8001"


def health(channel):
    """grpc_health_probe's check, for the server and for the inference service."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        check(status == health_pb2.HealthCheckResponse.SERVING, f"health of {service!r}: {status}")
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        check(False, "an unknown service has no health")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, f"an unknown service: {e.code()}")
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = next(watch)
    watch.cancel()
    check(first.status == health_pb2.HealthCheckResponse.SERVING, f"Watch starts with SERVING: {first.status}")


def grpcurl_commands(readme):
    """Every grpcurl command of the README's sh blocks, as argument lists
    (a command may go on after a backslash, a single-quoted argument may
    span lines)."""
    text = open(readme).read()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):  # a continuation line
                pending = pending[:-1]
                continue
            try:
                args = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the argument goes on
                continue
            pending = ""
            if args and args[0] == "grpcurl":
                commands.append(args)
    return commands


def grpcurl(channel, db, pool, args):
    """Runs one `grpcurl -plaintext [-d JSON] ADDRESS (list | SERVICE/METHOD)`; returns its JSON answer."""
    data = "{}"
    rest = []
    it = iter(args[1:])
    for a in it:
        if a == "-plaintext":
            continue
        if a == "-d":
            data = next(it)
            continue
        if a.startswith("-"):
            check(False, f"grpcurl flag {a} is understood here")
        rest.append(a)
    if rest[0] != README_ADDRESS:
        check(False, f"the README's commands use {README_ADDRESS}: {rest}")
    if rest[1:] == ["list"]:
        return db.get_services()
    service, method = rest[1].rsplit("/", 1)
    m = pool.FindServiceByName(service).FindMethodByName(method)
    request_class = GetMessageClass(m.input_type)
    response_class = GetMessageClass(m.output_type)
    request = json_format.Parse(data, request_class())
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return json.loads(json_format.MessageToJson(call(request, timeout=30)))


def main():
    address, readme, expected_label = sys.argv[1], sys.argv[2], sys.argv[3]
    channel = grpc.insecure_channel(address)
    health(channel)

    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    commands = grpcurl_commands(readme)
    check(len(commands) >= 3, f"{len(commands)} grpcurl commands in the README")
    answers = {}
    for args in commands:
        answers[args[-1]] = grpcurl(channel, db, pool, args)
        print(f"ok: {' '.join(a if len(a) < 60 else a[:57] + '...' for a in args)}")

    services = answers["list"]
    for s in ("inference.GRPCInferenceService", "grpc.health.v1.Health"):
        check(s in services, f"reflection lists {s}: {services}")
    check(answers["grpc.health.v1.Health/Check"] == {"status": "SERVING"}, f"health: {answers['grpc.health.v1.Health/Check']}")
    infer = answers["inference.GRPCInferenceService/ModelInfer"]
    label = next(o for o in infer["outputs"] if o["name"] == "label")
    check(label["contents"]["int64Contents"] == [expected_label], f"the README's row is a {expected_label}: {label}")
    check("rawOutputContents" not in infer, "typed contents in, typed contents out")
    print("grpc_tools: all checks passed")


if __name__ == "__main__":
    main()
