"""`cnnzoo.infer.deploy`: every fp32 backend equals eager within 1e-4 x max|logit|, `fused`
folds every BatchNorm that follows a convolution, and a backend that is wrong is refused."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import cpuinfo
from cnnzoo.cpuinfo import native_bf16
from cnnzoo.data import make_synthetic, normalize
from cnnzoo.infer import backends as deploy_mod
from cnnzoo.infer.backends import (
    DeployMismatchError,
    UnsupportedBackendError,
    conv_bn_pairs,
    deploy,
    fold_batchnorm,
)
from cnnzoo.models import create_model

# One model of each family, at a small input it takes (name, kwargs, input shape).
FAMILIES = [
    ("alexnet", {"small_input": True}, (2, 3, 32, 32)),
    ("vgg11_bn", {}, (2, 3, 32, 32)),
    ("googlenet", {"small_input": True}, (2, 3, 32, 32)),
    ("resnet18", {"small_input": True}, (2, 3, 32, 32)),
    ("resnet20", {}, (2, 3, 32, 32)),
    ("se_resnet18", {"small_input": True}, (2, 3, 32, 32)),
    ("densenet121", {"small_input": True}, (2, 3, 32, 32)),
    ("efficientnet_b0", {"small_input": True}, (2, 3, 32, 32)),
    ("resnet50_dcn", {"small_input": True}, (2, 3, 32, 32)),
    ("compact_resnet8", {}, (2, 3, 28, 28)),
]


def _model(name: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs).eval()
    # Non-trivial BatchNorm statistics, so folding them in is a real change.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("name, kwargs, shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_fused_equals_eager_for_every_family(name, kwargs, shape):
    model = _model(name, kwargs)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    built = deploy(model, "fused", x)
    assert built.max_abs_diff <= built.tolerance
    assert built.options["channels_last"] and built.module is not None
    # The model passed in is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Another batch than the one it was checked on agrees too.
    y = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(y)
    assert (built(y) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_fused_leaves_no_batchnorm_behind_a_convolution():
    model = _model("resnet18", {"small_input": True})
    x = torch.randn(2, 3, 32, 32)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model, x)
    assert n_bn == 20 and len(folded._cnnzoo_folded) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_batchnorm_that_does_not_follow_a_convolution_stays():
    """DenseNet's pre-activation BatchNorms read a concatenation, not a conv: they stay."""
    model = _model("densenet121", {"small_input": True})
    folded = fold_batchnorm(model, torch.randn(2, 3, 32, 32))
    left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert len(folded._cnnzoo_folded) > 0 and left > 0


class TwoConsumers(nn.Module):
    """The conv's output feeds the BatchNorm and the addition: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_a_convolution_with_a_second_consumer_is_not_folded():
    model = TwoConsumers().eval()
    model.bn.running_mean.fill_(0.5)
    x = torch.randn(2, 3, 8, 8)
    assert conv_bn_pairs(model, x) == []
    assert deploy(model, "fused", x).max_abs_diff < 1e-6  # channels_last rounding only
    # Folding it anyway would have been wrong: the addition would see the folded output.
    forced = TwoConsumers().eval()
    forced.load_state_dict(model.state_dict())
    forced.conv, forced.bn = deploy_mod._fold(model.conv, model.bn), nn.Identity()
    with torch.no_grad():
        assert (forced(x) - model(x)).abs().max() > 0.1


def test_onnxruntime_equals_eager_and_records_its_session():
    model = _model("resnet20", {})
    x = torch.randn(3, 3, 32, 32)
    built = deploy(model, "onnxruntime", x, threads=1)
    assert built.max_abs_diff <= built.tolerance and built.artefact
    assert built.options["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert built.options["intra_op_num_threads"] == 1
    assert built(torch.randn(1, 3, 32, 32)).shape == (1, 10)  # a batch of 1 after export


# Three families whose ops differ (residual + ReLU; depthwise, SiLU, SE; max pooling, adaptive
# pooling, linear layers). The ONNX export takes most of each case (2-core Zen 5, idle:
# 2-4 s each; at load 4, 12-40 s, and densenet121 100 s, googlenet 54 s, so those two are
# left to the fused test).
OPENVINO_FAMILIES = [f for f in FAMILIES if f[0] in ("alexnet", "resnet20", "efficientnet_b0")]


@pytest.mark.parametrize("name, kwargs, shape", OPENVINO_FAMILIES,
                         ids=[f[0] for f in OPENVINO_FAMILIES])
def test_openvino_equals_eager_in_fp32_and_records_its_settings(name, kwargs, shape):
    model = _model(name, kwargs)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    built = deploy(model, "openvino", x, threads=1)
    assert built.max_abs_diff <= built.tolerance and built.artefact
    # fp32 asked for: the plugin's default on a bf16-capable CPU would be bf16.
    assert built.options["INFERENCE_PRECISION_HINT"] == "<Type: 'float32'>"
    assert built.options["INFERENCE_NUM_THREADS"] == "1"
    assert "LATENCY" in built.options["PERFORMANCE_HINT"]
    y = torch.randn((3, *shape[1:]), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(y)
    got = built(y)
    assert got.shape == ref.shape  # another batch size than exported
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_compile_equals_eager():
    model = _model("resnet20", {})
    x = torch.randn(2, 3, 32, 32)
    built = deploy(model, "compile", x)
    assert built.max_abs_diff <= built.tolerance
    assert built.options["inductor"] == {"freezing": True}


def test_a_backend_that_computes_something_else_is_refused(monkeypatch):
    def wrong_fold(conv, bn):
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True)
        return fused  # fresh weights: not the folded ones

    monkeypatch.setattr(deploy_mod, "_fold", wrong_fold)
    with pytest.raises(DeployMismatchError, match=r"^deploy fused: max \|logit difference\|"):
        deploy(_model("resnet20", {}), "fused", torch.randn(2, 3, 32, 32))


def test_a_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeError, match=r"cnnzoo\[export\]"):
        deploy(_model("resnet20", {}), "onnxruntime", torch.randn(2, 3, 32, 32))


def test_a_missing_openvino_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeError, match=r"^deploy openvino needs the openvino package "
                                           r"\(pip install 'cnnzoo\[openvino\]'\)$"):
        deploy(_model("resnet20", {}), "openvino", torch.randn(2, 3, 32, 32))


def test_an_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="eager, fused, compile, onnxruntime"):
        deploy(nn.Linear(2, 2), "tensorrt", torch.randn(1, 2))


@pytest.fixture(scope="module")
def trained_resnet20():
    """resnet20 trained 2 epochs on a learnable 10-class synthetic set of 3x32x32 images,
    with the normalised batches the trainer fed it (calibration and check data)."""
    data = make_synthetic(600, 10, (3, 32, 32), seed=0)
    result = cnnzoo.train("resnet20", data, epochs=2, batch_size=64, lr=0.1, val_size=100,
                          threads=2, quiet=True)
    model = result.model.eval()
    x = normalize(data.images[:256].float() / 255, data.mean, data.std)
    return model, list(x.split(64))


def test_int8_keeps_top1_agreement_with_eager(trained_resnet20):
    model, batches = trained_resnet20
    built = deploy(model, "int8", batches[0], calibration=batches, threads=1)
    assert built.top1_agreement >= 0.95
    assert built.options["quant_format"] == "QDQ" and built.options["calibration_batches"] == 4
    assert built.options["activations"] == "uint8"
    assert b"QuantizeLinear" in built.artefact  # it really runs quantized
    assert built(batches[0]).shape == (64, 10)


def test_int8_runs_every_conv_and_residual_add_as_an_integer_op(trained_resnet20, tmp_path):
    """With uint8 activations ORT fuses every QDQ convolution and residual addition into
    QLinearConv / QLinearAdd; int8 activations left those feeding an addition in fp32."""
    import onnx
    import onnxruntime as ort

    model, batches = trained_resnet20
    built = deploy(model, "int8", batches[0], calibration=batches[:1], threads=1)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(built.artefact, so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    # resnet20: 19 convolutions (its shortcuts are option A: no convolution), 9 additions.
    assert ops.count("QLinearConv") == 19 and ops.count("QLinearAdd") == 9
    assert "Conv" not in ops and "Add" not in ops


def test_int8_keeps_8_bit_weights_only_where_the_cpu_has_vnni(monkeypatch):
    assert deploy_mod.has_vnni({"avx2", "avx512_vnni"}) and deploy_mod.has_vnni({"avx_vnni"})
    assert not deploy_mod.has_vnni({"avx2", "fma"}) and not deploy_mod.has_vnni(set())


def test_int8_needs_calibration_data():
    with pytest.raises(ValueError, match="deploy int8: needs calibration"):
        deploy(_model("resnet20", {}), "int8", torch.randn(2, 3, 32, 32))


def test_int8_that_disagrees_with_eager_is_refused(trained_resnet20, monkeypatch):
    model, batches = trained_resnet20
    monkeypatch.setattr(deploy_mod, "INT8_AGREEMENT", 1.01)  # a bar no model can reach
    with pytest.raises(DeployMismatchError, match="deploy int8: top-1 agreement"):
        deploy(model, "int8", batches[0], calibration=batches[:1], threads=1)


NATIVE_BF16, WHY_NOT_BF16 = native_bf16()


@pytest.mark.skipif(not NATIVE_BF16, reason=f"bf16 backend: {WHY_NOT_BF16}")
def test_bf16_agrees_with_eager_and_reports_it(trained_resnet20):
    model, batches = trained_resnet20
    built = deploy(model, "bf16", batches[0], calibration=batches[:2], threads=1)
    assert built.top1_agreement >= 0.9
    # bf16 rounding is visible (not fp32-exact) but small against the logits' scale.
    assert 0 < built.max_rel_diff <= 5e-2
    assert built.options["agreement_on"] == "128 calibration images"
    assert built.options["autocast"] == "bfloat16" and built.options["folded"]
    assert built(batches[0]).dtype == torch.float32


@pytest.mark.skipif(not NATIVE_BF16, reason=f"bf16 backend: {WHY_NOT_BF16}")
def test_bf16_without_calibration_checks_the_example_input():
    built = deploy(_model("resnet20", {}), "bf16", torch.randn(2, 3, 32, 32))
    assert built.options["agreement_on"] == "2 example images"
    assert built.max_rel_diff <= 5e-2 and built.top1_agreement in (0.0, 0.5, 1.0)


def test_bf16_is_refused_in_one_line_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "fma"})
    with pytest.raises(UnsupportedBackendError,
                       match=r"^deploy bf16: this CPU has no native bf16 \(neither avx512_bf16 "
                             r"nor amx_bf16 in its flags\).*10-400x slower") as err:
        deploy(_model("resnet20", {}), "bf16", torch.randn(2, 3, 32, 32))
    assert "\n" not in str(err.value)


def test_bf16_needs_onednn_as_well_as_the_flags(monkeypatch):
    monkeypatch.setattr(cpuinfo, "cpu_supports_bf16", lambda: False)
    ok, why = cpuinfo.native_bf16({"avx512_bf16"})
    assert not ok and "oneDNN cannot run bf16" in why and "avx512_bf16" in why
    monkeypatch.setattr(cpuinfo, "cpu_supports_bf16", lambda: True)
    assert cpuinfo.native_bf16({"amx_bf16", "avx512_bf16"}) == (
        True, "native bf16 (avx512_bf16, amx_bf16)")
    assert not cpuinfo.native_bf16(set())[0]


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\n")
    assert cpuinfo.cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert cpuinfo.cpu_flags(str(tmp_path / "missing")) is None
