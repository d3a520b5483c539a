"""Times one ProtoNet conv4 training step on torch CPU, the same step as `src/main.rs`.

Step: 10 calls of the CNN on 64 images of 3x32x32 each (BatchNorm in training mode, batch
statistics per call), loss = sum over calls of mean(features * readout), backward, AdamW.
Usage: python torch_step.py [--threads 2] [--steps 20] [--warmup 3] [--size 32]
Prints one line per timed step (milliseconds) and the median.
"""

import argparse
import statistics
import time

import torch
from torch import nn


def conv4(channels: int) -> nn.Sequential:
    blocks = []
    cin = 3
    for _ in range(4):
        blocks += [
            nn.Conv2d(cin, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        cin = channels
    return nn.Sequential(*blocks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = conv4(64)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=5e-4, amsgrad=True)
    images = torch.randn(args.calls, args.batch, 3, args.size, args.size)
    feat = net(images[0]).flatten(1).shape[1]
    readout = torch.randn(args.calls, args.batch, feat)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss = 0.0
        for t in range(args.calls):
            loss = loss + (net(images[t]).flatten(1) * readout[t]).mean()
        loss.backward()
        opt.step()
        elapsed = (time.perf_counter() - start) * 1e3
        if step >= args.warmup:
            times.append(elapsed)
            print(f"step {step - args.warmup} {elapsed:.1f} ms")
    print(f"torch median {statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
