"""The interface every cnnzoo model shares, and the input check in front of it.

A model is `forward_head(forward_features(x))`. Each family sets the class attributes
`family` and `paper`, and in `__init__` the instance attributes `num_classes`,
`num_features`, `input_size` (native C, H, W) and `min_input_size` (smallest H = W the
network accepts in its current configuration).
"""

from __future__ import annotations

import torch
from torch import nn


class ZooModel(nn.Module):
    family: str = ""
    paper: str = ""

    num_classes: int
    num_features: int
    input_size: tuple[int, int, int]
    min_input_size: int

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

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Reject an input the network cannot take with one line that names the model.

        Without this, a wrong channel count or a too-small image fails deep inside a
        convolution with a message about weights, not about the image.
        """
        c = self.input_size[0]
        m = self.min_input_size
        expected = f"expected (N, {c}, H, W) with H, W >= {m}"
        if x.dim() != 4:
            raise ValueError(f"{self.name}: {expected}, got a {x.dim()}-D tensor {tuple(x.shape)}")
        if x.shape[1] != c:
            raise ValueError(f"{self.name}: {expected}, got {x.shape[1]} channels {tuple(x.shape)}")
        if x.shape[2] < m or x.shape[3] < m:
            raise ValueError(f"{self.name}: {expected}, got an image of {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{self.name}: {expected}, got an empty batch {tuple(x.shape)}")
