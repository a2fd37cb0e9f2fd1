"""Small arithmetic shared by the families."""

from __future__ import annotations


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below 90% of it.

    The rule of the TensorFlow MobileNet/EfficientNet code (and torchvision's
    `_make_divisible`): channel counts stay hardware-friendly multiples of 8 while the
    rounding cannot shrink a layer by more than 10%.
    """
    if min_value is None:
        min_value = divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new
