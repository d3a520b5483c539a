"""Times the authors' own fsc training step on torch CPU, for `plastic bench --fsc`.

The reference implementation (the public repository yuvenduan/PlasticRNNs, a checkout
whose path is given with --reference) is imported, not copied: its experiment list
`configs.experiments.fsc()` gives the configuration (hidden size per rule and cell, image
shape), its `model_init` builds `CNNtoRNN` (ProtoNet conv4 -> projection -> plastic RNN),
and one timed step is exactly what its `train.py` does per update: `net.train()`,
`zero_grad`, `FSC.roll(train=True)` (10 steps of 64 images), `backward`, gradient-norm
clipping to 5 and `AdamW(amsgrad=True).step()`. The only stand-in is the data: random
images of the data set's shape and random 5-way labels (the loader's shuffling and
augmentation are not part of the timed step in either implementation).

`--cnn ResNet` takes the configuration from `configs.experiments.fsc_resnet()` instead
(ResNet-12, widths 64/160/320/640). The reference's ResNet-12 is built with dropout and
DropBlock at drop rate 0.1 (`utils.model_utils.get_cnn`), and its DropBlock moves its mask
to the GPU with `.cuda()` (`models/cnns/dropblock.py`), so in training mode it cannot run
on a CPU at all; `--drop-rate 0` sets the `drop_rate` attribute of the built network's
blocks to 0 after construction, which skips both dropout and DropBlock in its
`BasicBlock.forward` (compare with our `resnet_drop_rate=0`). Any other drop rate with
`--cnn ResNet` is refused for that reason.

`--freeze-cnn` times the reference's frozen-CNN step (its `freeze_pretrained_cnn`): the
CNN's parameters get `requires_grad_(False)` as `get_cnn` does for a loaded pretrained CNN,
and the CNN is put in evaluation mode after `net.train()` as its `train.py` does every
update. The randomly initialised CNN stands in for the loaded pretrained one (the same
shapes, so the same work). The reference has no embedding cache: this is the step that our
cached step replaces.

`--batch N` times a batch of N episodes instead of the configuration's 64 (to fit a
machine's memory); the figures are then not the reference's full step.

Usage (peak memory of the whole process from /usr/bin/time -v):

    /usr/bin/time -v python tools/reference-bench/fsc_step.py --reference PATH \
        --dataset CIFAR_FS --rnn RNN --rule gradient --threads 2 --warmup 1 --steps 3
    /usr/bin/time -v python tools/reference-bench/fsc_step.py --reference PATH \
        --cnn ResNet --drop-rate 0 --dataset CIFAR_FS --batch 16 --warmup 1 --steps 1

Prints one `step i: wall ms, cpu ms` line per timed step, then `times_ms=`, `cpu_ms=` and
`peak_mb=` (the process's maximum resident set, from getrusage) lines.
"""

import argparse
import resource
import statistics
import sys
import time
import types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="checkout of yuvenduan/PlasticRNNs")
    parser.add_argument("--dataset", choices=["CIFAR_FS", "miniImageNet"], default="CIFAR_FS")
    parser.add_argument("--rnn", choices=["RNN", "LSTM"], default="RNN")
    parser.add_argument("--rule", choices=["gradient", "hebbian", "none"], default="gradient")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn", choices=["ProtoNet", "ResNet"], default="ProtoNet")
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=None,
        help="ResNet-12 only: 0 turns dropout and DropBlock off (the only value a CPU runs)",
    )
    parser.add_argument("--freeze-cnn", action="store_true", help="the frozen-CNN step")
    parser.add_argument("--batch", type=int, default=None, help="episodes per batch (default 64)")
    args = parser.parse_args()
    if args.cnn == "ResNet" and args.drop_rate != 0:
        sys.exit(
            "--cnn ResNet needs --drop-rate 0: the reference's DropBlock calls .cuda() "
            "(models/cnns/dropblock.py), so its training step cannot run on a CPU"
        )
    if args.cnn == "ProtoNet" and args.drop_rate is not None:
        sys.exit("--drop-rate applies to --cnn ResNet only (ProtoNet has no dropout)")
    if args.batch is not None and args.batch < 1:
        sys.exit(f"--batch must be at least 1, got {args.batch}")

    import torch
    import torchvision.transforms  # noqa: F401  (the reference's tasks import it)

    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.reference)
    from utils.train_utils import grad_clipping, model_init, task_init

    # The reference's config utilities import pandas for reading logs, which building the
    # experiment list never uses; a placeholder, removed again, lets them import without it.
    stub = None
    try:
        import pandas  # noqa: F401
    except ImportError:
        stub = sys.modules["pandas"] = types.ModuleType("pandas")
    from configs import experiments

    if stub is not None:
        del sys.modules["pandas"]

    configs = [
        c
        for cs in (experiments.fsc_resnet() if args.cnn == "ResNet" else experiments.fsc()).values()
        for c in cs
        if c.seed == 0
        and c.image_dataset == args.dataset
        and c.rnn == args.rnn
        and c.plasticity_mode == args.rule
    ]
    if len(configs) != 1:
        sys.exit(f"expected one fsc configuration for {args}, found {len(configs)}")
    config = configs[0]
    config.seed = args.seed
    if args.batch is not None:
        config.batch_size = args.batch
    torch.manual_seed(2147483647 + args.seed)

    net = model_init(config, mode="train")
    if args.drop_rate is not None:
        # the blocks read self.drop_rate in forward; 0 skips dropout and DropBlock
        blocks = [m for m in net.cnn.modules() if hasattr(m, "drop_rate")]
        if not blocks:
            sys.exit("no module with a drop_rate attribute in the reference's CNN")
        for m in blocks:
            m.drop_rate = args.drop_rate
    if args.freeze_cnn:
        net.cnn.requires_grad_(False)
    task = task_init(config)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.wdecay, amsgrad=True
    )
    b, way = config.batch_size, config.train_way
    shape = tuple(config.input_shape)
    print(
        f"reference fsc step: {config.cnn} + {config.rnn} {config.plasticity_mode} "
        f"H {config.hidden_size}, images {shape}, batch {b}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, "
        f"{sum(p.numel() for p in net.parameters())} parameters, "
        f"{sum(p.numel() for p in net.parameters() if p.requires_grad)} trained"
        + (f", drop rate {args.drop_rate}" if args.drop_rate is not None else "")
        + (", frozen CNN in evaluation mode" if args.freeze_cnn else "")
        + ("" if b == 64 else " (NOT the reference's batch of 64)"),
        flush=True,
    )

    def batch():
        # the loader's layout: support images and labels, query images and labels, ids
        labels_support = torch.stack([torch.randperm(way) for _ in range(b)])
        labels_query = torch.stack([torch.randperm(way) for _ in range(b)])
        return [
            torch.randn(b, way, *shape),
            labels_support,
            torch.randn(b, way, *shape),
            labels_query,
            torch.zeros(b, way, dtype=torch.long),
            torch.zeros(b, way, dtype=torch.long),
        ]

    wall, cpu = [], []
    for step in range(args.warmup + args.steps):
        data = batch()
        w0, c0 = time.perf_counter(), time.process_time()
        # one update of the reference's train.py
        net.train()
        if args.freeze_cnn:
            net.cnn.eval()
        optimizer.zero_grad()
        loss = task.roll(net, data, train=True)
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
    print(f"median {statistics.median(wall):.0f} ms wall, {statistics.median(cpu):.0f} ms cpu")
    print("times_ms=" + ",".join(f"{t:.1f}" for t in wall))
    print("cpu_ms=" + ",".join(f"{t:.1f}" for t in cpu))
    print(f"peak_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
