"""Experiment `deformable`: do a deformable ResNet's offsets adapt to the object?

Dai et al. 2017, "Deformable Convolutional Networks", arXiv:1703.06211
(https://arxiv.org/abs/1703.06211). Claim (§4, Fig. 5 and 6, Table 2): the learned offsets
adapt the sampling grid to the object's shape and scale ("the receptive field sizes of
deformable filters are correlated with object sizes"), which makes the network better at
objects under geometric variation.

Protocol. A CIFAR-style ResNet (`CifarResNet`, depth 6n + 2, `base_width` w) and its
deformable twin: the last `deform_layers` 3x3 convs (default 3, all in the last stage: Dai et
al. deform the three 3x3 convs of conv5 and found "3 as a good trade-off", Table 1) become
`DeformConv2d`s holding the same weights and zero-initialised offsets, so both nets start as
the same function from the same weights,
see the same batches, and differ only by the offsets they learn. A deformation draws per image
a rotation in [-rotate_degrees, rotate_degrees], a zoom in `scale` and an elastic distortion
(Simard et al. 2003, ICDAR, "Best Practices for Convolutional Neural Networks Applied to
Visual Document Analysis": a uniform [-1, 1] displacement field smoothed by a Gaussian of
`elastic_sigma` pixels and scaled by `elastic_alpha` pixels), all in one bilinear resampling.
Each pair of nets is trained twice:

- clean: on the clean training images (no augmentation);
- deformed: on the same images, each deformed once by a random draw (a fixed augmented copy:
  the trainer's batch pipeline has no elastic transform), validation deformed too.

Every net is tested once on the clean test images and once on the same images deformed by
one fixed draw (the same for every net, so differences are paired).

Offsets, measured on the net trained on deformed images (and reported for the clean one):
the effective dilation of Dai et al.'s Table 2, the mean distance between adjacent sampling
points of a 3x3 filter, in units of the layer's input grid (1 for a regular convolution),
averaged over the deformable layers, at each output unit. A unit is "object" when at least
3/4 of its cell (the stride x stride pixels around its centre) is foreground (pixel > 10%
of full scale), "background" when none is.
- scale elasticity: `probe_images` test images (a stratified, seeded pick) are rendered at
  each of `probe_scales` (zoom only); per image, the slope of log(mean object-unit
  dilation) on log(scale). 1 means the sampling grid grows with the object, 0 that it
  ignores the object's size (a regular convolution). Mean and standard error over images.
- object vs background: mean dilation on object units minus on background units of the same
  deformed test image (paired over `probe_images` images).
- the picture (Fig. 5 of the paper): for a unit on the object and one on the background, the
  9 x 9 sampling points of the last two stacked deformable layers, in image pixels.

Verdict (explicit thresholds):
- accuracy, per training protocol: `margin` (Welch t over seeds, differences divided by at
  least 0.5 points with one seed) of deformable over plain on the deformed test set:
  >= 2 supported, <= -2 not supported, in between inconclusive (within noise).
- offsets adapt to the object's scale: mean elasticity >= 0.1 with mean - 3 SE > 0
  supported; mean + 3 SE < 0.1 not supported; otherwise inconclusive.
- overall: supported when every claim is, not supported when every claim is not,
  inconclusive when every claim is, mixed otherwise.

Deviations from the paper: Fashion-MNIST 28 x 28 with synthetic geometric variation instead
of VOC/COCO detection and segmentation; a CIFAR ResNet-20 of width 8 instead of ResNet-101;
deformable layers at stride 4 without the paper's dilated conv5; a fixed augmented copy
instead of augmentation drawn per epoch; a few epochs; offsets trained at the base learning
rate (the paper's beta = 1).

Run time (2 CPU cores, AMD EPYC): tiny a few seconds; quick 76 s measured (4 nets of 5,000
images x 3 epochs, 4,000 test images); full about 40 minutes, extrapolated, not run (3 seeds
x 4 nets of 20,000 images x 8 epochs at width 16, 10,000 test images).

Standard preset (issue 15; committed before its first run): ResNet-20 at width 8 with 3
deformable layers against its plain twin, 6,000 training images for 6 epochs under each
protocol, 3 seeds, test on 10,000 images, 300 probe images for the offsets' scale
elasticity. Why: the accuracy claims compare small gaps that one seed could not resolve in the
quick run (the deformed-training gap was inconclusive); 3 seeds measure their spread, and
the larger probe set tightens the elasticity estimate. Estimated ~9 min on 2 cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnzoo.data import ImageDataset
from cnnzoo.data.dataset import stratified_indices
from cnnzoo.experiments._deformations import deformed_copy, zoomed
from cnnzoo.experiments._margin_power import floored_power, margin_floor_binds, no_estimate
from cnnzoo.experiments._offsets import (
    object_vs_background,
    offsets_of,
    sampling_points,
    scale_elasticity,
    unit_masks,
)
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import accuracy, fit, load_splits, margin, mean_std, pct
from cnnzoo.models.resnet_cifar import CifarResNet, make_deformable
from cnnzoo.profile.receptive_field import receptive_field

MARGIN = 2.0  # accuracy: deformable - plain, in standard errors (see common.margin)
ELASTICITY = 0.1  # offsets adapt when the sampling spread grows >= 0.1 x log object scale
NETS = ("plain", "deformable")
PROTOCOLS = ("clean", "deformed")  # what the nets are trained on

PRESETS = {
    "tiny": dict(depth=8, width=4, train_size=200, val_size=50, test_size=100, epochs=1,
                 batch_size=50, lr=0.05, seeds=1, deform_layers=2, rotate_degrees=30.0,
                 scale=[0.6, 1.1], elastic_alpha=34.0, elastic_sigma=4.0, probe_images=8,
                 probe_scales=[0.5, 0.75, 1.0]),
    "quick": dict(depth=20, width=8, train_size=5000, val_size=1000, test_size=4000, epochs=3,
                  batch_size=128, lr=0.1, seeds=1, deform_layers=3, rotate_degrees=30.0,
                  scale=[0.6, 1.1], elastic_alpha=34.0, elastic_sigma=4.0, probe_images=200,
                  probe_scales=[0.5, 0.625, 0.75, 0.875, 1.0]),
    "standard": {"depth": 20, "width": 8, "train_size": 6000, "val_size": 1000, "test_size": 10000,
                 "epochs": 6, "batch_size": 128, "lr": 0.1, "seeds": 3, "deform_layers": 3,
                 "rotate_degrees": 30.0, "scale": [0.6, 1.1], "elastic_alpha": 34.0,
                 "elastic_sigma": 4.0, "probe_images": 300,
                 "probe_scales": [0.5, 0.625, 0.75, 0.875, 1.0]},
    "full": dict(depth=20, width=16, train_size=20000, val_size=2000, test_size=10000,
                 epochs=8, batch_size=128, lr=0.1, seeds=3, deform_layers=3,
                 rotate_degrees=30.0, scale=[0.6, 1.1], elastic_alpha=34.0, elastic_sigma=4.0,
                 probe_images=500, probe_scales=[0.5, 0.625, 0.75, 0.875, 1.0]),
}


# ---- the experiment -----------------------------------------------------------------------


@experiment(
    "deformable",
    title="Deformable convolution: offsets that adapt to the object",
    paper="Dai et al. 2017, Deformable Convolutional Networks, arXiv:1703.06211",
    claim="The learned offsets adapt the sampling grid to the object's shape and scale, "
          "helping on objects under geometric variation.",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    m = measure(ctx)
    v = judge(m)
    _plot_accuracy(ctx, m.acc)
    _plot_offsets(ctx, m.offsets)
    _plot_sampling(ctx, *m.kept["deformed"], m.test, m.probe)
    return finding(ctx, m, v)


# ---- measure ------------------------------------------------------------------------------


@dataclass
class Measured:
    """What `measure` found.

    Attributes:
        acc: training protocol -> net -> test set ("clean", "deformed") -> accuracy per seed.
        curves: "protocol/net" -> validation accuracy per epoch (first seed).
        kept: protocol -> the first seed's trained deformable net and its deformable convs.
        n_params: net -> parameters.
        offsets: protocol -> "scale" (`scale_elasticity`) and "object_vs_background".
        test: the clean test images; probe: `probe_images` of them (uint8), a stratified, seeded
            pick (`stratified_indices`).
    """

    acc: dict[str, dict[str, dict[str, list[float]]]]
    curves: dict[str, list[float]]
    kept: dict[str, tuple[nn.Module, list[str]]]
    n_params: dict[str, int]
    offsets: dict[str, dict[str, Any]]
    test: ImageDataset
    probe: torch.Tensor
    # measured seconds: "<protocol> per seed" (both nets trained and tested), "elasticity per
    # image" (the scale probe of one net); the power estimates' cost per unit
    timing: dict[str, float] = field(default_factory=dict)


def measure(ctx: Context) -> Measured:
    """Train every pair of nets under both protocols, test each on clean and deformed test
    images, and read the offsets of the first seed's deformable nets."""
    p = ctx.params
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"],
                         test_size=p["test_size"])
    test_deformed = deformed_copy(splits.test, p, ctx.seed + 10_000)
    acc: dict[str, dict[str, dict[str, list[float]]]] = {
        pr: {net: {"clean": [], "deformed": []} for net in NETS} for pr in PROTOCOLS}
    curves: dict[str, list[float]] = {}
    kept: dict[str, tuple[nn.Module, list[str]]] = {}
    n_params: dict[str, int] = {}
    spent = {protocol: 0.0 for protocol in PROTOCOLS}
    for i in range(p["seeds"]):
        seed = ctx.seed + i
        for protocol in PROTOCOLS:
            start = time.perf_counter()
            train, val = splits.train, splits.val
            if protocol == "deformed":
                train = deformed_copy(splits.train, p, seed + 20_000)
                val = deformed_copy(splits.val, p, seed + 30_000)
            data = type(splits)(train, val, splits.test)
            plain, twin, paths = build_pair(p["depth"], p["width"], p["deform_layers"],
                                            splits.in_chans, splits.num_classes, seed)
            for net, model in zip(NETS, (plain, twin), strict=True):
                n_params[net] = sum(t.numel() for t in model.parameters())
                model, rows = fit(ctx, model, data, epochs=p["epochs"], seed=seed,
                                  batch_size=p["batch_size"], lr=p["lr"])
                a_clean = accuracy(model, splits.test)
                a_def = accuracy(model, test_deformed)
                acc[protocol][net]["clean"].append(a_clean)
                acc[protocol][net]["deformed"].append(a_def)
                if i == 0:
                    curves[f"{protocol}/{net}"] = [r["val_acc"] for r in rows]
                    if net == "deformable":
                        kept[protocol] = (model, paths)
                ctx.log(f"seed {seed} trained on {protocol}, {net}: test clean {pct(a_clean)}, "
                        f"deformed {pct(a_def)} ({sum(r['epoch_time_s'] for r in rows):.0f} s)")
            spent[protocol] += time.perf_counter() - start
    timing = {f"{protocol} per seed": spent[protocol] / p["seeds"] for protocol in PROTOCOLS}

    # The same stratified, seeded pick of test images, clean and deformed.
    pick = stratified_indices(splits.test.labels, min(p["probe_images"], len(splits.test)),
                              seed=ctx.seed + 40_000, num_classes=splits.test.num_classes)
    probe = splits.test.images[pick]
    probe_deformed = test_deformed.images[pick]
    offsets: dict[str, dict[str, Any]] = {}
    for protocol, (model, paths) in kept.items():
        start = time.perf_counter()
        scale = scale_elasticity(model, paths, splits.test, probe, p["probe_scales"])
        if protocol == "deformed":
            timing["elasticity per image"] = (time.perf_counter() - start) / max(len(probe), 1)
        offsets[protocol] = {
            "scale": scale,
            "object_vs_background": object_vs_background(model, paths, splits.test,
                                                          probe_deformed)}
    return Measured(acc, curves, kept, n_params, offsets, splits.test, probe, timing)


def build_pair(depth: int, width: int, deform_layers: int, in_chans: int, num_classes: int,
               seed: int) -> tuple[CifarResNet, CifarResNet, list[str]]:
    """The plain-conv ResNet and its deformable twin, from the same initial weights."""
    torch.manual_seed(seed)
    plain = CifarResNet(depth, base_width=width, in_chans=in_chans, num_classes=num_classes)
    twin = CifarResNet(depth, base_width=width, in_chans=in_chans, num_classes=num_classes)
    twin.load_state_dict(plain.state_dict())
    return plain, twin, make_deformable(twin, deform_layers)


# ---- verdict -----------------------------------------------------------------------------


def accuracy_verdict(deform: list[float], plain: list[float]) -> tuple[str, float]:
    """Deformable vs plain on the deformed test set, by `margin` against MARGIN."""
    t = margin(deform, plain)
    return ("supported" if t >= MARGIN else "not supported" if t <= -MARGIN
            else "inconclusive"), t


def elasticity_verdict(mean: float, se: float) -> str:
    if not math.isfinite(mean):
        return "inconclusive"
    if mean >= ELASTICITY and mean - 3 * se > 0:
        return "supported"
    if mean + 3 * se < ELASTICITY:
        return "not supported"
    return "inconclusive"


@dataclass
class Verdicts:
    """What `judge` concluded: claim -> verdict, and protocol -> accuracy margin."""

    claims: dict[str, str]
    margins: dict[str, float]
    power: dict[str, Any] = field(default_factory=dict)


def judge(m: Measured) -> Verdicts:
    """Every claim's verdict, by the module docstring's rules."""
    claims: dict[str, str] = {}
    margins: dict[str, float] = {}
    power: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        deform, plain = (m.acc[protocol]["deformable"]["deformed"],
                         m.acc[protocol]["plain"]["deformed"])
        v, t = accuracy_verdict(deform, plain)
        claim = f"deformable beats plain on deformed test images (trained {protocol})"
        claims[claim] = v
        margins[protocol] = round(t, 2)
        if v == "inconclusive":
            power[claim] = floored_power(
                t, len(deform), seconds_per_unit=m.timing.get(f"{protocol} per seed", math.nan),
                floor_binds=margin_floor_binds(deform, plain))
    el = m.offsets["deformed"]["scale"]
    claim = "offsets adapt to the object's scale (trained deformed)"
    claims[claim] = elasticity_verdict(el["elasticity"], el["elasticity_se"])
    if claims[claim] == "inconclusive":
        power[claim] = elasticity_power(el, m.timing.get("elasticity per image", math.nan))
    return Verdicts(claims, margins, power)


def elasticity_power(el: dict[str, Any], seconds_per_image: float) -> dict[str, Any]:
    """Probe images that would decide the elasticity claim at the measured mean: the rule
    needs 3 standard errors (mean - 3 SE > 0 above the threshold, mean + 3 SE < it below), so
    t is mean / SE above ELASTICITY and (ELASTICITY - mean) / SE below it, at z = 3. The SE
    is over images of one trained net: more images do not sample other seeds."""
    mean, se, n = el["elasticity"], el["elasticity_se"], el["images"]
    if not math.isfinite(mean) or not se or n < 2:
        return no_estimate("no finite elasticity and standard error over >= 2 images", n,
                           "images")
    t = mean / se if mean >= ELASTICITY else (ELASTICITY - mean) / se
    return floored_power(t, n, seconds_per_unit=seconds_per_image, unit="images", z=3.0)


# ---- finding ------------------------------------------------------------------------------


def finding(ctx: Context, m: Measured, v: Verdicts) -> Finding:
    """results.json's numbers and finding.md's text."""
    p, acc, margins, n_params = ctx.params, m.acc, v.margins, m.n_params

    def acc_text(protocol: str, net: str) -> str:
        mean, s = mean_std(acc[protocol][net]["deformed"])
        return pct(mean) + (f" ± {100 * s:.2f}" if p["seeds"] > 1 else "")

    el = m.offsets["deformed"]["scale"]
    ob = m.offsets["deformed"]["object_vs_background"]
    summary = (
        f"On deformed test images (rotation ±{p['rotate_degrees']:g}°, zoom {p['scale']}, "
        f"elastic α={p['elastic_alpha']:g} σ={p['elastic_sigma']:g}), trained on clean images: "
        f"plain {acc_text('clean', 'plain')}, deformable {acc_text('clean', 'deformable')} "
        f"(margin {margins['clean']:+.1f}); trained on deformed images: plain "
        f"{acc_text('deformed', 'plain')}, deformable {acc_text('deformed', 'deformable')} "
        f"(margin {margins['deformed']:+.1f}); {p['seeds']} seed(s). Accuracy thresholds: "
        f"margin >= {MARGIN:g} supported, <= -{MARGIN:g} not supported, else within noise "
        f"(one seed: a difference below {MARGIN * 0.5:g} points is noise). Offsets of the net "
        f"trained on deformed images: the effective dilation on the object grows with the "
        f"object's zoom with elasticity {el['elasticity']:.3f} ± {el['elasticity_se']:.3f} "
        f"(SE over {el['images']} images; threshold >= {ELASTICITY:g} with mean - 3 SE > 0; a "
        f"regular convolution gives 0, a grid that scales with the object 1); dilation on "
        f"object units {ob['object']} vs background {ob['background']} (difference "
        f"{ob['difference']} ± {ob['difference_se']})."
    )
    measured = {
        "accuracy": acc, "margins": margins, "val_acc_curves": m.curves, "offsets": m.offsets,
        "deformable_convs": m.kept["deformed"][1], "params": n_params,
        "test_images": len(m.test), "timing_s": m.timing, "power": v.power,
    }
    return Finding(
        combine_verdicts(v.claims.values()), summary, measured, claims=v.claims,
        paper=("Dai et al. Fig. 5 / Table 2: the deformable layers' effective dilation grows "
               "with object size (small < medium < large); Table 1: deforming the last 3x3 "
               "convs of ResNet-101 gains about +3 to +4 mAP in detection and segmentation "
               "(VOC, Cityscapes; DeepLab, Faster R-CNN, R-FCN). Ours: elasticity "
               f"{el['elasticity']:.3f} (the size dependence; 0 for a regular grid) and "
               "deformable minus plain on deformed images "
               f"{_gap(acc, 'clean'):+.2f} points trained clean, {_gap(acc, 'deformed'):+.2f} "
               "trained deformed (the robustness gain)."),
        details=[f"deformable convs: {', '.join(m.kept['deformed'][1])}; parameters: plain "
                 f"{n_params['plain']:,}, deformable {n_params['deformable']:,} (the offset "
                 f"convs add {100 * (n_params['deformable'] / n_params['plain'] - 1):.0f}%; no "
                 "parameter-matched plain control was trained, so part of an accuracy gain may "
                 "be capacity)",
                 "offsets from the first seed's nets; test deformation drawn once (seed "
                 f"{ctx.seed + 10_000}) for every net"]
        + [f"Power ({claim}, inconclusive): {est['text']}." for claim, est in v.power.items()])


def _gap(acc: dict, protocol: str) -> float:
    """Deformable minus plain on the deformed test images, mean over seeds, in points."""
    return 100 * (mean_std(acc[protocol]["deformable"]["deformed"])[0]
                  - mean_std(acc[protocol]["plain"]["deformed"])[0])


# ---- plots --------------------------------------------------------------------------------


def _plot_accuracy(ctx: Context, acc: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    groups = [(pr, t) for pr in acc for t in ("clean", "deformed")]
    for k, (net, color) in enumerate((("plain", "tab:gray"), ("deformable", "tab:red"))):
        stats = [mean_std(acc[pr][net][t]) for pr, t in groups]
        xs = [g + (k - 0.5) * 0.36 for g in range(len(groups))]
        ax.bar(xs, [100 * m for m, _ in stats], 0.36, yerr=[100 * s for _, s in stats],
               color=color, label=net)
        for x, (m, _) in zip(xs, stats, strict=True):
            ax.text(x, 100 * m + 0.5, f"{100 * m:.1f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"trained {pr}\ntested {t}" for pr, t in groups], fontsize=8)
    low = min(min(acc[pr][n][t]) for pr, t in groups for n in acc[pr])
    ax.set_ylim(max(0, 100 * low - 10), 110)
    ax.set_yticks([t for t in ax.get_yticks() if t <= 100])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Plain vs deformable ResNet, clean and deformed test images")
    ax.legend(loc="upper right", ncol=2, fontsize=8)
    ctx.save_plot(fig, "accuracy.png")


def _plot_offsets(ctx: Context, offsets: dict) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for (protocol, o), color in zip(offsets.items(), ("tab:blue", "tab:red"), strict=False):
        s = o["scale"]
        a.errorbar(s["scales"], s["dilation_by_scale"], yerr=s["dilation_by_scale_se"],
                   marker="o", color=color,
                   label=f"trained {protocol} (elasticity {s['elasticity']:.2f})")
    a.axhline(1.0, color="gray", ls="--", lw=1, label="regular conv")
    a.ticklabel_format(axis="y", useOffset=False)
    a.set_xlabel("zoom of the test image")
    a.set_ylabel("effective dilation on object units")
    a.set_title("Sampling spread vs object size")
    a.legend(fontsize=7)
    names = list(offsets)
    for k, (where, color) in enumerate((("object", "tab:orange"), ("background", "tab:green"))):
        vals = [offsets[n]["object_vs_background"][where] for n in names]
        b.plot([i + (k - 0.5) * 0.2 for i in range(len(names))],
               [math.nan if v is None else v for v in vals], "o", ms=8, color=color,
               label=f"{where} units")
    b.axhline(1.0, color="gray", ls="--", lw=1, label="regular conv")
    b.ticklabel_format(axis="y", useOffset=False)
    b.set_xlim(-0.6, len(names) - 0.4)
    b.set_xticks(range(len(names)))
    b.set_xticklabels([f"trained {n}" for n in names])
    b.set_ylabel("effective dilation (deformed test images)")
    b.set_title("Object vs background")
    b.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_plot(fig, "dilation.png")


def _plot_sampling(ctx: Context, model: nn.Module, paths: list[str], ds: ImageDataset,
                   probe: torch.Tensor) -> None:
    """Paper Fig. 5: the 9 x 9 sampling points of the last two deformable layers for a unit
    on the object (red) and one on the background (blue), at two zooms of two images."""
    plt = pyplot()
    last = paths[-2:]
    strides = [model.get_submodule(q).stride[0] for q in last]
    h, w = probe.shape[2:]
    row = receptive_field(model, tuple(probe.shape[1:])).by_path()[last[0]]
    # The first layer's input grid: its output's start (padding = (k - 1) / 2 keeps the
    # centre) and its output's jump divided by its stride.
    jump = [j / strides[0] for j in row.jump]
    start = row.start
    panels = [(i, z) for i in range(min(len(probe), 2)) for z in (1.0, 0.6)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), squeeze=False)
    for ax, (i, z) in zip(axes[0], panels, strict=True):
        img = zoomed(probe[i:i + 1], z)
        x = (img.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) \
            / torch.tensor(ds.std).view(1, -1, 1, 1)
        offs = [o[0] for o in offsets_of(model, last, x)]
        obj, bg = unit_masks(img, offs[-1].shape[-2:])
        ax.imshow(img[0].float().mean(0).numpy(), cmap="gray", vmin=0, vmax=255)
        for mask, color, label in ((obj[0], "red", "object unit"),
                                   (bg[0], "deepskyblue", "background unit")):
            units = mask.nonzero().float()
            if not len(units):
                continue
            # the object unit nearest the object's centre, the background unit nearest a corner
            target = units.mean(0) if color == "red" else torch.zeros(2)
            u = units[(units - target).norm(dim=1).argmin()].long().tolist()
            pts = sampling_points(offs, tuple(u), strides)
            regular = sampling_points([torch.zeros_like(o) for o in offs], tuple(u), strides)
            for q, c, size, alpha in ((regular, "white", 4, 0.35), (pts, color, 5, 1.0)):
                q = q.numpy()
                ax.scatter(start[1] + jump[1] * q[:, 1], start[0] + jump[0] * q[:, 0], s=size,
                           c=c, alpha=alpha, label=label if c == color else None)
            centre = [start[a] + row.jump[a] * u[a] for a in (0, 1)]
            ax.scatter([centre[1]], [centre[0]], s=40, marker="x", c="lime")
        # a margin shows the points that fall outside the image (they read zeros)
        ax.set_xlim(-0.5 - w / 4, w - 0.5 + w / 4)
        ax.set_ylim(h - 0.5 + h / 4, -0.5 - h / 4)
        ax.add_patch(plt.Rectangle((-0.5, -0.5), w, h, fill=False, ec="gray", lw=0.8))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"test image {i}, zoom {z:g}", fontsize=8)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Sampling points of the last two deformable layers (81 per unit; white: the "
                 "regular grid; x: the unit)", fontsize=9)
    ctx.save_plot(fig, "sampling.png")
