"""`cnnzoo train` under torchrun: 2 CPU processes (gloo) with DistributedDataParallel.

Checks: the ranks end with identical weights; they equal a 1-process run with the same
global batch (16 = 2 x 8) within float tolerance (the gradient all-reduce sums in another
order); metrics are all-reduced (the 2-process loss is the 1-process loss); only rank 0
writes a run directory. With BatchNorm, that holds only with sync_bn. A rank SIGKILLed
mid-run under `--max-restarts` is restarted with the others, which resume from last.pt by
themselves and end bit-identical to an uninterrupted run. A rank that fails at start-up
stops every rank with its error line. And the command-line entry point itself runs under
torchrun (with --sync-bn, on a zoo ResNet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnzoo.data import make_synthetic
from cnnzoo.train import load_checkpoint, sync_bn, train

WORKER = str(Path(__file__).with_name("ddp_worker.py"))
# Largest |w_1process - w_2ranks| over all weights and BatchNorm statistics after 12 steps.
# float32 has eps 1.2e-7 and the weights are O(0.1..1): the measured differences (about
# 1e-7, from summing the gradients, and with sync_bn the BatchNorm sums, in another order)
# are about one rounding step, and 1e-5 leaves 100x for other CPUs and thread counts.
# Without sync_bn a BatchNorm net differs by about 2e-2 (each rank normalises its 8 images).
TOLERANCE = 1e-5


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    # faulthandler: a rank that dies of a signal prints its Python stack into the report.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Each variant trained once by 1 process (ROOT/single) and by 2 ranks (ROOT/ddp); the
    weights in ROOT/dump1 and ROOT/dump2."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "dump1").mkdir()
    (root / "dump2").mkdir()
    single = subprocess.run([sys.executable, WORKER, str(root / "single"), str(root / "dump1"),
                             "plain", "bn"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = torchrun(2, WORKER, str(root / "ddp"), str(root / "dump2"), "plain", "bn", "bn-sync")
    assert ddp.returncode == 0, ddp.stderr
    return root


def test_two_ranks_match_each_other_and_one_process(runs):
    one = weights(runs / "dump1" / "plain-rank0.pt")
    r0 = weights(runs / "dump2" / "plain-rank0.pt")
    r1 = weights(runs / "dump2" / "plain-rank1.pt")
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
    assert sorted(p.name for p in (runs / "ddp" / "plain").iterdir()) == ["rank0"]
    env = json.loads((runs / "ddp" / "plain" / "rank0" / "env.json").read_text())
    assert env["world_size"] == 2
    rows1 = load_checkpoint(runs / "single" / "plain" / "rank0" / "last.pt")["metrics"]
    rows2 = load_checkpoint(runs / "ddp" / "plain" / "rank0" / "last.pt")["metrics"]
    for a, b in zip(rows1, rows2, strict=True):
        assert a["global_step"] == b["global_step"]
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert abs(a[key] - b[key]) < 1e-5, key


def test_sync_bn_trains_two_ranks_like_one_process(runs):
    one = weights(runs / "dump1" / "bn-rank0.pt")
    synced = [weights(runs / "dump2" / f"bn-sync-rank{r}.pt") for r in (0, 1)]
    local = weights(runs / "dump2" / "bn-rank0.pt")
    assert all(torch.equal(synced[0][k], synced[1][k]) for k in synced[0])  # buffers too
    with_sync, without = max_diff(one, synced[0]), max_diff(one, local)
    print(f"BatchNorm net, max |w_1proc - w_2proc|: {with_sync:.3g} with sync_bn, "
          f"{without:.3g} without")
    assert with_sync < TOLERANCE
    assert without > 100 * TOLERANCE  # so the comparison can fail
    # The BatchNorm layers trained (scale, shift and running statistics moved).
    assert (one["1.weight"] - 1).abs().max() > 1e-3 and one["1.running_var"].ne(1).all()


def test_sync_bn_convert_keeps_parameters_and_keys():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(2)))
    params = list(net.parameters())
    keys = list(net.state_dict())
    cpu = sync_bn.convert(net, torch.device("cpu"))
    assert isinstance(cpu[1], sync_bn.SyncBatchNorm) and isinstance(cpu[2][0],
                                                                    sync_bn.SyncBatchNorm)
    assert list(cpu.parameters()) == params and all(
        a is b for a, b in zip(cpu.parameters(), params, strict=True))  # the optimizer's
    assert list(cpu.state_dict()) == keys
    x = torch.randn(6, 4, 5, 5)
    # No process group: plain BatchNorm, in training and eval.
    assert torch.equal(cpu[1](x), nn.functional.batch_norm(
        x, None, None, cpu[1].weight, cpu[1].bias, training=True))
    cuda = sync_bn.convert(nn.Sequential(nn.BatchNorm2d(4)), torch.device("cuda"))
    assert isinstance(cuda[0], nn.SyncBatchNorm)  # torch's on CUDA


def test_killed_rank_restarts_and_every_rank_resumes(runs, tmp_path):
    # Rank 1 SIGKILLs itself before step 3 of epoch 2 in torchrun's first attempt only.
    (tmp_path / "dump").mkdir()
    result = torchrun(2, "--max-restarts=2", WORKER, str(tmp_path / "run"),
                      str(tmp_path / "dump"), "plain", "--shared-out", "--say",
                      "--kill-rank1-at", "train:2:3")
    assert result.returncode == 0, result.stderr
    assert "exitcode: -9" in result.stderr  # torchrun saw the SIGKILL
    assert "torchrun restart 1: resuming" in result.stdout and "after epoch 1" in result.stdout
    uninterrupted = weights(runs / "dump2" / "plain-rank0.pt")
    for rank in (0, 1):
        resumed = weights(tmp_path / "dump" / f"plain-rank{rank}.pt")
        assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted), rank
    rows = load_checkpoint(tmp_path / "run" / "plain" / "last.pt")["metrics"]
    reference = load_checkpoint(runs / "ddp" / "plain" / "rank0" / "last.pt")["metrics"]
    for a, b in zip(reference, rows, strict=True):
        assert [a[k] for k in ("global_step", "train_loss", "val_loss", "val_acc")] == \
               [b[k] for k in ("global_step", "train_loss", "val_loss", "val_acc")]


def test_ranks_that_would_resume_from_different_points_refuse(runs, tmp_path):
    # ROOT/ddp/plain/rank0 holds a finished run; rank 1's directory holds none: as when --out
    # is not on a file system that every node shares.
    result = torchrun(2, WORKER, str(runs / "ddp"), str(tmp_path), "plain", "--resume",
                      timeout=120)
    assert result.returncode != 0
    assert "the ranks found different checkpoints (rank 0: epoch 2 step 12, rank 1: epoch 0 " \
           "step 0)" in result.stderr, result.stderr


def test_restart_resumes_only_the_run_its_job_wrote(tmp_path, monkeypatch, capsys):
    # One process with torchrun's restart variables: no process group needed.
    data = make_synthetic(32, 2, (1, 8, 8), seed=0)
    options = {"out": str(tmp_path / "run"), "epochs": 1, "batch_size": 8, "val_size": 0,
               "threads": 1}
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    train(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data, quiet=True, **options)
    assert json.loads((tmp_path / "run" / "env.json").read_text())[
        "torchelastic_run_id"] == "job-a"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    result = train(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data, **options)
    assert "torchrun restart 1: resuming" in capsys.readouterr().out
    assert len(result.metrics) == 1  # nothing left to train
    # Another job's restart does not adopt the run: it refuses as a first start does.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    with pytest.raises(ValueError, match="already holds a run"):
        train(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data, **options)


def test_rank_failing_at_startup_stops_every_rank(tmp_path):
    bad = tmp_path / "no-such-data"  # rank 1's --data
    out = tmp_path / "run"
    result = torchrun(2, WORKER, "cli", str(bad), "train", "resnet20", "--data",
                      "synthetic:3x8x8:4:64", "--out", str(out), "--epochs", "1",
                      "--batch-size", "16", "--val-size", "16", "--threads", "1", "--quiet",
                      timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "cnnzoo train: error:" in line]
    print("\n".join(errors))
    # Every rank stops with rank 1's error: rank 1 with its own line, rank 0 with that line
    # after "rank 1: " (not gloo's "Connection closed by peer"). torchrun stops the other
    # rank when the first one exits, so which of the two lines gets printed is a race.
    assert errors, result.stderr
    assert all(str(bad) in line for line in errors), result.stderr
    assert "Connection closed" not in result.stderr
    assert not (out / "last.pt").exists()


def test_cli_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = torchrun(2, "-m", "cnnzoo", "train", "resnet20", "--data",
                      "synthetic:3x8x8:4:64", "--out", str(out), "--epochs", "1",
                      "--batch-size", "16", "--val-size", "16", "--threads", "1", "--quiet",
                      "--sync-bn")  # a zoo model's BatchNorm, synchronised on the CPU
    assert result.returncode == 0, result.stderr
    last = load_checkpoint(out / "last.pt")
    assert last["global_step"] == 3  # 48 training images: 3 global batches of 2 x 8
    assert last["config"]["sync_bn"] is True
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.json", "env.json", "last.pt", "metrics.csv", "metrics.jsonl"]
