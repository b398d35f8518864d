"""The server most teams write by hand: FastAPI + onnxruntime, V2-compatible.

One ORT session per model (CPU, threads as switchyard's config.toml: peer_ort.py),
pydantic request models, a plain `def` handler (FastAPI runs it in its thread
pool; ORT releases the GIL while it runs). Serves exactly the files
switchyard serves: digits version 2 (the MLP) and mlp_wide version 1.

    uvicorn --app-dir benches/peers fastapi_server:app --host 127.0.0.1 --port 8000 [--workers 2] [--loop asyncio]
    python benches/peers/fastapi_server.py --port 8000 --workers 2 --loop asyncio --nodelay

The second form binds the listening socket itself with proto=IPPROTO_TCP.
Why: with --workers > 1 uvicorn binds the socket itself with proto=0, and
asyncio's event loop only sets TCP_NODELAY on accepted sockets whose proto is
IPPROTO_TCP, so on `--loop asyncio` (the default without uvloop) every small
answer waits for the client's delayed ACK (~40 ms per keep-alive request).
uvloop (uvicorn[standard]'s default loop) sets TCP_NODELAY itself.

Env: MODEL_REPOSITORY (default: models/ next to benches/).
"""

import os
import socket
import sys
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from peer_ort import open_session

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = Path(os.environ.get("MODEL_REPOSITORY", ROOT / "models"))
MODELS = {"digits": "2", "mlp_wide": "1"}

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
V2_NAMES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
            np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}


# Not in the launcher process (`python fastapi_server.py`): uvicorn imports
# this module again by name in the process that serves.
SESSIONS = {} if __name__ == "__main__" else {
    m: open_session(REPOSITORY, m, v) for m, v in MODELS.items()
}


class InputTensor(BaseModel):
    name: str
    shape: List[int]
    datatype: str
    data: List[Any]


class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: List[InputTensor]


app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


def run(model: str, request: InferRequest):
    session = SESSIONS.get(model)
    if session is None:
        raise HTTPException(404, f"unknown model '{model}'")
    feeds = {}
    for t in request.inputs:
        dtype = DTYPES.get(t.datatype)
        if dtype is None:
            raise HTTPException(400, f"unsupported datatype {t.datatype}")
        feeds[t.name] = np.asarray(t.data, dtype=dtype).reshape(t.shape)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        {"name": n, "datatype": V2_NAMES.get(r.dtype, str(r.dtype)), "shape": list(r.shape),
         "data": r.flatten().tolist()}
        for n, r in zip(names, results)
    ]
    answer = {"model_name": model, "model_version": MODELS[model], "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    return answer


@app.post("/v2/models/{model}/infer")
def infer(model: str, request: InferRequest):
    return run(model, request)


@app.post("/v2/models/{model}/versions/{version}/infer")
def infer_versioned(model: str, version: str, request: InferRequest):
    if MODELS.get(model) != version:
        raise HTTPException(404, f"unknown version {version} of '{model}'")
    return run(model, request)


def main() -> None:
    """uvicorn with a listening socket bound here (proto=IPPROTO_TCP)."""
    import argparse

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", default="auto", help="uvicorn's --loop: auto, asyncio, uvloop")
    parser.add_argument("--nodelay", action="store_true",
                        help="bind with proto=IPPROTO_TCP so accepted sockets get TCP_NODELAY")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP if args.nodelay else 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.set_inheritable(True)
    config = uvicorn.Config("fastapi_server:app", host=args.host, port=args.port,
                            workers=args.workers, loop=args.loop, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if args.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
