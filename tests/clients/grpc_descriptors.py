"""Our proto/ against the stock gRPC clients' own generated descriptors.

usage: grpc_descriptors.py OURS.bin
  OURS.bin  switchyard::grpc::FILE_DESCRIPTOR_SET (an encoded FileDescriptorSet)

For each client (tritonclient.grpc, KServe's grpc_predict_v2), every message
both define must have the same fields: name, number, type, type name, label,
oneof, options (packed ...), in a file of the same syntax and package; every
enum both define the same values; every method of the client's service must
be ours with the same request and response types and streaming flags. What
only one side defines is a difference too, except the expected ones listed in
EXPECTED below (each with its reason). All differences are printed, then the
script exits 1.

tritonclient.grpc and kserve both register package `inference` in protobuf's
default descriptor pool, so each client's descriptors are read in a child
process (`--dump MODULE...`) and compared here as plain FileDescriptorProtos.
"""

import base64
import subprocess
import sys

from google.protobuf import descriptor_pb2

# (client, kind, full name) -> why the difference is expected. A listed
# difference that does not occur is reported too (the list stays honest).
EXPECTED = {
    # Triton added these after r24.10, the version proto/ follows; the pinned
    # tritonclient is newer. Only a server fills them (ModelConfig answers);
    # a client decodes our answers without them.
    ("tritonclient", "field only theirs", "inference.ModelConfig.model_metrics"): "added after r24.10",
    ("tritonclient", "field only theirs", "inference.ModelEnsembling.max_inflight_requests"): "added after r24.10",
    ("tritonclient", "message only theirs", "inference.ModelMetrics"): "added after r24.10",
    ("tritonclient", "message only theirs", "inference.ModelMetrics.MetricControl"): "added after r24.10",
    ("tritonclient", "message only theirs", "inference.ModelMetrics.MetricControl.MetricIdentifier"): "added after r24.10",
    ("tritonclient", "message only theirs", "inference.ModelMetrics.MetricControl.HistogramOptions"): "added after r24.10",
    # KServe's InferParameter stops at string_param; Triton's adds two oneof
    # members a KServe client never sends.
    ("kserve", "field only ours", "inference.InferParameter.double_param"): "Triton extension",
    ("kserve", "field only ours", "inference.InferParameter.uint64_param"): "Triton extension",
    # KServe declares RepositoryModelLoad/Unload with messages of its own
    # (model_name = 1; isLoaded/isUnloaded answers) that conflict with Triton's
    # (repository_name = 1, model_name = 2, parameters = 3; empty answers).
    # proto/ follows Triton; KServe's InferenceGRPCClient never calls these two
    # RPCs (it calls ServerLive, ServerReady, ModelReady and ModelInfer).
    ("kserve", "message conflicts", "inference.RepositoryModelLoadRequest"): "KServe's own layout",
    ("kserve", "message conflicts", "inference.RepositoryModelLoadResponse"): "KServe's own layout",
    ("kserve", "message conflicts", "inference.RepositoryModelUnloadRequest"): "KServe's own layout",
    ("kserve", "message conflicts", "inference.RepositoryModelUnloadResponse"): "KServe's own layout",
}

CLIENTS = {
    "tritonclient": ["tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2"],
    "kserve": ["kserve.protocol.grpc.grpc_predict_v2_pb2"],
}

# tritonclient's messages and methods must equal ours (both follow Triton);
# KServe's are a subset of ours (the OIP core of Triton's protocol).
EXACT = {"tritonclient": True, "kserve": False}

SERVICE = "inference.GRPCInferenceService"


def dump(modules):
    """Child mode: prints the modules' files (and their imports) as a base64 FileDescriptorSet."""
    import importlib

    fds = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def add(fd):
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fds.file.add().MergeFromString(fd.serialized_pb)

    for module in modules:
        add(importlib.import_module(module).DESCRIPTOR)
    print(base64.b64encode(fds.SerializeToString()).decode())


def client_files(client):
    """The client's FileDescriptorSet, read in a child process."""
    out = subprocess.run(
        [sys.executable, __file__, "--dump", *CLIENTS[client]],
        check=True,
        capture_output=True,
        text=True,
    )
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(base64.b64decode(out.stdout))
    return fds


def index(fds):
    """Full name -> (kind, proto, file) for every message (nested and map entries too), enum and service."""
    found = {}

    def messages(prefix, protos, f):
        for m in protos:
            name = f"{prefix}.{m.name}"
            found[name] = ("message", m, f)
            messages(name, m.nested_type, f)
            enums(name, m.enum_type, f)

    def enums(prefix, protos, f):
        for e in protos:
            found[f"{prefix}.{e.name}"] = ("enum", e, f)

    for f in fds.file:
        prefix = f.package
        messages(prefix, f.message_type, f)
        enums(prefix, f.enum_type, f)
        for s in f.service:
            found[f"{prefix}.{s.name}"] = ("service", s, f)
    return found


def field_shape(message, field):
    """What wire compatibility depends on, besides the field's name."""
    t = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
    label = descriptor_pb2.FieldDescriptorProto.Label.Name(field.label)
    oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
    return {
        "number": field.number,
        "type": t,
        "type_name": field.type_name or None,
        "label": label,
        "oneof": oneof,
        "proto3_optional": field.proto3_optional,
        "options": field.options.SerializeToString(deterministic=True) if field.HasField("options") else None,
        "default": field.default_value or None,
    }


def compare(client, ours, theirs):
    """Every difference between ours and the client's, as (kind, full name, detail)."""
    diffs = []
    for name, (kind, theirs_proto, theirs_file) in sorted(theirs.items()):
        if name not in ours:
            diffs.append((f"{kind} only theirs", name, f"{client} defines {kind} {name}; proto/ does not"))
            continue
        our_kind, our_proto, our_file = ours[name]
        if our_kind != kind:
            diffs.append(("kind", name, f"ours is a {our_kind}, {client}'s a {kind}"))
            continue
        for attr in ("package", "syntax"):
            if getattr(our_file, attr) != getattr(theirs_file, attr):
                diffs.append((attr, name, f"{attr}: ours {getattr(our_file, attr)!r} ({our_file.name}), {client} {getattr(theirs_file, attr)!r} ({theirs_file.name})"))
        if kind == "message":
            diffs += compare_message(client, name, our_proto, theirs_proto)
        elif kind == "enum":
            a = {v.name: v.number for v in our_proto.value}
            b = {v.name: v.number for v in theirs_proto.value}
            if a != b:
                diffs.append(("enum values", name, f"enum {name}: ours {a}, {client} {b}"))
        else:
            diffs += compare_service(client, name, our_proto, theirs_proto)
    for name, (kind, _, _) in sorted(ours.items()):
        if name not in theirs and EXACT[client]:
            diffs.append((f"{kind} only ours", name, f"proto/ defines {kind} {name}; {client} does not"))
    return diffs


def compare_message(client, name, ours, theirs):
    a = {f.name: field_shape(ours, f) for f in ours.field}
    b = {f.name: field_shape(theirs, f) for f in theirs.field}
    fields = []
    for field in sorted(set(a) | set(b)):
        full = f"{name}.{field}"
        if field not in b:
            fields.append(("field only ours", full, f"proto/ has {full} = {a[field]['number']}; {client} does not"))
        elif field not in a:
            fields.append(("field only theirs", full, f"{client} has {full} = {b[field]['number']}; proto/ does not"))
        else:
            for key in a[field]:
                if a[field][key] != b[field][key]:
                    fields.append(("field", full, f"{full}: {key} ours {a[field][key]!r}, {client} {b[field][key]!r}"))
    if ours.options.map_entry != theirs.options.map_entry:
        fields.append(("map entry", name, f"map_entry ours {ours.options.map_entry}, {client} {theirs.options.map_entry}"))
    # a message whose layout is known to conflict is one expected difference
    if fields and (client, "message conflicts", name) in EXPECTED:
        return [("message conflicts", name, "; ".join(d for _, _, d in fields))]
    return fields


def compare_service(client, name, ours, theirs):
    diffs = []
    a = {m.name: m for m in ours.method}
    b = {m.name: m for m in theirs.method}
    for method in sorted(set(a) | set(b)):
        full = f"{name}/{method}"
        if method not in a:
            diffs.append(("method only theirs", full, f"{client} has rpc {method}; proto/ does not"))
            continue
        if method not in b:
            if EXACT[client]:
                diffs.append(("method only ours", full, f"proto/ has rpc {method}; {client} does not"))
            continue
        for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
            x, y = getattr(a[method], key), getattr(b[method], key)
            if x != y:
                diffs.append(("method", full, f"rpc {method}: {key} ours {x!r}, {client} {y!r}"))
    return diffs


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--dump":
        dump(sys.argv[2:])
        return
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    ours_fds = descriptor_pb2.FileDescriptorSet()
    with open(sys.argv[1], "rb") as f:
        ours_fds.ParseFromString(f.read())
    ours = index(ours_fds)
    print(f"ours: files {[f.name for f in ours_fds.file]}, {sum(k == 'message' for k, _, _ in ours.values())} messages")

    failures = []
    for client in CLIENTS:
        theirs = index(client_files(client))
        shared = {
            kind: sum(k == kind and n in ours for n, (k, _, _) in theirs.items()) for kind in ("message", "enum")
        }
        methods = [m.name for m in theirs[SERVICE][1].method] if SERVICE in theirs else []
        if not methods:
            failures.append(f"{client}: no {SERVICE} in {CLIENTS[client]}")
        seen_expected = set()
        unexpected = []
        for kind, name, detail in compare(client, ours, theirs):
            key = (client, kind, name)
            if key in EXPECTED:
                seen_expected.add(key)
                print(f"ok: {client}: expected difference ({EXPECTED[key]}): {detail}")
            else:
                unexpected.append(f"{client}: {detail}")
        for key in sorted(k for k in EXPECTED if k[0] == client and k not in seen_expected):
            unexpected.append(f"{client}: expected difference did not occur (update EXPECTED): {key[1]} {key[2]}")
        if unexpected:
            failures += unexpected
        else:
            conflicts = sum(k[0] == client and k[1] == "message conflicts" for k in EXPECTED)
            print(
                f"ok: {client}: {shared['message']} shared messages ({conflicts} of them expected conflicts above) "
                f"and {shared['enum']} shared enums match field by field"
            )
            print(f"ok: {client}: {len(methods)} methods of {SERVICE} match ours: {', '.join(methods)}")

    if failures:
        print(f"FAIL: {len(failures)} difference(s) between proto/ and the stock clients' descriptors:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)
    print("grpc_descriptors: all checks passed")


if __name__ == "__main__":
    main()
