"""The interface every cnnzoo model shares, and the input check in front of it.

A model is `forward_head(forward_features(x))`. Each family sets the class attributes
`family` and `paper`, and in `__init__` the instance attributes `num_classes`,
`num_features`, `input_size` (native C, H, W) and `min_input_size` (smallest H = W the
network accepts in its current configuration).

`num_classes=0` builds no classifier: `forward_head` then returns what the classifier would
have received (pooled features, flattened). `features_only=True` in `create_model` uses it.

For backbones each family also names its stages: `forward_steps()` writes `forward_features`
as a chain of submodule names, and `feature_info`, set in `__init__` beside the stages it
describes (as timm's `feature_info`), gives one `FeatureInfo` per stage whose output is a
backbone feature map. `cnnzoo.models.features.FeatureExtractor` runs them; the receptive
field of each stage comes from `cnnzoo.profile.receptive_field.feature_receptive_fields`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's feature map.

    Attributes:
        module: name of the submodule whose output is the map (`"layer2"`, `"features.8"`);
            one of the model's `forward_steps()`.
        num_chs: channels of the map.
        reduction: total stride; the map's side is the input's divided by it (see the rounding
            rule of each family: padded layers round up, VGG/DenseNet pools round down).
    """

    module: str
    num_chs: int
    reduction: int


def check_image(name: str, channels: int, min_side: int, x: torch.Tensor) -> None:
    """Reject an input the network `name` cannot take with one line that names it.

    Without this, a wrong channel count or a too-small image fails deep inside a
    convolution with a message about weights, not about the image.
    """
    expected = f"expected (N, {channels}, H, W) with H, W >= {min_side}"
    if x.dim() != 4:
        raise ValueError(f"{name}: {expected}, got a {x.dim()}-D tensor {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: {expected}, got {x.shape[1]} channels {tuple(x.shape)}")
    if x.shape[2] < min_side or x.shape[3] < min_side:
        raise ValueError(f"{name}: {expected}, got an image of {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {expected}, got an empty batch {tuple(x.shape)}")


class ZooModel(nn.Module):
    family: str = ""
    paper: str = ""

    num_classes: int
    num_features: int
    input_size: tuple[int, int, int]
    min_input_size: int
    feature_info: list[FeatureInfo]

    @property
    def name(self) -> str:
        return self.__dict__.get("_zoo_name", type(self).__name__.lower())

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_zoo_name"] = value

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_steps(self) -> list[str]:
        """`forward_features` as a chain of submodule names: running them in order on the
        checked input passes through every stage of `feature_info`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Reject an input the network cannot take with one line that names the model."""
        check_image(self.name, self.input_size[0], self.min_input_size, x)
