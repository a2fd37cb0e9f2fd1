"""The CUDA branches of the trainer, on a machine without a GPU: torch's CUDA calls mocked.

No GPU has run them yet (benchmarks/cuda_smoke.sh is the real run, docs/cuda.md). Covered
elsewhere: `device.resolve`'s bf16/fp16/GradScaler choice and `synchronize` (test_train.py),
the run header's GPU name (test_run_header.py), SyncBatchNorm on CUDA
(test_train_distributed.py), CUDA event timing (test_profile.py), channels_last training
(test_train.py, test_data_pipeline.py). Here: nccl and the GPU of each process, DDP's
device_ids, autocast and GradScaler in the training step, the scaler's state across a
resume, cuDNN autotuning, the CUDA RNG states in a checkpoint, --compile, env.json's GPUs.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import cnnzoo.train
from cnnzoo.checkpoint import load_checkpoint
from cnnzoo.data import make_synthetic
from cnnzoo.train import distributed, loop
from cnnzoo.train.checkpoint import rng_state, set_rng_state
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import Execution
from cnnzoo.train.loss import make_criterion
from cnnzoo.train.runlog import environment
from cnnzoo.train.setup import _configure_torch


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))


def tiny_data():
    return make_synthetic(96, 4, (1, 8, 8), seed=0)


# ---------------------------------------------------------------- torchrun on GPUs


def test_gpu_processes_join_over_nccl_each_on_its_gpu(monkeypatch):
    calls = []
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda **kw: calls.append(("init", kw)))
    info = distributed.DistInfo(rank=1, world_size=2, local_rank=1)
    assert distributed.init(info, torch.device("cuda", 1)) is True
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init", {"backend": "nccl", "rank": 1, "world_size": 2})]
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    calls.clear()
    assert distributed.init(distributed.DistInfo(), torch.device("cuda", 0)) is False
    assert calls == []  # one process: no group, and the GPU is left alone


def test_ddp_on_a_gpu_gets_its_device_id(monkeypatch):
    made = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda model, device_ids: made.append(device_ids) or model)
    model = nn.Linear(2, 2)
    info = distributed.DistInfo(rank=1, world_size=2, local_rank=1)
    assert distributed.wrap(model, info, torch.device("cuda", 1)) is model
    assert distributed.wrap(model, info, torch.device("cpu")) is model
    assert made == [[1], None]
    assert distributed.wrap(model, distributed.DistInfo(), torch.device("cuda", 0)) is model
    assert len(made) == 2


# ---------------------------------------------------------------- autocast and GradScaler


class RecordingAutocast:
    """Stands in for torch.autocast: records its arguments and changes nothing."""

    calls: list[tuple] = []

    def __init__(self, device_type, dtype=None, enabled=True):
        self.calls.append((device_type, dtype, enabled))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def step_once(execution: Execution, scaler: torch.amp.GradScaler, clip: float | None):
    """One `loop.train_step` of a fresh tiny net; returns the updated weights."""
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    run = SimpleNamespace(execution=execution, net=model, model=model, optimizer=optimizer,
                          criterion=make_criterion(model, 0.0), scaler=scaler,
                          cfg=SimpleNamespace(grad_clip_norm=clip), ema=None, global_step=0,
                          scheduler=SimpleNamespace(step=lambda: None))
    data = tiny_data()
    x, y = data.images[:16].float() / 255, data.labels[:16]
    loop.train_step(run, x, y)
    assert run.global_step == 1
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_train_step_autocasts_on_the_gpu(monkeypatch, precision, dtype):
    RecordingAutocast.calls = []
    monkeypatch.setattr(torch, "autocast", RecordingAutocast)
    execution = Execution(torch.device("cuda", 0), precision, dtype, precision == "fp16")
    step_once(execution, torch.amp.GradScaler("cpu", enabled=False), None)
    assert RecordingAutocast.calls == [("cuda", dtype, True)]


def test_grad_scaler_step_equals_the_unscaled_step_with_clipping(monkeypatch):
    """fp16's loss scaling must not change the update: the gradients are unscaled before
    they are clipped and stepped (a power-of-2 scale is exact in float32)."""
    monkeypatch.setattr(torch, "autocast", RecordingAutocast)  # no real fp16 on the CPU
    fp16 = Execution(torch.device("cuda", 0), "fp16", torch.float16, use_scaler=True)
    plain = step_once(fp16, torch.amp.GradScaler("cpu", enabled=False), clip=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=True)
    scaled = step_once(fp16, scaler, clip=0.05)
    unclipped = step_once(fp16, torch.amp.GradScaler("cpu", enabled=False), clip=None)
    for k in plain:
        torch.testing.assert_close(scaled[k], plain[k], rtol=1e-6, atol=1e-7)
    assert any(not torch.allclose(plain[k], unclipped[k]) for k in plain)  # clipping acted
    assert scaler.get_scale() == 2.0**12  # finite gradients: the scale is kept


def test_grad_scaler_state_survives_a_resume(tmp_path, monkeypatch):
    """An fp16 run's last.pt holds the scaler's state and --resume loads it: the growth
    tracker keeps counting good steps across the interruption."""
    fp16 = Execution(torch.device("cpu"), "fp16", None, use_scaler=True)  # autocast off
    monkeypatch.setattr(loop, "resolve", lambda *a, **k: fp16)
    options = {"epochs": 2, "batch_size": 16, "val_size": 32, "quiet": True,
               "out": str(tmp_path / "run"), "checkpoint_every": 0}

    def crash(name):
        if name == "train:2:2":
            raise KeyboardInterrupt("planned crash")

    with monkeypatch.context() as m:
        m.setattr(loop.faults, "kill_point", crash)
        with pytest.raises(KeyboardInterrupt):
            cnnzoo.train.train(tiny_net(), tiny_data(), **options)
    first = load_checkpoint(tmp_path / "run" / "last.pt")
    assert first["epoch"] == 1 and first["scaler"]["scale"] == 2.0**16
    assert first["scaler"]["_growth_tracker"] == first["global_step"] == 4
    cnnzoo.train.train(tiny_net(), tiny_data(), resume=True, **options)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["scaler"]["_growth_tracker"] == last["global_step"] == 8


# ---------------------------------------------------------------- cuDNN, RNG, compile, env


def test_cudnn_autotuning_only_when_not_deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    _configure_torch(TrainConfig(), torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False  # the CPU leaves cuDNN alone
    _configure_torch(TrainConfig(), torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True
    try:
        _configure_torch(TrainConfig(deterministic=True), torch.device("cuda", 0))
        assert torch.backends.cudnn.benchmark is False
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoint_rng_state_carries_the_gpus_generators(monkeypatch):
    states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = rng_state()
    assert state["cuda"] is states
    set_rng_state(state)
    assert restored == [states]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_rng_state(state)  # a GPU checkpoint resumed on a CPU: the CPU generators only
    assert restored == [states] and rng_state()["cuda"] is None


def test_compile_wraps_the_net_and_the_checkpoint_keeps_plain_keys(tmp_path, monkeypatch):
    """--compile trains through torch.compile (dynamo, with the eager backend here: the CPU
    build has no compiler to spare) and saves the uncompiled model's keys."""
    compiled = []
    real = torch.compile

    def compile_eager(model, **kw):
        compiled.append(type(model).__name__)
        return real(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_eager)
    torch._dynamo.reset()
    try:
        result = cnnzoo.train.train(tiny_net(), tiny_data(), epochs=1, batch_size=16,
                                    val_size=32, quiet=True, compile=True,
                                    out=str(tmp_path / "run"))
    finally:
        torch._dynamo.reset()
    assert compiled == ["Sequential"]
    keys = set(load_checkpoint(tmp_path / "run" / "best.pt")["model"])
    assert keys == set(tiny_net().state_dict()) and result.metrics[0]["val_acc"] is not None


def test_env_json_names_every_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"NVIDIA H200 #{i}")
    env = environment(device=torch.device("cuda", 0), precision="bf16", world_size=1)
    assert env["gpus"] == ["NVIDIA H200 #0", "NVIDIA H200 #1"]
    assert env["device"] == "cuda:0" and env["precision"] == "bf16"
    assert environment(device=torch.device("cpu"), precision="fp32", world_size=1)["gpus"] == []
