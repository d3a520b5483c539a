"""Bad input from Python: every mistake is a ValueError (or TypeError, MemoryError) that says
what was expected; nothing makes the process panic or abort."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import plastic
from plastic import _native


@pytest.fixture
def net():
    return plastic.Network(rnn="rnn", plasticity="gradient", input_size=3, hidden_size=5,
                           output_size=2, dtype="float64")


def good(b=2, t=4, i=3, o=2, dtype=np.float64):
    return np.zeros((b, t, i), dtype), np.zeros((b, t, o), dtype)


@pytest.mark.parametrize("kwargs,message", [
    ({"hidden_size": 0}, "hidden_size must be at least 1"),
    ({"hidden_size": -3}, "hidden_size"),
    ({"hidden_size": 2.5}, "hidden_size"),
    ({"rnn": "gru"}, "valid: rnn, lstm"),
    ({"plasticity": "oja"}, "valid: none, hebbian, gradient"),
    ({"p_lr": float("nan")}, "p_lr"),
    ({"inner_grad_clip": 0}, "inner_grad_clip"),
    ({"weight_clip": -1}, "weight_clip"),
    ({"modulation": "yes"}, "modulation"),
    ({"hiden_size": 4}, "unknown configuration key `hiden_size`"),
    ({"task": "chess"}, "unknown task `chess`"),
    ({"task": "cue-reward", "delay": 3}, "unknown key `delay`"),
    ({"task": "seq-reproduction", "delay": -1}, "delay"),
    ({"input_layer": False, "input_size": 3, "hidden_size": 5}, "input_size must equal"),
    ({"hidden_size": [4]}, "must be a bool, a number or a string"),
    ({"hidden_size": 2 ** 70}, "does not fit"),
])
def test_bad_configurations(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as e:
        plastic.Network(**kwargs)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("bad", [
    {"seed": -1}, {"seed": 2 ** 64}, {"seed": "zero"}, {"dtype": "float16"}, {"dtype": "int32"},
])
def test_bad_seed_and_dtype(bad):
    with pytest.raises((ValueError, TypeError)):
        plastic.Network(hidden_size=4, **bad)


def test_too_large_is_a_memory_error_not_an_abort():
    with pytest.raises(MemoryError) as e:
        plastic.Network(hidden_size=10 ** 7)
    assert "GiB" in str(e.value)
    with pytest.raises(MemoryError):
        plastic.Network(hidden_size=2 ** 40, input_size=2 ** 40)
    net = plastic.Network(hidden_size=64, input_size=1)
    with pytest.raises(MemoryError):
        net.forward(np.zeros((1, 10 ** 8, 1), np.float32)[:, :, :])
    with pytest.raises(MemoryError):
        plastic.episodes(task="cue-reward", batch=10 ** 13)
    with pytest.raises(MemoryError):
        plastic.episodes(task="seq-reproduction", delay=10 ** 12, batch=2)


def test_array_checks_say_what_was_expected(net):
    x, y = good()
    cases = [
        (lambda: net.forward(x.astype(np.float32)), "dtype float64"),
        (lambda: net.forward(x.tolist()), "must be a numpy.ndarray"),
        (lambda: net.forward(None), "must be a numpy.ndarray"),
        (lambda: net.forward(x[0]), "must have 3 axes (B, T, I)"),
        (lambda: net.forward(np.zeros((2, 4, 5))), "axis 2 must be 3"),
        (lambda: net.forward(np.zeros((0, 4, 3))), "at least one episode"),
        (lambda: net.forward(np.zeros((2, 0, 3))), "at least one episode"),
        (lambda: net.forward(np.zeros((2, 8, 3))[:, ::2]), "C-contiguous"),
        (lambda: net.forward(np.asfortranarray(np.zeros((2, 4, 3)))), "C-contiguous"),
        (lambda: net.forward(np.zeros((2, 4, 3), dtype=">f8")), "dtype float64"),
        (lambda: net.forward(x, y[:1]), "axis 0 must be 2"),
        (lambda: net.forward(x, y[:, :, :1]), "axis 2 must be 2"),
        (lambda: net.forward(x, y, test_begin=4), "test_begin (4) must be below"),
        (lambda: net.forward(x, y, loss="hinge"), "loss must be"),
        (lambda: net.forward(np.full((2, 4, 3), np.nan)), "NaN or infinity"),
        (lambda: net.forward(x, np.full((2, 4, 2), np.inf)), "NaN or infinity"),
        (lambda: net.loss_and_grad(x, y.astype(np.float32)), "dtype float64"),
        (lambda: net.loss_and_grad(x, None), "must be a numpy.ndarray"),
        (lambda: net.vjp(x, y[:, :3]), "axis 1 must be 4"),
        (lambda: net.vjp(x, np.full_like(y, np.nan)), "NaN or infinity"),
        (lambda: net.set_parameters({"rec.w_x": np.zeros((5, 5))}), "unknown parameter"),
        (lambda: net.set_parameters({"rec.w_h": np.zeros((5, 4))}), "rec.w_h"),
        (lambda: net.set_parameters({"rec.w_h": np.zeros((5, 5), np.float32)}), "dtype float64"),
        (lambda: net.set_parameters({"rec.w_h": np.full((5, 5), np.nan)}), "NaN"),
        (lambda: net.set_parameters({"rec.w_h": np.zeros((10, 5))[::2]}), "C-contiguous"),
        (lambda: net.set_parameters({1: np.zeros(3)}), "names must be strings"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert message in str(e.value), (message, str(e.value))
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError) as e:
            net.forward(x, y, test_begin=bad)
        assert "test_begin must be a whole number" in str(e.value)
    with pytest.raises(TypeError):
        net.set_parameters([("rec.w_h", np.zeros((5, 5)))])


def test_a_failed_set_parameters_changes_nothing(net):
    before = net.parameters()
    with pytest.raises(ValueError):
        net.set_parameters({"out.b": np.ones(before["out.b"].shape), "rec.w_h": np.zeros(3)})
    for n, v in net.parameters().items():
        np.testing.assert_array_equal(v, before[n])


def test_runs_and_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        plastic.Network.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        plastic.load_run(tmp_path / "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError):
        plastic.Network.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError):
        plastic.train(out=tmp_path / "r", hidden_size=4)  # no task
    with pytest.raises(ValueError):
        plastic.train(task="cue-reward", out=tmp_path / "r", max_batch="ten")
    with pytest.raises(ValueError):
        plastic.train(task="cue-reward", out=tmp_path / "r", resume=True)
    with pytest.raises(ValueError):
        plastic.episodes(task="cue-reward", split="holdout")


def test_a_panic_becomes_a_runtime_error_and_python_lives_on(net):
    for _ in range(3):
        with pytest.raises(RuntimeError) as e:
            _native._panic_inside_guard_for_tests()
        assert "internal error" in str(e.value)
    x, y = good()
    assert np.isfinite(net.forward(x, y)["loss"])


def test_random_garbage_never_crashes_the_interpreter():
    # in a child interpreter, so that an abort would show as its exit status
    code = textwrap.dedent("""
        import numpy as np, plastic
        rng = np.random.default_rng(0)
        net = plastic.Network(rnn="lstm", plasticity="gradient", input_size=3, hidden_size=4,
                              output_size=2, dtype="float64")
        kinds = [np.float64, np.float32, np.int64, np.bool_, np.complex128, object]
        n_ok = n_err = 0
        for _ in range(1500):
            ndim = int(rng.integers(0, 5))
            shape = tuple(int(s) for s in rng.integers(0, 5, size=ndim))
            dtype = kinds[int(rng.integers(0, len(kinds)))]
            a = np.zeros(shape, dtype=dtype) if dtype is not object else np.empty(shape, dtype)
            if a.ndim and rng.random() < 0.3:
                a = a[..., ::2]
            if rng.random() < 0.3 and a.dtype.kind == "f" and a.size:
                a.flat[0] = [np.nan, np.inf, 1e308][int(rng.integers(0, 3))]
            t = int(rng.integers(-2, 6))
            try:
                which = int(rng.integers(0, 4))
                if which == 0:
                    net.forward(a, a, test_begin=t)
                elif which == 1:
                    net.loss_and_grad(a, a, test_begin=t, input_grad=True)
                elif which == 2:
                    net.vjp(a, a)
                else:
                    net.set_parameters({"rec.w_h": a})
                n_ok += 1
            except (ValueError, TypeError, MemoryError):
                n_err += 1
        print("ok", n_ok, "errors", n_err)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "errors" in r.stdout and "panicked" not in r.stderr, (r.stdout, r.stderr[-2000:])
