"""Augmentation and preprocessing on whole batches of tensors, never per image in Python.

Every random choice for a sample comes from one row of uniform numbers `u` (N, N_UNIFORMS)
that the caller draws (the `BatchLoader` draws them per epoch from a seeded generator) and
`plan_augment` turns into per-image parameters (an `AugmentPlan`), so a batch's augmentation
is a pure function of those numbers: reproducible, and independent of how the batch was split
across processes. Positive rotation angles turn counter-clockwise, as in torchvision.

Sources: random crop with padding and horizontal flip as in He et al. 2015 (arXiv:1512.03385,
§4.2, CIFAR: "4 pixels are padded on each side, and a 32x32 crop is randomly sampled");
random erasing from Zhong et al. 2017, "Random Erasing Data Augmentation" (arXiv:1708.04896),
Alg. 1 with s_l=0.02, s_h=0.4, r_1=0.3. Deviations: the erased box is filled with 0 after
normalisation (the mean pixel) rather than random values, and a box that would not fit is
clipped to the image instead of re-drawn (no per-image retry loop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Column of `u` that drives each random choice; fixed so that enabling one augmentation
# never changes the draws of another.
_CROP_Y, _CROP_X, _FLIP, _ERASE, _ERASE_AREA, _ERASE_RATIO, _ERASE_Y, _ERASE_X = range(8)
_ROTATE, _SCALE = 8, 9
N_UNIFORMS = 10


@dataclass
class Augment:
    """Which augmentations to apply, with their parameters.

    Attributes:
        crop_padding: pad each side by this many pixels, then crop back to the original size
            at a random offset (0 = no crop).
        crop_size: side of that random crop, taken after the padding; None = the image's own
            size. A smaller crop trains on part of each image (with no resize, so objects keep
            their scale) at a fraction of the pixels: a cheaper step for fully convolutional
            nets, which can then be evaluated on whole images.
        padding_mode: "zeros" pads with black pixels (value 0 before normalisation, like
            torchvision's RandomCrop), "reflect" mirrors the border (as airbench does).
        hflip: flip each image left-right with probability 1/2.
        alternate_flip: with hflip, draw each image's coin once per run instead of once per
            epoch and flip it in every other epoch (the `BatchLoader` does this; Jordan 2024,
            "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498, §3.6): any
            two consecutive epochs show each image both ways round, where independent coins
            repeat the same view in half the pairs.
        random_erasing: probability per image of erasing one random box.
        erasing_area: range of the box's area as a fraction of the image (s_l, s_h).
        erasing_ratio: range of the box's aspect ratio h/w (r_1, 1/r_1), drawn log-uniformly.
        rotate_degrees: rotate by an angle uniform in [-rotate_degrees, rotate_degrees].
        scale: zoom by a factor uniform in (low, high); None = no zoom. Rotation and zoom share
            one bilinear resampling (affine_grid), with black outside the image.
    """

    crop_padding: int = 0
    crop_size: int | None = None
    padding_mode: str = "zeros"
    hflip: bool = False
    alternate_flip: bool = False
    random_erasing: float = 0.0
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_ratio: tuple[float, float] = (0.3, 1 / 0.3)
    rotate_degrees: float = 0.0
    scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"Augment: crop_padding must be >= 0, got {self.crop_padding}")
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"Augment: crop_size must be >= 1 pixel, got {self.crop_size}")
        if self.padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"Augment: padding_mode must be 'zeros' or 'reflect', "
                             f"got {self.padding_mode!r}")
        if self.alternate_flip and not self.hflip:
            raise ValueError("Augment: alternate_flip=True needs hflip=True")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"Augment: random_erasing is a probability in [0, 1], "
                             f"got {self.random_erasing}")
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"Augment: scale must be (low, high) with 0 < low <= high, "
                             f"got {self.scale}")

    @property
    def geometric(self) -> bool:
        return self.rotate_degrees != 0 or self.scale is not None


def crop_flip(x: torch.Tensor, padding: int, offsets: torch.Tensor, flip: torch.Tensor,
              padding_mode: str = "zeros", size: tuple[int, int] | None = None) -> torch.Tensor:
    """Random crop after padding, and horizontal flip, as one row selection and one column
    gather over the whole batch.

    Args:
        x: (B, C, H, W), any dtype.
        padding: pixels added on each side before cropping.
        offsets: int64 (B, 2), the crop's top-left corner (y, x) in the padded image, each in
            [0, H + 2 * padding - crop height] (and likewise for x).
        flip: bool (B,), which images are flipped (after the crop, like torchvision).
        size: the crop's (height, width); None = (H, W).

    Returns:
        (B, C, height, width).
    """
    b, c = x.shape[:2]
    h, w = size if size is not None else x.shape[2:]
    if padding:
        mode = "constant" if padding_mode == "zeros" else "reflect"
        x = F.pad(x, (padding,) * 4, mode=mode)
    hp, wp = x.shape[2:]
    dev = x.device
    # Rows: whole padded rows picked by index_select (a memcpy per row, much faster than an
    # element-wise gather): row (b, c, i) of the output is row (b, c, oy_b + i) of the input.
    first = (torch.arange(b * c, device=dev) * hp).view(b, c, 1) + offsets[:, 0].view(b, 1, 1)
    rows = (first + torch.arange(h, device=dev)).reshape(-1)
    x = x.reshape(b * c * hp, wp).index_select(0, rows).view(b, c, h, wp)
    # Columns: per image a window starting at ox_b, reversed for flipped images.
    j = torch.arange(w, device=dev)
    cols = offsets[:, 1:2] + torch.where(flip[:, None], w - 1 - j, j)  # (B, W)
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def rotate_scale(x: torch.Tensor, degrees: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate each image by `degrees` and zoom it by `scale` (both (B,)), bilinear, black fill."""
    a = degrees * (math.pi / 180)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    zero = torch.zeros_like(cos)
    # affine_grid maps output coordinates to input ones, so a zoom by s samples at coords / s.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def erasing_boxes(apply: torch.Tensor, area: torch.Tensor, log_ratio: torch.Tensor,
                  pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Random-erasing boxes for images of `size` (H, W).

    Args:
        apply: bool (N,); an image not selected gets an empty box.
        area: (N,) box area as a fraction of H * W.
        log_ratio: (N,) natural log of the box's aspect ratio h / w.
        pos: (N, 2) uniforms in [0, 1) placing the box's top-left corner.

    Returns:
        int64 (N, 4): top, left, bottom, right (exclusive).
    """
    h, w = size
    ratio = log_ratio.exp()
    bh = (area * h * w * ratio).sqrt().round().clamp(1, h).long()
    bw = (area * h * w / ratio).sqrt().round().clamp(1, w).long()
    y0 = (pos[:, 0] * (h - bh + 1)).long()
    x0 = (pos[:, 1] * (w - bw + 1)).long()
    box = torch.stack([y0, x0, y0 + bh, x0 + bw], 1)
    return box * apply[:, None]  # (0, 0, 0, 0) is empty


def erase_boxes(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Set each image's box (from `erasing_boxes`) to 0, the mean once normalised; in place."""
    _, _, h, w = x.shape
    boxes = boxes.to(x.device)
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= boxes[:, 0:1]) & (ys < boxes[:, 2:3])  # (B, H)
    in_cols = (xs >= boxes[:, 1:2]) & (xs < boxes[:, 3:4])  # (B, W)
    erase = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.mul_(~erase)  # multiplying by a bool mask is ~4x faster than masked_fill on CPU


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, for x in [0, 255] pixel units; in place on x."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255
    return x.sub_(m).div_(s)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a batch; anti-aliased only when shrinking (it changes nothing when
    enlarging and costs time)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


@dataclass
class AugmentPlan:
    """Every random choice for N images, drawn up front (the BatchLoader draws one plan per
    epoch, so a batch only indexes it: fewer, larger tensor operations per batch).

    Attributes:
        offsets: int64 (N, 2), crop corner (y, x) in the padded image.
        flip: bool (N,).
        degrees: (N,) rotation angle, counter-clockwise.
        scale: (N,) zoom factor.
        boxes: int64 (N, 4) erasing box (top, left, bottom, right) at the output size.
    """

    offsets: torch.Tensor
    flip: torch.Tensor
    degrees: torch.Tensor
    scale: torch.Tensor
    boxes: torch.Tensor

    def take(self, index: torch.Tensor) -> AugmentPlan:
        return AugmentPlan(*(t[index] for t in (self.offsets, self.flip, self.degrees,
                                                self.scale, self.boxes)))


def crop_window(in_size: tuple[int, int], aug: Augment) -> tuple[int, int]:
    """(height, width) of `aug`'s crop from images of `in_size`; the crop must fit the padded
    image."""
    if aug.crop_size is None:
        return in_size
    p = aug.crop_padding
    if aug.crop_size > min(in_size) + 2 * p:
        raise ValueError(f"Augment: crop_size {aug.crop_size} does not fit {in_size[0]}x"
                         f"{in_size[1]} images padded by {p}")
    return aug.crop_size, aug.crop_size


def plan_augment(u: torch.Tensor, aug: Augment, in_size: tuple[int, int],
                 image_size: int | None = None) -> AugmentPlan:
    """Turn uniforms (N, N_UNIFORMS) into per-image parameters for images of `in_size` (H, W),
    resized to `image_size` (None = not resized)."""
    p = aug.crop_padding
    crop = crop_window(in_size, aug)
    out_size = crop if image_size is None else (image_size, image_size)  # erasing's frame
    slack = torch.tensor([in_size[0] + 2 * p - crop[0], in_size[1] + 2 * p - crop[1]])
    offsets = torch.minimum((u[:, [_CROP_Y, _CROP_X]] * (slack + 1)).long(), slack)
    flip = (u[:, _FLIP] < 0.5) & aug.hflip
    degrees = (2 * u[:, _ROTATE] - 1) * aug.rotate_degrees
    lo, hi = aug.scale if aug.scale is not None else (1.0, 1.0)
    scale = lo + (hi - lo) * u[:, _SCALE]
    a_lo, a_hi = aug.erasing_area
    r_lo, r_hi = math.log(aug.erasing_ratio[0]), math.log(aug.erasing_ratio[1])
    boxes = erasing_boxes(
        apply=u[:, _ERASE] < aug.random_erasing,
        area=a_lo + (a_hi - a_lo) * u[:, _ERASE_AREA],
        log_ratio=r_lo + (r_hi - r_lo) * u[:, _ERASE_RATIO],
        pos=u[:, [_ERASE_Y, _ERASE_X]],
        size=out_size,
    )
    return AugmentPlan(offsets, flip, degrees, scale, boxes)


def apply_plan(x: torch.Tensor, plan: AugmentPlan, aug: Augment, *, mean: Sequence[float],
               std: Sequence[float], image_size: int | None = None) -> torch.Tensor:
    """Augment, resize and normalise a batch in pixel units.

    Order: crop + flip, rotate/zoom, resize, normalise, erase. Geometric steps happen at the
    stored resolution (so crop_padding is in the data set's pixels); erasing comes last so its
    box is 0 = the mean in normalised units.

    Args:
        x: (B, C, H, W) uint8, or float in [0, 255] (consumed: may be modified in place).
            Crop and flip run before the conversion to float, on a quarter of the bytes.
        plan: the batch's parameters (`plan_augment(...).take(...)`).
        aug: what to apply.
        mean, std: per-channel statistics in [0, 1] units.
        image_size: square output side, or None to keep the size.

    Returns:
        Normalised (B, C, H', W') float.
    """
    if aug.crop_padding or aug.hflip or aug.crop_size is not None:
        x = crop_flip(x, aug.crop_padding, plan.offsets.to(x.device), plan.flip.to(x.device),
                      aug.padding_mode, crop_window(tuple(x.shape[-2:]), aug))
    x = x if x.is_floating_point() else x.float()
    if aug.geometric:
        x = rotate_scale(x, plan.degrees.to(x.device), plan.scale.to(x.device))
    if image_size is not None:
        x = resize(x, image_size)
    x = normalize(x, mean, std)
    if aug.random_erasing > 0:
        x = erase_boxes(x, plan.boxes)
    return x


def augment_batch(x: torch.Tensor, u: torch.Tensor, aug: Augment, *,
                  mean: Sequence[float], std: Sequence[float],
                  image_size: int | None = None) -> torch.Tensor:
    """`apply_plan` with the plan drawn from uniforms `u` (B, N_UNIFORMS), one row per image."""
    plan = plan_augment(u, aug, tuple(x.shape[-2:]), image_size)
    return apply_plan(x, plan, aug, mean=mean, std=std, image_size=image_size)


def preprocess(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
               image_size: int | None = None, device: str | torch.device = "cpu",
               channels_last: bool = False) -> torch.Tensor:
    """The evaluation path: uint8 (B, C, H, W) -> normalised float on `device`, resized to
    `image_size` if given. The same steps the BatchLoader applies without augmentation."""
    x = images.to(device, non_blocking=True).float()
    if image_size is not None:
        x = resize(x, image_size)
    x = normalize(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
