"""Times a training step of cue-reward, RNN, gradient rule, hidden 128, batch 64, float32
through plastic.torch: the same step as `plastic bench --only cue-rnn-gradient-h128`
(draw the batch of step s, loss and gradient, clip the gradient norm at 5, AdamW with
amsgrad), after 2 warm-up steps, median over the timed steps.

    python crates/plastic-py/benches/torch_step.py [--steps 10] [--rounds 3]
        [--cli target/release/plastic]

Prints the median ms/step of the routes: `fused` (PlasticRNN.loss: loss and gradients in
one engine pass), `module` (the general route: `out = module(x)`, a torch MSE,
`loss.backward()`: the engine's forward pass keeps its records in a tape, the backward pass
is the engine's vector-Jacobian product from it) and `module-rerun` (the same with the
backward pass running the engine's forward pass again, as plastic.torch did before the
tape: for comparison). With `--cli`, each round also runs the same step in `plastic
bench`'s own process (its hidden `--child` mode), so that all are measured in the same
window of a machine whose speed drifts; the routes alternate within each round. The load
average is printed before and after, and the CPU time per step of the in-process routes.
Torch runs on `--torch-threads` threads (default 1: it only does the optimiser here, and
its OpenMP threads spinning between operations take the cores from the engine's threads).
"""

import argparse
import os
import resource
import statistics
import subprocess
import time

import torch
from torch.autograd.function import once_differentiable

import plastic
import plastic.torch


class _RerunForward(torch.autograd.Function):
    """The general route without a tape: backward runs the engine's forward pass again."""

    @staticmethod
    def forward(ctx, net, names, inputs, *params):
        plastic.torch._load_parameters(net, names, params)
        outputs = net._native.forward(inputs.numpy())["outputs"]
        ctx.net, ctx.names = net, names
        ctx.save_for_backward(inputs, *params)
        return torch.from_numpy(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs):
        inputs, *params = ctx.saved_tensors
        plastic.torch._load_parameters(ctx.net, ctx.names, tuple(params))
        _, grads, _ = ctx.net._native.vjp(inputs.numpy(), d_outputs.contiguous().numpy(), False)
        return (None, None, None, *[torch.from_numpy(grads[n]) for n in ctx.names])


def run(route: str, steps: int, cpu: list) -> list:
    config = dict(task="cue-reward", rnn="rnn", plasticity="gradient", hidden_size=128, seed=0)
    rnn = plastic.torch.PlasticRNN(config)
    params = [p for p in rnn.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, amsgrad=True)
    times = []
    for step in range(steps + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = plastic.episodes(config, split="train", index=step, batch=64)
        x = torch.from_numpy(batch["inputs"])
        y = torch.from_numpy(batch["targets"])
        if route == "fused":
            loss = rnn.loss(x, y, test_begin=batch["test_begin"])
        elif route == "module-rerun":
            out = _RerunForward.apply(rnn._network(torch.float32), rnn._names, x,
                                      *rnn._engine_parameters())
            loss = (out[:, batch["test_begin"]:] - y[:, batch["test_begin"]:]).square().mean()
        elif route == "module":
            out = rnn(x)
            loss = (out[:, batch["test_begin"]:] - y[:, batch["test_begin"]:]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if step >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return times


def run_cli(cli: str, steps: int) -> list:
    out = subprocess.run(
        [cli, "bench", "--child", "--task", "cue-reward", "--set", "rnn=rnn",
         "--set", "plasticity=gradient", "--set", "hidden_size=128", "--steps", str(steps)],
        check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("times_ms="))
    return [float(v) for v in line.split("=", 1)[1].split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--routes", default="fused,module,module-rerun")
    ap.add_argument("--cli", help="the plastic binary, to time `plastic bench`'s step too")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    for route in args.routes.split(","):
        if route not in ("fused", "module", "module-rerun"):
            ap.error(f"unknown route {route!r}: fused, module or module-rerun")
    print(f"engine threads {plastic.threads()}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    routes = (["plastic bench"] if args.cli else []) + args.routes.split(",")
    times = {r: [] for r in routes}
    cpu = {r: [] for r in routes}
    for k in range(args.rounds):
        for route in routes:
            if route == "plastic bench":
                t = run_cli(args.cli, args.steps)
            else:
                t = run(route, args.steps, cpu[route])
            times[route] += t
            print(f"round {k + 1}: {route} {statistics.median(t):.1f} ms/step "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    base = statistics.median(times["plastic bench"]) if args.cli else None
    for route, t in times.items():
        m = statistics.median(t)
        rel = f", {100 * (m / base - 1):+.1f}% vs plastic bench" if base else ""
        c = f", CPU {statistics.median(cpu[route]):.1f} ms/step" if cpu[route] else ""
        print(f"{route}: median {m:.1f} ms/step (min {min(t):.1f}, max {max(t):.1f}, "
              f"{len(t)} steps{c}{rel})", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end; peak memory of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
