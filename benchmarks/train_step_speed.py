"""Training-step speed of the networks the standard presets train, per candidate speed-up.

Each network (1x28x28 input, the Fashion-MNIST shape the presets train on; 10 classes) is
trained by cnnzoo's own loop: `cnnzoo.train.setup` builds the run as `cnnzoo.train.train`
would (SGD, momentum 0.9, weight decay 5e-4 on weights, cosine schedule, crop after 4 pixels
of padding and horizontal flips, no validation), and `train_one_epoch` runs one timed round:
one epoch over a synthetic uint8 set, so a round is the real step (gather, augmentation,
forward, loss, backward, optimizer, schedule and the loop's metric sums). A round is about
`ROUND_MACS` forward MACs (1,280 images for resnet20-w8, 256 for densenet-bc40-k12;
`--images` sets one size for all). Variants of one network are interleaved (A B C A B C
...: a slow spell on the shared machine hits each alike) after a warm-up epoch each; each
keeps its best and its median round, and the ratio is best against the baseline's best,
measured in the same process.

- baseline: what `cnnzoo.train.train` does on a CPU by default (fp32, NCHW, batch 128,
  torch's for-loop SGD, which is its CPU default).
- channels_last, bf16 (autocast; only where the CPU runs bf16 natively, `train.device`),
  channels_last + bf16, batch 256: `TrainConfig` options.
- foreach SGD, fused SGD: the same optimizer with torch's multi-tensor or fused kernel
  (set on its parameter groups here; `TrainConfig` has no option for it).
- bare step: `train_step` alone on one fixed batch: no gather, no augmentation, no metric
  sums, no host reads. Its gap to the baseline is all the loop and its host syncs can cost.
- compile (`--compile`): `TrainConfig.compile`, its compile time printed apart.

Equality with the baseline. Every variant starts from the same initial weights, and each
first takes one probe step (`train_step` on epoch 0's first batch) before its warm-up; the
columns compare that step with the baseline's: the relative difference of the loss and the
cosine similarity of the weight update (all parameters as one vector; the update of one SGD
step is -lr x (gradient + weight decay x weight)). The variants that run the baseline's
steps on its batches (all but batch 256 and bare step) are also compared after the last
round: bit-equal or not. Over many steps at lr 0.1, float rounding differences grow (a
channels_last run is 1e-7 away after one step and percents away after ten), so only the
one-step figures are a tolerance; tests/train/test_precision_tolerance.py tests it.

GFLOP/s = images/s x 3 x 2 x forward MACs per image (cnnzoo.profile): a training step is
counted as three forward passes (the forward, and a backward that costs two: gradients of
the inputs and of the weights), 2 FLOPs per MAC. "% peak" is against this machine's fp32
peak (`cnnzoo.profile.peak.measure_peak`: the best of a large matmul and a large
channels_last 3x3 conv), measured in the same process before and after the networks, best
of the two; bf16 rows are given against the same fp32 peak.

    .venv/bin/python benchmarks/train_step_speed.py                   # all networks, ~3 min
    .venv/bin/python benchmarks/train_step_speed.py --quick           # resnet20-w8, ~15 s
    .venv/bin/python benchmarks/train_step_speed.py --networks resnet20-w16 --rounds 5
    .venv/bin/python benchmarks/train_step_speed.py --compile         # adds compile rows

Name the CPU and what else ran beside it with every figure it prints: the header says both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.data import make_synthetic
from cnnzoo.data.dataset import ImageDataset
from cnnzoo.experiments.dense_vs_residual import densenet_bc
from cnnzoo.experiments.squeeze_excitation import cifar_resnet
from cnnzoo.models.resnet_cifar import CifarResNet
from cnnzoo.profile import profile
from cnnzoo.profile.peak import Peak, cpu_flags, measure_peak
from cnnzoo.profile.timing import OtherLoad
from cnnzoo.train import distributed
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import cpu_bf16_units, cpu_supports_bf16, resolve
from cnnzoo.train.loop import train_one_epoch, train_step
from cnnzoo.train.run import Run
from cnnzoo.train.setup import setup

SHAPE = (1, 28, 28)  # Fashion-MNIST, the presets' default data
CLASSES = 10
ROUND_MACS = 1e10  # forward MACs per timed round: ~1 s for every network here at 2 threads

# The networks of the standard presets (each builder as its experiment calls it).
NETWORKS: dict[str, Callable[[], nn.Module]] = {
    # resnet-20 w8: squeeze-excitation, deformable, degradation, effective-receptive-field
    "resnet20-w8": lambda: CifarResNet(20, base_width=8, in_chans=1, num_classes=CLASSES),
    # resnet-56 w8: degradation, lesion, paths, gradient-flow
    "resnet56-w8": lambda: CifarResNet(56, base_width=8, in_chans=1, num_classes=CLASSES),
    # resnet-20 w16: dense-vs-residual
    "resnet20-w16": lambda: CifarResNet(20, base_width=16, in_chans=1, num_classes=CLASSES),
    # SE-ResNet-20 w8, reduction 4: squeeze-excitation
    "se-resnet20-w8": lambda: cifar_resnet(20, 8, in_chans=1, num_classes=CLASSES,
                                           se_reduction=4),
    # DenseNet-BC-40, k 12: dense-vs-residual
    "densenet-bc40-k12": lambda: densenet_bc(40, 12, in_chans=1, num_classes=CLASSES),
    # plain-56 w8: degradation
    "plain56-w8": lambda: CifarResNet(56, shortcut=False, base_width=8, in_chans=1,
                                      num_classes=CLASSES),
}


@dataclass(frozen=True)
class Variant:
    """One way of running the training step."""

    name: str
    channels_last: bool = False
    precision: str = "fp32"
    batch_size: int = 128
    sgd: str = "for-loop"  # torch's SGD kernel: for-loop (its CPU default), foreach, fused
    compile: bool = False
    bare: bool = False  # train_step on one fixed batch, outside the loop

    @property
    def same_steps(self) -> bool:
        """Runs the baseline's steps on the baseline's batches (so weights can be compared)."""
        return self.batch_size == 128 and not self.bare


VARIANTS = [
    Variant("baseline"),
    Variant("channels_last", channels_last=True),
    Variant("foreach SGD", sgd="foreach"),
    Variant("fused SGD", sgd="fused"),
    Variant("bf16", precision="bf16"),
    Variant("channels_last + bf16", channels_last=True, precision="bf16"),
    Variant("batch 256", batch_size=256),
    Variant("bare step", bare=True),
]
COMPILED = [
    Variant("compile", compile=True),
    Variant("compile + channels_last + bf16", channels_last=True, precision="bf16",
            compile=True),
]


def build_run(network: str, v: Variant, data: ImageDataset, epochs: int) -> Run:
    """The run `cnnzoo.train.train(model, data, **options)` would build for variant `v`."""
    torch.manual_seed(0)  # the same initial weights for every variant of a network
    model = NETWORKS[network]()
    cfg = TrainConfig(model=f"<{type(model).__name__}>", data=data.name, epochs=epochs,
                      batch_size=v.batch_size, val_size=0, crop_padding=4, hflip=True,
                      channels_last=v.channels_last, precision=v.precision, compile=v.compile,
                      device="cpu", quiet=True, seed=0)
    run = setup(cfg, distributed.detect(), resolve(cfg.device, cfg.precision),
                module=model, dataset=data)
    if v.sgd != "for-loop":
        # SGD.step reads "foreach" and "fused" from each group at every step.
        for group in run.optimizer.param_groups:
            group[v.sgd] = True
    return run


class Timed:
    """One variant's run: its probe step (loss and weight update) and its rounds (images/s)."""

    def __init__(self, network: str, v: Variant, data: ImageDataset, epochs: int) -> None:
        self.v = v
        t0 = time.perf_counter()
        self.run = build_run(network, v, data, epochs)
        params = list(self.run.model.parameters())
        before = [p.detach().clone() for p in params]
        x, y = next(iter(self.run.loader))  # epoch 0's first batch, augmented
        self.probe_loss = float(train_step(self.run, x, y)[1])
        self.probe_update = torch.cat([(p.detach() - b).flatten()
                                       for p, b in zip(params, before, strict=True)])
        self.batch = (x, y) if v.bare else None
        self.epoch = 0
        self.rounds: list[float] = []
        self.round()  # warm-up: oneDNN primitives, allocator, (compile)
        self.rounds.clear()
        self.warmup_s = time.perf_counter() - t0

    def round(self) -> None:
        if self.v.bare:
            x, y = self.batch
            steps = len(self.run.loader)
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(self.run, x, y)
            self.rounds.append(steps * len(y) / (time.perf_counter() - t0))
        else:
            metrics = train_one_epoch(self.run, self.epoch)
            self.rounds.append(metrics["train_images_per_s"])
        self.epoch += 1

    @property
    def best(self) -> float:
        return max(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


def probe_vs(base: Timed, t: Timed) -> str:
    """The probe step against the baseline's: loss relative difference, update cosine."""
    if t.v.batch_size != base.v.batch_size:
        return "n/a (other batch)"
    if t.probe_loss == base.probe_loss and torch.equal(t.probe_update, base.probe_update):
        return "bit-equal"
    loss = abs(t.probe_loss - base.probe_loss) / abs(base.probe_loss)
    cos = float(torch.nn.functional.cosine_similarity(t.probe_update, base.probe_update, dim=0))
    return f"loss {loss:.1e}, update cos {cos:.5f}"


def rounds_vs(base: Timed, t: Timed) -> str:
    """Whether the weights after every round equal the baseline's, bit for bit."""
    if not t.v.same_steps:
        return "n/a (other steps)"
    same = all(torch.equal(a, b) for a, b in zip(base.run.model.parameters(),
                                                  t.run.model.parameters(), strict=True))
    return "bit-equal" if same else "differ"


def round_images(macs: int, images: int | None) -> int:
    """Images per round: `images`, or about ROUND_MACS forward MACs, a multiple of 256."""
    if images is not None:
        return images
    return max(256, 256 * round(ROUND_MACS / macs / 256))


def measure_network(network: str, variants: list[Variant], rounds: int, images: int
                    ) -> list[Timed]:
    data = make_synthetic(images, CLASSES, SHAPE, seed=0)
    epochs = rounds + 1
    timed = [Timed(network, v, data, epochs) for v in variants]
    for _ in range(rounds):
        for t in timed:
            t.round()
    return timed


def print_network(network: str, timed: list[Timed], peak: Peak, macs: int) -> None:
    base = timed[0]
    params = sum(p.numel() for p in base.run.model.parameters())
    print(f"\n{network}: {macs / 1e6:.2f}M forward MACs per image, {params:,} parameters, "
          f"{len(base.run.loader)} steps of 128 per round")
    print("| variant | images/s best | median | vs baseline | GFLOP/s | % fp32 peak | "
          "first step vs baseline | weights after the rounds |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for t in timed:
        gflops = t.best * 6 * macs / 1e9
        extra = f" (warm-up incl. compile {t.warmup_s:.0f} s)" if t.v.compile else ""
        first, after = ("(reference)", "(reference)") if t is base else (probe_vs(base, t),
                                                                          rounds_vs(base, t))
        print(f"| {t.v.name}{extra} | {t.best:,.0f} | {t.median:,.0f} | "
              f"{t.best / base.best:.2f}x | {gflops:.1f} | {100 * gflops / peak.gflops:.1f}% | "
              f"{first} | {after} |")
    same = [t for t in timed[1:] if t.v.same_steps]
    if same:
        fastest = max(same, key=lambda t: t.best)
        print(f"fastest on the baseline's steps: {fastest.v.name}, "
              f"{fastest.best / base.best:.2f}x the baseline")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default=None,
                   help=f"comma-separated, from {', '.join(NETWORKS)} (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (default 3)")
    p.add_argument("--images", type=int, default=None,
                   help="images per round for every network, a multiple of 256 (default: "
                        "about 1e10 forward MACs per round)")
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    p.add_argument("--compile", action="store_true",
                   help="add torch.compile rows (each compiles for ~40 s)")
    p.add_argument("--quick", action="store_true",
                   help="resnet20-w8 only, 2 rounds of 256 images (a check that it runs)")
    args = p.parse_args()
    if args.quick:
        args.networks = args.networks or "resnet20-w8"
        args.rounds, args.images = 2, 256
    names = args.networks.split(",") if args.networks else list(NETWORKS)
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        sys.exit(f"--networks: unknown {', '.join(unknown)}; expected some of "
                 f"{', '.join(NETWORKS)}")
    if args.rounds < 1 or (args.images is not None and (args.images < 256 or args.images % 256)):
        sys.exit(f"--rounds: expected >= 1, got {args.rounds}; --images: expected a multiple "
                 f"of 256, got {args.images}")
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = VARIANTS + (COMPILED if args.compile else [])
    if not cpu_supports_bf16():
        print("bf16 rows skipped: this CPU has no native bf16 (neither AMX nor AVX512-BF16; "
              "torch.ops.mkldnn._is_mkldnn_bf16_supported() is False), oneDNN would emulate "
              "it, slower than fp32")
        variants = [v for v in variants if v.precision != "bf16"]
    macs = {n: profile(NETWORKS[n](), (1, *SHAPE)).macs for n in names}

    start = time.perf_counter()
    with OtherLoad() as load:
        peaks = [measure_peak("full", repeats=3, min_time_s=0.3)]
        results = {n: measure_network(n, variants, args.rounds, round_images(macs[n], args.images))
                   for n in names}
        peaks.append(measure_peak("full", repeats=3, min_time_s=0.3))
    peak = max(peaks, key=lambda pk: pk.gflops)

    units = ", ".join(cpu_bf16_units()) or "none"
    other = "unknown" if load.fraction is None else f"{load.fraction:.0%}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} logical CPUs; CPU flags {', '.join(cpu_flags()) or 'unknown'}; "
          f"native bf16 units (torch): {units}")
    print(peak.line() + f" (best of {len(peaks)} measurements, before and after)")
    print(f"batch 128 unless named, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} synthetic uint8 images, "
          f"crop (padding 4) + flip; {args.rounds} timed rounds per variant after a probe step "
          f"and 1 warm-up round, interleaved; other processes used {other} of the CPU "
          f"meanwhile; {time.perf_counter() - start:.0f} s in all")
    for name, timed in results.items():
        print_network(name, timed, peak, macs[name])


if __name__ == "__main__":
    main()
