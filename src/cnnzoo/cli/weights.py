"""`cnnzoo weights list|download|verify`: the published weights and the user cache."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnnzoo.models import weights as table
from cnnzoo.models.hub import cached_file, sha256_file, weights_dir
from cnnzoo.models.keymap import check_strict
from cnnzoo.models.pretrained import cache_path, read_state_dict
from cnnzoo.models.registry import create_model
from cnnzoo.models.weights import WeightsEntry, get_weights, list_weights


def _cmd_list(args: argparse.Namespace) -> int:
    entries = list_weights(args.pattern)
    if not entries:
        print(f"no weights match {args.pattern!r}")
        return 1
    print(f"{'model:tag':<32} {'source':<11} {'top-1':>6} {'top-5':>6} {'resize/crop':>11} "
          f"{'MB':>6}  cached")
    for w in entries:
        p = w.preprocessing
        mark = "*" if w.default else " "
        cached = "yes" if cache_path(w).is_file() else "-"
        print(f"{w.key + mark:<32} {w.source:<11} {w.top1:6.2f} {w.top5:6.2f} "
              f"{f'{p.resize}/{p.crop}':>11} {_mb(w):>6}  {cached}")
    print(f"(* the default for pretrained=True; cache: {weights_dir()})")
    return 0


def _mb(entry: WeightsEntry) -> str:
    return "?" if entry.file_size_mb is None else f"{entry.file_size_mb:.1f}"


def _parse(spec: str) -> WeightsEntry:
    model, _, tag = spec.partition(":")
    return get_weights(model, tag or True)


def _cmd_download(args: argparse.Namespace) -> int:
    for spec in args.names:
        entry = _parse(spec)
        # The structure is checked too, not only the hash, before the file enters the cache.
        cached_file(entry.url, entry.sha256_prefix, check=lambda part, e=entry: _fits(e, part),
                    progress=args.progress)
        print(f"{entry.key}: {cache_path(entry)} ({cache_path(entry).stat().st_size:,} bytes, "
              f"{_check_line(entry)})")
    return 0


def _build(entry: WeightsEntry) -> torch.nn.Module:
    return create_model(entry.model, num_classes=entry.num_classes, **entry.options)


def _check_line(entry: WeightsEntry) -> str:
    if entry.sha256_prefix:
        return f"SHA-256 {entry.sha256_prefix}... ok"
    return "no published hash; every key and shape checked"


def verify_file(entry: WeightsEntry) -> str | None:
    """None if the cached file of `entry` is right, else the problem in one line."""
    path = cache_path(entry)
    if entry.sha256_prefix:
        digest = sha256_file(path)
        if not digest.startswith(entry.sha256_prefix):
            return f"SHA-256 {digest[:len(entry.sha256_prefix)]}... is not {entry.sha256_prefix}..."
    try:
        _fits(entry, path)
    except ValueError as err:
        return str(err)
    return None


def _fits(entry: WeightsEntry, path: Path) -> None:
    """Raise a one-line ValueError unless the file has every key and shape of the model."""
    with torch.device("meta"):  # shapes and keys only: nothing is allocated
        model = _build(entry)
    check_strict(model, read_state_dict(path, entry), what=entry.key)


def _cmd_verify(args: argparse.Namespace) -> int:
    folder = weights_dir()
    known = {w.file_name: w for w in table.WEIGHTS}  # looked up now: tests swap the table
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    bad = 0
    for path in files:
        entry = known.get(path.name)
        if entry is None:
            print(f"{path}: not a file of the weights table (left as it is)")
            continue
        problem = verify_file(entry)
        bad += problem is not None
        print(f"{path}: {entry.key} " + (f"BAD: {problem}" if problem else _check_line(entry)))
    print(f"{len(files)} files in {folder}, {bad} bad" + (" (delete them to download again)"
                                                          if bad else ""))
    return 1 if bad else 0


def register(sub) -> None:
    p = sub.add_parser("weights", help="published ImageNet weights: list, download, verify")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    ls = wsub.add_parser("list", help="the weights table (model:tag, accuracy, preprocessing)")
    ls.add_argument("pattern", nargs="?", default="*", help="shell pattern on model or model:tag")
    ls.set_defaults(func=_cmd_list)
    dl = wsub.add_parser("download", help="fetch into the cache, verified (hash and structure)")
    dl.add_argument("names", nargs="+", metavar="NAME[:TAG]",
                    help="a model (its default weights) or model:tag, e.g. resnet50:IMAGENET1K_V1")
    dl.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")
    dl.set_defaults(func=_cmd_download)
    vf = wsub.add_parser("verify", help="check every cached file against the table")
    vf.set_defaults(func=_cmd_verify)
