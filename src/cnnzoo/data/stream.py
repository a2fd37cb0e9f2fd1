"""StreamLoader: batches from a shard directory through litdata, decoded and transformed in
DataLoader worker processes, in the BatchLoader interface the training loop uses
(`set_epoch`, `batches(start)`, `len`, `mean`/`std`), plus the engine's position as JSON
(`state_dict` / `load_state_dict`) for mid-epoch checkpoints.

Order. litdata's StreamingDataset shuffles chunks and samples from (seed, epoch) and, under
torchrun, gives each rank a disjoint part of the epoch (drop_last: every rank the same number
of samples). Each epoch gets a fresh StreamingDataLoader whose epoch counter is set to it, so
an epoch's order depends only on (seed, epoch, world size, workers), never on what ran before.

Transform hook. `transform(data: bytes, label: int, rng: numpy.random.Generator) ->
(uint8 tensor (C, H, W), label)` runs in the workers on each sample; rng is seeded by
(seed, epoch, sample id), so a sample's augmentation does not depend on which worker or rank
drew it, nor on where a resumed run started. All outputs of a batch must have one shape.
The batch is stacked as uint8 (N, C, H, W), moved to the device and normalised there, as the
in-memory pipeline does (see DESIGN.md).

Resume. `state_dict()` is litdata's StreamingDataLoader state after the batches yielded so
far (plain ints, strings and lists: saved in last.pt without pickling); `load_state_dict`
then `batches(start)` continues right after them. Memory: a StreamingDataset keeps the index
(per chunk) and its shuffled order; nothing per sample accumulates while streaming.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnzoo.data.augment import normalize
from cnnzoo.data.pack import require_litdata
from cnnzoo.data.recipe import make_transform
from cnnzoo.data.shards import ShardSplit

try:
    from litdata import StreamingDataLoader, StreamingDataset
except ImportError:  # the optional `stream` extra
    StreamingDataLoader = StreamingDataset = None

Transform = Callable[[bytes, int, np.random.Generator], tuple[torch.Tensor, int]]
# Test-only: append "SPLIT RANK EPOCH STEP ids..." for each batch to this file.
SAMPLE_LOG_ENV = "CNNZOO_TEST_SAMPLE_LOG"


class DecodeResize:
    """The plain transform: decode with Pillow, convert to RGB (or keep grayscale for a
    1-channel set), resize to size x size (bilinear); no augmentation. The default until a
    recipe is given, and what evaluation of a fixed-size set needs.
    """

    def __init__(self, size: int, in_chans: int = 3) -> None:
        self.size, self.mode = size, "L" if in_chans == 1 else "RGB"

    def __call__(self, data: bytes, label: int, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, int]:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft(self.mode, (self.size, self.size))  # JPEG: decode at >= size, faster
                img = img.convert(self.mode)
                if img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size), Image.BILINEAR)
                a = np.asarray(img, dtype=np.uint8)
        except OSError as err:  # Pillow's UnidentifiedImageError and truncation: one line,
            raise ValueError(f"cannot decode image ({err})") from None  # _Apply adds the id
        x = torch.from_numpy(a.copy())
        return (x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()), label


class Recipe:
    """A named recipe of cnnzoo.data.recipe ("imagenet", "cifar", ...) as the stream's
    transform: bytes -> the recipe's uint8 (3, size, size) image, the label unchanged. Always
    RGB: a grayscale set comes out with three equal channels."""

    def __init__(self, preset: str, train: bool, size: int | None = None) -> None:
        self.preset, self.train = preset, train
        self.fn = make_transform(preset, train, size)

    def __call__(self, data: bytes, label: int, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, int]:
        return self.fn(data, "image", rng), label


def transforms(size: int, in_chans: int, recipe: str | None = None
               ) -> tuple[Transform, Transform]:
    """(training, evaluation) transforms at `size`: the named recipe's (cnnzoo.data.recipe),
    or without one, decode and resize to size x size for both."""
    if recipe is not None:
        return Recipe(recipe, True, size), Recipe(recipe, False, size)
    return DecodeResize(size, in_chans), DecodeResize(size, in_chans)


def eval_transform(image_size: tuple[int, int], in_chans: int,
                   recipe: str | None = None) -> Transform:
    """The evaluation transform for a model trained at `image_size` with `recipe` (what
    `cnnzoo eval` and `cnnzoo predict` stream a shard directory through)."""
    if image_size[0] != image_size[1]:
        raise ValueError(f"a stream is resized to a square; the model was trained at "
                         f"{tuple(image_size)}")
    return transforms(image_size[0], in_chans, recipe)[1]


class _Apply:
    """litdata's per-sample transform (pickled into the workers): bytes -> (x, label, id)."""

    def __init__(self, transform: Transform, seed: int, epoch: int) -> None:
        self.transform, self.seed, self.epoch = transform, seed, epoch

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int, int]:
        sample_id = int(item["id"])
        rng = np.random.default_rng([self.seed, self.epoch, sample_id])
        try:
            x, label = self.transform(item["data"], int(item["label"]), rng)
        except ValueError as err:  # name the sample: the message holds no file name
            raise ValueError(f"sample {sample_id}: {err}") from None
        if x.dtype != torch.uint8 or x.ndim != 3:
            raise ValueError(f"transform: must return a uint8 (C, H, W) tensor, got "
                             f"{x.dtype} {tuple(x.shape)} for sample {sample_id}")
        return x, label, sample_id


def _collate(items: list[tuple[torch.Tensor, int, int]]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for x, _, _ in items}
    if len(shapes) > 1:
        raise ValueError(f"transform: outputs of one batch differ in shape {sorted(shapes)}; "
                         f"crop or resize to one size")
    return (torch.stack([x for x, _, _ in items]),
            torch.tensor([y for _, y, _ in items], dtype=torch.int64),
            torch.tensor([i for _, _, i in items], dtype=torch.int64))


# The only field formats a cnnzoo pack writes (data, label, id). litdata can also store
# "pickle" (and formats that unpickle or run decoders); a shard directory from elsewhere that
# declares one is refused, so that streaming never unpickles untrusted bytes.
SAFE_FORMATS = ("bytes", "int")


def check_formats(split: ShardSplit) -> None:
    """One line naming the split's index.json if it declares a field format other than
    SAFE_FORMATS."""
    index = split.root / "index.json"
    try:
        formats = json.loads(index.read_text())["config"]["data_format"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index}: not a readable litdata index ({err})") from None
    unsafe = sorted({f for f in formats if f not in SAFE_FORMATS})
    if unsafe:
        raise ValueError(f"{index}: field format(s) {', '.join(unsafe)} refused; a cnnzoo "
                         f"shard holds only {', '.join(SAFE_FORMATS)} (repack with "
                         f"`cnnzoo data pack`)")


def check_chunks(split: ShardSplit) -> None:
    """Cheap check before streaming (sizes, not hashes): one line naming a missing or
    truncated shard instead of an error deep in a worker; and no unsafe field format."""
    check_formats(split)
    for part in split.parts:
        for f in part["files"]:
            path = split.root / f["name"]
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise ValueError(f"{path}: shard missing") from None
            if size != f["bytes"]:
                raise ValueError(f"{path}: shard truncated or altered ({size:,} bytes, "
                                 f"manifest says {f['bytes']:,}); repack or restore it")


class StreamLoader:
    """Iterate over (x, y) batches of a packed split, streamed.

    Args:
        split: the packed split (`open_shards(path).split("train")`).
        batch_size: images per batch on this rank.
        transform: the per-sample hook (see the module docstring).
        shuffle: litdata's seeded shuffle; drop_last: equal batches on every rank (training).
        seed: base seed of the order and of the transforms' rngs.
        num_workers: DataLoader worker processes (0: decode in this process).
        device: where batches are produced; mean, std: normalisation (default: the split's).
        channels_last: return x in channels_last memory format.
        normalize_batches: False yields the uint8 batch as it came from the workers.
    """

    def __init__(self, split: ShardSplit, batch_size: int, *, transform: Transform,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 num_workers: int = 0, device: str | torch.device = "cpu",
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 channels_last: bool = False, normalize_batches: bool = True) -> None:
        require_litdata("streaming a shard directory")
        if batch_size < 1:
            raise ValueError(f"StreamLoader: batch_size must be >= 1, got {batch_size}")
        check_chunks(split)
        self.split = split
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.mean = tuple(mean or split.mean)
        self.std = tuple(std or split.std)
        self.channels_last = channels_last
        self.normalize_batches = normalize_batches
        self.augment = None  # the loop sets it; augmentation is the transform's job here
        self.epoch = 0
        self.last_ids: torch.Tensor | None = None  # the sample ids of the last batch
        self._loader: Any = None
        self._resume: dict[str, Any] | None = None
        self._length = self._dataset().get_len(num_workers, batch_size)  # this rank's samples

    def _dataset(self) -> Any:
        # item_shuffle_window=0: a full permutation within each chunk (litdata's default
        # permutes 256-item blocks, which keeps neighbours of the stored order together)
        return StreamingDataset(str(self.split.root), shuffle=self.shuffle,
                                drop_last=self.drop_last, seed=self.seed,
                                item_shuffle_window=0,
                                transform=_Apply(self.transform, self.seed, self.epoch))

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"StreamLoader: epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def samples_per_rank(self) -> int:
        return self._length

    def __len__(self) -> int:
        n, b = self._length, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def state_dict(self) -> dict[str, Any]:
        """litdata's position after the batches yielded so far in this epoch (JSON-able)."""
        if self._loader is None:
            raise RuntimeError("StreamLoader.state_dict: no batch was drawn yet")
        return self._loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` at the next `batches(start)` (start = the batches it holds)."""
        self._resume = state

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate from batch `start` of the current epoch: 0, or the batches of the state
        given to `load_state_dict`."""
        state, self._resume = self._resume, None
        loader = StreamingDataLoader(self._dataset(), batch_size=self.batch_size,
                                     num_workers=self.num_workers, collate_fn=_collate,
                                     drop_last=self.drop_last,
                                     persistent_workers=False)
        if start:
            self._check_resume(state, start)
            loader.load_state_dict(state)
        else:
            loader.current_epoch = self.epoch  # litdata adds 1 as iteration starts
        self._loader = loader
        log = os.environ.get(SAMPLE_LOG_ENV)
        for step, (x, y, ids) in enumerate(loader, start):
            self.last_ids = ids
            if log:
                with open(log, "a") as f:
                    f.write(f"{self.split.root.name} {os.environ.get('RANK', '0')} "
                            f"{self.epoch} {step} "
                            f"{' '.join(map(str, ids.tolist()))}\n")
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.normalize_batches:
                x = normalize(x.float(), self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _check_resume(self, state: dict[str, Any] | None, start: int) -> None:
        if state is None:
            raise ValueError(f"StreamLoader: resuming at batch {start} needs the stream's "
                             f"state (load_state_dict), which this checkpoint lacks")
        seen = state.get("num_samples_yielded")
        seen = sum(seen) if isinstance(seen, list) else seen
        want = start * self.batch_size
        if state.get("current_epoch") != self.epoch + 1 or seen != want:
            raise ValueError(f"StreamLoader: the saved stream state is at epoch "
                             f"{state.get('current_epoch', 0) - 1} after {seen} samples, not "
                             f"epoch {self.epoch} after {want} (batch {start})")
