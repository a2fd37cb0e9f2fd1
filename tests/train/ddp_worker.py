"""Run by tests/train/test_distributed.py, alone or under torchrun.

`ddp_worker.py OUT DUMP_DIR [VARIANT ...]` trains each VARIANT with `cnnzoo.train` into
OUT/VARIANT/rank{RANK} and dumps this rank's final weights to DUMP_DIR/VARIANT-rank{RANK}.pt.
Each rank names its own run directory, so the test can see that only rank 0 wrote one
(`--shared-out`: all ranks name OUT/VARIANT, as the command line does, which a torchrun
restart needs to find last.pt). The variants:

- plain: a small BatchNorm-free net. DDP computes BatchNorm's batch statistics per rank
  (over the rank's half of the batch), which a single process with the whole batch does
  not reproduce; with no BatchNorm, 2 ranks x 8 images and 1 process x 16 images take the
  same gradient steps.
- bn: the same net with BatchNorm after each conv; bn-sync: that, with sync_bn.

`--kill-rank1-at POINT` SIGKILLs rank 1 at a `cnnzoo.train.faults` point, in torchrun's
first attempt only (TORCHELASTIC_RESTART_COUNT=0), so a restarted job runs through.

`ddp_worker.py cli BAD_DATA ARGS...` runs `cnnzoo ARGS...`, with `--data BAD_DATA` on rank 1:
one rank that fails at start-up.
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from cnnzoo.cli import main as cnnzoo_main
from cnnzoo.data import make_synthetic
from cnnzoo.train import faults, train

VARIANTS = ("plain", "bn", "bn-sync")


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 4),
    )


def small_bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def run(variant: str, out: str, dump_dir: str, *, shared_out: bool, say: bool,
        resume: bool) -> None:
    rank = int(os.environ.get("RANK", 0))
    torch.manual_seed(0)  # the same initial weights in every run
    net = small_net() if variant == "plain" else small_bn_net()
    data = make_synthetic(128, 4, (1, 12, 12), seed=0)
    run_dir = os.path.join(out, variant, "" if shared_out else f"rank{rank}")
    result = train(net, data, out=run_dir, epochs=2, batch_size=16, lr=0.05, nesterov=True,
                   weight_decay=5e-4, val_size=32, warmup_epochs=0.5, ema_decay=0.9, threads=1,
                   sync_bn=variant == "bn-sync", quiet=not say, resume=resume)
    torch.save(result.model.state_dict(), os.path.join(dump_dir, f"{variant}-rank{rank}.pt"))


def main(argv: list[str]) -> int:
    if argv[0] == "cli":
        args = argv[2:] + (["--data", argv[1]] if os.environ.get("RANK") == "1" else [])
        return cnnzoo_main(args)
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("dump_dir")
    parser.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)}; default: plain")
    parser.add_argument("--shared-out", action="store_true")
    parser.add_argument("--kill-rank1-at", metavar="POINT")
    parser.add_argument("--say", action="store_true", help="rank 0 prints its progress")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if (args.kill_rank1_at and os.environ.get("RANK") == "1"
            and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"):
        os.environ[faults.ENV] = args.kill_rank1_at
    # One process group for all variants (`train` leaves a group it did not create).
    grouped = int(os.environ.get("WORLD_SIZE", 1)) > 1 and len(args.variants) > 1
    if grouped:
        dist.init_process_group("gloo")
    for variant in args.variants or ["plain"]:
        run(variant, args.out, args.dump_dir, shared_out=args.shared_out, say=args.say,
            resume=args.resume)
    if grouped:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
