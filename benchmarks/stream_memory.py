"""Resident memory of streaming a shard directory: 5,000 vs 50,000 packed images.

For each size, a fresh process generates that many small JPEGs (32x32, quality 90, 10
classes), packs them (`pack_images`, 64 MB chunks: at these sizes one chunk holds ~60,000
images, so `--chunk-bytes 1MB` is used to give each size many chunks, as a real set has),
then streams one shuffled epoch through `StreamLoader` (batch 256, DecodeResize(32), 2
workers) and reports its peak resident memory: ru_maxrss of the streaming process, and the
largest of its worker processes (RUSAGE_CHILDREN, the max over waited-for children), in MiB.
Packing runs in a separate child so its memory does not count. Goal (issue 17): flat within
10% from 5k to 50k.

    .venv/bin/python benchmarks/stream_memory.py               # 5000 and 50000
    .venv/bin/python benchmarks/stream_memory.py --sizes 5000 20000 50000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(a).save(d / f"{i:06d}.jpg", quality=90)


def child_pack(src: str, out: str) -> None:
    from cnnzoo.data.pack import pack_images
    pack_images(src, out, chunk_bytes="1MB")


def child_stream(shards: str) -> None:
    from cnnzoo.data.shards import open_shards
    from cnnzoo.data.stream import DecodeResize, StreamLoader
    split = open_shards(shards).split("train")
    loader = StreamLoader(split, 256, transform=DecodeResize(32), shuffle=True, drop_last=True,
                          num_workers=2)
    seen = 0
    for x, _ in loader.batches(0):
        seen += len(x)
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"images": split.count, "seen": seen, "main_mib": main,
                      "worker_mib": workers}))


def measure(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "shards"
        make_images(src, n)
        subprocess.run([sys.executable, __file__, "--child-pack", str(src), str(out)],
                       check=True)
        r = subprocess.run([sys.executable, __file__, "--child-stream", str(out)],
                           check=True, capture_output=True, text=True)
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=(5000, 50000),
                   help="data set sizes, smallest first; ratios are against the first")
    p.add_argument("--child-pack", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child-stream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_pack:
        return child_pack(*args.child_pack)
    if args.child_stream:
        return child_stream(args.child_stream)
    rows = [measure(n) for n in args.sizes]
    small = rows[0]
    print(f"{'images':>8} {'seen':>8} {'main MiB':>9} {'worker MiB':>10} {'main x':>7} "
          f"{'workers x':>9}")
    for r in rows:
        print(f"{r['images']:>8} {r['seen']:>8} {r['main_mib']:>9.1f} {r['worker_mib']:>10.1f} "
              f"{r['main_mib'] / small['main_mib']:>7.3f} "
              f"{r['worker_mib'] / small['worker_mib']:>9.3f}")
    large = rows[-1]
    print(f"ratio largest/smallest: main {large['main_mib'] / small['main_mib']:.3f}, "
          f"workers {large['worker_mib'] / small['worker_mib']:.3f} (goal: <= 1.10)")


if __name__ == "__main__":
    main()
