"""Crash safety of `cnnzoo train`, through the command line in subprocesses.

A run is SIGKILLed (a) in the middle of an epoch and (b) while last.pt is being written
(temp file complete, not yet renamed), then resumed with --resume; its final last.pt and
best.pt must equal those of an uninterrupted run bit for bit (torch.equal on every tensor:
weights, EMA, optimizer state). The kill points come from the test-only environment
variable CNNZOO_TEST_KILL_AT (see cnnzoo/train/faults.py), so the timing is exact.

With --checkpoint-every, last.pt is also written in the middle of an epoch; a tiny interval
(1e-6 s, less than any step) writes it after every step, so which step the killed run's
last.pt holds is exact too. The resumed run continues from that step, and the uninterrupted
reference (default interval: no mid-epoch write in this short run) shows that the writes
change nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnzoo.train import load_checkpoint

# 96 synthetic images, 16 held out: 5 steps of 16 per epoch. Augmentation and EMA on, so
# the loader's seeded randomness and the EMA state are part of what must survive the crash.
ARGS = ["resnet20", "--data", "synthetic:3x12x12:4:96", "--epochs", "3", "--batch-size", "16",
        "--lr", "0.05", "--val-size", "16", "--ema-decay", "0.9", "--crop-padding", "2",
        "--hflip", "--warmup-epochs", "1", "--threads", "1", "--quiet"]
TIMING = {"train_time_s", "train_images_per_s", "epoch_time_s"}
EVERY_STEP = ("--checkpoint-every", "1e-6")  # seconds: shorter than any step


def cli(out: Path, *extra: str, kill_at: str | None = None,
        quiet: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CNNZOO_TEST_KILL_AT"}
    if kill_at:
        env["CNNZOO_TEST_KILL_AT"] = kill_at
    args = ARGS if quiet else [a for a in ARGS if a != "--quiet"]
    return subprocess.run([sys.executable, "-m", "cnnzoo", "train", *args, "--out", str(out),
                           *extra], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = cli(out)
    assert result.returncode == 0, result.stderr
    return out


def assert_same_tensors(a, b, where: str = "") -> None:
    """Equal structure, and torch.equal on every tensor (bit-identical)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")


def assert_same_run(run: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        got, want = load_checkpoint(run / name), load_checkpoint(reference / name)
        assert got["epoch"] == want["epoch"] and got["global_step"] == want["global_step"]
        for key in ("model", "ema", "optimizer", "scheduler"):
            assert_same_tensors(got.get(key), want.get(key), f"{name}:{key}")
        strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
                              for r in rows]
        assert strip(got["metrics"]) == strip(want["metrics"])
    assert (run / "metrics.jsonl").read_text().count("\n") == 3
    assert not list(run.glob(".*.tmp"))  # the resumed run cleaned up the killed write


def test_reference_run_completes(reference):
    last = load_checkpoint(reference / "last.pt")
    assert last["epoch"] == 3 and last["global_step"] == 15


def test_killed_mid_epoch_resumes_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    killed = cli(out, kill_at="train:2:3")
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    resumed = cli(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_killed_during_checkpoint_write_resumes_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    killed = cli(out, kill_at="ckpt-write:2")
    assert killed.returncode == -signal.SIGKILL
    # The complete temp file was never renamed: last.pt still holds epoch 1, intact.
    assert len(list(out.glob(".last.pt.*.tmp"))) == 1
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    resumed = cli(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_killed_in_the_first_epoch_resumes_from_its_mid_epoch_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    killed = cli(out, *EVERY_STEP, kill_at="train:1:4")  # before step 4 of the first epoch
    assert killed.returncode == -signal.SIGKILL
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (0, 3, 3)
    assert last["metrics"] == [] and len(last["ranks"]) == 1
    assert last["ranks"][0]["sums"]["seen"] == 3 * 16
    resumed = cli(out, "--resume", quiet=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'last.pt'} in epoch 1, after step 3/5" in resumed.stdout
    assert_same_run(out, reference)


def test_killed_while_writing_a_mid_epoch_checkpoint_resumes_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    killed = cli(out, *EVERY_STEP, kill_at="ckpt-write:2:2")
    assert killed.returncode == -signal.SIGKILL
    # The write after step 2 of epoch 2 never replaced the one after step 1.
    assert len(list(out.glob(".last.pt.*.tmp"))) == 1
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (1, 1, 6)
    resumed = cli(out, "--resume", *EVERY_STEP)  # writing on after the resume changes nothing
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_checkpoint_every_zero_writes_at_epoch_ends_only(tmp_path):
    out = tmp_path / "run"
    killed = cli(out, "--checkpoint-every", "0", kill_at="train:2:5")
    assert killed.returncode == -signal.SIGKILL
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (1, 0, 5)
    assert last["ranks"] is None


def torchrun(out: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """`cli` under torchrun with 2 CPU processes (gloo), each rank with 8 of the 16 images."""
    env = {k: v for k, v in os.environ.items() if k != "CNNZOO_TEST_KILL_AT"}
    if kill_at:
        env["CNNZOO_TEST_KILL_AT"] = kill_at  # both ranks reach it at the same step
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "cnnzoo", "train", *ARGS, "--out",
                           str(out), *extra], capture_output=True, text=True, env=env,
                          timeout=300)


def test_two_ranks_killed_mid_epoch_resume_bit_identical(tmp_path):
    """Under DDP every rank's generators and metric sums are in the mid-epoch last.pt, so the
    resumed 2-rank run equals an uninterrupted 2-rank run, metrics included."""
    reference, out = tmp_path / "uninterrupted", tmp_path / "run"
    uninterrupted = torchrun(reference)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    killed = torchrun(out, *EVERY_STEP, kill_at="train:2:3")
    assert killed.returncode != 0
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"]) == (1, 2) and len(last["ranks"]) == 2
    assert not torch.equal(last["ranks"][0]["rng"]["torch"], last["ranks"][1]["rng"]["torch"])
    resumed = torchrun(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_cli_nan_loss_exits_nonzero_with_one_line(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "cnnzoo", "train", "resnet20", "--data", "synthetic:3x8x8:4:64",
         "--out", str(out), "--epochs", "2", "--batch-size", "16", "--lr", "1e30",
         "--val-size", "0", "--threads", "1", "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss became NaN or inf in epoch 1, step" in lines[0]
    assert "no checkpoint was written yet" in lines[0]
    assert not (out / "last.pt").exists()
