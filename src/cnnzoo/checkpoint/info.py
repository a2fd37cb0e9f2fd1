"""What a model file records besides its weights: the model, its classes and its input.

`ModelInfo` is what a checkpoint (`torch_file.py`) or a safetensors export
(`safetensors_file.py`) says about the network; its `Preprocess` is the feeding training
applied without augmentation: convert to the model's channel count, resize to the recorded
(H, W), scale to [0, 1] and normalise with the training split's mean/std.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.checkpoint.torch_file import versions
from cnnzoo.data.augment import normalize, resize

RECORD_FORMAT = "cnnzoo-model-info"  # the JSON record in every export


@dataclass(frozen=True)
class Preprocess:
    """How images were fed to the model in training (the checkpoint's `preprocess` dict).

    Attributes:
        mean: per-channel mean, in [0, 1] pixel units.
        std: per-channel standard deviation, in [0, 1] pixel units.
        image_size: (H, W) the model was trained at.
        resize: whether training resized the data to image_size (recorded for the reader;
            inference always resizes to image_size, which is a no-op for data of that size).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    resize: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, in_chans: int, source: str | Path) -> Preprocess:
        try:
            pre = cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                      (int(d["image_size"][0]), int(d["image_size"][1])), bool(d["resize"]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise ValueError(f"{source}: preprocess record must hold mean, std, image_size "
                             f"[H, W] and resize, got {d!r}") from None
        if len(pre.mean) != in_chans or len(pre.std) != in_chans:
            raise ValueError(f"{source}: preprocess mean/std need {in_chans} channel values, "
                             f"got {len(pre.mean)} and {len(pre.std)}")
        return pre

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std),
                "image_size": list(self.image_size), "resize": self.resize}

    def apply(self, images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalised float32 (N, C, *image_size) on `device`."""
        x = images.to(device).float()
        x = resize(x, self.image_size)
        return normalize(x, self.mean, self.std)


@dataclass(frozen=True)
class ModelInfo:
    """What a model file records besides its weights.

    Attributes:
        model_name: registered model name.
        model_options: the builder's keyword options.
        num_classes, in_chans: the network's output and input sizes.
        classes: class names, index = label.
        preprocess: see `Preprocess`.
        weights: which weights were loaded: "model" or "ema" (the weight average).
        source: the file they came from.
        config: the training run's TrainConfig as a dict (empty when not recorded).
    """

    model_name: str
    model_options: dict[str, Any]
    num_classes: int
    in_chans: int
    classes: list[str]
    preprocess: Preprocess
    weights: str
    source: Path = field(compare=False)
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d.pop("source")
        return d


def info_from_checkpoint(ckpt: dict[str, Any], weights: str, source: str | Path) -> ModelInfo:
    """The `ModelInfo` of a checkpoint dict (from `load_checkpoint`)."""
    classes = list(ckpt.get("classes") or [str(i) for i in range(ckpt["num_classes"])])
    return ModelInfo(
        model_name=ckpt["model_name"], model_options=dict(ckpt.get("model_options") or {}),
        num_classes=int(ckpt["num_classes"]), in_chans=int(ckpt["in_chans"]), classes=classes,
        preprocess=Preprocess.from_dict(ckpt["preprocess"], in_chans=int(ckpt["in_chans"]),
                                        source=source),
        weights=weights, source=Path(source), config=dict(ckpt.get("config") or {}))


def resolve_weights(ckpt: dict[str, Any], weights: str) -> str:
    """"auto" -> the weights the checkpoint's validation used (EMA when trained with it)."""
    if weights not in ("auto", "model", "ema"):
        raise ValueError(f"weights must be 'auto', 'model' or 'ema', got {weights!r}")
    return ckpt.get("eval_weights", "model") if weights == "auto" else weights


def metadata_json(info: ModelInfo) -> str:
    """The JSON record every export carries."""
    record = {"format": RECORD_FORMAT, "format_version": 1, **info.to_dict(),
              "versions": versions()}
    return json.dumps(record, default=str)
