"""plastic: recurrent networks with synaptic plasticity, from numpy and PyTorch.

The exact and fast Rust engine of the ``plastic`` project (Duan et al., ICLR 2023,
"Hebbian and Gradient-based Plasticity Enables Robust Memory and Rapid Learning in
RNNs") in Python:

- :class:`Network`: a network from a configuration (the keys of a run's ``config.toml``)
  and a seed, or loaded from a run; its parameters as named numpy arrays;
  :meth:`Network.forward` (outputs and per-step diagnostics: the plasticity rate eta, the
  decay rate lambda, the inner loss, the norm of the plastic weights),
  :meth:`Network.loss_and_grad` (the episode loss and the exact gradient of every
  parameter and, if asked, of the inputs) and :meth:`Network.vjp` (the gradient of any
  loss you compute from the outputs), in float32 or float64;
- :func:`train`: trains a run into a folder, the same folder as ``plastic train``;
  :func:`load_run` reads one back (configuration, progress table, best parameters);
- :func:`episodes`: a batch of a task's episodes, as a run draws them;
- :mod:`plastic.torch`: the network as a ``torch.nn.Module`` (import it explicitly).

Arrays are checked (numpy arrays of the network's dtype, C-contiguous, of the expected
shape, finite): anything else is a ``ValueError`` saying what was expected. The engine
runs with the GIL released, on ``plastic.threads()`` threads (``RAYON_NUM_THREADS``);
its results do not depend on the number of threads.

Example::

    import numpy as np, plastic
    net = plastic.Network(task="cue-reward", plasticity="gradient", hidden_size=64)
    batch = plastic.episodes(task="cue-reward", batch=8)
    loss, grads, _ = net.loss_and_grad(batch["inputs"], batch["targets"])
"""

from __future__ import annotations

import operator
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _native

__all__ = [
    "Network",
    "Run",
    "train",
    "load_run",
    "episodes",
    "defaults",
    "threads",
]

_DTYPES = {"float32": "float32", "f32": "float32", "float64": "float64", "f64": "float64"}


def _dtype_name(dtype: Any) -> Optional[str]:
    """'float32' or 'float64' for the spellings numpy and this package accept; None stays."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in ("float32", "float64"):
        raise ValueError(f'dtype must be "float32" or "float64", got {dtype!r}')
    return name


def _merge(config: Optional[Mapping[str, Any]], keys: Mapping[str, Any]) -> Dict[str, Any]:
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of configuration keys, got {type(config).__name__}")
    merged = dict(config or {})
    merged.update(keys)
    return merged


def _count(name: str, value: Any) -> int:
    """A whole number >= 0, else a ValueError naming the argument."""
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}") from None
    if v < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {v}")
    return v


def threads() -> int:
    """The number of threads the engine computes on (``RAYON_NUM_THREADS`` before import)."""
    return _native.threads()


class Network:
    """A plastic (or standard) recurrent network and the engine that runs it.

    ``Network(config=None, seed=None, dtype=None, **keys)``: ``config`` (a dict) and
    ``keys`` are configuration keys, the same as in a run's ``config.toml``: ``rnn``
    ("rnn" or "lstm"), ``plasticity`` ("gradient", "hebbian" or "none"), ``input_size``,
    ``hidden_size``, ``output_size``, ``extra_dim``, ``modulation``, ``p_lr``, ``p_wd``,
    ``inner_grad_clip``, ``weight_clip``, ``layernorm``, ``inner_lr_mode``,
    ``random_network``, ``input_layer``. With ``task`` (e.g. ``task="cue-reward"``) the
    task defines the input and output sizes and its defaults fill the missing keys (any
    key of that task's ``config.toml`` is accepted). Unknown keys and bad values are
    ``ValueError``s listing what is valid.

    The parameters are initialised from ``seed`` exactly as ``plastic train`` does
    (default: the configuration's ``seed`` key, else 0). ``dtype`` is "float32" (default,
    or the configuration's ``dtype`` key) or "float64"; every array passed in must have
    it.

    ``Network.load(path)`` loads a trained run (a run folder or its ``best.safetensors``).
    """

    def __init__(
        self,
        config: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
        dtype: Any = None,
        **keys: Any,
    ) -> None:
        merged = _merge(config, keys)
        self._native = _native.NativeNetwork(merged, seed, _dtype_name(dtype))

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], dtype: Any = None) -> "Network":
        """Loads the best parameters of a run.

        ``path`` is a run folder (``config.toml`` and ``best.safetensors``, what
        :func:`train` or ``plastic train --out DIR`` wrote) or a ``best.safetensors`` file
        (its metadata holds the run's configuration). The file's checksum and values are
        verified. ``dtype`` defaults to the run's.
        """
        self = cls.__new__(cls)
        self._native = _native.NativeNetwork.load(os.fspath(path), _dtype_name(dtype))
        return self

    @classmethod
    def _wrap(cls, native: Any) -> "Network":
        self = cls.__new__(cls)
        self._native = native
        return self

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype the network computes in (float32 or float64)."""
        return np.dtype(self._native.dtype)

    @property
    def config(self) -> Dict[str, Any]:
        """The network's configuration: every key, resolved (a new dict)."""
        return self._native.network_config()

    @property
    def run_config(self) -> Optional[Dict[str, Any]]:
        """The run configuration (``config.toml``'s keys) when the network was made from a
        ``task`` or loaded from a run, else None."""
        return self._native.run_config()

    @property
    def input_size(self) -> int:
        """I, the size of one step's input."""
        return int(self.config["input_size"])

    @property
    def output_size(self) -> int:
        """O, the size of one step's prediction."""
        return int(self.config["output_size"])

    def parameter_info(self) -> list:
        """``[(name, shape, trainable)]`` for every parameter, in the engine's order.

        Names are the reference's: ``in.w`` (I, H), ``in.b``, ``rec.w_h`` (H, gH),
        ``rec.b_h``, ``rec.w_i``, ``rec.b_i``, ``out.w`` (H, D), ``out.b``, the plasticity
        coefficients ``*.alpha_*`` (plastic networks), ``out_weight`` (D) and, with
        ``layernorm``, ``layernorm.gamma`` and ``layernorm.beta``. Every ``w`` is (in, out):
        a layer computes ``x @ w + b``.
        """
        return self._native.parameter_info()

    def parameters(self) -> Dict[str, np.ndarray]:
        """Every parameter as a dict of name -> new numpy array (copies)."""
        return self._native.parameters()

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Sets the parameters named in ``values`` (some or all).

        Each value must be a C-contiguous numpy array of the network's dtype and the
        parameter's shape, with finite values; all are checked before any is set. Unknown
        names are a ``ValueError`` listing the valid ones.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a dict of name -> array, got {type(values).__name__}")
        self._native.set_parameters(dict(values))

    def forward(
        self,
        inputs: np.ndarray,
        targets: Optional[np.ndarray] = None,
        test_begin: int = 0,
        loss: str = "mse",
    ) -> Dict[str, Any]:
        """Runs a batch of episodes forward.

        ``inputs`` is (B, T, I); ``targets`` (B, T, O), optional, gives the episode loss
        (the ``loss``, "mse" or "cross_entropy", averaged over the steps from
        ``test_begin``). Returns a dict:

        - ``outputs`` (B, T, O): the predictions;
        - ``plasticity_rate`` (B, T): eta, the modulated plasticity rate before norm
          clipping; ``applied_rate`` (B, T): eta after clipping (the rate applied);
        - ``decay_rate`` (B, T): lambda;
        - ``update_norm`` (B, T): the norm of the raw plastic update;
        - ``plastic_norm`` (B, T): the Frobenius norm of all plastic weights after the step;
        - ``inner_loss`` (T): the network's inner loss at each step (a batch mean);
        - ``loss``: the episode loss (a float), or None without targets.
        """
        return self._native.forward(inputs, targets, _count("test_begin", test_begin), loss)

    def loss_and_grad(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        test_begin: int = 0,
        loss: str = "mse",
        input_grad: bool = False,
    ) -> Tuple[float, Dict[str, np.ndarray], Optional[np.ndarray]]:
        """The episode loss and its exact gradient (backpropagation through time through the
        plastic updates, second-order terms included).

        Returns ``(loss, grads, d_inputs)``: ``grads`` maps every parameter name to d loss /
        d parameter (the parameter's shape); ``d_inputs`` (B, T, I) is d loss / d inputs
        when ``input_grad`` is true, else None.
        """
        return self._native.loss_and_grad(inputs, targets, _count("test_begin", test_begin), loss, bool(input_grad))

    def vjp(
        self, inputs: np.ndarray, d_outputs: np.ndarray, input_grad: bool = True
    ) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
        """The vector-Jacobian product, for any loss you compute from the outputs.

        Given ``d_outputs`` = dL/d outputs, (B, T, O) like ``forward(inputs)["outputs"]``,
        returns ``(grads, d_inputs)``: dL/d every parameter (a dict of arrays) and dL/d
        inputs (B, T, I), or None when ``input_grad`` is false.
        """
        _, grads, d_inputs = self._native.vjp(inputs, d_outputs, bool(input_grad))
        return grads, d_inputs

    def forward_with_tape(self, inputs: np.ndarray) -> Tuple[np.ndarray, Any]:
        """The forward pass, keeping what its backward pass needs: ``(outputs, tape)``.

        ``outputs`` (B, T, O) are those of ``forward(inputs)``. The tape (an opaque object;
        ``tape.bytes`` is its memory) holds the records of this pass for
        :meth:`vjp_with_tape`, which then runs the backward pass only (regenerating the
        plastic weights from the records). It holds every step's records, O(B·T·H), and
        for long episodes checkpoints of the plastic weights; it is freed when deleted.
        Any number of tapes may be outstanding.
        """
        return self._native.forward_with_tape(inputs)

    def vjp_with_tape(
        self, tape: Any, d_outputs: np.ndarray, input_grad: bool = True
    ) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
        """:meth:`vjp` from the tape of :meth:`forward_with_tape`: the backward pass only,
        bit for bit the same result. The network must have the parameters it had when the
        tape was recorded (a ``ValueError`` says otherwise); a tape may be used again."""
        _, grads, d_inputs = self._native.vjp_with_tape(tape, d_outputs, bool(input_grad))
        return grads, d_inputs

    def copy(self) -> "Network":
        """An independent copy (parameters included)."""
        return Network._wrap(self._native.copy())

    def astype(self, dtype: Any) -> "Network":
        """A copy computing in ``dtype`` ("float32" or "float64")."""
        return Network._wrap(self._native.astype(_dtype_name(dtype)))

    def __repr__(self) -> str:
        c = self.config
        return (
            f"plastic.Network(rnn={c['rnn']!r}, plasticity={c['plasticity']!r}, "
            f"input_size={c['input_size']}, hidden_size={c['hidden_size']}, "
            f"output_size={c['output_size']}, dtype={self._native.dtype!r})"
        )


def defaults(task: str, **keys: Any) -> Dict[str, Any]:
    """The full configuration of a run of ``task`` ("cue-reward", "seq-reproduction",
    "regression"): the paper's defaults with ``keys`` applied; every key of its
    ``config.toml``."""
    return _native.resolve_config(_merge(None, dict(keys, task=task)))


def episodes(
    config: Optional[Mapping[str, Any]] = None,
    split: str = "train",
    index: int = 0,
    batch: Optional[int] = None,
    **keys: Any,
) -> Dict[str, Any]:
    """A batch of a task's episodes, drawn exactly as a run draws them.

    ``config``/``keys`` are a run's configuration keys (``task`` needed; ``seed``,
    ``batch_size`` and ``dtype`` are used). ``split`` "train" gives the data of training
    step ``index``, "validation" the ``index``-th validation batch, "test" the ``index``-th
    batch of the fixed test set. Returns ``{"inputs": (B, T, I), "targets": (B, T, O),
    "test_begin": int, "loss": "mse" | "cross_entropy"}``.
    """
    return _native.episodes(_merge(config, keys), split, _count("index", index),
                            None if batch is None else _count("batch", batch))


def _progress_printer(event: Dict[str, Any]) -> None:
    if event["event"] == "log":
        print(
            f"step {event['step']}/{event['total']}: train loss {event['train_loss']:.4f}, "
            f"validation loss {event['val_loss']:.4f} ({event['elapsed_s']:.1f} s)",
            flush=True,
        )
    elif event["event"] == "note":
        print(event["message"], flush=True)


def train(
    task: Optional[str] = None,
    out: Union[str, "os.PathLike[str]", None] = None,
    *,
    config: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Union[None, bool, Callable[[Dict[str, Any]], Any]] = None,
    **keys: Any,
) -> Dict[str, Any]:
    """Trains a run into the folder ``out`` and returns its test summary.

    The run is the library's, so the folder is exactly what ``plastic train --task TASK
    --out OUT --set key=value ...`` writes (``config.toml``, ``progress.tsv``,
    ``best.safetensors``, ``checkpoint.safetensors``, ``test.json``) and
    ``plastic train --resume`` can continue it. ``task`` and ``keys`` (or a ``config`` dict,
    e.g. :attr:`Run.config` of another run) are the run's configuration keys; ``resume=True``
    continues the run in ``out`` instead (no keys then). An existing non-empty folder is
    refused unless ``overwrite``.

    ``progress``: None (silent), True (prints each log row), or a callable receiving dicts:
    ``{"event": "start", "step", "total"}``, ``{"event": "step", "step", "total", "loss"}``
    after every training step, ``{"event": "log", "step", "total", "train_loss",
    "val_loss", "lr", "elapsed_s"}`` at every log, ``{"event": "note", "message"}``. An
    exception raised by the callback (or Ctrl-C) stops the run where a killed run would stop
    (resumable) and propagates.

    Returns ``{"test_loss", "test_batches", "best_step", "best_val_loss", "steps",
    "elapsed_s"}``.
    """
    if out is None:
        raise ValueError("out: the folder to write the run into is required")
    merged = _merge(config, keys)
    if task is not None:
        merged["task"] = task
    callback = _progress_printer if progress is True else (progress or None)
    if callback is not None and not callable(callback):
        raise TypeError("progress must be None, True or a callable")
    return _native.train(merged, os.fspath(out), bool(overwrite), bool(resume), callback)


class Run:
    """A run folder read back by :func:`load_run`.

    Attributes: ``path``; ``config`` (dict of ``config.toml``'s keys); ``progress`` (a
    pandas DataFrame with columns step, train_loss, val_loss, lr, elapsed_s when pandas is
    importable, else a dict of numpy columns); ``summary`` (``test.json`` as a dict, or None
    before the run finished); ``parameters`` (the best parameters, a dict of numpy arrays,
    or None if the run has not saved any yet). :meth:`network` gives a :class:`Network`.
    """

    def __init__(self, path: str, config: Dict[str, Any], progress: Any, summary: Any,
                 parameters: Optional[Dict[str, np.ndarray]]) -> None:
        self.path = path
        self.config = config
        self.progress = progress
        self.summary = summary
        self.parameters = parameters

    def network(self, dtype: Any = None) -> Network:
        """The run's best parameters as a :class:`Network` (dtype: the run's by default)."""
        return Network.load(self.path, dtype)

    def __repr__(self) -> str:
        return f"plastic.Run({self.path!r}, task={self.config.get('task')!r})"


def load_run(path: Union[str, "os.PathLike[str]"]) -> Run:
    """Reads a run folder: its configuration, progress table and best parameters.

    Every file is verified as the CLI verifies it (checksums of ``best.safetensors``,
    ``test.json`` and of the progress rows the checkpoint covers).
    """
    path = os.fspath(path)
    d = _native.read_run(path)
    progress = d["progress"]
    try:
        import pandas  # noqa: F401  (optional)
    except ImportError:
        pass
    else:
        progress = pandas.DataFrame(progress)
    best = os.path.join(path, "best.safetensors")
    parameters = Network.load(path).parameters() if os.path.exists(best) else None
    return Run(path, d["config"], progress, d["summary"], parameters)
