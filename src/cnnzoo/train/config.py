"""The training configuration: one typed dataclass, every hyperparameter with its unit.

The command line is generated from these fields (`cli/train.py`), the run directory's
`config.json` is `asdict` of it, and a checkpoint stores it so `--resume` can refuse to
continue a run with different settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cnnzoo.data.recipe import get_preset

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "onecycle", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Fields that change how a run computes but not what it computes: they may differ on --resume.
RUNTIME_FIELDS = frozenset({"out", "resume", "quiet", "threads", "compile", "data_dir",
                            "checkpoint_every"})


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Units are in the names or the help texts."""

    # What to train on what
    model: str = _help("registered model name (see `cnnzoo list`)", default="")
    model_options: dict[str, Any] = _help(
        "keyword options of the model builder, e.g. {'drop_path_rate': 0.2}",
        default_factory=dict,
    )
    data: str = _help("data set name (fashion-mnist, mnist, cifar10, cifar100, synthetic) "
                      "or a path", default="")
    data_dir: str | None = _help("folder holding the data set files", default=None)
    val_size: float = _help("validation split taken from the training split, stratified: "
                            "a fraction if < 1, else a number of images; 0 = none", default=0.1)
    out: str | None = _help("run directory; None writes nothing", default=None)

    # Transfer learning (see cnnzoo.train.transfer)
    init: str | None = _help("start from these weights: a cnnzoo checkpoint or safetensors "
                             "export, or a torchvision/timm state dict (.pth, .safetensors), "
                             "recognised by its keys; classifiers of another size are "
                             "re-initialised", default=None)
    num_classes: int | None = _help("classes of the classifier; must equal the data's (checked); "
                                    "default: the data's", default=None)
    freeze: str | None = _help("freeze the stem and every stage up to and including this one "
                               "(a module name of the model's feature_info, e.g. layer2, or its "
                               "index): no gradients, and kept in eval mode (BatchNorm uses and "
                               "keeps its running statistics)", default=None)
    backbone_lr_scale: float = _help("learning rate of the backbone (forward_features) relative "
                                     "to lr, which the head gets; e.g. 0.1 for fine-tuning",
                                     default=1.0)

    # Optimisation
    epochs: int = _help("passes over the training split", default=10)
    batch_size: int = _help("images per optimizer step, summed over all ranks", default=128)
    optimizer: str = _help(f"one of {', '.join(OPTIMIZERS)}", default="sgd")
    lr: float = _help("peak learning rate (per optimizer step)", default=0.1)
    momentum: float = _help("SGD momentum (heavy-ball coefficient)", default=0.9)
    nesterov: bool = _help("SGD with Nesterov momentum", default=False)
    betas: tuple[float, float] = _help("AdamW (beta1, beta2)", default=(0.9, 0.999))
    weight_decay: float = _help("L2 coefficient (decoupled for AdamW); never applied to norm "
                                "weights and biases", default=5e-4)
    label_smoothing: float = _help("label smoothing epsilon in [0, 1)", default=0.0)
    grad_clip_norm: float | None = _help("clip the global L2 norm of the gradients to this value",
                                         default=None)
    ema_decay: float | None = _help("keep an exponential moving average of the weights with this "
                                    "decay per optimizer step (e.g. 0.999); validated and saved",
                                    default=None)

    # Learning-rate schedule, evaluated per optimizer step
    schedule: str = _help(f"one of {', '.join(SCHEDULES)}", default="cosine")
    warmup_epochs: float = _help("linear warm-up from 0 to lr over this many epochs (cosine)",
                                 default=0.0)
    milestones: tuple[float, ...] = _help("step schedule: divide lr by 10 at these fractions of "
                                          "training (He et al.: 0.5, 0.75)", default=(0.5, 0.75))
    onecycle_pct_start: float = _help("one-cycle: fraction of training spent rising to lr",
                                      default=0.25)

    # Augmentation, done on batches of tensors
    crop_padding: int = _help("random crop after zero padding by this many pixels; 0 = off",
                              default=0)
    crop_size: int | None = _help("side of the random crop (after crop_padding); default: the "
                                  "image's. Smaller: train on parts of images at fewer pixels "
                                  "per step, evaluate on whole ones", default=None)
    crop_size_epochs: int | None = _help("use crop_size for the first N epochs only, then "
                                         "full-size crops (progressive sizes); default: all",
                                         default=None)
    hflip: bool = _help("random horizontal flip with probability 0.5", default=False)
    recipe: str | None = _help("a shard directory's per-image recipe (cnnzoo.data.recipe): "
                               "imagenet (RandomResizedCrop + flip; eval resize 256, center "
                               "crop 224), imagenet-ta (with TrivialAugment), cifar (pad-4 crop "
                               "+ flip); default: decode and resize only", default=None)
    alternate_flip: bool = _help("with --hflip: each image flipped in every other epoch (one coin "
                                 "per image per run, as airbench) instead of a coin per epoch",
                                 default=False)
    random_erasing: float = _help("random erasing probability per image", default=0.0)
    image_size: int | None = _help("resize images to this H = W in pixels; default: the data's "
                                   "size, or the model's min_input_size when that is larger",
                                   default=None)

    # Execution
    device: str = _help(f"one of {', '.join(DEVICES)}", default="auto")
    precision: str = _help("auto (fp32 on CPUs, bf16/fp16 on CUDA), fp32, bf16 (on a CPU "
                           "only with AMX or AVX512-BF16) or fp16 autocast", default="auto")
    channels_last: bool = _help("NHWC memory format for model and batches", default=False)
    compile: bool = _help("torch.compile the model", default=False)
    sync_bn: bool = _help("under torchrun: BatchNorm statistics over the global batch "
                          "(SyncBatchNorm), so N processes train like one; without it each "
                          "rank normalises over its batch/N images", default=False)
    threads: int | None = _help("torch intra-op threads per process; default: torch's",
                                default=None)
    workers: int = _help("DataLoader worker processes that decode and transform a shard "
                         "directory's images (streaming only; 0 = in the training process)",
                         default=2)
    seed: int = _help("seed of weights init, data order, augmentation and dropout", default=0)
    deterministic: bool = _help("torch.use_deterministic_algorithms (and no cuDNN autotuning)",
                                default=False)
    resume: bool = _help("continue from OUT/last.pt", default=False)
    checkpoint_every: float | None = _help(
        "seconds between writes of last.pt in the middle of an epoch (resume continues at the "
        "step it holds); 0 = only at epoch ends; default: 60, stretched to 20 times the last "
        "write's duration when that is longer, so that writing costs at most 5%",
        default=None)
    quiet: bool = _help("no progress bar and no per-epoch lines", default=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject settings that cannot work, with one line naming the field."""
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "device": DEVICES,
                   "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if self.recipe is not None:
            try:
                get_preset(self.recipe)
            except ValueError as err:
                raise ValueError(f"recipe: {err}") from None
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0, got {self.workers}")
        if self.val_size < 0:
            raise ValueError(f"val_size: expected >= 0, got {self.val_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected (0, 1), got {self.ema_decay}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm: expected > 0, got {self.grad_clip_norm}")
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise ValueError(f"milestones: expected fractions in (0, 1), got {self.milestones}")
        if not 0.0 < self.onecycle_pct_start < 1.0:
            raise ValueError(f"onecycle_pct_start: expected (0, 1), got {self.onecycle_pct_start}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs: expected 0..epochs ({self.epochs}), "
                             f"got {self.warmup_epochs}")
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"crop_size: expected a positive number of pixels, "
                             f"got {self.crop_size}")
        if self.crop_size_epochs is not None and (
                self.crop_size is None or not 0 <= self.crop_size_epochs <= self.epochs):
            raise ValueError(f"crop_size_epochs: expected 0..epochs ({self.epochs}) with "
                             f"crop_size set, got {self.crop_size_epochs}")
        if self.alternate_flip and not self.hflip:
            raise ValueError("alternate_flip: needs hflip (it changes how flips are drawn)")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing: expected a probability, got {self.random_erasing}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size: expected a positive number of pixels, "
                             f"got {self.image_size}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes: expected a positive number, got {self.num_classes}")
        if not self.backbone_lr_scale > 0:
            raise ValueError(f"backbone_lr_scale: expected > 0 (freeze stages with freeze), "
                             f"got {self.backbone_lr_scale}")
        if self.checkpoint_every is not None and not self.checkpoint_every >= 0:
            raise ValueError(f"checkpoint_every: expected seconds >= 0 (0 = only at epoch ends), "
                             f"got {self.checkpoint_every}")
        if self.resume and self.out is None:
            raise ValueError("resume: needs out, the run directory to resume from")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; an unknown key is an error, a missing one takes its default."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (other than runtime-only ones) on which two configs disagree."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} -> {mine[k]!r}" for k in mine
                if k not in RUNTIME_FIELDS and _norm(mine[k]) != _norm(theirs[k])]


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
