"""Writes a Triton model repository (onnxruntime_onnx platform) for the
triton-native peer from switchyard's models/, with the execution settings of
each model's config.toml, so both servers run the same file the same way.

    python triton_native_repo.py MODELS_DIR OUT_DIR digits:2 mlp_wide:1

For each MODEL:VERSION: OUT_DIR/MODEL/VERSION/model.onnx (a copy of
MODELS_DIR/MODEL/VERSION/model.onnx) and OUT_DIR/MODEL/config.pbtxt with

  config.toml [execution]   Triton config.pbtxt
  instances                 instance_group [ { count kind: KIND_CPU } ]
  max_batch_size            max_batch_size
  max_queue_delay_us        dynamic_batching { max_queue_delay_microseconds }
                            (0 = take what is queued, as switchyard's greedy batching)
  intra_op_threads          parameters intra_op_thread_count
  (always)                  parameters inter_op_thread_count = 1

Inputs and outputs come from the ONNX file (read with onnxruntime), batch
dimension dropped. An output of rank 1 (the batch only, e.g. `label` [N]) is
exposed as [N, 1] (`dims: [1] reshape: { shape: [] }`), as Triton requires a
non-empty shape per row. What the native backend cannot be told: ORT's
intra-op spinning (it stays ORT's default, on), see BENCHMARKS.md.
"""

import shutil
import sys
import tomllib
from pathlib import Path

import onnxruntime as ort

TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}


def execution(model_dir: Path) -> dict:
    config = model_dir / "config.toml"
    if not config.is_file():
        return {}
    with config.open("rb") as f:
        return tomllib.load(f).get("execution", {})


def tensor(arg, batched: bool) -> str:
    if arg.type not in TYPES:
        sys.exit(f"triton_native_repo: {arg.name}: unsupported type {arg.type}")
    dims = [d if isinstance(d, int) else -1 for d in arg.shape]
    if batched:
        dims = dims[1:]
    if not dims:
        return f'{{ name: "{arg.name}" data_type: {TYPES[arg.type]} dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
    return f'{{ name: "{arg.name}" data_type: {TYPES[arg.type]} dims: [ {", ".join(map(str, dims))} ] }}'


def config(name: str, onnx_file: Path, ex: dict) -> str:
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    max_batch = int(ex.get("max_batch_size", 0))
    batched = max_batch > 0
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch}",
        "input [",
        ",\n".join("  " + tensor(i, batched) for i in session.get_inputs()),
        "]",
        "output [",
        ",\n".join("  " + tensor(o, batched) for o in session.get_outputs()),
        "]",
        f'instance_group [ {{ count: {int(ex.get("instances", 1))} kind: KIND_CPU }} ]',
    ]
    if batched:
        lines.append(f'dynamic_batching {{ max_queue_delay_microseconds: {int(ex.get("max_queue_delay_us", 0))} }}')
    for key, value in (("intra_op_thread_count", int(ex.get("intra_op_threads", 1))), ("inter_op_thread_count", 1)):
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def main() -> None:
    models, out = Path(sys.argv[1]), Path(sys.argv[2])
    specs = sys.argv[3:] or ["digits:2", "mlp_wide:1"]
    if out.exists():
        shutil.rmtree(out)
    for spec in specs:
        name, version = spec.split(":")
        src = models / name / version / "model.onnx"
        if not src.is_file():
            sys.exit(f"triton_native_repo: no {src}")
        (out / name / version).mkdir(parents=True)
        shutil.copyfile(src, out / name / version / "model.onnx")
        ex = execution(models / name)
        (out / name / "config.pbtxt").write_text(config(name, src, ex))
        print(
            f"triton_native_repo: {name}/{version}: max_batch_size {ex.get('max_batch_size', 0)}, "
            f"delay {ex.get('max_queue_delay_us', 0)} us, intra-op {ex.get('intra_op_threads', 1)}, "
            f"instances {ex.get('instances', 1)}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
