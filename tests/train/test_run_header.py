"""What a run did is what it says: the header line (device, precision, threads) that train,
eval and the timing commands print first, the same facts in env.json, and the CPU precision
rule (fp32 unless bf16 is asked for, whatever bf16 units the CPU has), on mocked CPU flags."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.cli import profile as cli_profile
from cnnzoo.data import make_synthetic
from cnnzoo.fileio import cpu_name
from cnnzoo.train import device as device_mod


def cpu_flags(monkeypatch, *, amx: bool, avx512_bf16: bool) -> None:
    """Pretend the CPU has (or lacks) AMX tiles and AVX512-BF16."""
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: amx or avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)


@pytest.mark.parametrize("amx, avx512_bf16", [(False, False), (False, True), (True, False),
                                              (True, True)])
def test_cpu_auto_precision_is_fp32_whatever_the_cpu_has(monkeypatch, amx, avx512_bf16):
    cpu_flags(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    ex = device_mod.resolve("cpu", "auto")
    assert ex.precision == "fp32" and ex.amp_dtype is None and not ex.use_scaler
    if amx or avx512_bf16:  # opt-in works where the CPU runs bf16 natively
        ex = device_mod.resolve("cpu", "bf16")
        assert ex.precision == "bf16" and ex.amp_dtype is torch.bfloat16
    else:
        with pytest.raises(ValueError, match="no native bf16"):
            device_mod.resolve("cpu", "bf16")


@pytest.mark.parametrize("amx, avx512_bf16, units", [
    (False, False, []), (False, True, ["avx512_bf16"]), (True, True, ["amx", "avx512_bf16"])])
def test_header_names_the_cpu_and_its_bf16_units(monkeypatch, amx, avx512_bf16, units):
    cpu_flags(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    assert device_mod.cpu_bf16_units() == units
    name = ", ".join([cpu_name(), *units])
    assert device_mod.describe("cpu", "bf16", 3) == \
        f"device cpu ({name}), precision bf16, 3 threads"
    assert device_mod.resolve("cpu", "auto").describe() == (
        f"device cpu ({name}), precision fp32, {torch.get_num_threads()} threads")


def test_header_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_mod.describe("cuda:1", "bf16", 8) == \
        "device cuda:1 (NVIDIA H200), precision bf16, 8 threads"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_mod.describe("cuda", "fp16").startswith("device cuda (unavailable)")


def test_train_prints_the_header_first_and_records_it_in_env_json(tmp_path, capsys):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    out = tmp_path / "run"
    cnnzoo.train(net, make_synthetic(48, 4, (1, 8, 8)), out=str(out), epochs=1,
                 batch_size=16, val_size=16, threads=torch.get_num_threads())
    lines = capsys.readouterr().out.splitlines()
    header = device_mod.describe("cpu", "fp32")
    assert lines[0] == header and lines[1].startswith("epoch 1/1")
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["precision"] == "fp32"
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_bf16_units"] == device_mod.cpu_bf16_units()
    assert header == (f"device {env['device']} ({', '.join([env['cpu'], *env['cpu_bf16_units']])}"
                      f"), precision {env['precision']}, {env['torch_threads']} threads")


def test_quiet_train_prints_nothing(capsys):
    cnnzoo.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)),
                 make_synthetic(32, 4, (1, 8, 8)), epochs=1, batch_size=16, val_size=0,
                 quiet=True)
    assert capsys.readouterr().out == ""


class Stop(ValueError):
    """Raised by a stubbed measurement: the header must already be out."""


# The CLI's own references to the measuring functions are stubbed (it imports them by name).
@pytest.mark.parametrize("argv, module, name", [
    (["compare", "resnet18"], cli_profile, "compare"),
    (["summary", "resnet20", "--timing"], cli_profile, "run_profile"),
])
def test_timing_commands_print_the_header_before_measuring(tmp_path, capsys, monkeypatch,
                                                           argv, module, name):
    def stub(*args, **kwargs):
        raise Stop("stubbed measurement")

    monkeypatch.setattr(module, name, stub)
    extra = ["--out", str(tmp_path / "out")] if argv[0] == "compare" else []
    assert main([*argv, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [device_mod.describe("cpu", "fp32")]
    assert "stubbed measurement" in captured.err


def test_summary_without_timing_prints_no_header(capsys):
    assert main(["summary", "resnet20", "--depth", "1"]) == 0
    assert not capsys.readouterr().out.startswith("device ")
