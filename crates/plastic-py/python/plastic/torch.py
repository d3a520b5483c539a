"""plastic.torch: the plastic RNN as a ``torch.nn.Module``.

:class:`PlasticRNN` holds the network's parameters as torch parameters under the engine's
names (``in.w``, ``rec.w_h``, ``rec.alpha_w_h``, ``out_weight``, ...: ``named_parameters()``
gives exactly those), and its forward pass goes through a ``torch.autograd.Function``
backed by the Rust engine: forward is the engine's forward pass, which keeps its records
(a tape, freed with the autograd graph), and backward the engine's exact
vector-Jacobian product from them (backpropagation through time through the plastic
updates), so the forward pass runs once.
So it composes with any torch model in front (a CNN) and any loss behind, and the
gradient reaches both its own parameters and its inputs.

The engine computes on the CPU in float32 or float64 (the parameters' dtype: call
``.double()`` for float64). Tensors on another device are copied to the CPU for the
engine, and the outputs and gradients are returned on the device they came from.

:meth:`PlasticRNN.loss` is the fused path for the engine's own losses (MSE, cross-entropy):
one pass computes the loss and every gradient. It is faster than ``forward`` and a torch
loss: each episode's plastic weights stay in the cache from its forward to its backward,
where the tape's backward regenerates them from the records (one update per step). The
tape holds every step's records (and, for long episodes, checkpoints of the plastic
weights) until the graph is freed: ``del`` a step's outputs and loss to free it early.

Example::

    import torch, plastic.torch
    rnn = plastic.torch.PlasticRNN(input_size=8, hidden_size=32, output_size=2)
    x = torch.randn(4, 10, 8)                    # (B, T, I)
    y = rnn(x)                                   # (B, T, O)
    y.square().mean().backward()                 # any loss
    rnn.get_parameter("rec.w_h").grad.shape      # torch.Size([32, 32])
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import Network, _dtype_name, _merge

__all__ = ["PlasticRNN"]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """The tensor's values as a C-contiguous numpy array on the CPU (a view when possible)."""
    return t.detach().to("cpu").contiguous().numpy()


def _from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A tensor holding ``a`` on the device of ``like``."""
    return torch.from_numpy(a).to(like.device)


def _load_parameters(net: Network, names: List[str], params: Tuple[torch.Tensor, ...]) -> None:
    net.set_parameters({n: _to_numpy(p) for n, p in zip(names, params)})


class _EngineForward(torch.autograd.Function):
    """outputs = network(inputs); backward through the engine's vector-Jacobian product from
    the records the forward pass kept (a tape in ``ctx``, freed with the graph)."""

    @staticmethod
    def forward(ctx: Any, net: Network, names: List[str], inputs: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        _load_parameters(net, names, params)
        outputs, tape = net._native.forward_with_tape(_to_numpy(inputs))
        ctx.net, ctx.names, ctx.tape = net, names, tape
        # saved so that torch detects a parameter changed in place before backward (and
        # refuses a second backward without retain_graph=True)
        ctx.save_for_backward(inputs, *params)
        return _from_numpy(outputs, inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_outputs: torch.Tensor):
        inputs, *params = ctx.saved_tensors
        net: Network = ctx.net
        # the network may have run other forward passes since: the tape needs its parameters
        _load_parameters(net, ctx.names, tuple(params))
        want_input = bool(ctx.needs_input_grad[2])
        _, grads, d_inputs = net._native.vjp_with_tape(ctx.tape, _to_numpy(d_outputs), want_input)
        d_in = _from_numpy(d_inputs, inputs) if want_input else None
        d_params = [
            _from_numpy(grads[n], p) if ctx.needs_input_grad[3 + k] else None
            for k, (n, p) in enumerate(zip(ctx.names, params))
        ]
        return (None, None, d_in, *d_params)


class _EngineLoss(torch.autograd.Function):
    """loss = the engine's episode loss; loss and gradients in one pass, in forward."""

    @staticmethod
    def forward(ctx: Any, net: Network, names: List[str], kind: str, test_begin: int,
                inputs: torch.Tensor, targets: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        if ctx.needs_input_grad[5]:
            raise ValueError("the gradient with respect to the targets is not available; "
                             "detach them, or use forward() and a torch loss")
        _load_parameters(net, names, params)
        want_input = bool(ctx.needs_input_grad[4])
        loss, grads, d_inputs = net.loss_and_grad(
            _to_numpy(inputs), _to_numpy(targets), test_begin=test_begin, loss=kind,
            input_grad=want_input)
        ctx.d_inputs = _from_numpy(d_inputs, inputs) if want_input else None
        ctx.d_params = [
            _from_numpy(grads[n], p) if ctx.needs_input_grad[6 + k] else None
            for k, (n, p) in enumerate(zip(names, params))
        ]
        return torch.tensor(loss, dtype=inputs.dtype, device=inputs.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_loss: torch.Tensor):
        d_in = ctx.d_inputs * d_loss if ctx.d_inputs is not None else None
        d_params = [g * d_loss if g is not None else None for g in ctx.d_params]
        return (None, None, None, None, d_in, None, *d_params)


class PlasticRNN(torch.nn.Module):
    """A plastic (or standard) recurrent network as a torch module, computed by the engine.

    ``PlasticRNN(config=None, seed=None, dtype=torch.float32, **keys)`` takes the same
    configuration keys as :class:`plastic.Network` (``rnn``, ``plasticity``,
    ``input_size``, ``hidden_size``, ``output_size``, ... or ``task``), and initialises the
    parameters from ``seed`` as the engine does. ``PlasticRNN.from_network(net)`` wraps
    an existing :class:`plastic.Network` (e.g. ``plastic.Network.load(run_dir)``).

    ``forward(inputs)`` maps (B, T, I) to the predictions (B, T, O), differentiable with
    respect to the inputs and every parameter. Parameters of a ``random_network`` that stay
    fixed have ``requires_grad=False``.
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, **keys: Any) -> None:
        super().__init__()
        name = _torch_dtype_name(dtype)
        self._setup(Network(_merge(config, keys), seed=seed, dtype=name))

    @classmethod
    def from_network(cls, net: Network) -> "PlasticRNN":
        """A module with the configuration and parameters of ``net`` (copied)."""
        self = cls.__new__(cls)
        torch.nn.Module.__init__(self)
        self._setup(net.copy())
        return self

    def _setup(self, net: Network) -> None:
        self._nets: Dict[str, Network] = {net.dtype.name: net}
        self._names: List[str] = []
        values = net.parameters()
        dtype = torch.float64 if net.dtype == np.float64 else torch.float32
        for name, _shape, trainable in net.parameter_info():
            owner = self._owner(name)
            leaf = name.rsplit(".", 1)[-1]
            param = torch.nn.Parameter(torch.from_numpy(values[name]).to(dtype),
                                       requires_grad=bool(trainable))
            owner.register_parameter(leaf, param)
            self._names.append(name)

    def _owner(self, name: str) -> torch.nn.Module:
        """The submodule that holds parameter ``name`` (``rec`` for ``rec.w_h``...)."""
        owner: torch.nn.Module = self
        for part in name.split(".")[:-1]:
            if part not in owner._modules:
                owner.add_module(part, torch.nn.Module())
            owner = owner._modules[part]
        return owner

    def _engine_parameters(self) -> Tuple[torch.Tensor, ...]:
        return tuple(self.get_parameter(n) for n in self._names)

    def _network(self, dtype: torch.dtype) -> Network:
        """The engine network for the parameters' dtype (made once per dtype)."""
        name = _torch_dtype_name(dtype)
        if name not in self._nets:
            self._nets[name] = next(iter(self._nets.values())).astype(name)
        return self._nets[name]

    def _check(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        params = self._engine_parameters()
        dtype = params[0].dtype
        if any(p.dtype != dtype for p in params):
            raise ValueError("all parameters of a PlasticRNN must have the same dtype")
        if not isinstance(inputs, torch.Tensor):
            raise ValueError(f"inputs must be a torch.Tensor (B, T, I), got {type(inputs).__name__}")
        if inputs.dtype != dtype:
            raise ValueError(f"inputs have dtype {inputs.dtype}, the module's parameters "
                             f"{dtype}; convert one of them (e.g. inputs.to({dtype}))")
        return params

    @property
    def config(self) -> Dict[str, Any]:
        """The network's configuration (every key)."""
        return next(iter(self._nets.values())).config

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predictions (B, T, O) for inputs (B, T, I); differentiable (engine VJP)."""
        params = self._check(inputs)
        net = self._network(params[0].dtype)
        if torch.is_grad_enabled() and (inputs.requires_grad or any(p.requires_grad for p in params)):
            return _EngineForward.apply(net, self._names, inputs, *params)
        # nothing to differentiate: the plain forward pass, without a tape
        _load_parameters(net, self._names, params)
        return _from_numpy(net.forward(_to_numpy(inputs))["outputs"], inputs)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, test_begin: int = 0,
             kind: str = "mse") -> torch.Tensor:
        """The engine's episode loss (``kind`` "mse" or "cross_entropy", averaged over the
        steps from ``test_begin``), with its gradient computed in the same pass: faster than
        ``forward`` and a torch loss when the loss is one of these."""
        params = self._check(inputs)
        if not isinstance(targets, torch.Tensor) or targets.dtype != inputs.dtype:
            raise ValueError("targets must be a torch.Tensor (B, T, O) of the inputs' dtype")
        net = self._network(params[0].dtype)
        return _EngineLoss.apply(net, self._names, kind, int(test_begin), inputs, targets,
                                 *params)

    @torch.no_grad()
    def diagnostics(self, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None,
                    test_begin: int = 0, kind: str = "mse") -> Dict[str, Any]:
        """:meth:`plastic.Network.forward`'s dict (outputs and per-step eta, lambda, inner
        loss, norm of the plastic weights) as numpy arrays, for the current parameters."""
        params = self._check(inputs)
        net = self._network(params[0].dtype)
        _load_parameters(net, self._names, params)
        y = None if targets is None else _to_numpy(targets)
        return net.forward(_to_numpy(inputs), y, test_begin=test_begin, loss=kind)

    def to_network(self) -> Network:
        """The current parameters as a :class:`plastic.Network` (a copy)."""
        params = self._engine_parameters()
        net = self._network(params[0].dtype).copy()
        _load_parameters(net, self._names, params)
        return net

    def extra_repr(self) -> str:
        c = self.config
        return (f"rnn={c['rnn']!r}, plasticity={c['plasticity']!r}, input_size={c['input_size']}, "
                f"hidden_size={c['hidden_size']}, output_size={c['output_size']}")


def _torch_dtype_name(dtype: Any) -> str:
    if dtype in (torch.float32, torch.float64):
        return "float32" if dtype == torch.float32 else "float64"
    name = _dtype_name(dtype)
    assert name is not None
    return name
