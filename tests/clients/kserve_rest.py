"""The KServe Python SDK's V2 REST client against a running switchyard.

usage: kserve_rest.py BASE_URL EXPECTED_CORRECT
"""

import asyncio
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from common import check, digits_samples


async def main():
    url, expected_correct = sys.argv[1], int(sys.argv[2])
    x, y = digits_samples()
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=60))
    try:
        check(await client.is_server_live(url), "server is live")
        check(await client.is_server_ready(url), "server is ready")
        check(await client.is_model_ready(url, "digits"), "digits is ready")

        results = {}
        for binary in (False, True):
            inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outputs = [RequestedOutput("label", {"binary_data": binary}), RequestedOutput("probabilities", {"binary_data": binary})]
            request = InferRequest(model_name="digits", infer_inputs=[inp], request_id=f"k-{binary}", request_outputs=outputs)
            headers = {}
            response = await client.infer(url, request, model_name="digits", response_headers=headers)
            check(response.model_name == "digits", f"answer names digits (binary={binary})")
            check(response.id == f"k-{binary}", f"request id echoed (binary={binary})")
            by_name = {o.name: o for o in response.outputs}
            check(set(by_name) == {"label", "probabilities"}, f"outputs {sorted(by_name)}")
            label = by_name["label"].as_numpy()
            probs = by_name["probabilities"].as_numpy()
            check(label.shape == (len(x),) and probs.shape == (len(x), 10), f"shapes {label.shape} {probs.shape}")
            correct = int((label == y).sum())
            check(correct == expected_correct, f"binary={binary}: {correct} correct == {expected_correct}")
            has_header = "inference-header-content-length" in {k.lower() for k in headers}
            check(has_header == binary, f"binary={binary}: Inference-Header-Content-Length present={has_header}")
            results[binary] = (label, probs)
        check(np.array_equal(results[False][0], results[True][0]), "labels equal across JSON and binary")
        check(np.array_equal(results[False][1], results[True][1]), "probabilities equal across JSON and binary")
    finally:
        await client.close()
    print("kserve_rest: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
