"""`cnnzoo data NAME`: download a data set's official files, checked against their MD5s."""

from __future__ import annotations

import argparse

from cnnzoo.data.download import download
from cnnzoo.data.sources import DATASETS


def _cmd_data(args: argparse.Namespace) -> int:
    folder = download(args.name, args.data_dir, base_url=args.base_url, report=print)
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    print(f"{args.name}: ready in {folder} (use --data {args.name}{where})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="download a data set's official files (MD5-verified)")
    p.add_argument("name", choices=sorted(DATASETS), help="data set to download")
    p.add_argument("--data-dir", default=None,
                   help="root folder to download into (default: the user cache, "
                        "~/.cache/cnnzoo); files go to DATA_DIR/NAME/")
    p.add_argument("--base-url", default=None,
                   help="fetch from this URL instead of the official one (or set CNNZOO_MIRROR "
                        "to a mirror laid out as MIRROR/NAME/FILE)")
    p.set_defaults(func=_cmd_data)
