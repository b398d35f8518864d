"""Triton Inference Server through pytriton: the bundled tritonserver, its
python backend, and an onnxruntime session per model in this process.

Serves exactly the files switchyard serves, under the same names and versions
(digits version 2 = the MLP, mlp_wide version 1), with Triton's dynamic
batcher on (max_batch_size 64, max_queue_delay 500 µs, as digits' config.toml
in switchyard), one instance per model, ORT threads as switchyard's
config.toml gives them (peer_ort.py). The V2
HTTP endpoint is Triton's own, so the same JSON request works:

    LD_LIBRARY_PATH=$(python -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))') \
      python benches/peers/pytriton_server.py --http-port 8000 --grpc-port 8001 --metrics-port 8002

Env: MODEL_REPOSITORY (default: models/ next to benches/).
"""

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from peer_ort import open_session

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = Path(os.environ.get("MODEL_REPOSITORY", ROOT / "models"))
MODELS = {"digits": 2, "mlp_wide": 1}
MAX_BATCH = 64
MAX_QUEUE_DELAY_US = 500


def make_infer(session: ort.InferenceSession):
    @batch
    def infer(input):  # noqa: A002 - the model's input is called "input"
        label, probabilities = session.run(["label", "probabilities"], {"input": input.astype(np.float32)})
        # Triton's batched outputs need a per-row shape: label [N] → [N, 1].
        return {"label": label.reshape(-1, 1), "probabilities": probabilities}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_sagemaker=False,
        allow_vertex_ai=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        for name, version in MODELS.items():
            session = open_session(REPOSITORY, name, version)
            triton.bind(
                model_name=name,
                model_version=version,
                infer_func=make_infer(session),
                inputs=[Tensor(name="input", dtype=np.float32, shape=(64,))],
                outputs=[
                    Tensor(name="label", dtype=np.int64, shape=(1,)),
                    Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                ],
                config=ModelConfig(
                    max_batch_size=MAX_BATCH,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
                ),
                strict=False,
            )
        triton.serve()


if __name__ == "__main__":
    main()
