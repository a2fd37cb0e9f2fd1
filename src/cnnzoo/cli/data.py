"""`cnnzoo data NAME`: download a data set's official files, checked against their MD5s.
`cnnzoo data pack SRC --out SHARDS/`: an ImageFolder into shards for streaming;
`cnnzoo data verify SHARDS/`: check every shard against the manifest."""

from __future__ import annotations

import argparse
import sys
import time

from cnnzoo.data.download import download
from cnnzoo.data.pack import CHUNK_BYTES, PART_SIZE, pack_images
from cnnzoo.data.shards import verify_shards
from cnnzoo.data.sources import DATASETS


def _cmd_download(args: argparse.Namespace) -> int:
    folder = download(args.name, args.data_dir, base_url=args.base_url, report=print)
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    print(f"{args.name}: ready in {folder} (use --data {args.name}{where})")
    return 0


class _Bar:
    """One redrawn line on a terminal: split, images packed, images/s."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.on = sys.stderr.isatty()

    def __call__(self, split: str, done: int, total: int) -> None:
        if not self.on:
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        filled = 20 * done // max(total, 1)
        sys.stderr.write(f"\rpack {split} [{'#' * filled}{'.' * (20 - filled)}] "
                         f"{done:,}/{total:,} images {rate:,.0f} img/s\033[K")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\n")
            self.start = time.perf_counter()


def _cmd_pack(args: argparse.Namespace) -> int:
    lines = pack_images(args.src, args.out, part_size=args.part_size,
                        chunk_bytes=args.chunk_bytes, holdout_per_class=args.holdout_per_class,
                        progress=_Bar(), threads=args.threads)
    for line in lines:
        print(line)
    print(f"{args.out}: packed (train with --data {args.out})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    for line in verify_shards(args.shards):
        print(line)
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="download a data set (MD5-verified), or pack an image "
                                    "folder into shards for streaming")
    verbs = p.add_subparsers(dest="data_command", required=True, metavar="NAME|pack|verify")
    for name in sorted(DATASETS):
        d = verbs.add_parser(name, help=f"download {name}'s official files")
        d.add_argument("--data-dir", default=None,
                       help="root folder to download into (default: the user cache, "
                            "~/.cache/cnnzoo); files go to DATA_DIR/NAME/")
        d.add_argument("--base-url", default=None,
                       help="fetch from this URL instead of the official one (or set "
                            "CNNZOO_MIRROR to a mirror laid out as MIRROR/NAME/FILE)")
        d.set_defaults(func=_cmd_download, name=name)
    pk = verbs.add_parser(
        "pack", help="convert an ImageFolder (directory or .tar/.tar.gz) into shards",
        description="Store every image's encoded bytes, label and class names in litdata "
                    "shards with a manifest (images per class, SHA-256 per shard). Resumable: "
                    "run it again with the same arguments after an interruption.")
    pk.add_argument("src", metavar="SRC", help="<class>/<image> folders, or train/ and "
                                               "test/ (or val/) of those; a directory or tarball")
    pk.add_argument("--out", required=True, metavar="SHARDS", help="shard directory to write")
    pk.add_argument("--holdout-per-class", type=int, default=0, metavar="N",
                    help="move the last N images of each class into a val split")
    pk.add_argument("--part-size", type=int, default=PART_SIZE, metavar="N",
                    help=f"images per resumable part (default: {PART_SIZE})")
    pk.add_argument("--chunk-bytes", default=CHUNK_BYTES, metavar="SIZE",
                    help=f"litdata chunk size (default: {CHUNK_BYTES})")
    pk.add_argument("--threads", type=int, default=None, metavar="N",
                    help="threads that decode-check the images (default: all cores)")
    pk.set_defaults(func=_cmd_pack)
    v = verbs.add_parser("verify", help="check every shard's size and SHA-256 against the "
                                        "manifest")
    v.add_argument("shards", metavar="SHARDS")
    v.set_defaults(func=_cmd_verify)
