"""Times the authors' own cue-reward training step on torch CPU, for the comparison with
`plastic bench` and `plastic.torch` (README, From Python).

The reference implementation (the public repository yuvenduan/PlasticRNNs, a checkout
whose path is given with --reference) is imported, not copied: its experiment
`configs.experiments.cuereward_demo()` gives the configuration (cue-reward, hidden 128 for
the plastic rules, batch 64, AdamW with amsgrad, gradient clipping at 5), its `model_init`
builds the network, its `task_init` the task, and its own `DatasetIters` draws the
batches (num_workers = 0, in this process). One timed step is exactly what its `train.py`
does per update: `net.train()`, `zero_grad`, `task.roll(net, data, train=True)`,
`backward`, gradient-norm clipping and `optimizer.step()`; drawing the batch is done before
the clock starts (as in fsc_step.py).

Usage (peak memory of the whole process from /usr/bin/time -v):

    /usr/bin/time -v python tools/reference-bench/cue_step.py --reference PATH \
        --rnn RNN --rule gradient --threads 2 --warmup 2 --steps 5

Prints one `step i: wall ms, cpu ms` line per timed step, then `times_ms=`, `cpu_ms=` and
`peak_mb=` (the process's maximum resident set, from getrusage) lines, and the load
average before and after.
"""

import argparse
import importlib.machinery
import os
import resource
import statistics
import sys
import time
import types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="checkout of yuvenduan/PlasticRNNs")
    parser.add_argument("--rnn", choices=["RNN", "LSTM"], default="RNN")
    parser.add_argument("--rule", choices=["gradient", "hebbian", "none"], default="gradient")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.reference)
    # The reference's config utilities import pandas for reading logs, and its data-set
    # module tqdm for its image data sets, neither of which this step uses; placeholders,
    # removed again, let them import without them.
    stubs = []
    for name in ("pandas", "tqdm"):
        try:
            __import__(name)
        except ImportError:
            stub = sys.modules[name] = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            stub.tqdm = lambda iterable=None, *a, **k: iterable
            stubs.append(name)
    from utils.train_utils import grad_clipping, model_init, task_init
    from datasets.data_sets import DatasetIters
    from configs import experiments

    for name in stubs:
        del sys.modules[name]

    configs = [
        c
        for cs in experiments.cuereward_demo().values()
        for c in cs
        if c.seed == 0 and c.plasticity_mode == args.rule
    ]
    if len(configs) != 1:
        sys.exit(f"expected one cuereward_demo configuration for {args}, found {len(configs)}")
    config = configs[0]
    config.rnn = args.rnn
    config.seed = args.seed
    config.num_workers = 0
    torch.manual_seed(2147483647 + args.seed)

    net = model_init(config, mode="train")
    task = task_init(config)
    train_data = DatasetIters(config, "train", config.batch_size)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.wdecay, amsgrad=True
    )
    print(
        f"reference cue-reward step: {config.rnn} {config.plasticity_mode} "
        f"H {config.hidden_size}, batch {config.batch_size}, trial length "
        f"{config.trial_length}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{sum(p.numel() for p in net.parameters())} parameters, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    train_data.reset()
    iters = train_data.data_iters
    wall, cpu = [], []
    for step in range(args.warmup + args.steps):
        if step % 100 == 99:
            train_data.reset()
        data = [next(it) for it in iters]
        w0, c0 = time.perf_counter(), time.process_time()
        # one update of the reference's train.py
        net.train()
        loss = 0.0
        optimizer.zero_grad()
        for i_loader, d in enumerate(data):
            loss += task.roll(net, d, train=True) * config.mod_w[i_loader]
        loss.backward()
        grad_clipping(net, config.grad_clip)
        optimizer.step()
        loss_value = loss.item()
        w, c = (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3
        if step >= args.warmup:
            wall.append(w)
            cpu.append(c)
        tag = "warm-up" if step < args.warmup else f"step {step - args.warmup}"
        print(f"{tag}: {w:.0f} ms wall, {c:.0f} ms cpu, loss {loss_value:.4f}", flush=True)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    print(f"median {statistics.median(wall):.0f} ms wall, {statistics.median(cpu):.0f} ms cpu, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("times_ms=" + ",".join(f"{t:.1f}" for t in wall))
    print("cpu_ms=" + ",".join(f"{t:.1f}" for t in cpu))
    print(f"peak_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
