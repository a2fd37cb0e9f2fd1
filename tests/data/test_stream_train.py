"""`cnnzoo train --data SHARDS/`, through the command line in subprocesses, on CPU.

Two ranks under torchrun (gloo) see disjoint samples that together cover the epoch. A run
SIGKILLed in the middle of an epoch (CNNZOO_TEST_KILL_AT, see cnnzoo/train/faults.py; last.pt
after every step) and resumed with --resume draws exactly the sample ids of the
uninterrupted run from the step its last.pt holds, and ends with the same weights bit for bit;
`cnnzoo eval` on the shard directory measures the validation accuracy training recorded.
The ids come from the stream's test-only log (CNNZOO_TEST_SAMPLE_LOG: "RANK EPOCH STEP ids").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnzoo.data.pack import pack_images
from cnnzoo.infer.evaluate import evaluate_checkpoint
from cnnzoo.train import load_checkpoint
from stream_images import make_image_folder

# 96 small images, 16 held out: 80 to train, 5 steps of 16 per epoch, one worker process
# (the transform runs outside the training process).
ARGS = ["resnet20", "--epochs", "2", "--batch-size", "16", "--image-size", "16", "--lr", "0.05",
        "--threads", "1", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images") / "src"
    make_image_folder(root, n=96, classes=4, sizes=(20, 40))
    out = root.parent / "shards"
    pack_images(root, out, part_size=40, chunk_bytes="16KB", holdout_per_class=4)
    return out


def run(cmd: list[str], log: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CNNZOO_TEST_KILL_AT"}
    env["CNNZOO_TEST_SAMPLE_LOG"] = str(log)
    if kill_at:
        env["CNNZOO_TEST_KILL_AT"] = kill_at
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def cli(shards: Path, out: Path, log: Path, *extra: str, kill_at: str | None = None):
    return run([sys.executable, "-m", "cnnzoo", "train", *ARGS, "--data", str(shards),
                "--out", str(out), *extra], log, kill_at)


def read_log(log: Path, split: str = "train") -> dict[tuple[int, int, int], list[int]]:
    """{(rank, epoch, step): sample ids} of the split's batches."""
    rows = {}
    for line in log.read_text().splitlines():
        name, *numbers = line.split()
        if name == split:
            rank, epoch, step, *ids = map(int, numbers)
            rows[rank, epoch, step] = ids
    return rows


def test_two_ranks_see_disjoint_samples_covering_the_epoch(shards, tmp_path):
    log = tmp_path / "ids.log"
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2", "-m", "cnnzoo", "train", *ARGS, "--epochs", "1",
                  "--data", str(shards), "--out", str(tmp_path / "run")], log)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_log(log)
    per_rank = [[i for (r, _, _), ids in sorted(rows.items()) if r == rank for i in ids]
                for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 40  # 5 steps of 8 images on each rank
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(80))


def test_killed_mid_epoch_resumes_with_the_same_samples_and_weights(shards, tmp_path):
    ref_log, log = tmp_path / "ref.log", tmp_path / "run.log"
    reference = cli(shards, tmp_path / "ref", ref_log)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "run"
    killed = cli(shards, out, log, "--checkpoint-every", "1e-6", kill_at="train:2:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"]) == (1, 2)  # after step 2 of epoch 2
    assert set(last["ranks"][0]["stream"]) >= {"dataset", "current_epoch"}
    resumed = cli(shards, out, log, "--checkpoint-every", "1e-6", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = read_log(ref_log), read_log(log)
    assert sorted(want) == [(0, e, s) for e in (0, 1) for s in range(5)]
    # The killed run drew epoch 2's steps 0-2 (step 2 was drawn, then the kill), the resumed
    # one steps 2-4 again; every step drawn is the reference's.
    assert got == want
    lines = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("train ")]
    assert [tuple(map(int, ln[1:4])) for ln in lines[-3:]] == [(0, 1, 2), (0, 1, 3), (0, 1, 4)]
    assert read_log(log, "val") == read_log(ref_log, "val")
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "ref" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["metrics"][-1]["val_acc"] == b["metrics"][-1]["val_acc"]
    # `cnnzoo eval` streams the same val split and measures what training validated.
    best = tmp_path / "ref" / "best.pt"
    result = evaluate_checkpoint(best, str(shards), split="val")
    assert sum(result.support) == 16
    assert result.top1 == pytest.approx(load_checkpoint(best)["best_val_acc"], abs=1e-6)
