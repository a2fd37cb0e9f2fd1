"""Run by tests/test_train_distributed.py, alone or under torchrun: train a small BatchNorm-free
net with `cnnzoo.train` into OUT/rank{RANK} and dump this rank's final weights to
DUMP_DIR/rank{RANK}.pt. Each rank names its own run directory, so the test can see that only
rank 0 wrote one.

BatchNorm-free because DDP computes BatchNorm's batch statistics per rank (over the rank's
half of the batch), which a single process with the whole batch does not reproduce; with no
BatchNorm, 2 ranks x 8 images and 1 process x 16 images take the same gradient steps.
"""

import os
import sys

import torch
from torch import nn

from cnnzoo.data import make_synthetic
from cnnzoo.train import train


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 4),
    )


def main(out: str, dump_dir: str) -> None:
    rank = int(os.environ.get("RANK", 0))
    torch.manual_seed(0)  # the same initial weights in both runs
    data = make_synthetic(128, 4, (1, 12, 12), seed=0)
    result = train(small_net(), data, out=os.path.join(out, f"rank{rank}"), epochs=2,
                   batch_size=16, lr=0.05, nesterov=True, weight_decay=5e-4, val_size=32,
                   warmup_epochs=0.5, ema_decay=0.9, threads=1, quiet=True)
    torch.save(result.model.state_dict(), os.path.join(dump_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
