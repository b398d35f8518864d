"""tritonclient.http against a running switchyard.

usage: triton_http.py BASE_URL EXPECTED_EXTENSIONS_JSON EXPECTED_CORRECT
  BASE_URL            http://127.0.0.1:PORT
  EXPECTED_EXTENSIONS the server's extension list, as JSON
  EXPECTED_CORRECT    digits v1 correct predictions on samples.json (models/README.md)
"""

import json
import sys
from urllib.parse import urlparse

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from common import check, digits_samples


def infer_digits(client, x, binary_inputs, binary_outputs):
    """Infers digits v1 on x; binary_outputs None lets the client pick its default."""
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_inputs)
    outputs = None
    if binary_outputs is not None:
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary_outputs),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary_outputs),
        ]
    result = client.infer("digits", [inp], model_version="1", outputs=outputs, request_id="t1")
    response = result.get_response()
    check(response["model_name"] == "digits" and response["model_version"] == "1", f"answer names digits v1: {response['model_version']}")
    check(response["id"] == "t1", "request id echoed")
    for out in response["outputs"]:
        is_binary = "binary_data_size" in out.get("parameters", {})
        want = binary_outputs is not False  # None: the client asks for binary
        check(is_binary == want, f"output {out['name']} binary={is_binary} (binary_inputs={binary_inputs}, binary_outputs={binary_outputs})")
    return result.as_numpy("label"), result.as_numpy("probabilities")


def main():
    url, extensions, expected_correct = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    client = httpclient.InferenceServerClient(url=urlparse(url).netloc)

    check(client.is_server_live(), "server is live")
    check(client.is_server_ready(), "server is ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "switchyard", f"server name: {meta['name']}")
    check(meta["extensions"] == extensions, f"extensions {meta['extensions']} == {extensions}")
    check("binary_tensor_data" in meta["extensions"], "binary_tensor_data is listed")

    model = client.get_model_metadata("digits")
    check(model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], f"digits inputs: {model['inputs']}")
    check([o["name"] for o in model["outputs"]] == ["label", "probabilities"], f"digits outputs: {model['outputs']}")
    check(client.is_model_ready("digits"), "digits is ready")
    check(client.is_model_ready("digits", "2"), "digits v2 is ready")
    check(not client.is_model_ready("nope"), "an unknown model is not ready")

    x, y = digits_samples()
    json_label, json_probs = infer_digits(client, x, binary_inputs=False, binary_outputs=False)
    check(json_label.shape == (len(x),) and json_probs.shape == (len(x), 10), f"shapes {json_label.shape} {json_probs.shape}")
    correct = int((json_label == y).sum())
    check(correct == expected_correct, f"JSON path: {correct} correct == {expected_correct} (models/README.md)")

    for binary_inputs, binary_outputs in [(True, None), (True, True), (False, True), (True, False)]:
        label, probs = infer_digits(client, x, binary_inputs, binary_outputs)
        check(label.dtype == np.int64 and probs.dtype == np.float32, f"dtypes {label.dtype} {probs.dtype}")
        check(np.array_equal(label, json_label), f"labels equal the JSON path (in={binary_inputs}, out={binary_outputs})")
        check(np.array_equal(probs, json_probs), f"probabilities equal the JSON path (in={binary_inputs}, out={binary_outputs})")

    # BYTES, FP16 and BOOL through the identity fixtures, client defaults (binary)
    cases = {
        "identity_string": np.array([[b"", b"a"], ["h\u00e9llo".encode(), b"x" * 300]], dtype=np.object_),
        "identity_fp16": np.array([[-2.5, 0.0], [65504.0, 0.333]], dtype=np.float16),
        "identity_bool": np.array([[True, False], [False, True]], dtype=np.bool_),
        "identity_uint64": np.array([[0, 1], [2**63, 2**64 - 1]], dtype=np.uint64),
    }
    for name, value in cases.items():
        datatype = {"identity_string": "BYTES", "identity_fp16": "FP16", "identity_bool": "BOOL", "identity_uint64": "UINT64"}[name]
        inp = httpclient.InferInput("x", list(value.shape), datatype)
        inp.set_data_from_numpy(value)
        got = client.infer(name, [inp]).as_numpy("y")
        check(got.shape == value.shape and np.array_equal(got, value), f"{name} round-trips in binary: {got!r}")

    # errors come back as exceptions carrying the server's message
    try:
        bad = httpclient.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        client.infer("digits", [bad])
        check(False, "a wrong shape is rejected")
    except InferenceServerException as e:
        check("input" in e.message(), f"a wrong shape is rejected: {e.message()}")

    stats = client.get_inference_statistics("digits", "1")
    s = stats["model_stats"][0]
    check(s["name"] == "digits" and s["version"] == "1", "statistics for digits v1")
    check(s["inference_stats"]["success"]["count"] >= 5, f"statistics count the inferences: {s['inference_stats']['success']}")
    check(s["inference_count"] >= 5 * len(x), f"inference_count counts rows: {s['inference_count']}")
    print("triton_http: all checks passed")


if __name__ == "__main__":
    main()
