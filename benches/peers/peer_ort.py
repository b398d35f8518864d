"""The ONNX Runtime session every peer opens: the same thread settings as
switchyard gives the model (`[execution] intra_op_threads` of the model's
config.toml in the repository, 1 when unset), one inter-op thread, and
intra-op threads that sleep between runs instead of spinning (as switchyard's
do), so each server gets the same ORT on the same cores."""

import tomllib
from pathlib import Path

import onnxruntime as ort


def intra_op_threads(model_dir: Path) -> int:
    config = model_dir / "config.toml"
    if not config.is_file():
        return 1
    with config.open("rb") as f:
        return int(tomllib.load(f).get("execution", {}).get("intra_op_threads", 1))


def open_session(repository: Path, model: str, version) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads(repository / model)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = repository / model / str(version) / "model.onnx"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
