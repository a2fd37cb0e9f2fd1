"""Counting MACs: `cnnzoo.profile` side by side with fvcore, ptflops and thop.

Three measurements, printed as Markdown tables:

1. Counts at 224x224, batch 1, for the comparison's models: each tool's GMACs, its wall
   time, and, where it disagrees with torchvision's published figure, why — read from the
   tool's own per-operator or per-layer breakdown (what it counts beyond convolutions and
   linear layers).
2. The whole registry at 224x224: `cnnzoo.profile` (building the model on the meta device
   included) against each peer counting an already built CPU model.
3. Batch 32 at each model's native resolution, where the peers must really compute: wall
   time and the peak memory each tool allocates (PyTorch's allocator, measured as in
   `cnnzoo.profile.memory`), and cnnzoo's speed-up over the fastest peer.

cnnzoo counts on the meta device with `torch.utils.flop_counter.FlopCounterMode`; the peers
run the model on real CPU tensors (fvcore traces it with `torch.jit.trace`; ptflops, backend
"pytorch", and thop hook modules). GoogLeNet is built `torchvision_compat=True` here, the
architecture behind torchvision's published 1.498 GMACs.

Usage: .venv/bin/pip install -e ".[peers]"   (fvcore, ptflops, thop: dev-only)
       .venv/bin/python benchmarks/count_vs_peers.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import io
import json
import re
import sys
import time
import warnings

import torch

import cnnzoo
from cnnzoo.profile import profile
from cnnzoo.profile.memory import measure_peak_bytes
from cnnzoo.profile.meta import MetaShortcuts
from cnnzoo.profile.published import published_top1

MODELS = ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121",
          "se_resnet50", "efficientnet_b0"]
OPTIONS = {"googlenet": {"torchvision_compat": True}}
COUNTED = {"conv", "convolution", "linear", "matmul", "addmm", "bmm", "mm", "einsum", "Conv2d",
           "Linear"}


def build(name: str, device: str = "cpu") -> torch.nn.Module:
    # On meta, weight initialisation is skipped as `profile(name)` does (no values to fill).
    skip_init = MetaShortcuts() if device == "meta" else contextlib.nullcontext()
    with torch.device(device), skip_init:
        model = cnnzoo.create_model(name, **OPTIONS.get(name, {}))
    model.name = name
    return model.eval()


# ---- the four counters: (MACs per image, {extra kind: MACs}) ---------------------------------


def count_cnnzoo(name: str, shape: tuple[int, ...]) -> tuple[int, dict]:
    return profile(build(name, "meta"), shape).macs_per_image, {}


def count_fvcore(model, shape) -> tuple[int, dict]:
    from fvcore.nn import FlopCountAnalysis

    x = torch.randn(shape)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analysis.total()
    extras = {k: v for k, v in analysis.by_operator().items() if k not in COUNTED and v}
    return total // shape[0], {k: v // shape[0] for k, v in extras.items()}


def count_ptflops(model, shape) -> tuple[int, dict]:
    from ptflops import get_model_complexity_info

    buf = io.StringIO()
    model = copy.deepcopy(model)  # ptflops adds methods and attributes to the model
    with torch.no_grad():
        macs, _ = get_model_complexity_info(
            model, tuple(shape[1:]), as_strings=False, print_per_layer_stat=True, ost=buf,
            backend="pytorch", flops_units="Mac", output_precision=0,
            input_constructor=lambda _: torch.randn(shape),
        )
    # Leaf lines of its per-layer table: "(name): Type(params, %, <MACs> Mac, %, ...)"
    by_type: dict[str, float] = collections.Counter()
    for m in re.finditer(r"^\s*\([^)]+\): (\w+)\([^,]*, [^,]*, ([\d.]+) Mac,.*\)\s*$",
                         buf.getvalue(), re.M):
        by_type[m.group(1)] += float(m.group(2))
    extras = {k: int(v) for k, v in by_type.items() if k not in COUNTED and v}
    functional = macs - int(sum(by_type.values()))
    if functional:
        extras["functional and tensor ops (add, mul, ...)"] = functional
    conv_extra = int(by_type.get("Conv2d", 0) + by_type.get("Linear", 0))
    return macs // shape[0], {**extras, "_conv_linear": conv_extra // shape[0]}


def count_thop(model, shape) -> tuple[int, dict]:
    import thop

    model = copy.deepcopy(model)  # thop adds buffers to the modules it counts
    with torch.no_grad():
        total, _, layers = thop.profile(model, inputs=(torch.randn(shape),), verbose=False,
                                        ret_layer_info=True)
    by_type: dict[str, float] = collections.Counter()

    def walk(tree: dict, prefix: str) -> None:
        for name, (ops, _, children) in tree.items():
            path = f"{prefix}.{name}" if prefix else name
            if children:
                walk(children, path)
            else:
                by_type[type(model.get_submodule(path)).__name__] += ops

    walk(layers, "")
    extras = {k: int(v) for k, v in by_type.items() if k not in COUNTED and v}
    conv_extra = int(by_type.get("Conv2d", 0) + by_type.get("Linear", 0))
    return int(total) // shape[0], {**extras, "_conv_linear": conv_extra // shape[0]}


PEERS = {"fvcore": count_fvcore, "ptflops": count_ptflops, "thop": count_thop}


def timed(fn, *args):
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        result = fn(*args)
    return result, time.perf_counter() - start


def why(tool: str, macs: int, reference: int, extras: dict, shape) -> str:
    """What a peer counts beyond FlopCounterMode's rule, from its own breakdown."""
    if macs == reference:
        return "equal"
    parts = []
    conv_linear = extras.pop("_conv_linear", None)
    if conv_linear is not None and conv_linear and conv_linear != reference:
        parts.append(f"conv/linear {conv_linear - reference:+,} (bias additions)")
    for kind, value in sorted(extras.items(), key=lambda kv: -kv[1]):
        parts.append(f"{kind} +{value:,}")
    return "; ".join(parts) or f"{macs - reference:+,} MACs (no breakdown)"


# ---- the three measurements ------------------------------------------------------------------


def counts_at_224(models: list[str]) -> list[dict]:
    rows = []
    for name in models:
        shape = (1, 3, 224, 224)
        (ours, _), t_ours = timed(count_cnnzoo, name, shape)
        model = build(name)
        row = {"model": name, "published_gmacs": getattr(published_top1(name), "gmacs", None),
               "cnnzoo": ours, "cnnzoo_s": t_ours}
        for tool, fn in PEERS.items():
            (macs, extras), seconds = timed(fn, model, shape)
            row[tool], row[f"{tool}_s"] = macs, seconds
            row[f"{tool}_why"] = why(tool, macs, ours, extras, shape)
        rows.append(row)
        del model
    return rows


def whole_zoo(peers: bool) -> dict:
    names = cnnzoo.list_models()
    totals = {"cnnzoo": 0.0, **({t: 0.0 for t in PEERS} if peers else {})}
    slowest = []
    for name in names:
        _, seconds = timed(profile, name)
        totals["cnnzoo"] += seconds
        slowest.append((seconds, name))
        if peers:
            model = build(name)
            for tool, fn in PEERS.items():
                _, t = timed(fn, model, (1, 3, 224, 224))
                totals[tool] += t
            del model
        print(f"  {name}: cnnzoo {seconds:.2f} s", file=sys.stderr)
    return {"models": len(names), "totals_s": totals, "slowest": sorted(slowest)[-3:]}


def batch32_native(models: list[str], memory: bool) -> list[dict]:
    rows = []
    for name in models:
        shape = (32, *build(name, "meta").input_size)
        row = {"model": name, "shape": "x".join(map(str, shape))}

        def ours(name=name, shape=shape):
            return profile(build(name, "meta"), shape)

        _, row["cnnzoo_s"] = timed(ours)
        if memory:
            row["cnnzoo_bytes"] = measure_peak_bytes(ours, "cpu")
        model = build(name)
        for tool, fn in PEERS.items():
            _, row[f"{tool}_s"] = timed(fn, model, shape)
            if memory:
                row[f"{tool}_bytes"] = measure_peak_bytes(
                    lambda fn=fn, model=model, shape=shape: timed(fn, model, shape), "cpu")
        rows.append(row)
        del model
    return rows


def warm_up() -> None:
    """First calls pay for imports and lazy initialisation; keep that out of the timings."""
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    profile(tiny, (1, 3, 8, 8))
    for fn in PEERS.values():
        timed(fn, tiny, (1, 3, 8, 8))


# ---- printing --------------------------------------------------------------------------------


def print_counts(rows: list[dict]) -> None:
    print("## Counts at 224x224, batch 1 (GMACs; wall time)\n")
    print("| model | published | cnnzoo | fvcore | ptflops | thop |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[t] / 1e9:.3f} ({r[t + '_s']:.2f} s)" for t in ("cnnzoo", *PEERS)]
        pub = "--" if r["published_gmacs"] is None else f"{r['published_gmacs']:.3f}"
        print(f"| {r['model']} | {pub} | " + " | ".join(cells) + " |")
    print("\nWhy a peer differs from cnnzoo (MACs per image the peer adds, from its own "
          "breakdown):\n")
    for r in rows:
        for tool in PEERS:
            if r[f"{tool}_why"] != "equal":
                print(f"- {r['model']}, {tool}: {r[f'{tool}_why']}")
    for r in rows:
        pub = published_top1(r["model"])
        if pub is not None and pub.gmacs is not None and round(r["cnnzoo"] / 1e9, 3) != pub.gmacs:
            print(f"- {r['model']}: the published {pub.gmacs} is {pub.source}: {pub.note}")
    print()


def print_zoo(zoo: dict) -> None:
    print(f"## The whole registry ({zoo['models']} models) at 224x224\n")
    for tool, seconds in zoo["totals_s"].items():
        what = "profile() from the name, meta build included" if tool == "cnnzoo" else \
            "count of a built CPU model"
        print(f"- {tool}: {seconds:.1f} s ({what})")
    print("- slowest for cnnzoo: " + ", ".join(f"{n} {s:.2f} s" for s, n in zoo["slowest"]))
    print()


def print_batch32(rows: list[dict], memory: bool) -> None:
    print("## Batch 32 at native resolution (wall time; peak allocated memory)\n")
    print("| model | input | cnnzoo | fvcore | ptflops | thop | fastest peer / cnnzoo |")
    print("|---|---|---:|---:|---:|---:|---:|")
    sums = collections.Counter()
    for r in rows:
        cells = []
        for tool in ("cnnzoo", *PEERS):
            sums[tool] += r[f"{tool}_s"]
            mem = f"; {r[f'{tool}_bytes'] / 2**20:,.1f} MiB" if memory else ""
            cells.append(f"{r[f'{tool}_s']:.2f} s{mem}")
        fastest = min(r[f"{t}_s"] for t in PEERS)
        print(f"| {r['model']} | {r['shape']} | " + " | ".join(cells)
              + f" | {fastest / r['cnnzoo_s']:.1f}x |")
    best_peer = min(PEERS, key=lambda t: sums[t])
    print(f"\nTotal: cnnzoo {sums['cnnzoo']:.1f} s; fastest peer {best_peer} "
          f"{sums[best_peer]:.1f} s: {sums[best_peer] / sums['cnnzoo']:.1f}x faster.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--quick", action="store_true",
                        help="peers skip the whole-registry pass; no memory measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the raw numbers")
    args = parser.parse_args(argv)
    print(f"# cnnzoo vs fvcore, ptflops, thop\n\n{_hardware()}\n")
    warm_up()
    counts = counts_at_224(args.models)
    print_counts(counts)
    zoo = whole_zoo(peers=not args.quick)
    print_zoo(zoo)
    batch = batch32_native(args.models, memory=not args.quick)
    print_batch32(batch, memory=not args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts_224": counts, "zoo": zoo, "batch32": batch}, f, indent=2)
    return 0


def _hardware() -> str:
    from cnnzoo.profile.profiler import cpu_name

    versions = []
    for mod in ("fvcore", "ptflops", "thop"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod} {version(mod)}")
        except Exception:  # noqa: BLE001 - a missing peer is reported by its import later
            versions.append(f"{mod} (not installed)")
    return (f"{cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
            f"cnnzoo {cnnzoo.__version__}, " + ", ".join(versions))


if __name__ == "__main__":
    sys.exit(main())
