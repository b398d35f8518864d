"""The KServe Python SDK's gRPC client (InferenceGRPCClient) against a
running switchyard's gRPC listener.

usage: kserve_grpc.py ADDRESS EXPECTED_CORRECT
  ADDRESS           127.0.0.1:PORT of the gRPC listener
  EXPECTED_CORRECT  digits v1 correct predictions on samples.json (models/README.md)

The server must also serve a model `unready` whose version 1 failed to load.
"""

import asyncio
import sys
import time

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

from common import check, digits_samples


def digits_request(x, typed, request_id, version="1"):
    inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
    if typed:
        inp.data = x.flatten().tolist()  # typed fp32_contents
    else:
        inp.set_data_from_numpy(x)  # raw_input_contents
    return InferRequest(model_name="digits", infer_inputs=[inp], request_id=request_id, model_version=version)


async def main():
    address, expected_correct = sys.argv[1], int(sys.argv[2])
    x, y = digits_samples()
    client = InferenceGRPCClient(address, timeout=60)
    try:
        check(await client.is_server_live(), "server is live")
        check(await client.is_server_ready(), "server is ready")
        check(await client.is_model_ready("digits"), "digits is ready")
        check(not await client.is_model_ready("nope"), "an unknown model is not ready")

        labels = {}
        for typed in (False, True):
            response = await client.infer(digits_request(x, typed, f"k-{typed}"), headers=(("x-user-id", "kim"),))
            check(response.model_name == "digits" and response.model_version == "1", f"answer names digits v1 (typed={typed})")
            check(response.id == f"k-{typed}", f"request id echoed (typed={typed})")
            by_name = {o.name: o for o in response.outputs}
            check(set(by_name) == {"label", "probabilities"}, f"outputs {sorted(by_name)}")
            label, probs = by_name["label"].as_numpy(), by_name["probabilities"].as_numpy()
            check(label.shape == (len(x),) and probs.shape == (len(x), 10), f"shapes {label.shape} {probs.shape}")
            correct = int((label == y).sum())
            check(correct == expected_correct, f"typed={typed}: {correct} correct == {expected_correct}")
            labels[typed] = (label, probs)
        check(np.array_equal(labels[False][0], labels[True][0]), "labels equal across raw and typed contents")
        check(np.allclose(labels[False][1], labels[True][1]), "probabilities equal across raw and typed contents")

        # errors reach the client with the server's code
        try:
            await client.infer(digits_request(x[:1, :3], False, "bad"))
            check(False, "a wrong shape is rejected")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"a wrong shape: {e.code()} {e.details()}")

        # UNAVAILABLE carries grpc-retry-pushback-ms: the client's retry
        # policy (3 attempts, 0.1 s initial backoff) waits 1 s before each
        # retry instead of its backoff
        started = time.monotonic()
        try:
            unready = digits_request(x[:1], False, "u")
            unready.model_name = "unready"
            await client.infer(unready)
            check(False, "a version that failed to load does not answer")
        except grpc.RpcError as e:
            took = time.monotonic() - started
            check(e.code() == grpc.StatusCode.UNAVAILABLE, f"a version that is not READY: {e.code()} {e.details()}")
            trailing = dict(e.trailing_metadata() or ())
            check(trailing.get("retry-after") == "1", f"retry-after in the trailers: {trailing}")
            check(took >= 1.9, f"the client waited the server's pushback before retrying twice: {took:.2f} s")
    finally:
        await client.close()
    print("kserve_grpc: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
