"""Shared helpers of the Python tests (run with pytest from anywhere)."""

import json
import os
import pathlib

import numpy as np
import pytest

try:
    import torch
except ImportError:  # the torch tests skip themselves
    torch = None
else:
    # The tests' tensors are tiny: torch's OpenMP threads would only spin against the
    # engine's threads (on a busy 2-core machine a step took 100x longer with 2 of them).
    torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "plastic" / "tests" / "fixtures" / "reference"

# the keys of a network configuration that the fixtures record
NETWORK_KEYS = ["rnn", "plasticity", "input_size", "hidden_size", "output_size", "extra_dim",
                "modulation", "p_lr", "p_wd", "inner_grad_clip", "weight_clip", "layernorm",
                "inner_lr_mode"]


def rel_error(ours, expected) -> float:
    """max|ours - expected| / max|expected| (absolute when expected is all zeros): the
    fixtures' tensor-wise error."""
    ours = np.asarray(ours, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    diff = np.max(np.abs(ours - expected)) if ours.size else 0.0
    if np.isnan(ours).any():
        return float("inf")
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def load_fixture(path):
    """A reference fixture: (network config dict, params, inputs, targets, test_begin,
    expected dict) with arrays as float64 numpy arrays."""
    d = json.loads(pathlib.Path(path).read_text())

    def arr(t):
        return np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])

    config = {k: d["config"][k] for k in NETWORK_KEYS}
    config["rnn"] = config["rnn"].lower()
    params = {k: arr(v) for k, v in d["params"].items()}
    expected = {k: (arr(v) if k not in ("loss", "grads") else v)
                for k, v in d["expected"].items()}
    expected["grads"] = {k: arr(v) for k, v in d["expected"]["grads"].items()}
    return config, params, arr(d["input"]), arr(d["target"]), d["test_begin"], expected


@pytest.fixture
def small_config():
    return dict(rnn="rnn", plasticity="gradient", input_size=3, hidden_size=6, output_size=2)


def random_batch(rng, b, t, i, o, dtype=np.float64):
    return (rng.standard_normal((b, t, i)).astype(dtype),
            rng.standard_normal((b, t, o)).astype(dtype))


def cli_binary():
    """The `plastic` CLI built in this checkout (the test command builds it), or None."""
    explicit = os.environ.get("PLASTIC_CLI")
    if explicit:
        return explicit
    candidate = REPO / "target" / "release" / "plastic"
    return str(candidate) if candidate.exists() else None
