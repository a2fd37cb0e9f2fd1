"""`cnnzoo predict`: the top-k classes, with probabilities, of image files.

Each image is read with Pillow (PNG, JPEG and whatever else Pillow opens), turned upright
by its EXIF orientation, converted to the model's channel count (grayscale "L" or "RGB",
Pillow's ITU-R 601-2 luma for colour -> gray), then preprocessed as recorded in the
checkpoint: a plain bilinear resize to the training (H, W) (anti-aliased when shrinking;
no crop, so a non-square photo is squeezed, as the training data would have been), scaling
to [0, 1] and normalisation with the training mean/std.

With published weights (`Predictor.from_pretrained`, `cnnzoo predict MODEL --pretrained`) the
preprocessing is the weights' own evaluation transform instead (`PublishedPreprocess`: the
shorter side resized, a center crop, their mean/std), and the classes are ImageNet-1k's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from cnnzoo.checkpoint.info import ModelInfo
from cnnzoo.data.augment import normalize
from cnnzoo.data.shards import open_shards
from cnnzoo.data.stream import StreamLoader, eval_transform
from cnnzoo.infer.backends import Deployed, deploy
from cnnzoo.infer.loading import load_model
from cnnzoo.models.imagenet_classes import IMAGENET_CLASSES
from cnnzoo.models.pretrained import cache_path
from cnnzoo.models.registry import create_model
from cnnzoo.models.weights import Preprocessing, get_weights

BATCH = 64  # images per forward pass


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first.

    Attributes:
        path: the image file.
        labels: class indices.
        classes: class names.
        probs: softmax probabilities.
    """

    path: Path
    labels: list[int]
    classes: list[str]
    probs: list[float]


def read_image(path: str | os.PathLike, in_chans: int) -> torch.Tensor:
    """One image file as uint8 (C, H, W) with C = in_chans (1: grayscale, 3: RGB).

    Raises:
        FileNotFoundError: no such file. ValueError: not an image Pillow can decode.
    """
    path = Path(path)
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ValueError(f"{path}: the model takes {in_chans}-channel images; image files "
                         f"can feed only 1 (grayscale) or 3 (RGB)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            array = np.asarray(ImageOps.exif_transpose(img).convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:  # SyntaxError: some PIL plugins' "broken"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable image (PNG/JPEG through Pillow): "
                         f"{reason}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class PublishedPreprocess:
    """The evaluation transform of published weights, as torchvision's `ImageClassification`
    preset applies it to a tensor: resize the shorter side to `resize` (the longer in
    proportion, antialiased), center-crop `crop` x `crop`, scale to [0, 1], normalise.

    It stands where a checkpoint's `Preprocess` does (the same `apply`)."""

    weights: Preprocessing

    def apply(self, images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalised float32 (N, C, crop, crop) on `device`."""
        p = self.weights
        x = images.to(device).float()
        h, w = x.shape[-2:]
        short, long = min(h, w), max(h, w)
        size_long = int(p.resize * long / short)
        size = (p.resize, size_long) if h <= w else (size_long, p.resize)
        x = F.interpolate(x, size=size, mode=p.interpolation, align_corners=False,
                          antialias=True).clamp_(0, 255)  # bicubic overshoots
        if min(size) < p.crop:
            raise ValueError(f"resize {p.resize} is smaller than the crop {p.crop}")
        top, left = round((size[0] - p.crop) / 2), round((size[1] - p.crop) / 2)
        x = x[..., top:top + p.crop, left:left + p.crop].contiguous()
        return normalize(x, p.mean, p.std)


class Predictor:
    """A model with its preprocessing and class names, ready to classify image files.

    Args:
        model: in eval mode, returning logits.
        info: from `load_model`.
        device: where the model is.
        backend: a deployment backend (`cnnzoo.infer.backends.BACKENDS`, CPU only), built by
            `deploy` on the first batch predicted (checked against eager on it).
        calibration: image files to calibrate int8 on (required for int8: predict has no
            data of the model's own; the images being classified are not used for it).
    """

    def __init__(self, model: nn.Module, info: ModelInfo,
                 device: str | torch.device = "cpu", *, backend: str = "eager",
                 calibration: Sequence[str | os.PathLike] | None = None) -> None:
        self.model = model.eval()
        self.info = info
        self.device = torch.device(device)
        self.backend = backend
        self.calibration = list(calibration) if calibration else None
        self.deployed: Deployed | None = None
        if backend != "eager" and self.device.type != "cpu":
            raise ValueError(f"--backend {backend}: deployment backends run on the CPU; use "
                             f"--device cpu")
        if backend == "int8" and not self.calibration:
            raise ValueError("--backend int8: needs --calibration DIR, image files like the "
                             "ones to classify (not those), to calibrate int8 ranges on")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "eager":
            return self.model(x)
        if self.deployed is None:
            calibration = None if self.calibration is None else [
                self.inputs(self.calibration[i:i + BATCH])
                for i in range(0, len(self.calibration), BATCH)]
            self.deployed = deploy(self.model, self.backend, x, calibration=calibration)
        return self.deployed(x)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, weights: str = "auto",
                  device: str | torch.device = "cpu", **deployment: Any) -> Predictor:
        """From a checkpoint or an exported .safetensors file (see `load_model`);
        `deployment`: `backend` and `calibration`, as for the constructor."""
        model, info = load_model(path, weights=weights, device=device)
        return cls(model, info, device, **deployment)

    @classmethod
    def from_pretrained(cls, name: str, tag: str | bool = True, *,
                        device: str | torch.device = "cpu", **deployment: Any) -> Predictor:
        """A registered model with its published ImageNet-1k weights (downloaded once, see
        `create_model(pretrained=)`), their preprocessing and the 1000 class names."""
        entry = get_weights(name, tag)
        model = create_model(name, pretrained=entry.tag).to(device)
        info = ModelInfo(
            model_name=name, model_options=dict(entry.options), num_classes=entry.num_classes,
            in_chans=3, classes=list(IMAGENET_CLASSES),
            preprocess=PublishedPreprocess(entry.preprocessing),  # the same `apply`
            weights=f"{entry.source} {entry.tag}", source=cache_path(entry))
        return cls(model, info, device, **deployment)

    def inputs(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """The model's input for these image files: normalised float (N, C, H, W)."""
        pre = self.info.preprocess
        batch = [pre.apply(read_image(p, self.info.in_chans)[None], self.device)
                 for p in paths]  # one at a time: the files differ in size
        return torch.cat(batch)

    @torch.no_grad()
    def probabilities(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """Softmax probabilities (N, num_classes) for the image files."""
        out = [self._run(self.inputs(paths[i:i + BATCH])).float().softmax(1).cpu()
               for i in range(0, len(paths), BATCH)]
        return torch.cat(out)

    def predict(self, paths: Sequence[str | os.PathLike], topk: int = 5) -> list[Prediction]:
        """The top-k classes of each image (k capped at the number of classes)."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if not paths:
            raise ValueError("no image files given")
        k = min(topk, self.info.num_classes)
        probs, labels = self.probabilities(paths).topk(k, dim=1)
        return [Prediction(Path(p), lab.tolist(), [self.info.classes[i] for i in lab.tolist()],
                           pr.tolist())
                for p, lab, pr in zip(paths, labels, probs, strict=True)]


def predict_shards(predictor: Predictor, path: str | os.PathLike, split: str = "val", *,
                   topk: int = 5, workers: int = 0) -> list[Prediction]:
    """The top-k classes of every image of a packed split (`cnnzoo data pack`), streamed in
    order and preprocessed as the evaluation of the run's recipe (`--recipe`; without one,
    decoded and resized to the trained size). Each Prediction's path is SHARDS/SPLIT#ID,
    ID the sample id `pack` gave the image (its place in the source listing)."""
    shards = open_shards(path)
    if list(shards.classes) != list(predictor.info.classes):
        raise ValueError(f"{path}: its classes differ from the model's")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    part = shards.split(split)
    pre = predictor.info.preprocess
    recipe = (getattr(predictor.info, "config", None) or {}).get("recipe")
    loader = StreamLoader(part, BATCH, transform=eval_transform(pre.image_size, part.in_chans,
                                                                recipe), num_workers=workers,
                          device=predictor.device, mean=pre.mean, std=pre.std)
    k = min(topk, predictor.info.num_classes)
    out = []
    with torch.no_grad():
        for x, _ in loader:
            probs, labels = predictor._run(x).float().softmax(1).cpu().topk(k, dim=1)
            for i, lab, pr in zip(loader.last_ids.tolist(), labels, probs, strict=True):
                out.append(Prediction(Path(f"{path}/{split}#{i}"), lab.tolist(),
                                      [predictor.info.classes[c] for c in lab.tolist()],
                                      pr.tolist()))
    return out


def predict_images(path: str | os.PathLike, images: Sequence[str | os.PathLike], *,
                   topk: int = 5, weights: str = "auto",
                   device: str | torch.device = "cpu") -> list[Prediction]:
    """Classify image files with a checkpoint or exported .safetensors model.

    Args:
        path: the model file.
        images: image file paths.
        topk: classes per image (capped at the number of classes).
        weights: "auto" (what validation used: EMA if kept), "model" or "ema".
        device: "cpu", "cuda", ...
    """
    return Predictor.from_file(path, weights=weights, device=device).predict(images, topk)


def format_predictions(predictions: Sequence[Prediction]) -> str:
    """One block per image: its path, then `  probability  class` lines."""
    lines = []
    for pred in predictions:
        lines.append(str(pred.path))
        width = max(len(c) for c in pred.classes)
        for name, label, p in zip(pred.classes, pred.labels, pred.probs, strict=True):
            lines.append(f"  {100 * p:6.2f}%  {name.ljust(width)}  (label {label})")
    return "\n".join(lines)
