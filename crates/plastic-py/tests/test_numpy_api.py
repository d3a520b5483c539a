"""The numpy API: construction, parameters, forward diagnostics, gradients (checked against
finite differences in float64), the vector-Jacobian product, dtypes, determinism and the
released GIL."""

import itertools
import threading
import time

import numpy as np
import pytest

import plastic
from conftest import random_batch

RULES = ["gradient", "hebbian", "none"]
CELLS = ["rnn", "lstm"]


def test_configuration_keys_and_task_defaults(small_config):
    net = plastic.Network(small_config, seed=3, dtype="float64")
    c = net.config
    assert (c["rnn"], c["plasticity"], c["input_size"], c["hidden_size"], c["output_size"]) == (
        "rnn", "gradient", 3, 6, 2)
    assert net.dtype == np.float64 and net.run_config is None
    # a task defines the sizes; keyword keys override the dict's
    cue = plastic.Network({"task": "cue-reward", "hidden_size": 99}, hidden_size=20)
    assert (cue.input_size, cue.output_size, cue.config["hidden_size"]) == (16, 1, 20)
    assert cue.run_config["task"] == "cue-reward" and cue.dtype == np.float32
    seq = plastic.Network(task="seq-reproduction", delay=3, hidden_size=8, dtype="f64")
    assert seq.run_config["delay"] == 3 and seq.dtype == np.float64
    # every key of defaults() is accepted back
    d = plastic.defaults("regression", hidden_size=12)
    assert d["hidden_size"] == 12 and d["task"] == "regression"
    assert plastic.Network(d).config["hidden_size"] == 12


def test_seeded_initialisation_and_parameter_round_trip(small_config):
    a = plastic.Network(small_config, seed=1)
    b = plastic.Network(small_config, seed=1)
    c = plastic.Network(small_config, seed=2)
    pa, pb, pc = a.parameters(), b.parameters(), c.parameters()
    assert list(pa) == [n for n, _, _ in a.parameter_info()]
    for n in pa:
        np.testing.assert_array_equal(pa[n], pb[n])
        assert pa[n].dtype == np.float32
    assert any(not np.array_equal(pa[n], pc[n]) for n in pa)
    # returned arrays are copies; set_parameters copies in
    pa["rec.w_h"][:] = 0
    assert not np.all(a.parameters()["rec.w_h"] == 0)
    a.set_parameters(pc)
    for n, v in a.parameters().items():
        np.testing.assert_array_equal(v, pc[n])
    # a subset can be set
    w = np.full_like(pc["out.b"], 0.25)
    a.set_parameters({"out.b": w})
    np.testing.assert_array_equal(a.parameters()["out.b"], w)
    np.testing.assert_array_equal(a.parameters()["out.w"], pc["out.w"])


@pytest.mark.parametrize("rnn,rule", list(itertools.product(CELLS, RULES)))
def test_forward_outputs_and_diagnostics(rnn, rule):
    rng = np.random.default_rng(0)
    net = plastic.Network(rnn=rnn, plasticity=rule, input_size=3, hidden_size=5, output_size=2,
                          dtype="float64", seed=4)
    x, y = random_batch(rng, 3, 6, 3, 2)
    f = net.forward(x, y, test_begin=2)
    assert f["outputs"].shape == (3, 6, 2)
    for k in ("plasticity_rate", "applied_rate", "decay_rate", "update_norm", "plastic_norm"):
        assert f[k].shape == (3, 6) and f[k].dtype == np.float64 and np.isfinite(f[k]).all()
    assert f["inner_loss"].shape == (6,)
    if rule == "none":
        assert np.all(f["plastic_norm"] == 0)
    else:
        assert np.all(f["plastic_norm"] > 0)
        # the applied rate is the clipped one: never larger in magnitude
        assert np.all(np.abs(f["applied_rate"]) <= np.abs(f["plasticity_rate"]) + 1e-15)
    # the loss is the MSE over the steps from test_begin
    mse = np.mean((f["outputs"][:, 2:] - y[:, 2:]) ** 2)
    assert abs(f["loss"] - mse) <= 1e-12 * mse
    assert net.forward(x)["loss"] is None
    np.testing.assert_array_equal(net.forward(x)["outputs"], f["outputs"])
    loss, grads, dx = net.loss_and_grad(x, y, test_begin=2)
    # the same loss (summed in another order)
    assert abs(loss - f["loss"]) <= 1e-14 * f["loss"] and dx is None
    assert set(grads) == set(net.parameters())
    for n, g in grads.items():
        assert g.shape == net.parameters()[n].shape


def _perturbed_loss(net, name, index, h, x, y, test_begin, loss):
    params = net.parameters()
    value = params[name].copy()
    value[index] += h
    net.set_parameters({name: value})
    out = net.forward(x, y, test_begin=test_begin, loss=loss)["loss"]
    net.set_parameters({name: params[name]})
    return out


@pytest.mark.parametrize("rnn,rule", list(itertools.product(CELLS, RULES)))
def test_gradient_matches_finite_differences_f64(rnn, rule):
    rng = np.random.default_rng(1)
    net = plastic.Network(rnn=rnn, plasticity=rule, input_size=3, hidden_size=4, output_size=2,
                          dtype="float64", seed=7)
    x, y = random_batch(rng, 2, 5, 3, 2)
    x *= 0.5
    loss, grads, dx = net.loss_and_grad(x, y, test_begin=1, input_grad=True)
    h = 1e-6
    checked = 0
    for name, g in grads.items():
        flat = list(np.ndindex(g.shape))
        for index in [flat[k] for k in rng.choice(len(flat), size=min(3, len(flat)), replace=False)]:
            num = (_perturbed_loss(net, name, index, h, x, y, 1, "mse")
                   - _perturbed_loss(net, name, index, -h, x, y, 1, "mse")) / (2 * h)
            assert abs(num - g[index]) <= 1e-6 * max(1.0, abs(num)), (name, index, num, g[index])
            checked += 1
    for index in [(0, 0, 0), (1, 4, 2), (0, 2, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        num = (net.forward(xp, y, 1)["loss"] - net.forward(xm, y, 1)["loss"]) / (2 * h)
        assert abs(num - dx[index]) <= 1e-6 * max(1.0, abs(num)), (index, num, dx[index])
    assert checked >= 10


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    net = plastic.Network(plasticity="gradient", input_size=3, hidden_size=5, output_size=4,
                          dtype="float64")
    x = rng.standard_normal((2, 4, 3))
    y = np.eye(4)[rng.integers(0, 4, size=(2, 4))]
    loss, grads, _ = net.loss_and_grad(x, y, test_begin=2, loss="cross_entropy")
    logits = net.forward(x)["outputs"][:, 2:]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert abs(loss - (-(y[:, 2:] * logp).sum(-1).mean())) < 1e-12
    h = 1e-6
    for index in [(0, 0), (2, 3), (4, 1)]:
        num = (_perturbed_loss(net, "out.w", index, h, x, y, 2, "cross_entropy")
               - _perturbed_loss(net, "out.w", index, -h, x, y, 2, "cross_entropy")) / (2 * h)
        assert abs(num - grads["out.w"][index]) <= 1e-6 * max(1.0, abs(num))


@pytest.mark.parametrize("rnn,rule", list(itertools.product(CELLS, RULES)))
def test_vjp_is_the_gradient_of_any_loss(rnn, rule):
    rng = np.random.default_rng(3)
    net = plastic.Network(rnn=rnn, plasticity=rule, input_size=3, hidden_size=5, output_size=2,
                          dtype="float64", seed=2)
    x, y = random_batch(rng, 3, 5, 3, 2)
    # seeded with the MSE's output gradient, the VJP is loss_and_grad's gradient
    out = net.forward(x)["outputs"]
    d_out = np.zeros_like(out)
    d_out[:, 1:] = 2 * (out[:, 1:] - y[:, 1:]) / out[:, 1:].size
    loss, grads, dx = net.loss_and_grad(x, y, test_begin=1, input_grad=True)
    vgrads, vdx = net.vjp(x, d_out)
    for n in grads:
        scale = max(np.max(np.abs(grads[n])), 1e-300)
        assert np.max(np.abs(vgrads[n] - grads[n])) <= 1e-12 * scale, n
    np.testing.assert_allclose(vdx, dx, rtol=0, atol=1e-12 * np.max(np.abs(dx)))
    # a loss of our own: sum(w * outputs^3); its VJP against finite differences of x
    w = rng.standard_normal(out.shape)
    vgrads, vdx = net.vjp(x, 3 * w * out ** 2)
    assert net.vjp(x, 3 * w * out ** 2, input_grad=False)[1] is None
    h = 1e-6
    for index in [(0, 0, 1), (2, 4, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        num = (np.sum(w * net.forward(xp)["outputs"] ** 3)
               - np.sum(w * net.forward(xm)["outputs"] ** 3)) / (2 * h)
        assert abs(num - vdx[index]) <= 1e-6 * max(1.0, abs(num))


def test_float32_agrees_with_float64(small_config):
    rng = np.random.default_rng(4)
    n64 = plastic.Network(small_config, seed=5, dtype="float64")
    n32 = n64.astype("float32")
    assert n32.dtype == np.float32
    x, y = random_batch(rng, 4, 7, 3, 2)
    l64, g64, _ = n64.loss_and_grad(x, y)
    l32, g32, _ = n32.loss_and_grad(x.astype(np.float32), y.astype(np.float32))
    assert abs(l32 - l64) <= 1e-4 * abs(l64)
    for n in g64:
        assert g32[n].dtype == np.float32
        assert np.max(np.abs(g32[n] - g64[n])) <= 1e-3 * max(np.max(np.abs(g64[n])), 1e-6), n


def test_results_are_deterministic_and_copies_are_independent(small_config):
    rng = np.random.default_rng(5)
    net = plastic.Network(small_config, seed=6)
    x, y = random_batch(rng, 17, 9, 3, 2, np.float32)
    a = net.loss_and_grad(x, y, input_grad=True)
    b = net.loss_and_grad(x, y, input_grad=True)
    assert a[0] == b[0]
    for n in a[1]:
        np.testing.assert_array_equal(a[1][n], b[1][n])
    np.testing.assert_array_equal(a[2], b[2])
    c = net.copy()
    c.set_parameters({"out.b": np.ones(c.parameters()["out.b"].shape, np.float32)})
    assert net.loss_and_grad(x, y)[0] == a[0]


def test_the_gil_is_released_while_the_engine_computes():
    net = plastic.Network(task="cue-reward", hidden_size=128, plasticity="gradient")
    batch = plastic.episodes(task="cue-reward", batch=64)
    done = threading.Event()
    elapsed = []

    def work():
        t0 = time.perf_counter()
        for _ in range(3):
            net.loss_and_grad(batch["inputs"], batch["targets"])
        elapsed.append(time.perf_counter() - t0)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    # the main thread kept running Python while the engine ran (three calls of tens of ms
    # each): a held GIL would have let it run only between the calls, a few ticks at most
    assert elapsed[0] > 0.03 and ticks >= 10, (ticks, elapsed)


def test_episodes_are_the_runs_batches():
    a = plastic.episodes(task="cue-reward", seed=3, split="train", index=5, batch=4)
    b = plastic.episodes(task="cue-reward", seed=3, split="train", index=5, batch=4)
    c = plastic.episodes(task="cue-reward", seed=3, split="train", index=6, batch=4)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    assert a["inputs"].shape == (4, 20, 16) and a["targets"].shape == (4, 20, 1)
    assert a["loss"] == "mse" and a["test_begin"] == 0
    s = plastic.episodes(task="seq-reproduction", seq_length=3, delay=2, batch=2, dtype="f64")
    assert s["inputs"].dtype == np.float64 and s["test_begin"] == 5
