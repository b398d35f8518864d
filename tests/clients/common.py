"""Shared helpers for the stock-client scripts that tests/clients.rs runs."""

import json
import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def digits_samples():
    """The held-out digits rows of models/digits/samples.json: (X float32 [n, 64], labels int64 [n])."""
    with open(os.path.join(ROOT, "models", "digits", "samples.json")) as f:
        samples = json.load(f)["samples"]
    x = np.array([s["inputs"]["input"][0] for s in samples], dtype=np.float32)
    y = np.array([s["label"] for s in samples], dtype=np.int64)
    return x, y


def check(cond, what):
    """Fails the script with a message naming what did not hold."""
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")
