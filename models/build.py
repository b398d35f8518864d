#!/usr/bin/env python3
"""Build the bundled ONNX models and the ONNX test fixtures of switchyard.

Run from anywhere (paths are relative to this file):

    python3 -m venv .venv/models
    .venv/models/bin/pip install -r models/requirements.txt
    .venv/models/bin/python models/build.py

It (re)writes:

  models/digits/{1,2}/model.onnx, models/digits/samples.json
  models/breast_cancer/1/model.onnx, models/breast_cancer/samples.json
  models/mlp_wide/1/model.onnx, models/mlp_wide/samples.json
  models/README.md
  tests/fixtures/models/<name>/1/model.onnx for the fixtures listed in
  build_fixtures() (plus external_ok/1/weights.bin and the escaping
  external-data file tests/fixtures/models/outside.bin)

Everything is trained on scikit-learn's bundled data sets (no downloads),
with random_state=0 everywhere and BLAS pinned to one thread, so a rebuild
on the same machine with the pinned requirements gives byte-identical model
files. Only the timing figures in the README change from run to run.
onnxruntime is used only to verify the models and to measure them; every
accuracy reported is the one onnxruntime computes on the held-out split.
"""

import os

# Pin the BLAS/OpenMP thread pools before numpy is imported: summation order
# (and so the last bits of the trained weights) can depend on thread count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = HERE
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
ONNX_OPSET = 17
IR_VERSION = 8  # what skl2onnx emits for opset 17; keeps every file uniform
BATCH_DIM = "N"

SUMMARY = []  # rows for the printed summary and the README


# ---------------------------------------------------------------- helpers

def rel(path):
    return os.path.relpath(path, ROOT)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ensure_dir(path):
    """Create a directory if needed. Nothing is ever deleted: model directories
    also hold hand-written files (config.toml) that this script must keep; the
    files it generates are simply overwritten."""
    os.makedirs(path, exist_ok=True)


def split(X, y):
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def session(path_or_bytes, threads=1, quiet=False):
    so = ort.SessionOptions()
    if quiet:  # failures are expected: keep onnxruntime's error log quiet
        so.log_severity_level = 4
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def set_dims(value_info, dims):
    """Overwrite a graph input/output's shape: ints are fixed, strs symbolic."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def dedupe_opsets(model):
    """skl2onnx can list the default domain twice in opset_import."""
    seen = {}
    for op in model.opset_import:
        seen[op.domain] = max(seen.get(op.domain, 0), op.version)
    del model.opset_import[:]
    for domain, ver in sorted(seen.items()):  # skl2onnx's order varies run to run
        model.opset_import.append(helper.make_opsetid(domain, ver))


def finish(model, doc):
    model.ir_version = IR_VERSION
    model.producer_name = "switchyard models/build.py"
    model.producer_version = ""
    model.doc_string = doc
    dedupe_opsets(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save_model(model, path)
    return path


def signature(path):
    """Human-readable signature as onnxruntime reports it."""
    s = session(path)

    def fmt(a):
        dims = ",".join(str(d) if d is not None else "?" for d in a.shape)
        return f"{a.name}: {a.type} [{dims}]"

    return [fmt(a) for a in s.get_inputs()], [fmt(a) for a in s.get_outputs()]


def gather_instead_of_array_feature_extractor(model):
    """skl2onnx maps MLP argmax indices to class labels with
    ai.onnx.ml ArrayFeatureExtractor(classes, idx), which onnxruntime rejects
    for an empty batch ("Invalid Y argument: num_indices = 0"). With a 1-D
    `classes` initializer that is exactly Gather(classes, idx, axis=0), which
    handles N = 0, so swap it in."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for idx, node in enumerate(g.node):
        if node.op_type != "ArrayFeatureExtractor":
            continue
        data = inits.get(node.input[0])
        assert data is not None and len(data.dims) == 1, node
        g.node[idx].CopyFrom(helper.make_node("Gather", list(node.input), list(node.output),
                                              name="Gather", axis=0))
    used = {n.domain for n in g.node}
    if "ai.onnx.ml" not in used:
        keep = [op for op in model.opset_import if op.domain != "ai.onnx.ml"]
        del model.opset_import[:]
        model.opset_import.extend(keep)


def convert_classifier(pipe, n_features, n_classes, doc, name):
    """sklearn classifier/pipeline -> ONNX: input `input` FP32 [N, n_features],
    outputs `label` INT64 [N] then `probabilities` FP32 [N, n_classes]."""
    final = pipe[-1] if hasattr(pipe, "steps") else pipe
    model = convert_sklearn(
        pipe,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(final): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    g = model.graph
    assert [i.name for i in g.input] == ["input"], [i.name for i in g.input]
    assert [o.name for o in g.output] == ["label", "probabilities"], [o.name for o in g.output]
    assert g.output[0].type.tensor_type.elem_type == TensorProto.INT64
    assert g.output[1].type.tensor_type.elem_type == TensorProto.FLOAT
    g.name = name  # skl2onnx picks a random uuid; keep rebuilds byte-identical
    gather_instead_of_array_feature_extractor(model)
    set_dims(g.input[0], [BATCH_DIM, n_features])
    set_dims(g.output[0], [BATCH_DIM])
    set_dims(g.output[1], [BATCH_DIM, n_classes])
    return finish(model, doc)


def ort_eval(path, X, y):
    """Accuracy of a classifier model as computed by onnxruntime."""
    s = session(path)
    label, proba = s.run(["label", "probabilities"], {"input": X.astype(np.float32)})
    assert label.dtype == np.int64 and label.shape == (len(X),)
    assert proba.dtype == np.float32 and proba.shape[0] == len(X)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    # An empty batch must work too (N = 0 -> label [0], probabilities [0, k]).
    e_label, e_proba = s.run(["label", "probabilities"],
                             {"input": np.zeros((0, X.shape[1]), np.float32)})
    assert e_label.shape == (0,) and e_proba.shape == (0, proba.shape[1])
    correct = int((label == y).sum())
    return correct, len(y), label, proba


def write_samples(path, X, y, count=None):
    rows = range(len(X)) if count is None else range(min(count, len(X)))
    doc = {
        "label_output": "label",
        "samples": [
            {"inputs": {"input": [[float(v) for v in X[i]]]}, "label": int(y[i])}
            for i in rows
        ],
    }
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return len(doc["samples"])


def record(kind, path, inputs, outputs, **extra):
    SUMMARY.append(dict(kind=kind, path=rel(path), size=os.path.getsize(path),
                        sha256=sha256(path), inputs=inputs, outputs=outputs, **extra))


def fmt_acc(correct, total):
    return f"{correct / total:.4f} ({correct}/{total})"


def quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# ---------------------------------------------------------- bundled models

def build_digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = split(X, y)
    out = {}
    ensure_dir(os.path.join(MODELS, "digits"))

    v1 = quiet_fit(make_pipeline(StandardScaler(),
                                 LogisticRegression(max_iter=1000, random_state=0)), Xtr, ytr)
    v2 = quiet_fit(make_pipeline(StandardScaler(),
                                 MLPClassifier(hidden_layer_sizes=(128,), max_iter=500,
                                               random_state=0)), Xtr, ytr)
    specs = [
        ("1", v1, "digits v1: StandardScaler + LogisticRegression on sklearn load_digits"),
        ("2", v2, "digits v2: StandardScaler + MLPClassifier(128) on sklearn load_digits"),
    ]
    for ver, pipe, doc in specs:
        path = save(convert_classifier(pipe, 64, 10, doc, f"digits_v{ver}"),
                    os.path.join(MODELS, "digits", ver, "model.onnx"))
        correct, total, label, proba = ort_eval(path, Xte, yte)
        # The ONNX graph must agree with sklearn itself.
        sk = pipe.predict(Xte)
        assert (label == sk).mean() >= 0.995, (ver, (label == sk).mean())
        assert np.allclose(proba, pipe.predict_proba(Xte), atol=1e-4)
        record("model", path, *signature(path), accuracy=(correct, total), doc=doc)
        out[ver] = (correct, total)
    assert out["2"][0] > out["1"][0], f"digits v2 must beat v1: {out}"
    n = write_samples(os.path.join(MODELS, "digits", "samples.json"), Xte, yte)
    assert n == len(Xte)
    return dict(v1=v1, data=(Xtr, Xte, ytr, yte), acc=out)


def build_breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = split(X, y)
    ensure_dir(os.path.join(MODELS, "breast_cancer"))
    gbc = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0).fit(Xtr, ytr)
    doc = "breast_cancer v1: GradientBoostingClassifier(50 trees, depth 3) on load_breast_cancer"
    model = convert_classifier(gbc, 30, 2, doc, "breast_cancer_v1")
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ("ai.onnx.ml", "TreeEnsembleClassifier") in ops, ops
    path = save(model, os.path.join(MODELS, "breast_cancer", "1", "model.onnx"))
    correct, total, label, _ = ort_eval(path, Xte, yte)
    assert (label == gbc.predict(Xte)).mean() >= 0.99
    record("model", path, *signature(path), accuracy=(correct, total), doc=doc)
    write_samples(os.path.join(MODELS, "breast_cancer", "samples.json"), Xte, yte)
    return (correct, total)


def time_per_row(path, X, batch, repeats):
    s = session(path, threads=1)
    xb = np.ascontiguousarray(np.resize(X.astype(np.float32), (batch, X.shape[1])))
    for _ in range(20):  # warm-up
        s.run(None, {"input": xb})
    best = float("inf")
    for _ in range(5):  # best of 5 rounds of `repeats` runs
        t0 = time.perf_counter()
        for _ in range(repeats):
            s.run(None, {"input": xb})
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best * 1000.0 / batch  # ms per row


def build_mlp_wide(digits):
    Xtr, Xte, ytr, yte = digits["data"]
    ensure_dir(os.path.join(MODELS, "mlp_wide"))
    mlp = quiet_fit(make_pipeline(StandardScaler(),
                                  MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024),
                                                max_iter=15, random_state=0)), Xtr, ytr)
    doc = ("mlp_wide v1: StandardScaler + MLPClassifier(1024,1024,1024), 15 epochs, "
           "on load_digits (a heavy model for benchmarks)")
    path = save(convert_classifier(mlp, 64, 10, doc, "mlp_wide_v1"),
                os.path.join(MODELS, "mlp_wide", "1", "model.onnx"))
    correct, total, label, _ = ort_eval(path, Xte, yte)
    assert (label == mlp.predict(Xte)).mean() >= 0.99
    timing = {
        1: time_per_row(path, Xte, 1, 300),
        32: time_per_row(path, Xte, 32, 20),
    }
    record("model", path, *signature(path), accuracy=(correct, total), doc=doc, timing=timing)
    write_samples(os.path.join(MODELS, "mlp_wide", "samples.json"), Xte, yte, count=20)
    return (correct, total), timing


# ----------------------------------------------------------- test fixtures

def digits_io():
    """Graph input/outputs with the digits signature."""
    return (
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH_DIM, 64]),
        helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH_DIM]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH_DIM, 10]),
    )


def make(graph, doc, opsets=None):
    opsets = opsets or [helper.make_opsetid("", ONNX_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets)
    return finish(model, doc)


def fixture_path(name, ver="1"):
    return os.path.join(FIXTURES, name, ver, "model.onnx")


def fixture_digits_bad(Xtr, Xte, ytr, yte):
    shuffled = ytr[np.random.RandomState(0).permutation(len(ytr))]
    pipe = quiet_fit(make_pipeline(StandardScaler(),
                                   LogisticRegression(max_iter=1000, random_state=0)), Xtr, shuffled)
    doc = "fixture digits_bad: LogisticRegression trained on shuffled digits labels"
    path = save(convert_classifier(pipe, 64, 10, doc, "digits_bad"), fixture_path("digits_bad"))
    correct, total, _, _ = ort_eval(path, Xte, yte)
    assert correct / total < 0.25, (correct, total)
    record("fixture", path, *signature(path), accuracy=(correct, total), doc=doc)


def fixture_digits_nan(Xte):
    inp, label, proba = digits_io()
    nodes = [
        helper.make_node("MatMul", ["input", "ones"], ["mixed"]),
        helper.make_node("Mul", ["mixed", "nan"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.ones((64, 10), np.float32), "ones"),
        numpy_helper.from_array(np.array(np.nan, np.float32), "nan"),
    ]
    doc = "fixture digits_nan: digits signature, probabilities are always NaN"
    path = save(make(helper.make_graph(nodes, "digits_nan", [inp], [label, proba], inits), doc),
                fixture_path("digits_nan"))
    lab, pr = session(path).run(["label", "probabilities"], {"input": Xte[:5].astype(np.float32)})
    assert pr.shape == (5, 10) and np.isnan(pr).all()
    lab0, pr0 = session(path).run(["label", "probabilities"], {"input": Xte[:0].astype(np.float32)})
    assert lab0.shape == (0,) and pr0.shape == (0, 10)
    assert lab.dtype == np.int64 and lab.shape == (5,)
    record("fixture", path, *signature(path), doc=doc)


def fixture_digits_faulty(digits):
    """The digits v1 graph behind a guard that makes onnxruntime fail at run
    time when any input value is > 100.

    flag  = Cast(ReduceMax(input) > 100, int64)         # 0 or 1
    shape = Concat([-1], [64] + flag)                   # [-1, 64] or [-1, 65]
    x     = Reshape(input, shape)                       # N*64 values
    With flag=1 the Reshape fails unless N is a multiple of 65; if it is, the
    [*, 65] tensor then fails the v1 Scaler (which wants 64 columns). Normal
    rows go through an identity Reshape and give exactly digits v1's outputs.
    """
    v1_path = os.path.join(MODELS, "digits", "1", "model.onnx")
    v1 = onnx.load(v1_path)
    g = v1.graph
    guarded = "guarded_input"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == "input":
                node.input[i] = guarded
    guard = [
        helper.make_node("ReduceMax", ["input"], ["max"], keepdims=0),
        helper.make_node("Greater", ["max", "limit"], ["too_big"]),
        helper.make_node("Cast", ["too_big"], ["flag0"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["flag0", "axis0"], ["flag"]),
        helper.make_node("Add", ["width", "flag"], ["width2"]),
        helper.make_node("Concat", ["minus_one", "width2"], ["shape"], axis=0),
        helper.make_node("Reshape", ["input", "shape"], [guarded]),
    ]
    inits = [
        numpy_helper.from_array(np.array(100.0, np.float32), "limit"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([64], np.int64), "width"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes = guard + list(g.node)
    graph = helper.make_graph(nodes, "digits_faulty", list(g.input), list(g.output),
                              inits + list(g.initializer))
    doc = "fixture digits_faulty: digits v1, but inference fails when any input value > 100"
    model = helper.make_model(graph, opset_imports=list(v1.opset_import))
    path = save(finish(model, doc), fixture_path("digits_faulty"))

    _, Xte, _, yte = digits["data"]
    Xf = Xte.astype(np.float32)
    ref = session(v1_path).run(["label", "probabilities"], {"input": Xf})
    s = session(path, quiet=True)
    got = s.run(["label", "probabilities"], {"input": Xf})
    assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])
    ref1 = session(v1_path).run(["label", "probabilities"], {"input": Xf[:1]})
    got1 = s.run(["label", "probabilities"], {"input": Xf[:1]})
    assert np.array_equal(ref1[0], got1[0]) and np.array_equal(ref1[1], got1[1])
    empty = s.run(["label", "probabilities"], {"input": Xf[:0]})
    assert empty[0].shape == (0,) and empty[1].shape == (0, 10)
    for n in (1, 2, 32, 65, 130):
        bad = np.resize(Xf, (n, 64)).copy()
        bad[n // 2, 7] = 200.0
        try:
            s.run(None, {"input": bad})
        except Exception:  # onnxruntime raises a runtime failure
            pass
        else:
            raise AssertionError(f"digits_faulty did not fail for batch {n}")
    record("fixture", path, *signature(path), doc=doc,
           note="identical to digits v1 on all 450 held-out rows; raises for any value > 100")


def fixture_digits_incompatible(digits):
    Xtr, Xte, ytr, yte = digits["data"]
    pipe = quiet_fit(make_pipeline(StandardScaler(),
                                   LogisticRegression(max_iter=1000, random_state=0)),
                     Xtr[:, :32], ytr)
    doc = "fixture digits_incompatible: LogisticRegression on the first 32 digits pixels only"
    path = save(convert_classifier(pipe, 32, 10, doc, "digits_incompatible"),
                fixture_path("digits_incompatible"))
    correct, total, _, _ = ort_eval(path, Xte[:, :32], yte)
    record("fixture", path, *signature(path), accuracy=(correct, total), doc=doc)


def fixture_two_inputs():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [BATCH_DIM, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [BATCH_DIM, 4])
    s_ = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [BATCH_DIM, 4])
    p = helper.make_tensor_value_info("prod", TensorProto.FLOAT, [BATCH_DIM, 4])
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("Mul", ["a", "b"], ["prod"])]
    doc = "fixture two_inputs: sum = a + b, prod = a * b"
    path = save(make(helper.make_graph(nodes, "two_inputs", [a, b], [s_, p]), doc),
                fixture_path("two_inputs"))
    av = np.arange(8, dtype=np.float32).reshape(2, 4)
    bv = np.full((2, 4), 2.0, np.float32)
    got_s, got_p = session(path).run(["sum", "prod"], {"a": av, "b": bv})
    assert np.array_equal(got_s, av + bv) and np.array_equal(got_p, av * bv)
    record("fixture", path, *signature(path), doc=doc)


IDENTITY_TYPES = [
    # (suffix, ONNX element type, numpy sample)
    ("bool", TensorProto.BOOL, np.array([[True, False, True]], dtype=bool)),
    ("uint8", TensorProto.UINT8, np.array([[0, 1, 255]], dtype=np.uint8)),
    ("uint16", TensorProto.UINT16, np.array([[0, 1, 65535]], dtype=np.uint16)),
    ("uint32", TensorProto.UINT32, np.array([[0, 1, 2**32 - 1]], dtype=np.uint32)),
    ("uint64", TensorProto.UINT64, np.array([[0, 1, 2**64 - 1]], dtype=np.uint64)),
    ("int8", TensorProto.INT8, np.array([[-128, 0, 127]], dtype=np.int8)),
    ("int16", TensorProto.INT16, np.array([[-32768, 0, 32767]], dtype=np.int16)),
    ("int32", TensorProto.INT32, np.array([[-2**31, 0, 2**31 - 1]], dtype=np.int32)),
    ("int64", TensorProto.INT64, np.array([[-2**63, 0, 2**63 - 1]], dtype=np.int64)),
    ("fp16", TensorProto.FLOAT16, np.array([[-1.5, 0.0, 65504.0]], dtype=np.float16)),
    ("fp32", TensorProto.FLOAT, np.array([[-1.5, 0.0, 3.25]], dtype=np.float32)),
    ("fp64", TensorProto.DOUBLE, np.array([[-1.5, 0.0, 1e300]], dtype=np.float64)),
    ("string", TensorProto.STRING, np.array([["a", "", "héllo"]], dtype=object)),
]


def fixture_identities():
    for suffix, elem, sample in IDENTITY_TYPES:
        name = f"identity_{suffix}"
        x = helper.make_tensor_value_info("x", elem, ["N", "M"])
        y = helper.make_tensor_value_info("y", elem, ["N", "M"])
        doc = f"fixture {name}: y = Identity(x), element type {TensorProto.DataType.Name(elem)}"
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], name, [x], [y])
        path = save(make(graph, doc), fixture_path(name))
        s = session(path)
        for arr in (sample, np.tile(sample, (2, 2)), sample[:0]):
            (out,) = s.run(["y"], {"x": arr})
            assert out.shape == arr.shape and out.dtype == arr.dtype, (name, out.dtype)
            assert out.tolist() == arr.tolist(), name
        record("fixture", path, *signature(path), doc=doc)


EXTERNAL_W = (np.arange(16, dtype=np.float32).reshape(4, 4) - 7.5) / 4.0


def external_graph(name):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH_DIM, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH_DIM, 4])
    w = numpy_helper.from_array(EXTERNAL_W, "W")
    return helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], name, [x], [y], [w])


def fixture_external_ok():
    doc = "fixture external_ok: y = x @ W, W (4x4 fp32) stored as external data in weights.bin"
    model = make(external_graph("external_ok"), doc)
    path = fixture_path("external_ok")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    weights = os.path.join(os.path.dirname(path), "weights.bin")
    if os.path.exists(weights):
        os.remove(weights)  # onnx appends to an existing external-data file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0, convert_attribute=False)
    os.chmod(weights, 0o644)  # onnx creates it 0600
    assert os.path.getsize(weights) == EXTERNAL_W.nbytes
    init = onnx.load(path, load_external_data=False).graph.initializer[0]
    assert init.data_location == TensorProto.EXTERNAL and not init.raw_data
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    (got,) = session(path).run(["y"], {"x": xv})
    assert np.allclose(got, xv @ EXTERNAL_W)
    record("fixture", path, *signature(path), doc=doc, note="+ weights.bin (64 bytes)")
    record("fixture", weights, [], [], doc="external data of external_ok (W, 16 x fp32 LE)")


def fixture_external_escape():
    """Same graph as external_ok, but W's external-data `location` is
    "../../outside.bin". Relative to the version directory
    tests/fixtures/models/external_escape/1/ that resolves to
    tests/fixtures/models/outside.bin, which this script writes (same 64
    bytes as weights.bin), so a naive loader that just joins the model
    directory and `location` WOULD find and load the weights. A safe loader
    must refuse the model instead, because the path leaves the version
    directory.
    """
    location = "../../outside.bin"
    doc = ("fixture external_escape: like external_ok, but W's external data location is "
           "'../../outside.bin', escaping the version directory")
    path = fixture_path("external_escape")
    version_dir = os.path.dirname(path)
    os.makedirs(version_dir, exist_ok=True)
    outside = os.path.normpath(os.path.join(version_dir, location))
    assert outside == os.path.join(FIXTURES, "outside.bin"), outside
    with open(outside, "wb") as f:
        f.write(EXTERNAL_W.astype("<f4").tobytes())

    model = make(external_graph("external_escape"), doc)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(EXTERNAL_W.nbytes))):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    # onnx.save_model would not touch external tensors here; write the bytes
    # directly so nothing tries to resolve (and reject) the location.
    with open(path, "wb") as f:
        f.write(model.SerializeToString())

    # A naive loader would resolve it:
    reread = onnx.load(path, load_external_data=False).graph.initializer[0]
    loc = {e.key: e.value for e in reread.external_data}["location"]
    assert loc == location
    naive = np.fromfile(os.path.join(version_dir, loc), dtype="<f4").reshape(4, 4)
    assert np.array_equal(naive, EXTERNAL_W)
    # What onnxruntime itself does with it (informational only).
    try:
        xv = np.ones((1, 4), np.float32)
        (got,) = session(path, quiet=True).run(["y"], {"x": xv})
        ort_note = "onnxruntime " + ort.__version__ + " loads it (no containment check)"
        assert np.allclose(got, xv @ EXTERNAL_W)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        key = "External data path escapes model directory"
        first = key if key in msg else msg.strip().splitlines()[0][:160]
        ort_note = (f"onnxruntime {ort.__version__} itself refuses it when the session is "
                    f"created (\"{first}\")")
    record("fixture", path, ["x: tensor(float) [N,4]"], ["y: tensor(float) [N,4]"], doc=doc,
           note=ort_note)
    record("fixture", outside, [], [],
           doc="the bytes external_escape points at (same 64 bytes as external_ok/1/weights.bin)")
    return ort_note


def build_fixtures(digits):
    ensure_dir(FIXTURES)
    Xtr, Xte, ytr, yte = digits["data"]
    fixture_digits_bad(Xtr, Xte, ytr, yte)
    fixture_digits_nan(Xte)
    fixture_digits_faulty(digits)
    fixture_digits_incompatible(digits)
    fixture_two_inputs()
    fixture_identities()
    fixture_external_ok()
    return fixture_external_escape()


# ------------------------------------------------------------------ README

def versions():
    names = ["numpy", "scikit-learn", "scipy", "skl2onnx", "onnx", "onnxruntime", "protobuf"]
    return {n: pkg_version(n) for n in names}


def row_for(path):
    for r in SUMMARY:
        if r["path"] == path:
            return r
    raise KeyError(path)


def sig_md(r):
    ins = "<br>".join(f"`{s}`" for s in r["inputs"])
    outs = "<br>".join(f"`{s}`" for s in r["outputs"])
    return ins, outs


def write_readme(acc, wide_timing, build_seconds, escape_note):
    vers = versions()
    L = []
    L.append("# Bundled models\n")
    L.append("This directory is a Triton-style model repository "
             "(`models/<name>/<version>/model.onnx`) served by switchyard by default. "
             "Every `.onnx` file here and under `tests/fixtures/models/` is generated by "
             "[`build.py`](build.py) from scikit-learn's bundled data sets (nothing is "
             "downloaded). **This file is generated too** — edit `build.py`, not the README.\n")
    L.append("## Rebuilding\n")
    L.append("From the repository root:\n")
    L.append("```sh\npython3 -m venv .venv/models && "
             ".venv/models/bin/pip install -r models/requirements.txt && "
             ".venv/models/bin/python models/build.py\n```\n")
    L.append("`.venv/` is git-ignored. The build is deterministic: fixed seeds "
             "(`random_state=0` everywhere) and BLAS/OpenMP pinned to one thread, so with "
             "the pinned versions in [`requirements.txt`](requirements.txt) a rebuild gives "
             "byte-identical model files (a different CPU or BLAS build may change the last "
             "bits of trained weights). Only the timing figures below change between runs. "
             "`build.py` verifies every file with onnxruntime (used only for verification and "
             f"timing) and takes about {build_seconds:.0f} s on the 2-core dev machine.\n")
    L.append("Pinned versions used for the files in the repository: " +
             ", ".join(f"{k} {v}" for k, v in vers.items()) +
             f"; Python {platform.python_version()}. Converted with `target_opset` "
             "{'': 17, 'ai.onnx.ml': 3}; skl2onnx records the lowest opsets each graph "
             "actually needs (default domain 16 or 17, `ai.onnx.ml` 1), hand-built graphs "
             f"use default-domain opset 17; IR version {IR_VERSION} everywhere.\n")
    L.append("`config.toml` files are written by hand, not by `build.py`.\n")

    L.append("## Data and split\n")
    L.append("`X, y = sklearn.datasets.load_digits(return_X_y=True)` (1797 rows, 64 pixel "
             "values 0–16, 10 classes) or `load_breast_cancer` (569 rows, 30 features, 2 "
             "classes), split with `train_test_split(X, y, test_size=0.25, random_state=0, "
             "stratify=y)`. All accuracies are computed by onnxruntime from the ONNX file on "
             "the held-out split (digits: 450 rows, breast_cancer: 143 rows), against the "
             "true labels.\n")
    L.append("Every classifier here takes **raw** features (digits: pixel values 0–16 exactly "
             "as `load_digits` gives them); the scaler is inside the graph. Outputs are, in "
             "this order, `label` (INT64 `[N]`, the predicted class) and `probabilities` "
             "(FP32 `[N, classes]`, rows sum to 1). No ZipMap. `N` is a symbolic batch "
             "dimension; every classifier (and every fixture) also accepts an empty batch (`N` = 0). "
             "For the MLPs, `build.py` replaces skl2onnx's class-mapping "
             "`ArrayFeatureExtractor(classes, argmax)` with the equivalent "
             "`Gather(classes, argmax, axis=0)`, because onnxruntime's ArrayFeatureExtractor "
             "rejects an empty batch.\n")

    L.append("## Models\n")
    L.append("| model | what | input | outputs | held-out accuracy | size |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    descr = {
        "models/digits/1/model.onnx": "`StandardScaler` → `LogisticRegression` "
                                      "(lbfgs, C=1), digits. ONNX ops: `Scaler`, "
                                      "`LinearClassifier`, `Normalizer` (ai.onnx.ml)",
        "models/digits/2/model.onnx": "`StandardScaler` → `MLPClassifier(128,)` (relu, adam, "
                                      "max_iter=500), digits. Beats v1",
        "models/breast_cancer/1/model.onnx": "`GradientBoostingClassifier(n_estimators=50, "
                                             "max_depth=3)`, breast cancer (no scaler; "
                                             "class 1 = benign). ONNX op: "
                                             "`TreeEnsembleClassifier` (ai.onnx.ml)",
        "models/mlp_wide/1/model.onnx": "`StandardScaler` → `MLPClassifier(1024, 1024, "
                                        "1024)`, 15 epochs, digits: a heavy model for "
                                        "benchmarks (64→1024→1024→1024→10, ≈2.17 M "
                                        "weights, MatMul/Add/Relu/Softmax)",
    }
    for path, d in descr.items():
        r = row_for(path)
        ins, outs = sig_md(r)
        c, t = r["accuracy"]
        L.append(f"| `{path}` | {d} | {ins} | {outs} | {fmt_acc(c, t)} | "
                 f"{r['size']:,} B |")
    L.append("")
    L.append("Sample files (`samples.json`, one per model name) hold held-out rows with their "
             "true labels, in the form "
             "`{\"label_output\": \"label\", \"samples\": [{\"inputs\": {\"input\": "
             "[[v0, …]]}, \"label\": 3}, …]}` (each input a nested `[1, features]` list of "
             "floats):\n")
    L.append("- `models/digits/samples.json`: all 450 held-out digits rows.")
    L.append("- `models/breast_cancer/samples.json`: all 143 held-out breast-cancer rows.")
    L.append("- `models/mlp_wide/samples.json`: the first 20 held-out digits rows.\n")
    L.append("### mlp_wide speed\n")
    L.append("Measured by `build.py` with onnxruntime's Python API, CPU provider, "
             "`intra_op_num_threads=1`, `inter_op_num_threads=1`, best of 5 rounds after "
             "warm-up, on the machine that last ran the build (2-core dev machine, "
             f"{platform.machine()}):\n")
    L.append("| batch | ms per row | ms per batch |")
    L.append("| --- | --- | --- |")
    for b, ms in wide_timing.items():
        L.append(f"| {b} | {ms:.3f} | {ms * b:.3f} |")
    L.append("")
    L.append("These are single-process figures on a shared 2-core machine; across builds they "
             "have ranged about 0.23–0.40 ms/row at batch 1 and 0.07–0.10 ms/row at batch 32, "
             "depending on what else was running. The network's shape "
             "(64→1024→1024→1024→10) is fixed; it is lighter than a 0.5 ms/row target at "
             "batch 1, and batching amortises it further.\n")

    L.append("## Test fixtures (`tests/fixtures/models/`)\n")
    L.append("Not served by default; built by the same `build.py`. Each is "
             "`tests/fixtures/models/<name>/1/model.onnx`. \"digits signature\" means input "
             "`input` FP32 `[N, 64]` → `label` INT64 `[N]`, `probabilities` FP32 `[N, 10]`.\n")
    L.append("| fixture | what |")
    L.append("| --- | --- |")
    fx = [
        ("digits_bad", "digits signature; `LogisticRegression` trained on labels shuffled with "
                       "`np.random.RandomState(0).permutation`. Held-out accuracy "
                       f"{fmt_acc(*row_for('tests/fixtures/models/digits_bad/1/model.onnx')['accuracy'])}."),
        ("digits_nan", "digits signature; hand-built: `probabilities = MatMul(input, ones[64,10]) "
                       "* NaN` (all NaN), `label = ArgMax(probabilities, axis=1)`. Runs without "
                       "error."),
        ("digits_faulty", "digits signature; digits v1's graph behind a guard: "
                          "`Reshape(input, Concat([-1], [64] + Cast(ReduceMax(input) > 100)))`. "
                          "For inputs ≤ 100 the outputs are bit-identical to digits v1 (checked "
                          "on all 450 held-out rows); if any value is > 100 onnxruntime fails "
                          "at run time (Reshape to `[-1, 65]`, or, for batches that are a "
                          "multiple of 65, the following 64-wide `Scaler`). Checked for batch "
                          "1, 2, 32, 65, 130."),
        ("digits_incompatible", "`input` FP32 `[N, 32]` (first 32 pixels only) → `label`, "
                                "`probabilities` `[N, 10]`; `LogisticRegression`. Held-out "
                                "accuracy "
                                f"{fmt_acc(*row_for('tests/fixtures/models/digits_incompatible/1/model.onnx')['accuracy'])}."),
        ("two_inputs", "inputs `a`, `b` FP32 `[N, 4]`; outputs `sum` = a + b, `prod` = a * b, "
                       "FP32 `[N, 4]`, in that order."),
        ("identity_<t>", "for t in " + ", ".join(f"`{t}`" for t, _, _ in IDENTITY_TYPES) +
         ": input `x` of that element type (fp16 = FLOAT16, fp32 = FLOAT, fp64 = DOUBLE, string "
         "= STRING), shape `[N, M]` (both symbolic); output `y` = Identity(x), same type and "
         "shape. Each checked in onnxruntime, including an empty `[0, 3]` tensor."),
        ("external_ok", "input `x` FP32 `[N, 4]` → `y` = MatMul(x, W) FP32 `[N, 4]`; W is a "
                        "4×4 FP32 initializer stored as ONNX external data in "
                        "`external_ok/1/weights.bin` (64 bytes, location `weights.bin`, "
                        "W = (arange(16).reshape(4,4) − 7.5) / 4). Loads in onnxruntime."),
        ("external_escape", "same graph, but W's external-data location is "
                            "`../../outside.bin`, which from the version directory "
                            "`tests/fixtures/models/external_escape/1/` resolves to "
                            "`tests/fixtures/models/outside.bin` — a file `build.py` writes "
                            "(the same 64 bytes), so a naive loader *would* load it; a safe "
                            f"loader must refuse it. For reference: {escape_note}. A test "
                            "that copies the fixture into a temporary repository must copy "
                            "`outside.bin` to that repository's root too, or the path "
                            "dangles."),
    ]
    for name, d in fx:
        L.append(f"| `{name}` | {d} |")
    L.append("")
    L.append("## Files\n")
    L.append("| file | bytes | sha256 (first 16) |")
    L.append("| --- | --- | --- |")
    for r in SUMMARY:
        L.append(f"| `{r['path']}` | {r['size']:,} | `{r['sha256'][:16]}` |")
    for extra in ("models/digits/samples.json", "models/breast_cancer/samples.json",
                  "models/mlp_wide/samples.json"):
        p = os.path.join(ROOT, extra)
        L.append(f"| `{extra}` | {os.path.getsize(p):,} | `{sha256(p)[:16]}` |")
    L.append("")
    with open(os.path.join(MODELS, "README.md"), "w") as f:
        f.write("\n".join(L))


# -------------------------------------------------------------------- main

def main():
    t0 = time.perf_counter()
    np.random.seed(0)
    digits = build_digits()
    bc = build_breast_cancer()
    wide_acc, wide_timing = build_mlp_wide(digits)
    escape_note = build_fixtures(digits)
    elapsed = time.perf_counter() - t0
    write_readme({"digits": digits["acc"], "breast_cancer": bc, "mlp_wide": wide_acc},
                 wide_timing, elapsed, escape_note)

    print(f"switchyard models built in {elapsed:.1f} s "
          f"(python {platform.python_version()}, " +
          ", ".join(f"{k} {v}" for k, v in versions().items()) + ")")
    for r in SUMMARY:
        line = f"  {r['path']:<58} {r['size']:>10,} B"
        if "accuracy" in r:
            line += f"  acc {fmt_acc(*r['accuracy'])}"
        print(line)
        if r["inputs"] or r["outputs"]:
            print(f"      in:  {'; '.join(r['inputs'])}")
            print(f"      out: {'; '.join(r['outputs'])}")
        if "note" in r:
            print(f"      note: {r['note']}")
    print("  mlp_wide ms/row (onnxruntime, 1 thread): " +
          ", ".join(f"batch {b}: {ms:.3f}" for b, ms in wide_timing.items()))
    print(f"  wrote {rel(os.path.join(MODELS, 'README.md'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
