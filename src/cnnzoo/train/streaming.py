"""Training on a shard directory (`cnnzoo data pack`): the stream loaders `setup` uses instead
of the in-memory BatchLoaders.

The training split streams shuffled (seed, epoch), sharded over the torchrun ranks by litdata,
decoded and transformed in `cfg.workers` DataLoader processes; the validation split is the
"val" split packed with it (`--holdout-per-class`, or the source's val/test folder), so
`val_size` does not apply. The in-memory augmentations (crop padding, flips, erasing,
progressive crop sizes) do not apply either: augmentation is the stream's transform's job,
`cfg.recipe` (cnnzoo.data.recipe: "imagenet", "imagenet-ta", "cifar"), or without one a
plain decode and resize.

Resume: each rank's `StreamLoader.state_dict()` goes into the rank's entry of a mid-epoch
last.pt (`checkpoint.rank_state`) and is given back to the loader by `checkpoint.restore`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from cnnzoo.data.recipe import get_preset
from cnnzoo.data.shards import ShardSet, open_shards
from cnnzoo.data.stream import StreamLoader, transforms
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.distributed import DistInfo

# Options of the in-memory pipeline that a stream does not honour (name: value when unset).
IN_MEMORY_ONLY = {"crop_padding": 0, "hflip": False, "alternate_flip": False,
                  "random_erasing": 0.0, "crop_size": None}


@dataclass(frozen=True)
class StreamData:
    """What `setup` reads of a data set to build the model and its checkpoint record: the
    shard set's classes and the training split's channels, statistics and typical size."""

    name: str
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def open_stream_data(cfg: TrainConfig) -> tuple[ShardSet, StreamData]:
    """The shard directory `cfg.data`, after rejecting options that do not apply to it."""
    for name, unset in IN_MEMORY_ONLY.items():
        if getattr(cfg, name) != unset:
            raise ValueError(f"{name.replace('_', '-')}: an in-memory augmentation; a shard "
                             f"directory ({cfg.data}) is augmented by its stream transform")
    shards = open_shards(cfg.data)
    train = shards.split("train")
    data = StreamData(str(shards.path), list(shards.classes), train.in_chans, train.mean,
                      train.std, train.typical_size)
    if cfg.recipe is not None:  # RGB at the recipe's size, normalised with its statistics
        preset = get_preset(cfg.recipe)
        data = replace(data, in_chans=3, mean=preset.mean, std=preset.std,
                       image_size=(preset.size, preset.size))
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise ValueError(f"num_classes: {cfg.num_classes} given, but {cfg.data} has "
                         f"{data.num_classes} classes")
    return shards, data


def stream_loaders(cfg: TrainConfig, shards: ShardSet, data: StreamData, size: int,
                   info: DistInfo, device: torch.device, eval_batch: int
                   ) -> tuple[StreamLoader, StreamLoader | None]:
    """This rank's training stream and its part of the val split (None without one)."""
    train_tf, eval_tf = transforms(size, data.in_chans, cfg.recipe)
    loader = StreamLoader(shards.split("train"), cfg.batch_size // info.world_size,
                          transform=train_tf, shuffle=True, drop_last=True, seed=cfg.seed,
                          num_workers=cfg.workers, device=device,
                          channels_last=cfg.channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the training split "
                         f"of {cfg.data} ({shards.split('train').count} images)")
    if "val" not in shards.splits:
        return loader, None
    val = StreamLoader(shards.split("val"), eval_batch, transform=eval_tf, seed=cfg.seed,
                       num_workers=cfg.workers, device=device, mean=data.mean, std=data.std,
                       channels_last=cfg.channels_last)
    return loader, val
