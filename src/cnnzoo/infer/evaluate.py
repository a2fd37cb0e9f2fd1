"""`cnnzoo eval`: top-1, top-5, per-class accuracy and the confusion matrix of a trained model.

The data go through the path training validated with: the whole split stays uint8, each
batch is resized to the recorded image size and normalised with the checkpoint's mean/std
(the training split's, not the evaluated split's), and the model runs in eval mode with the
weights validation used (the EMA when the run kept one). Top-5 is top-min(5, classes).

Outputs (`write_report`): metrics.json, per_class.csv, confusion.csv (rows = true class,
columns = predicted class, counts) and confusion.png (rows normalised to recall, so a class
with few images is as visible as one with many).
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checkpoint.info import ModelInfo, Preprocess
from cnnzoo.data.dataset import ImageDataset, stratified_subset, train_val_split
from cnnzoo.data.shards import ShardSplit, is_shard_dir, open_shards
from cnnzoo.data.sources import load_dataset
from cnnzoo.data.stream import StreamLoader, eval_transform
from cnnzoo.fileio import atomic_write
from cnnzoo.infer.backends import deploy
from cnnzoo.infer.loading import load_model

SPLITS = ("test", "val", "train")
TOP_K = 5


@dataclass
class EvalResult:
    """Accuracy of a model on one data split.

    Attributes:
        classes: class names, index = label.
        confusion: int64 (C, C); entry [t, p] counts images of true class t predicted as p.
        topk_correct: images whose true class is among the k highest logits.
        k: the k of top-k: min(5, number of classes).
        loss: mean cross-entropy (no label smoothing), nats per image.
        model, source, data, split, weights: what was evaluated, for the record.
        backend: the deployment backend that computed the logits (`cnnzoo.infer.backends`).
        eager_top1: with a backend other than eager, eager's top-1 on the same images, so
            the accuracy a backend costs is measured, not assumed; else None.
        deploy_check: the backend's agreement with eager as `deploy` measured it.
    """

    classes: list[str]
    confusion: torch.Tensor
    topk_correct: int
    k: int
    loss: float
    model: str = ""
    source: str = ""
    data: str = ""
    split: str = ""
    weights: str = ""
    backend: str = "eager"
    eager_top1: float | None = None
    deploy_check: dict[str, Any] | None = None

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return int(self.confusion.diagonal().sum()) / max(self.num_images, 1)

    @property
    def topk(self) -> float:
        return self.topk_correct / max(self.num_images, 1)

    @property
    def support(self) -> list[int]:
        """Images per true class."""
        return self.confusion.sum(1).tolist()

    @property
    def per_class(self) -> list[float | None]:
        """Accuracy (recall) per true class; None for a class without images."""
        return [None if n == 0 else int(self.confusion[i, i]) / n
                for i, n in enumerate(self.support)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "checkpoint": self.source, "data": self.data,
            "split": self.split, "weights": self.weights, "num_images": self.num_images,
            "top1": self.top1, "top5": self.topk, "top5_k": self.k, "loss": self.loss,
            "backend": self.backend, "eager_top1": self.eager_top1,
            "deploy_check": self.deploy_check,
            "per_class": [{"class": c, "support": n, "accuracy": a} for c, n, a in
                          zip(self.classes, self.support, self.per_class, strict=True)],
            "confusion": self.confusion.tolist(),
        }


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: ImageDataset, preprocess: Preprocess, *,
                   batch_size: int = 256, device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate `model` (in eval mode) on `dataset`, batch by batch.

    Args:
        model: returns logits (N, num_classes) for a normalised batch (a module, or a
            `Deployed` backend).
        dataset: images and labels; its own mean/std are ignored in favour of `preprocess`.
        preprocess: resize and normalisation, as recorded at training.
        batch_size: images per forward pass.
        device: where the batches go (the model must be there already).
    """
    batches = ((preprocess.apply(dataset.images[start:start + batch_size], device),
                dataset.labels[start:start + batch_size].to(device))
               for start in range(0, len(dataset), batch_size))
    return _evaluate_batches(model, batches, list(dataset.classes))


def evaluate_stream(model: nn.Module, split: ShardSplit, classes: list[str],
                    preprocess: Preprocess, *, batch_size: int = 256,
                    device: str | torch.device = "cpu", workers: int = 0,
                    recipe: str | None = None) -> EvalResult:
    """`evaluate_model` over a packed split (`cnnzoo data pack`), streamed: each image through
    the evaluation transform of the training `recipe` (e.g. imagenet: resize 256, center crop
    224), or without one decoded and resized to the recorded size, in `workers` processes,
    normalised with `preprocess`."""
    loader = StreamLoader(split, batch_size,
                          transform=eval_transform(preprocess.image_size, split.in_chans, recipe),
                          num_workers=workers, device=device, mean=preprocess.mean,
                          std=preprocess.std)
    return _evaluate_batches(model, loader, classes)


@torch.no_grad()
def _evaluate_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      classes: list[str]) -> EvalResult:
    if isinstance(model, nn.Module):  # a `Deployed` backend is already built for inference
        model.eval()
    num_classes = len(classes)
    k = min(TOP_K, num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    topk_correct, loss_sum, count = 0, 0.0, 0
    for x, y in batches:
        count += len(y)
        logits = model(x).float()
        if logits.shape[1] != num_classes:
            raise ValueError(f"model gives {logits.shape[1]} logits, the data have "
                             f"{num_classes} classes")
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        topk_correct += int((logits.topk(k, dim=1).indices == y[:, None]).any(1).sum())
        pred = logits.argmax(1)
        confusion += torch.bincount((y * num_classes + pred).cpu(),
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
    return EvalResult(list(classes), confusion, topk_correct, k, loss_sum / max(count, 1))


def load_split(config: dict[str, Any], data: str, split: str, *,
               data_dir: str | None = None) -> ImageDataset:
    """The split to evaluate on. "val" re-draws the validation split the run held out of the
    training split, from the run's recorded `val_size` and `seed`.

    Args:
        config: the run's TrainConfig dict (for "val": its val_size and seed).
        data: data set name or path (see `cnnzoo.data.load_dataset`).
        split: "test", "val" or "train".
        data_dir: first folder to search for a named data set.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split != "val":
        return load_dataset(data, split, data_dir=data_dir)
    val_size, seed = config.get("val_size"), config.get("seed")
    if not val_size or seed is None:
        raise ValueError("split 'val': the checkpoint's run held out no validation split "
                         "(val_size 0 or not recorded); use --split test")
    size = int(val_size) if val_size >= 1 else float(val_size)  # as the trainer reads it
    return train_val_split(load_dataset(data, "train", data_dir=data_dir), size, seed=seed)[1]


def check_compatible(info: ModelInfo, dataset: ImageDataset) -> None:
    """One-line errors for data the model cannot be scored on; a warning for renamed classes."""
    where = f"{info.source} ({info.model_name})"
    if dataset.num_classes != info.num_classes:
        raise ValueError(f"class count mismatch: {where} predicts {info.num_classes} classes, "
                         f"data {dataset.name!r} has {dataset.num_classes}")
    if dataset.in_chans != info.in_chans:
        raise ValueError(f"channel mismatch: {where} takes {info.in_chans}-channel images, "
                         f"data {dataset.name!r} has {dataset.in_chans}")
    if list(dataset.classes) != list(info.classes):
        differ = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in
                  enumerate(zip(info.classes, dataset.classes, strict=True)) if a != b]
        warnings.warn(f"class names differ between {info.source} and data {dataset.name!r} "
                      f"(label {', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}); "
                      f"scoring by label index", stacklevel=2)


CALIBRATION_IMAGES = 256  # int8/bf16 calibration: a stratified subset of the training images
CALIBRATION_SEED = 0


def calibration_batches(config: dict[str, Any], data: str, split: str, preprocess: Preprocess,
                        *, data_dir: str | None = None, batch_size: int = 64,
                        count: int = CALIBRATION_IMAGES) -> list[torch.Tensor]:
    """Preprocessed batches for calibrating int8: a seeded, stratified subset of the training
    images the evaluated split does not hold (the training split less the run's held-out
    validation images), never the evaluated images, so calibration cannot flatter the score.

    Raises:
        ValueError: evaluating the training split itself, or no training split to draw from.
    """
    if split == "train":
        raise ValueError("--backend int8: calibration comes from the training split, which is "
                         "the split evaluated here; evaluate --split test or val")
    try:
        train = load_dataset(data, "train", data_dir=data_dir)
    except (OSError, ValueError) as err:
        raise ValueError(f"--backend int8: calibration needs the training split of {data!r}, "
                         f"not available: {str(err).splitlines()[0]}") from None
    val_size, seed = config.get("val_size"), config.get("seed")
    if val_size and seed is not None:  # keep the run's validation images out, as "val" holds
        size = int(val_size) if val_size >= 1 else float(val_size)
        train = train_val_split(train, size, seed=seed)[0]
    subset = stratified_subset(train, min(count, len(train)), seed=CALIBRATION_SEED)
    return [preprocess.apply(subset.images[i:i + batch_size])
            for i in range(0, len(subset), batch_size)]


def evaluate_checkpoint(path: str | os.PathLike, data: str | None = None, *,
                        split: str = "test", data_dir: str | None = None,
                        weights: str = "auto", batch_size: int = 256,
                        device: str | torch.device = "cpu",
                        backend: str = "eager") -> EvalResult:
    """Evaluate a checkpoint (or an exported .safetensors) on a data split.

    Args:
        path: the model file.
        data: data set name or path; default: the one the run trained on.
        split: "test", "val" (the run's held-out validation split) or "train".
        data_dir: first folder to search for a named data set; default: the run's.
        weights: "auto" (what validation used: EMA if kept), "model" or "ema".
        batch_size: images per forward pass.
        device: "cpu", "cuda", ...
        backend: a deployment backend (`cnnzoo.infer.backends.BACKENDS`); CPU only. Any
            other than eager is built by `deploy` (checked against eager), and eager's top-1
            on the same images is kept beside its own. int8 is calibrated on
            `calibration_batches` (training images, never the evaluated ones).

    Raises:
        CheckpointError: unreadable model file. ValueError: data that do not fit the model.
    """
    model, info = load_model(path, weights=weights, device=device)
    config = info.config
    data = data or config.get("data")
    if not data:
        raise ValueError(f"{path}: no data set recorded; pass --data NAME_OR_PATH")
    if is_shard_dir(data):
        if backend != "eager":
            raise ValueError(f"--backend {backend}: a shard directory is evaluated eagerly")
        shards = open_shards(data)
        if list(shards.classes) != list(info.classes):
            raise ValueError(f"{data}: its classes differ from the model's")
        packed = shards.split("train" if split == "train" else "val")  # test: the val split
        result = evaluate_stream(model, packed, list(shards.classes), info.preprocess,
                                 batch_size=batch_size, device=device,
                                 recipe=config.get("recipe"))
        result.backend = backend
        result.model, result.source, result.data, result.split, result.weights = (
            info.model_name, str(path), str(data), split, info.weights)
        return result
    dataset = load_split(config, data, split,
                         data_dir=data_dir if data_dir is not None else config.get("data_dir"))
    check_compatible(info, dataset)
    eager_top1 = check = None
    runner = model
    if backend != "eager":
        if torch.device(device).type != "cpu":
            raise ValueError(f"--backend {backend}: deployment backends run on the CPU; "
                             f"use --device cpu")
        calibration = (calibration_batches(config, data, split, info.preprocess,
                                           data_dir=data_dir or config.get("data_dir"))
                       if backend == "int8" else None)
        example = info.preprocess.apply(dataset.images[:2])
        runner = deploy(model, backend, example, calibration=calibration)
        check = {"max_abs_diff": runner.max_abs_diff, "tolerance": runner.tolerance,
                 "top1_agreement": runner.top1_agreement, "max_rel_diff": runner.max_rel_diff,
                 "agreement_on": runner.options.get("agreement_on")}
        eager_top1 = evaluate_model(model, dataset, info.preprocess, batch_size=batch_size,
                                    device=device).top1
    result = evaluate_model(runner, dataset, info.preprocess, batch_size=batch_size,
                            device=device)
    result.backend, result.eager_top1, result.deploy_check = backend, eager_top1, check
    result.model, result.source, result.data, result.split, result.weights = (
        info.model_name, str(path), str(data), split, info.weights)
    return result


def write_report(result: EvalResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write metrics.json, per_class.csv, confusion.csv and confusion.png (each atomically).

    Returns:
        File kind -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "per_class": out / "per_class.csv",
             "confusion_csv": out / "confusion.csv", "confusion_png": out / "confusion.png"}
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    atomic_write(paths["metrics"], lambda f: f.write(text.encode()))
    rows = [["class", "support", "accuracy"]] + [
        [c, n, "" if a is None else f"{a:.6f}"]
        for c, n, a in zip(result.classes, result.support, result.per_class, strict=True)]
    atomic_write(paths["per_class"], lambda f: f.write(_csv(rows)))
    rows = [["true \\ predicted", *result.classes]] + [
        [c, *row] for c, row in zip(result.classes, result.confusion.tolist(), strict=True)]
    atomic_write(paths["confusion_csv"], lambda f: f.write(_csv(rows)))
    png = confusion_png(result)
    atomic_write(paths["confusion_png"], lambda f: f.write(png))
    return paths


def _csv(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def confusion_png(result: EvalResult) -> bytes:
    """The confusion matrix as PNG bytes: colour = fraction of the true class (row), with
    counts written in the cells when there are at most 20 classes."""
    # Agg canvas directly, not pyplot: no global backend switch, no display needed. Lazy:
    # matplotlib takes about a second to import and only this PNG needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = len(result.classes)
    counts = result.confusion.to(torch.float64)
    recall = counts / counts.sum(1, keepdim=True).clamp_min(1)
    side = min(max(4.0, 0.45 * c + 2.5), 30.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(recall.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if c <= 40:
        ax.set_xticks(range(c), result.classes, rotation=90, fontsize=8)
        ax.set_yticks(range(c), result.classes, fontsize=8)
    if c <= 20:
        for t in range(c):
            for p in range(c):
                n = int(result.confusion[t, p])
                if n:
                    ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                            color="white" if recall[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{result.model} on {result.data} ({result.split}, {result.num_images} images)"
                 f"\ntop-1 {100 * result.top1:.2f}%, top-{result.k} {100 * result.topk:.2f}%",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def format_table(result: EvalResult, max_classes: int = 20) -> str:
    """A short text summary: totals, then accuracy per class (every class up to
    `max_classes`, else the 5 worst and the 5 best)."""
    lines = [f"{result.model} on {result.data} ({result.split}, {result.num_images} images, "
             f"{result.weights} weights)",
             f"  top-1 {100 * result.top1:6.2f}%   top-{result.k} {100 * result.topk:6.2f}%   "
             f"loss {result.loss:.4f}"]
    if result.eager_top1 is not None:
        change = 100 * (result.top1 - result.eager_top1)
        lines.append(f"  backend {result.backend}: top-1 {100 * result.top1:.2f}% vs eager "
                     f"{100 * result.eager_top1:.2f}% ({change:+.2f} points)")
    rows = list(zip(result.classes, result.support, result.per_class, strict=True))
    if len(rows) > max_classes:
        ranked = sorted((r for r in rows if r[2] is not None), key=lambda r: r[2])
        rows = ranked[:5] + ranked[-5:]
        lines.append(f"  the 5 worst and 5 best of {len(result.classes)} classes:")
    width = max(len("class"), *(len(r[0]) for r in rows))
    lines.append(f"  {'class'.ljust(width)}  {'images':>6}  {'accuracy':>8}")
    for name, n, acc in rows:
        shown = "n/a" if acc is None else f"{100 * acc:.2f}%"
        lines.append(f"  {name.ljust(width)}  {n:>6}  {shown:>8}")
    return "\n".join(lines)
