"""`cnnzoo train` under torchrun: 2 CPU processes (gloo) with DistributedDataParallel.

Checks: the ranks end with identical weights; they equal a 1-process run with the same
global batch (16 = 2 x 8) within float tolerance (the gradient all-reduce sums in another
order); metrics are all-reduced (the 2-process loss is the 1-process loss); only rank 0
writes a run directory. And the command-line entry point itself runs under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cnnzoo.train import load_checkpoint

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    # faulthandler: a rank that dies of a signal prints its Python stack into the report.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_two_ranks_match_each_other_and_one_process(tmp_path):
    single_dump, ddp_dump = tmp_path / "dump1", tmp_path / "dump2"
    single_dump.mkdir()
    ddp_dump.mkdir()
    single = subprocess.run([sys.executable, WORKER, str(tmp_path / "single"), str(single_dump)],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = torchrun(2, WORKER, str(tmp_path / "ddp"), str(ddp_dump))
    assert ddp.returncode == 0, ddp.stderr

    one = torch.load(single_dump / "rank0.pt", weights_only=True)
    r0 = torch.load(ddp_dump / "rank0.pt", weights_only=True)
    r1 = torch.load(ddp_dump / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # identical across ranks
    diff = max((one[k] - r0[k]).abs().max().item() for k in one)
    print(f"max |w_1proc - w_2proc| = {diff:.3g}")
    assert diff < 1e-5
    # Trained at all: the weights moved from the shared initialisation.
    torch.manual_seed(0)
    sys.path.insert(0, str(Path(WORKER).parent))
    from ddp_worker import small_net

    init = small_net().state_dict()
    assert max((init[k] - r0[k]).abs().max().item() for k in init) > 1e-3

    # Only rank 0 wrote a run directory, and its metrics are over all ranks' images.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["rank0"]
    env = json.loads((tmp_path / "ddp" / "rank0" / "env.json").read_text())
    assert env["world_size"] == 2
    rows1 = load_checkpoint(tmp_path / "single" / "rank0" / "last.pt")["metrics"]
    rows2 = load_checkpoint(tmp_path / "ddp" / "rank0" / "last.pt")["metrics"]
    for a, b in zip(rows1, rows2, strict=True):
        assert a["global_step"] == b["global_step"]
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert abs(a[key] - b[key]) < 1e-5, key


def test_cli_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = torchrun(2, "-m", "cnnzoo", "train", "resnet20", "--data",
                      "synthetic:3x8x8:4:64", "--out", str(out), "--epochs", "1",
                      "--batch-size", "16", "--val-size", "16", "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    last = load_checkpoint(out / "last.pt")
    assert last["global_step"] == 3  # 48 training images: 3 global batches of 2 x 8
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.json", "env.json", "last.pt", "metrics.csv", "metrics.jsonl"]
