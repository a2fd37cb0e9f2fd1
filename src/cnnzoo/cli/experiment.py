"""`cnnzoo experiment NAME`: run one of the course's claims and write its finding."""

from __future__ import annotations

import argparse
import json

from cnnzoo.experiments import get_experiment, list_experiments, run_experiment
from cnnzoo.experiments.base import PRECISIONS, resolve_params, standard_preset


def _override(text: str) -> tuple[str, str]:
    """'epochs=3' -> ('epochs', '3') (argparse type; the value is checked by the library)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.replace("-", "_"), value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment", help="run an experiment: a claim of the course, tested by training",
        description="Run an experiment and write results.json, finding.md and PNG plots. "
                    "`cnnzoo experiment --list` names them with their claims.")
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and their presets")
    p.add_argument("--preset", default="quick",
                   help="tiny (plumbing check), quick (< 10 min on 2 CPU cores, the default), "
                        "standard (<= 30 min, scaled to decide each claim), standard-2se "
                        "(the same judged by 2 standard errors, where an experiment has it) "
                        "or full (the paper's settings as far as a CPU allows)")
    p.add_argument("--data", default=None,
                   help="data set name or path (default fashion-mnist; e.g. cifar10 or the "
                        "CIFAR-10 JPEG tarball)")
    p.add_argument("--data-dir", default=None, help="folder holding the named data set")
    p.add_argument("--out", default=None, help="output directory (default experiments/NAME-PRESET)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="training precision: fp32 (the default, the same numbers on every CPU) "
                        "or bf16 autocast, accepted where the CPU runs bf16 natively (AMX or "
                        "AVX512-BF16; faster than fp32 with AMX only, see docs/train_speed.md); "
                        "recorded in results.json")
    p.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                   metavar="NAME=VALUE", help="change a preset parameter, e.g. --set epochs=3 "
                   "(JSON values; repeatable)")
    p.add_argument("--show-params", action="store_true",
                   help="print the preset's parameters and exit")
    p.add_argument("--standard-preset", action="store_true",
                   help="print the preset `make experiments-standard` runs for this experiment "
                        "(standard-2se where it exists, else standard) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list or args.name is None:
        if args.name is None and not args.list:
            raise ValueError("give an experiment name, or --list")
        for name in list_experiments():
            exp = get_experiment(name)
            print(f"{name:20s} {exp.title}  [{exp.paper}]")
            print(f"{'':20s} claim: {exp.claim}")
        return 0
    exp = get_experiment(args.name)
    overrides = dict(args.overrides)
    if args.standard_preset:
        print(standard_preset(exp))
        return 0
    if args.show_params:
        print(json.dumps(resolve_params(exp, args.preset, overrides), indent=2))
        return 0
    result = run_experiment(args.name, args.preset, data=args.data, data_dir=args.data_dir,
                            out=args.out, seed=args.seed, quiet=args.quiet,
                            precision=args.precision, **overrides)
    f = result.finding
    print(f"{args.name} ({args.preset}): {f.verdict}")
    print(f.summary)
    for claim, verdict in f.claims.items():
        print(f"  - {claim}: {verdict}")
    print(f"wrote {result.out}/results.json, finding.md and {len(result.results['plots'])} "
          f"plot(s) in {result.wall_s:.0f} s")
    return 0
