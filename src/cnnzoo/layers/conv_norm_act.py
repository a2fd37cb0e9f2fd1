"""Conv -> norm -> activation, the unit most of the zoo is built from."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


class ConvNormAct(nn.Sequential):
    """`conv` (no bias when a norm follows), `norm`, `act`, as an `nn.Sequential`.

    The children are indexed 0, 1, 2 like torchvision's `Conv2dNormActivation`, so the
    state-dict keys read `<name>.0.weight`, `<name>.1.running_mean`. Padding defaults to
    `dilation * (kernel_size - 1) // 2` ("same" for odd kernels at stride 1).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        *,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
    ):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding,
                      dilation=dilation, groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_chs))
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_chs
