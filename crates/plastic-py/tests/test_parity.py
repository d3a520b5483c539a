"""Parity from Python: every reference fixture (numbers recorded from the authors' PyTorch
implementation in float64) through the numpy API, tensor-wise max|ours - ref| / max|ref|
within 1e-9 in float64 and 1e-4 in float32 (docs/algorithm.md; the Rust tests check the
same files through the library directly)."""

import pytest

import plastic
from conftest import FIXTURES, load_fixture, rel_error

FILES = sorted(FIXTURES.glob("*.json"))


def test_the_fixtures_are_there():
    assert len(FILES) >= 14, FILES


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-9), ("float32", 1e-4)])
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fixture(path, dtype, tol):
    config, params, x, y, test_begin, expected = load_fixture(path)
    net = plastic.Network(config, dtype=dtype)
    assert set(net.parameters()) == set(params)
    net.set_parameters({k: v.astype(dtype) for k, v in params.items()})
    x, y = x.astype(dtype), y.astype(dtype)
    f = net.forward(x, y, test_begin=test_begin)
    errors = {k: rel_error(f[k], expected[k])
              for k in ("outputs", "plasticity_rate", "decay_rate", "inner_loss")}
    errors["loss"] = rel_error([f["loss"]], [expected["loss"]])
    loss, grads, _ = net.loss_and_grad(x, y, test_begin=test_begin)
    errors["loss_and_grad.loss"] = rel_error([loss], [expected["loss"]])
    for name, g in expected["grads"].items():
        if abs(g).max() == 0:
            # zero where a parameter does not influence the loss: within 1e-12 absolute
            assert abs(grads[name]).max() <= 1e-12, name
        else:
            errors["grad " + name] = rel_error(grads[name], g)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, (worst, errors[worst], errors)
