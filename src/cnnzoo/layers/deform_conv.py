"""Deformable convolution, v1 and v2, in plain PyTorch.

- Dai et al. 2017, "Deformable Convolutional Networks", arXiv:1703.06211 (v1: each kernel tap
  reads the input at its regular grid position plus a learned 2-D offset, §2.1 eq. 2).
- Zhu et al. 2019, "Deformable ConvNets v2: More Deformable, Better Results",
  arXiv:1811.11168 (v2: each tap's sample is also scaled by a learned modulation scalar, §3.1).

The course's framing: a deformable convolution is a standard CNN convolution plus grid sampling
with 2D offsets. This file does exactly that. For every offset group, kernel tap and output
position, the sampling point is `p0 + p_k + Δp_k`; the input is sampled there bilinearly with
`F.grid_sample` (points outside the input read as zero), so the samples form the im2col column
tensor (N, C_in * kh * kw, H_out * W_out), and one (grouped) matmul with the weight finishes the
convolution. The semantics, argument layout and gradients are those of
`torchvision.ops.deform_conv2d`; the tests check equality to 1e-8 in float64 against values
torchvision produced.

No custom operator is involved: autograd differentiates the ordinary ops, and
`torch.utils.flop_counter.FlopCounterMode` counts the matmul (the same MACs as the `nn.Conv2d`
of equal shape; the bilinear sampling counts 0, like the other element-wise work). Cost on CPU:
about twice `nn.Conv2d` for forward+backward of a 3x3 256->256 layer at 28x28, and autograd
keeps the column tensor (kh * kw times the input) for backward, as an unfold-based conv does;
torchvision's op recomputes it instead (`benchmarks/deform_conv_speed.py`).

Deviations, each on purpose:
- `DeformConv2d(modulated=True)` uses mask = 2 * sigmoid(logits), not the paper's
  sigmoid(logits) (Zhu et al. 2019 §3.1, whose zero-initialised mask starts at 0.5). With the
  offset/mask conv zero-initialised (Dai et al. 2017 §2.3), a fresh `DeformConv2d` therefore
  computes exactly `nn.Conv2d` with the same weight and bias, modulated or not, so a pretrained
  ResNet's weights transfer unchanged. The range of the mask becomes (0, 2) instead of (0, 1).
- The offset/mask conv's output channels are [offsets (torchvision layout), then mask logits]; the
  papers fix no layout, and the conv is zero-initialised so no checkpoint depends on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ValueError(f"deform_conv2d: expected {name} as an int >= {minimum} or a pair of "
                         f"them, got {value!r}")
    return pair  # type: ignore[return-value]


def _next_power_of_two(n: int) -> int:
    # int(): under torch.jit.trace sizes arrive as 0-d tensors, which have no bit_length.
    return 1 << int(n - 1).bit_length()


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution (v1, or v2 when `mask` is given); `torchvision.ops.deform_conv2d`.

    Args:
        input: (N, C_in, H, W).
        offset: (N, 2 * offset_groups * kh * kw, H_out, W_out). For offset group g and kernel
            tap t (row-major over kh x kw), channel 2 * (g * kh * kw + t) is the vertical
            shift dy and the next channel the horizontal shift dx, in input pixels.
        weight: (C_out, C_in / groups, kh, kw); `groups` follows from its second dimension.
        bias: (C_out,) or None.
        stride: int or (sh, sw).
        padding: int or (ph, pw); the zero padding of a normal convolution.
        dilation: int or (dh, dw).
        mask: optional (N, offset_groups * kh * kw, H_out, W_out) modulation (DCNv2).

    Returns:
        (N, C_out, H_out, W_out), with H_out = (H + 2 ph - dh (kh - 1) - 1) // sh + 1.

    Raises:
        ValueError: when a shape or an argument does not fit the others.
    """
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        if t.dim() != 4:
            raise ValueError(f"deform_conv2d: expected a 4-D {name}, got shape "
                             f"{tuple(t.shape)}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    dh, dw = _pair(dilation, "dilation", 1)
    n, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    if c_per_group == 0 or c_in % c_per_group:
        raise ValueError(f"deform_conv2d: input has {c_in} channels, expected a multiple of "
                         f"weight.shape[1] = {c_per_group} (C_in / groups)")
    groups = c_in // c_per_group
    if c_out % groups:
        raise ValueError(f"deform_conv2d: weight has {c_out} output channels, expected a "
                         f"multiple of groups = {groups}")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps):
        raise ValueError(f"deform_conv2d: offset has {offset.shape[1]} channels, expected a "
                         f"positive multiple of 2 * kh * kw = {2 * taps}")
    offset_groups = offset.shape[1] // (2 * taps)
    if c_in % offset_groups:
        raise ValueError(f"deform_conv2d: input has {c_in} channels, expected a multiple of "
                         f"offset_groups = {offset_groups}")
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"deform_conv2d: input {h}x{w} is too small for kernel {kh}x{kw} "
                         f"with padding ({ph}, {pw}) and dilation ({dh}, {dw})")
    expected = (n, 2 * offset_groups * taps, h_out, w_out)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv2d: expected offset of shape {expected}, got "
                         f"{tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, offset_groups * taps, h_out, w_out):
        raise ValueError(f"deform_conv2d: expected mask of shape "
                         f"{(n, offset_groups * taps, h_out, w_out)}, got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"deform_conv2d: expected bias of shape ({c_out},), got "
                         f"{tuple(bias.shape)}")

    # Sampling points p0 + p_k + Δp_k in input pixels, (N, G, K, H_out, W_out) each, where
    # p0 = output position * stride - padding and p_k = tap position * dilation.
    like = dict(dtype=offset.dtype, device=offset.device)
    tap_y = (torch.arange(kh, **like) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, **like) * dw).repeat(kh)
    base_y = tap_y.view(taps, 1, 1) + (torch.arange(h_out, **like) * sh - ph).view(1, h_out, 1)
    base_x = tap_x.view(taps, 1, 1) + (torch.arange(w_out, **like) * sw - pw).view(1, 1, w_out)
    off = offset.view(n, offset_groups, taps, 2, h_out, w_out)
    y = base_y + off[:, :, :, 0]
    x = base_x + off[:, :, :, 1]

    # grid_sample takes normalised coordinates and maps them back with
    # ((g + 1) * size - 1) / 2 (align_corners=False). Padding the input with zeros to
    # power-of-two sides (zeros are what an outside sample reads anyway) makes that round trip
    # exact, so an integer sampling point stays integer: bilinear weights (1, 0) and the
    # forward-difference offset gradient torchvision gives there (a fresh layer's offsets are
    # exactly 0, so every integer point counts).
    hp, wp = _next_power_of_two(h), _next_power_of_two(w)
    if (hp, wp) != (h, w):
        input = F.pad(input, (0, wp - w, 0, hp - h))
    grid = torch.stack(((2 * x + 1) / wp - 1, (2 * y + 1) / hp - 1), dim=-1)
    grid = grid.view(n * offset_groups, taps * h_out, w_out, 2)
    cols = F.grid_sample(input.reshape(n * offset_groups, c_in // offset_groups, hp, wp), grid,
                         mode="bilinear", padding_mode="zeros", align_corners=False)
    # cols: (N * G, C_in / G, K * H_out, W_out)
    if mask is not None:
        cols = cols * mask.reshape(n * offset_groups, 1, taps * h_out, w_out)

    # im2col order (channel-major, then tap) matches weight.view(C_out, C_in / groups * K).
    cols = cols.reshape(n, groups, c_per_group * taps, h_out * w_out)
    out = weight.reshape(groups, c_out // groups, c_per_group * taps) @ cols
    out = out.view(n, c_out, h_out, w_out)  # N x C_out x H_out x W_out
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Deformable convolution whose offsets (and mask) come from a conv over the same input.

    A drop-in for `nn.Conv2d`: same arguments, same `weight`/`bias` (and state-dict keys),
    plus `conv_offset`, an `nn.Conv2d` with the same kernel size, stride, padding and dilation
    that predicts 2 * offset_groups * kh * kw offset channels (and offset_groups * kh * kw mask
    logits when `modulated`). `conv_offset` starts at zero (Dai et al. 2017 §2.3), and the mask
    is 2 * sigmoid(logits) instead of DCNv2's sigmoid(logits), so a fresh layer computes exactly
    `nn.Conv2d` with the same weight and bias: pretrained weights transfer unchanged. Read the
    offsets with a forward hook on `conv_offset`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kh, kw).
        stride: int or pair.
        padding: int or pair.
        dilation: int or pair.
        groups: weight groups, as in `nn.Conv2d`.
        bias: whether the convolution has a bias.
        offset_groups: channel groups sharing one offset field (deformable groups).
        modulated: DCNv2 modulation mask.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        offset_groups: int = 1,
        modulated: bool = False,
    ):
        super().__init__()
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv2d: expected in_channels ({in_channels}) and "
                             f"out_channels ({out_channels}) divisible by groups ({groups})")
        if offset_groups <= 0 or in_channels % offset_groups:
            raise ValueError(f"DeformConv2d: expected in_channels ({in_channels}) divisible by "
                             f"offset_groups ({offset_groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.groups = groups
        self.offset_groups = offset_groups
        self.modulated = modulated

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(in_channels, (3 if modulated else 2) * offset_groups * taps,
                                     self.kernel_size, self.stride, self.padding, self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's initialisation for the convolution, zeros for the offsets (Dai §2.3).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(x)
        mask = None
        if self.modulated:
            n_offset = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
            offset, logits = offset[:, :n_offset], offset[:, n_offset:]
            mask = 2 * torch.sigmoid(logits)  # 1 at init: see the module docstring
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, mask)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", offset_groups={self.offset_groups}, modulated={self.modulated}"
