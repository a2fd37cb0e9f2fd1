"""cnnzoo.profile: counting on meta, activation and measured memory, timing, the report."""

from __future__ import annotations

import copy
import csv
import io
import json
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.profile import ProfileReport, profile
from cnnzoo.profile.memory import measure_peak_bytes
from cnnzoo.profile.summary import human_bytes, human_count, stage_rows
from cnnzoo.profile.timing import percentile, time_calls, training_loss


class TinyNet(nn.Module):
    """conv 3x3 (3 -> 8, bias) -> ReLU -> flatten -> linear (512 -> 10) on 3x8x8 images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def pointwise_net() -> nn.Sequential:
    """1x1 conv (3 -> 8) -> ReLU -> 1x1 conv (8 -> 4), no bias: every allocation is an output."""
    return nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 1, bias=False))


@pytest.fixture
def no_mkldnn():
    # Without oneDNN the 1x1 convolutions take the plain path (no weight reorder buffers), so
    # the only allocations are the outputs and the expected peak can be worked out by hand.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


# ---- counting -------------------------------------------------------------------------------


def test_tiny_net_counts_by_hand():
    report = profile(TinyNet(), (2, 3, 8, 8))
    conv_macs = 2 * 8 * 8 * 8 * (3 * 3 * 3)  # N * out elements per image * (C_in * kh * kw)
    fc_macs = 2 * 10 * 512
    assert report.macs == conv_macs + fc_macs
    assert report.flops == 2 * report.macs
    assert report.macs_per_image == (conv_macs + fc_macs) // 2
    assert report.params == (8 * 27 + 8) + (512 * 10 + 10)
    assert report.param_bytes == 4 * report.params
    rows = {r.path: r for r in report.layers}
    assert rows["conv"].macs == conv_macs and rows["conv"].output_shape == (2, 8, 8, 8)
    assert rows["relu"].macs == 0 and rows["relu"].output_bytes == 4 * 2 * 8 * 8 * 8
    assert rows["fc"].macs == fc_macs and rows["fc"].params == 5130
    assert rows[""].macs == report.macs and rows[""].depth == 0 and rows["fc"].depth == 1
    assert [r.path for r in sorted(report.layers, key=lambda r: r.order)] == [
        "conv", "relu", "fc", ""]


def test_activation_bytes_by_hand():
    # eval: conv1 out (2x8x16x16 fp32 = 16 KiB) and relu out (16 KiB) are alive together;
    # then conv1 out is dropped and conv2 out (8 KiB) joins relu out: peak 32 KiB.
    # train: relu saves its output (16 KiB) which conv2 also saves (same storage: once);
    # conv1 saves only the input and its weight, which are not activations.
    report = profile(pointwise_net(), (2, 3, 16, 16))
    assert report.activation_bytes == 2 * 16384
    assert report.activation_bytes_train == 16384
    assert report.input_bytes == 2 * 3 * 16 * 16 * 4


def test_measured_peak_by_hand(no_mkldnn):
    net = pointwise_net().eval()
    x = torch.randn(2, 3, 16, 16)

    def forward():
        with torch.inference_mode():
            net(x)

    assert measure_peak_bytes(forward, "cpu") == 2 * 16384  # as worked out above
    report = profile(net, (2, 3, 16, 16), timing=True, batch_sizes=(2,))
    (row,) = report.timings
    weights = 4 * (3 * 8 + 8 * 4)
    assert row.peak_inference_bytes == weights + x.numel() * 4 + 2 * 16384
    # A training step holds at least the weights, their gradients and momentum, the input and
    # what autograd saved.
    assert row.peak_train_bytes >= 3 * weights + x.numel() * 4 + report.activation_bytes_train


def test_measured_peak_sees_operator_workspaces():
    # With oneDNN and a 3x3 kernel the convolution allocates more than its output; the
    # allocator-level measurement must see at least the tensors the meta count tracks.
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3)).eval()
    report = profile(net, (4, 3, 32, 32), timing=True, batch_sizes=(4,))
    resident = report.param_bytes + report.input_bytes
    assert report.timings[0].peak_inference_bytes >= resident + report.activation_bytes


def test_model_is_not_modified():
    model = TinyNet().train()
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    before = copy.deepcopy(model.state_dict())
    names = [n for n, _ in model.named_modules()]
    report = profile(model, (2, 3, 8, 8), timing=True, batch_sizes=(1,))
    assert report.timings
    assert model.training and all(m.training for m in model.modules())
    assert [n for n, _ in model.named_modules()] == names
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert after[k].device.type == "cpu" and torch.equal(after[k], before[k]), k
    assert torch.equal(model.conv.weight.grad, torch.ones_like(model.conv.weight))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model.load_state_dict(before)  # thop-style leftovers would break this


def test_counting_on_meta_allocates_nothing_and_is_fast():
    start = time.perf_counter()
    growth = measure_peak_bytes(lambda: profile("vgg19", (1, 3, 600, 600)), "cpu")
    elapsed = time.perf_counter() - start
    # VGG-19 has 575 MB of weights and 600x600 activations of gigabytes: none allocated.
    assert growth < 16 * 2**20
    assert elapsed < 10  # well under a second on an idle core; generous for a loaded CI box


def test_by_name_builds_with_input_channels_and_family():
    report = profile("resnet18", (1, 1, 64, 64))
    assert report.model == "resnet18" and report.family
    assert report.layers[1].path == "conv1"
    assert report.layers[1].output_shape == (1, 64, 32, 32)


def test_googlenet_counts_in_eval_mode_and_keeps_aux_params():
    report = profile("googlenet", (1, 3, 224, 224))
    rows = {r.path: r for r in report.layers}
    assert rows["aux1"].calls == 0 and rows["aux1"].macs == 0  # aux heads: training only
    assert rows["aux1"].params > 0
    assert report.params == sum(r.own_params for r in report.layers)
    assert report.activation_bytes_train > report.activation_bytes


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("alexnet", (0, 3, 224, 224)), {}, "batch size must be >= 1"),
        (("alexnet", (1, 3, 32, 32)), {}, "alexnet"),
        (("resnett18",), {}, "unknown model 'resnett18'"),
        (("resnet18", (3, 64)), {}, "input shape"),
        (("resnet18", (1, 3, 64, 64)), {"timing": True, "batch_sizes": (0,)}, "batch size"),
        (("resnet18", (1, 3, 64, 64)), {"timing": True, "device": "tpu"}, "device"),
    ],
)
def test_bad_input_is_one_clear_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        profile(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_name_is_built_for_the_input_channels_a_module_is_not():
    from cnnzoo.models import create_model

    assert profile("resnet18", (1, 4, 64, 64)).params == 11_689_512 + (4 - 3) * 64 * 7 * 7
    with pytest.raises(ValueError, match="resnet18.*4 channels"):
        profile(create_model("resnet18"), (1, 4, 64, 64))


def test_a_meta_model_counts_but_cannot_be_timed():
    with torch.device("meta"):
        net = TinyNet()
    assert profile(net, (1, 3, 8, 8)).env["device"] == "meta"
    with pytest.raises(ValueError, match="meta device has no values to time"):
        profile(net, (1, 3, 8, 8), timing=True)


def test_cuda_unavailable_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="not available"):
        profile(TinyNet(), (1, 3, 8, 8), timing=True, device="cuda")


def test_module_outside_the_zoo_with_a_wrong_shape_names_itself():
    with pytest.raises(ValueError, match="TinyNet: cannot take an input of shape 1x3x9x9"):
        profile(TinyNet(), (1, 3, 9, 9))


# ---- timing ---------------------------------------------------------------------------------


def test_profile_with_timing_rows():
    report = profile(TinyNet(), (1, 3, 8, 8), timing=True, batch_sizes=(1, 3))
    assert [t.batch_size for t in report.timings] == [1, 3]
    for t in report.timings:
        assert 0 < t.latency_ms_median <= t.latency_ms_p90
        assert t.latency_per_image_ms == pytest.approx(t.latency_ms_median / t.batch_size)
        assert t.throughput_images_per_s == pytest.approx(1e3 * t.batch_size / t.latency_ms_median)
        assert 0 < t.train_step_ms_median <= t.train_step_ms_p90
        assert t.inference_repeats >= 5 and t.train_repeats >= 5 and t.warmup == 1
        assert t.peak_train_bytes > t.peak_inference_bytes > report.param_bytes
    env = report.env
    assert env["threads"] == torch.get_num_threads() and env["device"] == "cpu"
    assert env["torch_version"] == torch.__version__ and env["dtype"] == "float32"
    assert "SGD" in env["optimizer"] and env["date"]


def test_time_calls_cpu_repeats_until_min_time():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    times = time_calls(fn, device="cpu", repeats=3, max_repeats=50, min_time_s=0.06)
    assert len(calls) == len(times) and 3 <= len(times) <= 8
    assert all(t >= 0.0095 for t in times) and sum(times) >= 0.06
    assert len(time_calls(fn, device="cpu", repeats=2, max_repeats=2, min_time_s=10)) == 2


def test_cuda_timing_path_structure():
    """The CUDA path records an event pair around each call and synchronises before reading."""
    log = []

    class FakeEvent:
        count = 0

        def __init__(self, enable_timing=False):
            assert enable_timing
            FakeEvent.count += 1
            self.id = FakeEvent.count
            self.recorded = False

        def record(self):
            self.recorded = True
            log.append(("record", self.id))

        def elapsed_time(self, end):
            assert log[-1] == ("sync",), "elapsed_time read before synchronize()"
            assert self.recorded and end.recorded
            return 20.0  # ms

    class FakeCuda:
        Event = FakeEvent

        @staticmethod
        def synchronize():
            log.append(("sync",))

    times = time_calls(lambda: log.append(("fn",)), device="cuda", repeats=3, max_repeats=3,
                       min_time_s=0, cuda=FakeCuda)
    assert times == [0.02, 0.02, 0.02]
    assert log[:4] == [("record", 1), ("fn",), ("record", 2), ("sync",)]
    assert len(log) == 12


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 90) == 5.0


def test_training_loss_weights_auxiliary_outputs():
    torch.manual_seed(0)
    main, a1, a2 = (torch.randn(4, 10) for _ in range(3))
    target = torch.tensor([1, 2, 3, 4])
    expected = F.cross_entropy(main, target) + 0.3 * (
        F.cross_entropy(a1, target) + F.cross_entropy(a2, target))
    assert torch.allclose(training_loss((main, a1, a2), target, 0.3), expected)
    assert torch.allclose(training_loss(main, target, 0.3), F.cross_entropy(main, target))


class AuxNet(nn.Module):
    """Returns (main, aux) logits in training like GoogLeNet; only main in eval."""

    aux_weight = 0.5

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 5)
        self.aux = nn.Linear(4, 5)

    def forward(self, x):
        f = self.body(x).mean((2, 3))
        return (self.head(f), self.aux(f)) if self.training else self.head(f)


def test_a_training_step_batch_norm_refuses_is_reported_missing():
    # Batch-norm cannot train on one value per channel: 1x1 images at batch 1.
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    report = profile(net, (1, 3, 1, 1), timing=True, batch_sizes=(1, 2))
    one, two = report.timings
    assert one.train_step_ms_median is None and one.peak_train_bytes is None
    assert one.latency_ms_median > 0 and two.train_step_ms_median > 0
    assert report.activation_bytes_train is None
    assert any("no training step at batch 1" in n for n in report.notes)
    assert any("no train-mode forward at 1x3x1x1" in n for n in report.notes)
    assert "Note: no training step at batch 1" in report.table()


def test_training_step_handles_tuple_outputs():
    report = profile(AuxNet(), (1, 3, 8, 8), timing=True, batch_sizes=(2,))
    assert report.timings[0].train_step_ms_median > 0
    rows = {r.path: r for r in report.layers}
    assert rows["aux"].calls == 0  # counted in eval mode


# ---- report ---------------------------------------------------------------------------------


def test_json_and_csv_round_trip(tmp_path):
    report = profile(TinyNet(), (2, 3, 8, 8), timing=True, batch_sizes=(1, 2))
    path = tmp_path / "r.json"
    report.to_json(path)
    again = ProfileReport.from_dict(json.loads(path.read_text()))
    assert again == report
    rows = list(csv.DictReader(io.StringIO(report.to_csv(tmp_path / "r.csv"))))
    assert [int(r["batch_size"]) for r in rows] == [1, 2]
    assert int(rows[0]["macs"]) == report.macs and rows[0]["env_threads"]
    layers = list(csv.DictReader(io.StringIO(report.layers_csv())))
    assert [r["path"] for r in layers] == [r.path for r in report.layers]
    assert layers[1]["output_shape"] == "2x8x8x8"
    # Every measured field says its unit or what it counts.
    units = ("_bytes", "_ms", "_per_s", "_median", "_p90", "params", "macs", "flops", "repeats")
    for name in (*report.to_dict(), *report.to_dict()["timings"][0]):
        if name not in ("model", "family", "input_shape", "layers", "timings", "env", "notes",
                        "batch_size", "warmup", "macs_per_image"):
            assert any(u in name for u in units), name


def test_summary_table_reads_like_torchinfo():
    report = profile("resnet18", (1, 3, 224, 224))
    text = report.table(depth=2)
    assert "├─conv1 (Conv2d)" in text and "1x64x112x112" in text and "9,408" in text
    assert "│ └─layer1.1 (BasicBlock)" in text and "layer1.0.conv1" not in text
    assert "Total params: 11,689,512" in text and "Total MACs: 1.81 G (1,814,073,344" in text
    assert str(report) == report.table()


def test_by_stage_groups_by_resolution_and_adds_up():
    report = profile("resnet18", (1, 3, 224, 224))
    stages = stage_rows(report)
    assert [s["resolution"] for s in stages] == ["112x112", "56x56", "28x28", "14x14", "7x7",
                                                 "head"]
    assert sum(s["params"] for s in stages) == report.params
    assert sum(s["macs"] for s in stages) == report.macs
    # ResNet-18's conv2_x: four 3x3 convs of 64 -> 64 channels at 56x56 (He et al. Table 1)
    assert stages[1]["macs"] == 4 * 56 * 56 * 64 * 64 * 9
    text = report.table(by_stage=True)
    assert "stage 2: 56x56" in text and "1x64x56x56" in text


def test_human_units():
    assert human_count(1_814_073_344) == "1.81 G" and human_count(640) == "640"
    assert human_bytes(3 * 2**20) == "3.00 MiB" and human_bytes(80) == "80 B"


@pytest.mark.parametrize("name", ["efficientnet_b0", "densenet121", "se_resnet18", "googlenet"])
def test_meta_shortcuts_change_nothing_but_time(name, monkeypatch):
    """The meta-device shortcuts give the same counts, sizes and rows as PyTorch's own path."""
    from cnnzoo.profile.meta import MetaShortcuts

    shape = (2, 3, 224, 224) if name == "googlenet" else (2, 3, 64, 64)
    fast = profile(name, shape)
    def pass_through(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))

    monkeypatch.setattr(MetaShortcuts, "__torch_dispatch__", pass_through)
    slow = profile(name, shape)
    assert fast.macs == slow.macs
    assert fast.activation_bytes == slow.activation_bytes
    assert fast.activation_bytes_train == slow.activation_bytes_train
    assert fast.layers == slow.layers


def test_zero_momentum_buffers_make_the_same_first_step():
    """timing.py creates SGD's momentum buffers up front; the update must not change."""
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    b = copy.deepcopy(a)
    x = torch.randn(5, 4)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.01, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9)
    for p in b.parameters():
        opt_b.state[p]["momentum_buffer"] = torch.zeros_like(p)
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(2):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_training_memory_without_training_timing():
    from cnnzoo.profile.profiler import run_profile
    from cnnzoo.profile.timing import TimingOptions

    options = TimingOptions(repeats=3, time_train=False)
    report = run_profile(TinyNet(), (1, 3, 8, 8), timing=True, batch_sizes=(2,), options=options)
    (row,) = report.timings
    assert row.peak_train_bytes > row.peak_inference_bytes
    assert row.train_step_ms_median is None and row.train_repeats == 0
    assert row.inference_repeats >= 3 and report.env["train_step"] == "peak memory only (one step)"
