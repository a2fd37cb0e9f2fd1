"""Per-sample decoding and the named recipes (cnnzoo.data.recipe), on images made here."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import recipe
from cnnzoo.data.recipe import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode,
    decode_pil,
    get_preset,
    make_transform,
    random_resized_crop_box,
)


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(pixels)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-looking RGB image (upsampled noise), so JPEG keeps it close."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def coordinate_image(h: int, w: int) -> np.ndarray:
    """R = column, G = row (mod 256), B = 7: every pixel says where it came from."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, np.full_like(x, 7)], axis=2).astype(np.uint8)


# ----------------------------------------------------------------------------------- decoding

def test_grayscale_palette_and_rgba_images_decode_to_rgb():
    pixels = smooth_image(40, 50)
    gray = decode(encode(pixels, "JPEG", mode="L"), "gray.jpg")
    assert gray.shape == (40, 50, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    for mode in ("RGBA", "P", "L", "LA"):
        out = decode(encode(pixels, "PNG", mode=mode), f"x.{mode}.png")
        assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    # PNG is lossless: an RGB PNG comes back exactly, and RGBA just loses its alpha.
    assert (decode(encode(pixels, "PNG"), "rgb.png") == pixels).all()
    assert (decode(encode(pixels, "PNG", mode="RGBA"), "rgba.png") == pixels).all()


def test_cmyk_jpeg_decodes_to_rgb_close_to_the_original():
    pixels = smooth_image(64, 64)
    out = decode(encode(pixels, "JPEG", mode="CMYK", quality=95), "cmyk.jpg")
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(int) - pixels).mean() < 4


@pytest.mark.parametrize("data", [b"not an image at all", b"\xff\xd8\xff\xe0 garbage",
                                  b""], ids=["garbage", "jpeg-magic-garbage", "empty"])
def test_undecodable_bytes_give_one_line_naming_the_source(data):
    with pytest.raises(ValueError) as err:
        decode(data, "train/cat/cat.0042.jpg")
    msg = str(err.value)
    assert msg.startswith("train/cat/cat.0042.jpg: cannot decode image") and "\n" not in msg


def test_a_truncated_jpeg_gives_one_line_naming_the_source():
    data = encode(smooth_image(200, 300), quality=90)
    with pytest.raises(ValueError) as err:
        decode(data[: len(data) // 2], "shard-00003/17")
    assert str(err.value).startswith("shard-00003/17: cannot decode image")
    assert "\n" not in str(err.value)


def test_fast_decoder_and_pillow_give_the_same_pixels():
    # Both are libjpeg-turbo with the integer DCT and fancy upsampling; the dev extra
    # installs simplejpeg, so this test runs (a missing decoder fails here, not skips).
    import simplejpeg

    rng = np.random.default_rng(1)
    for seed, (h, w) in enumerate([(350, 400), (333, 500), (64, 48)]):
        pixels = smooth_image(h, w, seed)
        pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
        for subsampling in (0, 2):  # 4:4:4 and 4:2:0
            data = encode(pixels, quality=90, subsampling=subsampling)
            fast = simplejpeg.decode_jpeg(data, colorspace="RGB").astype(int)
            slow = decode_pil(data, "x.jpg").astype(int)
            assert fast.shape == slow.shape == (h, w, 3)
            assert np.abs(fast - slow).max() <= 2  # stated tolerance: 2 levels of 255


def test_decode_falls_back_to_pillow_without_the_fast_decoder(monkeypatch):
    data = encode(smooth_image(30, 40))
    with_fast = decode(data, "x.jpg")
    monkeypatch.setattr(recipe, "simplejpeg", None)
    assert recipe.fast_decoder() is None
    assert np.abs(decode(data, "x.jpg").astype(int) - with_fast).max() <= 2
    with pytest.raises(ValueError, match="^x.jpg: cannot decode image"):
        decode(b"\xff\xd8 broken", "x.jpg")


# ------------------------------------------------------------------------- transform outputs

@pytest.mark.parametrize("preset,size", [("imagenet", None), ("imagenet", 96),
                                         ("imagenet-ta", None), ("cifar", None),
                                         ("cifar", 24)])
@pytest.mark.parametrize("train", [True, False])
def test_transforms_give_uint8_chw_of_the_requested_size(preset, size, train):
    side = size or get_preset(preset).size
    t = make_transform(preset, train, size)
    images = [encode(smooth_image(350, 400)), encode(smooth_image(60, 300), "PNG"),
              encode(smooth_image(400, 70), mode="L"), encode(smooth_image(32, 32), "PNG")]
    for i, data in enumerate(images):
        out = t(data, f"img{i}", np.random.default_rng(i))
        assert out.shape == (3, side, side) and out.dtype == torch.uint8
        assert out.is_contiguous()


def test_train_transforms_are_deterministic_given_the_rng_and_vary_with_it():
    data = encode(smooth_image(350, 400))
    for preset in ("imagenet", "imagenet-ta", "cifar"):
        t = make_transform(preset, train=True)
        a = t(data, "x", np.random.default_rng(5))
        b = t(data, "x", np.random.default_rng(5))
        assert torch.equal(a, b)
        others = [t(data, "x", np.random.default_rng(s)) for s in range(6, 10)]
        assert any(not torch.equal(a, o) for o in others)


def test_transforms_survive_pickling_for_spawned_workers():
    data = encode(smooth_image(100, 120))
    for preset in ("imagenet", "imagenet-ta", "cifar"):
        for train in (True, False):
            t = make_transform(preset, train)
            t2 = pickle.loads(pickle.dumps(t))
            assert torch.equal(t(data, "x", np.random.default_rng(3)),
                               t2(data, "x", np.random.default_rng(3)))


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown augmentation preset 'imagnet'; known: "
                                         "imagenet, imagenet-ta, cifar"):
        make_transform("imagnet", train=True)


def test_imagenet_preset_exposes_the_imagenet_statistics():
    p = get_preset("imagenet")
    assert p.mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert p.std == IMAGENET_STD == (0.229, 0.224, 0.225)
    assert p.size == 224


# ------------------------------------------------------------------------------ evaluation

def test_imagenet_eval_is_the_centred_224_crop_of_a_256_image():
    # 256 on the short side already: no resize, so the crop is exact. Offsets as torchvision's
    # CenterCrop: round((256 - 224) / 2) = 16, round((400 - 224) / 2) = 88.
    pixels = coordinate_image(256, 400)
    out = make_transform("imagenet", train=False)(encode(pixels, "PNG"), "x",
                                                 np.random.default_rng(0))
    expect = torch.from_numpy(pixels[16:240, 88:312].copy()).permute(2, 0, 1)
    assert torch.equal(out, expect)


def test_imagenet_eval_resizes_the_shorter_side_to_256_first():
    # A 512 x 800 image halves to 256 x 400; the crop then starts at row 16, column 88. A white
    # band over input columns 400..407 (the span [400, 408), centre 404 -> 202 after halving,
    # i.e. between pixels 201 and 202) must be centred on output column 201.5 - 88 = 113.5, and
    # one over rows 300..307 on output row 151.5 - 16 = 135.5. Off by one pixel in the resize
    # or the crop moves a centre by >= 0.5.
    pixels = np.zeros((512, 800, 3), np.uint8)
    pixels[:, 400:408] = 255
    pixels[300:308, :] = 255
    out = make_transform("imagenet", train=False)(encode(pixels, "PNG"), "x",
                                                 np.random.default_rng(0))
    assert out.shape == (3, 224, 224)
    col_profile = out[0, :100].float().mean(0)  # rows away from the horizontal band
    row_profile = out[0, :, :80].float().mean(1)
    centre = (col_profile * torch.arange(224)).sum() / col_profile.sum()
    middle = (row_profile * torch.arange(224)).sum() / row_profile.sum()
    assert abs(centre.item() - 113.5) < 0.1
    assert abs(middle.item() - 135.5) < 0.1


def test_cifar_eval_returns_the_image_itself():
    pixels = smooth_image(32, 32)
    out = make_transform("cifar", train=False)(encode(pixels, "PNG"), "x", None)
    assert torch.equal(out, torch.from_numpy(pixels.copy()).permute(2, 0, 1))


def test_cifar_train_is_a_shifted_crop_of_the_zero_padded_image_maybe_flipped():
    pixels = coordinate_image(32, 32)
    padded = np.pad(pixels, ((4, 4), (4, 4), (0, 0)))
    t = make_transform("cifar", train=True)
    seen_flips = set()
    for seed in range(20):
        out = t(encode(pixels, "PNG"), "x", np.random.default_rng(seed)).permute(1, 2, 0).numpy()
        matches = [(y, x, f) for y in range(9) for x in range(9) for f in (False, True)
                   if (out == (padded[y:y + 32, x:x + 32][:, ::-1] if f
                               else padded[y:y + 32, x:x + 32])).all()]
        assert matches, f"seed {seed}: output is not a crop of the padded image"
        seen_flips.add(matches[0][2])
    assert seen_flips == {False, True}


# ---------------------------------------------------------------------- the train crop's law

def test_random_resized_crop_falls_back_to_the_centred_box_after_ten_misses():
    # 20 px high and 1000 wide: any box of at least 8% of the area is more than 20 px high,
    # so all 10 draws miss; the fallback keeps the full height and trims the width to 4/3.
    rng = np.random.default_rng(0)
    assert random_resized_crop_box(20, 1000, rng) == (0, (1000 - 27) // 2, 20, 27)
    assert random_resized_crop_box(1000, 20, rng) == ((1000 - 27) // 2, 0, 27, 20)


def test_random_resized_crop_area_and_aspect_follow_the_preset():
    """2000 boxes on a 2000 x 2000 image against the law the algorithm implies.

    Each draw is s ~ U(0.08, 1) (area fraction) and u ~ U(-a, a), a = log(4/3) (log aspect
    w/h); on a square image the box fits iff s <= exp(-|u|), and a miss is re-drawn (10 misses
    in a row have probability ~1e-8). So accepted (s, u) are uniform on that region, giving
      E[s]             = (1 - e^{-2a} - 0.08^2 * 2a) / 2 / (2(1 - e^{-a}) - 0.08 * 2a) = 0.478,
      E[u]             = 0 (log-uniform ratio, symmetric),
      P(|u| <= a / 2)  = (1 - e^{-a/2} - 0.08 a/2) / (1 - e^{-a} - 0.08 a)          = 0.540.
    A crop clamped instead of re-drawn has E[s] = 0.54; a ratio uniform instead of
    log-uniform has E[u] = 0.027 (7 standard errors off).
    """
    n, side = 2000, 2000
    rng = np.random.default_rng(2024)
    boxes = np.array([random_resized_crop_box(side, side, rng) for _ in range(n)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= side).all() and (left + w <= side).all()
    s = h * w / side**2
    u = np.log(w / h)
    a = math.log(4 / 3)
    assert s.min() >= 0.08 - 0.002 and s.max() <= 1.0
    assert np.abs(u).max() <= a + 0.002

    mean_s = (1 - math.exp(-2 * a) - 0.08**2 * 2 * a) / 2 / (2 * (1 - math.exp(-a)) - 0.08 * 2 * a)
    p_inner = (1 - math.exp(-a / 2) - 0.08 * a / 2) / (1 - math.exp(-a) - 0.08 * a)
    # Standard errors with n = 2000: s.std() ~ 0.25 -> 0.0056; u ~ 0.0037; the bin ~ 0.011.
    assert abs(s.mean() - mean_s) < 0.02
    assert abs(u.mean()) < 0.012
    assert abs((np.abs(u) <= a / 2).mean() - p_inner) < 0.035
    # Offsets are uniform over the slack: the box centres average to the image centre.
    assert abs((left + w / 2).mean() / side - 0.5) < 0.02


@pytest.mark.parametrize("h,w", [(350, 400), (120, 150)], ids=["shrink", "enlarge"])
def test_imagenet_train_output_is_pillows_resize_of_the_drawn_box(h, w):
    # torchvision's PIL path: crop the box, Image.resize(BILINEAR), flip. The recipe resizes
    # with torch's uint8 antialiased kernel, which must give Pillow's pixels (1 level allowed).
    pixels = smooth_image(h, w)
    data = encode(pixels, "PNG")
    t = make_transform("imagenet", train=True)
    for seed in range(4):
        out = t(data, "x", np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        top, left, bh, bw = random_resized_crop_box(h, w, rng)
        crop = Image.fromarray(pixels[top:top + bh, left:left + bw])
        expect = np.asarray(crop.resize((224, 224), Image.BILINEAR))
        if rng.random() < 0.5:
            expect = expect[:, ::-1]
        diff = (out.permute(1, 2, 0).int() - torch.from_numpy(expect.astype(np.int32))).abs()
        assert diff.max() <= 1
