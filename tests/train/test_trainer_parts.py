"""The trainer's parts: optimizer groups, schedules, checkpoints, EMA, device/precision
resolution, and short in-process runs of `cnnzoo.train` with a tiny network."""

from __future__ import annotations

import io
import json
import math
import random
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

import cnnzoo.train
from cnnzoo.cli import build_parser, main
from cnnzoo.data import make_synthetic
from cnnzoo.fileio import atomic_write
from cnnzoo.train import (
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    autosave,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from cnnzoo.train import device as device_mod
from cnnzoo.train.autosave import Timer
from cnnzoo.train.checkpoint import rng_state, set_rng_state
from cnnzoo.train.ema import ModelEma
from cnnzoo.train.loss import make_criterion
from cnnzoo.train.optim import build_optimizer, param_groups
from cnnzoo.train.runlog import Progress
from cnnzoo.train.schedule import Cosine, OneCycle, Step, build_scheduler


def tiny_net(num_classes: int = 4, norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=not norm),
        nn.BatchNorm2d(8) if norm else nn.Identity(),
        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes),
    )


def tiny_data(n: int = 96):
    return make_synthetic(n, 4, (1, 8, 8), seed=0)


# ---------------------------------------------------------------- optimizer and schedules

def test_param_groups_decay_weights_only():
    net = tiny_net()
    decay, no_decay = param_groups(net, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(net[0].weight), id(net[5].weight)}
    assert ids(no_decay["params"]) == {id(net[1].weight), id(net[1].bias), id(net[5].bias)}


def test_build_optimizer_kinds():
    net = tiny_net()
    sgd = build_optimizer(net, TrainConfig(optimizer="sgd", lr=0.1, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert sgd.defaults["momentum"] == 0.9
    adamw = build_optimizer(net, TrainConfig(optimizer="adamw", lr=1e-3, betas=(0.8, 0.99)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.99)
    assert [g["weight_decay"] for g in adamw.param_groups] == [5e-4, 0.0]


def test_cosine_with_warmup():
    f = Cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)  # half-way through the cosine part
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_step_divides_by_ten_at_fractions():
    f = Step(total_steps=64000, milestones=(0.5, 0.75))  # He et al.: 32k and 48k of 64k
    assert f(31999) == 1.0
    assert f(32000) == pytest.approx(0.1) and f(47999) == pytest.approx(0.1)
    assert f(48000) == pytest.approx(0.01) and f(63999) == pytest.approx(0.01)


def test_onecycle_rises_then_falls_to_zero():
    f = OneCycle(total_steps=100, pct_start=0.25)
    assert f(0) == pytest.approx(1 / 25)
    assert f(25) == pytest.approx(1.0)
    assert f(12) < f(24) < f(25) and f(26) < f(25)
    assert f(100) == pytest.approx(0.0)


def test_scheduler_sets_lr_per_step():
    net = tiny_net()
    cfg = TrainConfig(lr=0.2, epochs=2, schedule="cosine", warmup_epochs=1)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2])
    assert lrs[5] == pytest.approx(0.2) and lrs[9] == pytest.approx(0.2 * 0.5 * (1 + math.cos(
        math.pi * 4 / 5)))
    # The state reloads from a weights_only checkpoint into a fresh scheduler.
    buf = _roundtrip(sched.state_dict())
    sched2 = build_scheduler(build_optimizer(net, cfg), cfg, steps_per_epoch=5)
    sched2.load_state_dict(buf)
    assert sched2.last_epoch == 10 and sched2.get_last_lr() == sched.get_last_lr()


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="^optimizer: expected one of sgd, adamw"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="^label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="^milestones"):
        TrainConfig(milestones=(0.5, 32000))
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    cfg = TrainConfig(model="resnet20", betas=(0.8, 0.9))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_checkpoint_every_rejects_negative_seconds_in_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^checkpoint_every: expected seconds >= 0"):
        TrainConfig(checkpoint_every=-1)
    assert TrainConfig(checkpoint_every=0).checkpoint_every == 0
    code = main(["train", "resnet20", "--data", "synthetic", "--out", str(tmp_path / "run"),
                 "--checkpoint-every", "-5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("cnnzoo train: error: checkpoint_every: expected seconds >= 0")
    assert not (tmp_path / "run").exists()


def test_checkpoint_timer_interval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(autosave.time, "monotonic", lambda: now[0])
    single = cnnzoo.train.distributed.DistInfo()
    timer = Timer(None, single, enabled=True)
    assert timer.every == 60.0 and not timer.due()
    now[0] += 60.0
    assert timer.due()
    timer.written(0.2)  # a fast write: the interval stays a minute
    assert timer.every == 60.0 and not timer.due()
    timer.written(10.0)  # a slow one: stretched so that writing is 5% of the time
    assert timer.every == pytest.approx(200.0)
    fixed = Timer(30.0, single, enabled=True)
    fixed.written(10.0)  # a value given is kept
    assert fixed.every == 30.0
    now[0] += 1e6
    assert not Timer(0, single, enabled=True).due()  # 0: never mid-epoch
    assert not Timer(None, single, enabled=False).due()  # nowhere to write


def test_checkpoint_timer_under_ddp_broadcasts_about_once_a_second(monkeypatch):
    now, sent = [0.0], []
    monkeypatch.setattr(autosave.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(autosave.dist, "broadcast", lambda t, src, group: sent.append(t.tolist()))
    monkeypatch.setattr(Timer, "_group", lambda self: None)
    rank0 = cnnzoo.train.distributed.DistInfo(rank=0, world_size=2)
    timer = Timer(60.0, rank0, enabled=True)
    verdicts = []
    for _ in range(30):  # 0.1 s steps: the first verdict, then one every 10 steps
        now[0] += 0.1
        verdicts.append(timer.due())
    assert sent == [[0, 10], [0, 10], [0, 10]] and not any(verdicts)
    sent.clear()
    every_step = Timer(1e-6, rank0, enabled=True)  # shorter than a step: a verdict each
    for _ in range(3):
        now[0] += 0.1
        assert every_step.due()
    assert sent == [[1, 1]] * 3


# ---------------------------------------------------------------- checkpoints

def test_atomic_write_keeps_old_content_when_writer_fails(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def failing(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_checkpoint_roundtrip_weights_only(tmp_path):
    net = tiny_net()
    save_checkpoint(tmp_path / "c.pt", {"kind": "best", "model": net.state_dict(),
                                        "classes": ["a", "b"]})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["format"] == "cnnzoo-checkpoint" and ckpt["format_version"] == 1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in ckpt["model"].items())


class _Foreign:
    pass


@pytest.mark.parametrize("kind", ["truncated", "garbage", "not-ours", "pickled-code", "missing"])
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path, kind):
    path = tmp_path / "c.pt"
    if kind == "truncated":
        save_checkpoint(path, {"kind": "best", "model": tiny_net().state_dict()})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif kind == "not-ours":
        torch.save({"state_dict": tiny_net().state_dict()}, path)
    elif kind == "pickled-code":
        torch.save({"format": "cnnzoo-checkpoint", "x": _Foreign()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_pickled_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickling ran code",))

    torch.save({"format": "cnnzoo-checkpoint", "boom": Boom()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# ---------------------------------------------------------------- EMA

def test_ema_follows_the_formula():
    net = tiny_net()
    ema = ModelEma(net, decay=0.9)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update(net)
    d = min(0.9, 2 / 11)  # warm-up cap after one update
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            expected = d * start[k] + (1 - d) * net.state_dict()[k]
            torch.testing.assert_close(v, expected)
    assert int(ema.module[1].num_batches_tracked) == 5
    for _ in range(200):
        ema.update(net)
    torch.testing.assert_close(ema.module[0].weight, net[0].weight)  # converges to constant
    assert not any(p.requires_grad for p in ema.module.parameters())


# ---------------------------------------------------------------- device and precision

def test_cpu_precision_is_fp32_without_amx(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: False)
    ex = device_mod.resolve("cpu", "auto")
    assert ex.device == torch.device("cpu") and ex.amp_dtype is None and not ex.use_scaler
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: True)
    assert device_mod.resolve("cpu", "auto").amp_dtype is None  # bf16 is opt-in, AMX or not


def test_cpu_refuses_emulated_bf16_and_fp16(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bf16"):
        device_mod.resolve("cpu", "bf16")
    with pytest.raises(ValueError, match="fp16 autocast is for CUDA"):
        device_mod.resolve("cpu", "fp16")


def test_cuda_branch_with_cuda_mocked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    ex = device_mod.resolve("auto", "auto", local_rank=1)
    assert ex.device == torch.device("cuda", 1)
    assert ex.amp_dtype is torch.bfloat16 and not ex.use_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    ex = device_mod.resolve("cuda", "auto")
    assert ex.amp_dtype is torch.float16 and ex.use_scaler  # fp16 needs loss scaling
    with pytest.raises(ValueError, match="no bf16"):
        device_mod.resolve("cuda", "bf16")
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: synced.append(d))
    ex.synchronize()
    device_mod.resolve("cpu", "fp32").synchronize()
    assert synced == [torch.device("cuda", 0)]  # the CPU path does not touch CUDA


def test_cuda_asked_for_but_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda was asked for"):
        device_mod.resolve("cuda", "auto")


# ---------------------------------------------------------------- losses

class AuxOut(NamedTuple):
    logits: torch.Tensor
    aux2: torch.Tensor
    aux1: torch.Tensor


def test_aux_losses_use_the_model_weight():
    model = nn.Linear(2, 3)
    model.aux_weight = 0.3
    y = torch.tensor([0, 2])
    main, a1, a2 = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    logits, loss = make_criterion(model, 0.1)(AuxOut(main, a2, a1), y)
    ce = lambda z: nn.functional.cross_entropy(z, y, label_smoothing=0.1)  # noqa: E731
    assert logits is main
    torch.testing.assert_close(loss, ce(main) + 0.3 * (ce(a1) + ce(a2)))
    with pytest.raises(ValueError, match="no aux_weight"):
        make_criterion(nn.Linear(2, 3), 0.0)(AuxOut(main, a2, a1), y)


# ---------------------------------------------------------------- whole runs

def test_train_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    result = cnnzoo.train(tiny_net(), tiny_data(), out=str(out), epochs=3, batch_size=16,
                          lr=0.1, val_size=24, ema_decay=0.9, label_smoothing=0.1, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.json", "env.json", "last.pt", "metrics.csv", "metrics.jsonl"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows == result.metrics
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["epoch", "global_step", "lr"] and len(csv_lines) == 4
    assert rows[-1]["global_step"] == 3 * (72 // 16)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["precision"] == "fp32"
    assert env["torch_threads"] >= 1 and env["cpu"]
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and config["ema_decay"] == 0.9

    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["kind"] == "last" and last["epoch"] == 3
    assert {"optimizer", "scheduler", "rng", "ema", "config"} <= set(last)
    assert last["classes"] == [f"class{i}" for i in range(4)] and last["in_chans"] == 1
    assert last["preprocess"]["image_size"] == [8, 8] and not last["preprocess"]["resize"]
    # best.pt holds the epoch with the highest validation accuracy (the first one on ties).
    accs = [r["val_acc"] for r in rows]
    assert best["epoch"] == accs.index(max(accs)) + 1 and best["best_val_acc"] == max(accs)
    assert "optimizer" not in best and best["eval_weights"] == "ema"
    # The returned EMA model is the one in last.pt.
    for k, v in result.ema_model.state_dict().items():
        assert torch.equal(v, last["ema"][k])


def test_train_registered_model_checkpoint_rebuilds(tmp_path):
    out = tmp_path / "run"
    cnnzoo.train("resnet20", make_synthetic(64, 4, (1, 8, 8)), out=str(out), epochs=1,
                 batch_size=16, image_size=10, val_size=16, quiet=True)
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model_name"] == "resnet20" and ckpt["preprocess"]["image_size"] == [10, 10]
    assert ckpt["preprocess"]["resize"] is True
    model = model_from_checkpoint(ckpt)
    assert not model.training and model(torch.zeros(2, 1, 10, 10)).shape == (2, 4)


def test_grad_clip_bounds_the_step():
    net = tiny_net(norm=False)
    before = [p.detach().clone() for p in net.parameters()]
    cnnzoo.train(net, tiny_data(32), epochs=1, batch_size=32, lr=1.0, momentum=0.0,
                 weight_decay=0.0, val_size=0, grad_clip_norm=1e-3, schedule="constant",
                 quiet=True)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before,
                                                                    strict=True)])
    assert 0 < moved.norm() <= 1e-3 * (1 + 1e-4)  # one SGD step of lr 1 x clipped gradient


class SizeRecorder(nn.Module):
    """tiny_net that records the side of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.net = tiny_net()
        self.sides: list[int] = []

    def forward(self, x):
        if self.training:
            self.sides.append(x.shape[-1])
        return self.net(x)


def test_progressive_crop_sizes_then_whole_images():
    net = SizeRecorder()
    cnnzoo.train(net, tiny_data(64), epochs=3, batch_size=32, val_size=0, crop_padding=1,
                 crop_size=6, crop_size_epochs=2, hflip=True, quiet=True)
    assert net.sides == [6, 6, 6, 6, 8, 8]  # 2 steps per epoch: two epochs of 6x6, then 8x8
    net = SizeRecorder()
    cnnzoo.train(net, tiny_data(64), epochs=2, batch_size=32, val_size=0, crop_size=5,
                 quiet=True)
    assert net.sides == [5] * 4  # without crop_size_epochs: every epoch
    with pytest.raises(ValueError, match="^crop_size_epochs"):
        TrainConfig(epochs=3, crop_size_epochs=2)  # no crop_size
    with pytest.raises(ValueError, match="^crop_size_epochs"):
        TrainConfig(epochs=3, crop_size=6, crop_size_epochs=4)


class NanAfter(nn.Module):
    """A net whose output becomes NaN after `n` training forwards."""

    def __init__(self, n: int):
        super().__init__()
        self.net = tiny_net(norm=False)
        self.n = n
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.n:
                out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        # 4 steps per epoch; the 7th forward is epoch 2, step 3.
        cnnzoo.train(NanAfter(6), tiny_data(), out=str(out), epochs=3, batch_size=16,
                     val_size=32, quiet=True)
    message = str(info.value)
    assert "epoch 2, step 3/4" in message and str(out / "last.pt") in message
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1


def test_nan_loss_names_the_mid_epoch_checkpoint_kept(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        # A write after every step: the last good one is after step 2 of epoch 2.
        cnnzoo.train(NanAfter(6), tiny_data(), out=str(out), epochs=3, batch_size=16,
                     val_size=32, quiet=True, checkpoint_every=1e-9)
    message = str(info.value)
    assert "epoch 2, step 3/4" in message
    assert f"kept {out / 'last.pt'} from epoch 2, step 2" in message
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (1, 2, 6)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_refuses_to_overwrite_a_run_and_to_resume_with_other_settings(tmp_path):
    out = tmp_path / "run"
    kw = {"out": str(out), "batch_size": 16, "val_size": 0, "quiet": True}
    cnnzoo.train(tiny_net(), tiny_data(), epochs=1, **kw)
    with pytest.raises(ValueError, match="already holds a run"):
        cnnzoo.train(tiny_net(), tiny_data(), epochs=1, **kw)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.1 -> 0.5"):
        cnnzoo.train(tiny_net(), tiny_data(), epochs=1, lr=0.5, resume=True, **kw)
    # The same settings with more epochs are refused too: the schedule depends on them.
    with pytest.raises(ValueError, match="epochs: 1 -> 2"):
        cnnzoo.train(tiny_net(), tiny_data(), epochs=2, resume=True, **kw)


def test_cnnzoo_train_is_the_package_and_the_function():
    import importlib

    import cnnzoo.train.checkpoint as ck

    assert callable(cnnzoo.train) and cnnzoo.train.checkpoint is ck
    assert importlib.import_module("cnnzoo.train") is cnnzoo.train
    from cnnzoo.train import train

    assert cnnzoo.train.__signature__.parameters.keys() == __import__("inspect").signature(
        train).parameters.keys()


class AuxNet(nn.Module):
    """Returns (logits, aux logits) in training, like GoogLeNet, with an aux_weight."""

    aux_weight = 0.3

    def __init__(self):
        super().__init__()
        self.body = tiny_net(norm=False)
        self.aux = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))

    def forward(self, x):
        logits = self.body(x)
        return AuxOut(logits, self.aux(x), self.aux(x)) if self.training else logits


def test_train_with_auxiliary_outputs():
    result = cnnzoo.train(AuxNet(), tiny_data(), epochs=1, batch_size=16, val_size=32,
                          lr=0.01, quiet=True)
    row = result.metrics[0]
    # The training loss holds 1 + 2 x 0.3 cross-entropies, validation only the main one.
    assert row["train_loss"] > 1.3 * row["val_loss"]
    assert result.model(torch.zeros(1, 1, 8, 8)).shape == (1, 4)


def test_channels_last_and_deterministic_mode_train_the_same():
    runs = [cnnzoo.train(tiny_net(), tiny_data(), epochs=1, batch_size=16, val_size=32,
                         quiet=True, **kw).metrics[0]
            for kw in ({}, {"channels_last": True, "deterministic": True})]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert runs[0][key] == pytest.approx(runs[1][key], rel=1e-4, abs=1e-6)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


def test_cli_options_reach_the_config():
    args = build_parser().parse_args([
        "train", "efficientnet_b0", "--data", "fashion-mnist", "--out", "runs/x",
        "--model-opt", "drop_path_rate=0.1", "--model-opt", "small_input=True",
        "--milestones", "0.3,0.6,0.9", "--nesterov", "--ema-decay", "0.999", "--epochs", "3"])
    assert args.model == "efficientnet_b0" and args.milestones == (0.3, 0.6, 0.9)
    assert dict(args.model_options) == {"drop_path_rate": 0.1, "small_input": True}
    assert args.nesterov is True and args.ema_decay == 0.999 and args.epochs == 3
    assert args.lr is None  # not given: the TrainConfig default applies
    with pytest.raises(TypeError, match="unexpected keyword argument 'drop_rate_path'"):
        cnnzoo.train("resnet18", tiny_data(), model_options={"drop_rate_path": 0.1},
                     epochs=1, quiet=True)


def test_progress_bar_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(10, "epoch 1/3", stream=tty)
    assert bar.due(10)  # the last step always draws
    bar.draw(5, images=640, loss=0.6931, acc=0.5)
    text = tty.getvalue()
    assert text.startswith("\repoch 1/3 [##########..........] 5/10 loss 0.6931 acc  50.0%")
    assert "img/s ETA " in text
    piped = io.StringIO()
    quiet = Progress(10, "epoch 1/3", stream=piped)
    assert not quiet.due(10)
    quiet.close()
    assert piped.getvalue() == ""
