"""tritonclient.grpc against a running switchyard's gRPC listener.

usage: triton_grpc.py ADDRESS EXPECTED_CORRECT
  ADDRESS           127.0.0.1:PORT of the gRPC listener
  EXPECTED_CORRECT  digits v1 correct predictions on samples.json (models/README.md)
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from common import check, digits_samples


def expect_error(call, status, needle, what):
    """Checks that `call` raises the server error `status` whose message names `needle`."""
    try:
        call()
    except InferenceServerException as e:
        check(e.status() == status and needle in e.message(), f"{what}: {e.status()} {e.message()}")
        return
    check(False, f"{what}: no error")


def main():
    address, expected_correct = sys.argv[1], int(sys.argv[2])
    client = grpcclient.InferenceServerClient(url=address)

    check(client.is_server_live(), "server is live")
    check(client.is_server_ready(), "server is ready")
    meta = client.get_server_metadata()
    check(meta.name == "switchyard", f"server name: {meta.name}")
    check(list(meta.extensions) == ["model_configuration", "statistics"], f"extensions {list(meta.extensions)}")

    model = client.get_model_metadata("digits", as_json=True)
    check(model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}], f"digits inputs: {model['inputs']}")
    check([o["name"] for o in model["outputs"]] == ["label", "probabilities"], f"digits outputs: {model['outputs']}")
    check(model["versions"] == ["1", "2"], f"digits versions: {model['versions']}")
    check(client.is_model_ready("digits"), "digits is ready")
    check(client.is_model_ready("digits", "2"), "digits v2 is ready")
    check(not client.is_model_ready("nope"), "an unknown model is not ready")
    config = client.get_model_config("digits", as_json=True)["config"]
    check(config["name"] == "digits" and config["backend"] == "onnxruntime", f"config names the model: {config}")
    check(config["max_batch_size"] == 64, f"batching as configured: {config['max_batch_size']}")
    check(config["input"][0]["dims"] == ["64"] and config["input"][0]["data_type"] == "TYPE_FP32", f"input config: {config['input']}")

    # the client's default: raw_input_contents in, raw_output_contents out
    x, y = digits_samples()
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer("digits", [inp], model_version="1", outputs=outputs, request_id="g1", headers={"x-user-id": "grace"})
    response = result.get_response()
    check(response.model_name == "digits" and response.model_version == "1", f"answer names digits v1: {response.model_version}")
    check(response.id == "g1", "request id echoed")
    check(len(response.raw_output_contents) == 2, "raw outputs for raw inputs")
    label, probs = result.as_numpy("label"), result.as_numpy("probabilities")
    check(label.dtype == np.int64 and probs.dtype == np.float32, f"dtypes {label.dtype} {probs.dtype}")
    check(label.shape == (len(x),) and probs.shape == (len(x), 10), f"shapes {label.shape} {probs.shape}")
    correct = int((label == y).sum())
    check(correct == expected_correct, f"raw: {correct} correct == {expected_correct} (models/README.md)")

    # typed contents: tritonclient has no public setter, so fill the
    # request's tensor message; typed contents come back
    typed = grpcclient.InferInput("input", list(x.shape), "FP32")
    typed._get_tensor().contents.fp32_contents.extend(x.flatten().tolist())
    result = client.infer("digits", [typed], model_version="1")
    response = result.get_response()
    check(len(response.raw_output_contents) == 0, "typed outputs for typed inputs")
    out = {o.name: o for o in response.outputs}
    typed_label = np.array(out["label"].contents.int64_contents, dtype=np.int64)
    typed_probs = np.array(out["probabilities"].contents.fp32_contents, dtype=np.float32).reshape(list(out["probabilities"].shape))
    check(np.array_equal(typed_label, label), "typed labels equal the raw path")
    check(np.array_equal(typed_probs, probs), "typed probabilities equal the raw path")

    # BYTES, FP16, BOOL and UINT64 through the identity fixtures
    cases = {
        "identity_string": ("BYTES", np.array([[b"", b"a"], ["h\u00e9llo".encode(), b"x" * 300]], dtype=np.object_)),
        "identity_fp16": ("FP16", np.array([[-2.5, 0.0], [65504.0, 0.333]], dtype=np.float16)),
        "identity_bool": ("BOOL", np.array([[True, False], [False, True]], dtype=np.bool_)),
        "identity_uint64": ("UINT64", np.array([[0, 1], [2**63, 2**64 - 1]], dtype=np.uint64)),
    }
    for name, (datatype, value) in cases.items():
        i = grpcclient.InferInput("x", list(value.shape), datatype)
        i.set_data_from_numpy(value)
        got = client.infer(name, [i]).as_numpy("y")
        check(got.shape == value.shape and np.array_equal(got, value), f"{name} round-trips: {got!r}")

    # errors: the server's code and message
    bad = grpcclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    expect_error(lambda: client.infer("digits", [bad]), "StatusCode.INVALID_ARGUMENT", "input", "a wrong shape is rejected")
    expect_error(lambda: client.infer("nope", [inp]), "StatusCode.NOT_FOUND", "unknown model 'nope'", "an unknown model")
    expect_error(lambda: client.get_model_metadata("digits", "7"), "StatusCode.NOT_FOUND", "unknown version 7", "an unknown version")
    expect_error(lambda: client.get_model_repository_index(), "StatusCode.UNIMPLEMENTED", "--repository-api", "repository RPCs are off")

    stats = client.get_inference_statistics("digits", "1", as_json=True)
    s = stats["model_stats"][0]
    check(s["name"] == "digits" and s["version"] == "1", "statistics for digits v1")
    check(int(s["inference_stats"]["success"]["count"]) >= 2, f"statistics count the inferences: {s['inference_stats']['success']}")
    check(int(s["inference_count"]) >= 2 * len(x), f"inference_count counts rows: {s['inference_count']}")
    print("triton_grpc: all checks passed")


if __name__ == "__main__":
    main()
