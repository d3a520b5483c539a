"""Times a training step of cue-reward, RNN, gradient rule, hidden 128, batch 64, float32
through plastic.torch: the same step as `plastic bench --only cue-rnn-gradient-h128`
(draw the batch of step s, loss and gradient, clip the gradient norm at 5, AdamW with
amsgrad), after 2 warm-up steps, median over the timed steps.

    python crates/plastic-py/benches/torch_step.py [--steps 10] [--rounds 3]
        [--cli target/release/plastic]

Prints the median ms/step of two routes: `fused` (PlasticRNN.loss: loss and gradients in
one engine pass) and `forward+vjp` (PlasticRNN.forward, a torch MSE, backward through the
engine's vector-Jacobian product, which runs the forward pass once more). With `--cli`,
each round also runs the same step in `plastic bench`'s own process (its hidden `--child`
mode), so that both are measured in the same window of a machine whose speed drifts.
Torch runs on `--torch-threads` threads (default 1: it only does the optimiser here, and
its OpenMP threads spinning between operations take the cores from the engine's threads).
"""

import argparse
import statistics
import subprocess
import time

import torch

import plastic
import plastic.torch


def run(route: str, steps: int) -> list:
    config = dict(task="cue-reward", rnn="rnn", plasticity="gradient", hidden_size=128, seed=0)
    rnn = plastic.torch.PlasticRNN(config)
    params = [p for p in rnn.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, amsgrad=True)
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        batch = plastic.episodes(config, split="train", index=step, batch=64)
        x = torch.from_numpy(batch["inputs"])
        y = torch.from_numpy(batch["targets"])
        if route == "fused":
            loss = rnn.loss(x, y, test_begin=batch["test_begin"])
        else:
            out = rnn(x)
            loss = (out[:, batch["test_begin"]:] - y[:, batch["test_begin"]:]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if step >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
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
    ap.add_argument("--routes", default="fused,forward+vjp")
    ap.add_argument("--cli", help="the plastic binary, to time `plastic bench`'s step too")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(f"engine threads {plastic.threads()}, torch threads {torch.get_num_threads()}")
    routes = (["plastic bench"] if args.cli else []) + args.routes.split(",")
    times = {r: [] for r in routes}
    for k in range(args.rounds):
        for route in routes:
            t = run_cli(args.cli, args.steps) if route == "plastic bench" else run(route, args.steps)
            times[route] += t
            print(f"round {k + 1}: {route} {statistics.median(t):.1f} ms/step", flush=True)
    for route, t in times.items():
        print(f"{route}: median {statistics.median(t):.1f} ms/step "
              f"(min {min(t):.1f}, max {max(t):.1f}, {len(t)} steps)", flush=True)


if __name__ == "__main__":
    main()
