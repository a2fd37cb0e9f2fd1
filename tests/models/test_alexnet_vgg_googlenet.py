"""AlexNet, VGG and GoogLeNet: published sizes, the paper tables, aux heads, small images.

Equality of the logits with torchvision's is in test_reference.py; these tests check what
that one cannot: the variants without a reference file, the paper form of GoogLeNet, the
training-mode outputs and the input limits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.googlenet import GOOGLENET_TABLE_1, GoogLeNet, GoogLeNetOutputs
from cnnzoo.models.vgg import VGG_TABLE_1
from reference import assert_logits_match, filled_state_dict, manifest, reference_input

# torchvision 0.29.1's published `num_params` (tests/fixtures/reference/published.md, section 1).
PUBLISHED_PARAMS = {
    ("alexnet", ()): 61_100_840,
    ("vgg11", ()): 132_863_336,
    ("vgg11_bn", ()): 132_868_840,
    ("vgg13", ()): 133_047_848,
    ("vgg13_bn", ()): 133_053_736,
    ("vgg16", ()): 138_357_544,
    ("vgg16_bn", ()): 138_365_992,
    ("vgg19", ()): 143_667_240,
    ("vgg19_bn", ()): 143_678_248,
    ("googlenet", (("torchvision_compat", True),)): 13_004_888,
    ("googlenet", (("torchvision_compat", True), ("aux_logits", False))): 6_624_904,
}


def count_params(name: str, **options) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **options)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "options"), list(PUBLISHED_PARAMS), ids=str)
def test_param_counts_equal_torchvision(name, options):
    assert count_params(name, **dict(options)) == PUBLISHED_PARAMS[(name, options)]


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "googlenet"])
def test_macs_at_224_match_reference(name):
    options = {"torchvision_compat": True} if name == "googlenet" else {}
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **options).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, 224, 224))
    assert counter.get_total_flops() // 2 == manifest(name)["macs_per_image"]


def paper_googlenet_params(num_classes: int, aux: bool) -> int:
    """Parameters of the paper form, derived from Table 1 alone (conv weights + biases)."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    cin = 192
    for row in GOOGLENET_TABLE_1.values():
        total += conv(cin, row.ch1x1, 1) + conv(cin, row.ch3x3red, 1)
        total += conv(row.ch3x3red, row.ch3x3, 3) + conv(cin, row.ch5x5red, 1)
        total += conv(row.ch5x5red, row.ch5x5, 5) + conv(cin, row.pool_proj, 1)
        cin = row.ch1x1 + row.ch3x3 + row.ch5x5 + row.pool_proj
    if aux:
        for aux_in in (512, 528):  # 4a, 4d
            total += conv(aux_in, 128, 1) + 2048 * 1024 + 1024 + 1024 * num_classes + num_classes
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize("aux", [True, False])
def test_paper_googlenet_params_follow_table_1(aux):
    assert count_params("googlenet", aux_logits=aux) == paper_googlenet_params(1000, aux)


def test_vgg_table_1_depths():
    # The depth in the name counts the 3x3 convs of the column plus the three FC layers.
    depths = {column: sum(len(stage) for stage in stages) + 3
              for column, stages in VGG_TABLE_1.items()}
    assert depths == {"A": 11, "B": 13, "D": 16, "E": 19}


def test_vgg_torchvision_init():
    torch.manual_seed(0)
    model = cnnzoo.create_model("vgg11_bn", num_classes=10)  # the input is tested below
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    fc = model.classifier[0]
    assert abs(fc.weight.std().item() - 0.01) < 0.0005 and torch.count_nonzero(fc.bias) == 0
    # Kaiming normal, fan-out: std = sqrt(2 / (out_channels * 3 * 3)).
    c = convs[-1]
    assert abs(c.weight.std().item() / (2 / (512 * 9)) ** 0.5 - 1) < 0.02


def inception_outputs(model: GoogLeNet, x: torch.Tensor) -> dict[str, int]:
    channels = {}
    hooks = [getattr(model, f"inception{row}").register_forward_hook(
        lambda _m, _i, out, row=row: channels.__setitem__(row, out.shape[1]))
        for row in GOOGLENET_TABLE_1]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return channels


@pytest.mark.parametrize("compat", [False, True])
def test_inception_outputs_are_table_1(compat):
    model = cnnzoo.create_model("googlenet", num_classes=10, small_input=True,
                                torchvision_compat=compat).eval()
    # Table 1, "output size" column (depth).
    expected = {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528,
                "4e": 832, "5a": 832, "5b": 1024}
    assert inception_outputs(model, torch.randn(1, 3, 8, 8)) == expected
    assert model.num_features == 1024


def test_googlenet_paper_and_torchvision_forms():
    paper = cnnzoo.create_model("googlenet")
    compat = cnnzoo.create_model("googlenet", torchvision_compat=True)
    assert paper.inception3a.branch3[1][0].kernel_size == (5, 5)
    assert compat.inception3a.branch3[1][0].kernel_size == (3, 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert all(m.bias is not None for m in paper.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper.modules()) == 2
    convs = [m for m in compat.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in compat.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(norms) and all(m.eps == 0.001 for m in norms)
    assert all(c.bias is None for c in convs)
    assert (paper.dropout.p, compat.dropout.p, paper.aux1.dropout.p) == (0.4, 0.2, 0.7)


def test_googlenet_train_returns_aux_outputs_and_eval_plain_logits():
    torch.manual_seed(0)
    model = cnnzoo.create_model("googlenet", num_classes=10, in_chans=1, small_input=True)
    assert GoogLeNet.aux_weight == 0.3 and model.aux_weight == 0.3
    x, target = torch.randn(1, 1, 28, 28), torch.tensor([3])

    model.train()
    out = model(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert [o.shape for o in out] == [(1, 10)] * 3
    loss = model.loss(out, target, F.cross_entropy)
    expected = F.cross_entropy(out.logits, target) + 0.3 * (
        F.cross_entropy(out.aux_logits1, target) + F.cross_entropy(out.aux_logits2, target))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None and model.aux2.conv[0].weight.grad is not None

    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert type(logits) is torch.Tensor and logits.shape == (1, 10)
    torch.testing.assert_close(model.loss(logits, target, F.cross_entropy),
                               F.cross_entropy(logits, target))

    no_aux = cnnzoo.create_model("googlenet", num_classes=10, in_chans=1, small_input=True,
                                 aux_logits=False).train()
    assert no_aux.aux1 is None and type(no_aux(x)) is torch.Tensor


def test_googlenet_min_input_size_follows_mode():
    model = cnnzoo.create_model("googlenet", num_classes=10, small_input=True)
    assert model.eval().min_input_size == 2
    assert model.train().min_input_size == 28  # the 5x5/3 aux pool must give 4x4
    with pytest.raises(ValueError, match=r"googlenet: .*>= 28.*\(2, 3, 27, 27\)"):
        model(torch.randn(2, 3, 27, 27))
    with pytest.raises(ValueError, match=r"googlenet: .*28 <= H, W <= 33.*\(2, 3, 34, 34\)"):
        model(torch.randn(2, 3, 34, 34))
    with torch.no_grad():
        assert isinstance(model(torch.randn(1, 3, 33, 33)), GoogLeNetOutputs)
    native = cnnzoo.create_model("googlenet", torchvision_compat=True)
    assert native.train().min_input_size == native.eval().min_input_size == 15


SMALL = [("alexnet", {"small_input": True}), ("vgg11_bn", {}),
         ("googlenet", {"small_input": True}),
         ("googlenet", {"small_input": True, "torchvision_compat": True})]


@pytest.mark.parametrize(("name", "options"), SMALL, ids=str)
def test_small_images(name, options):
    # Fashion-MNIST 1x28x28 (resized to VGG's minimum, 32) and CIFAR 3x32x32, in eval mode;
    # training on them (gradients, aux outputs) is in test_every_registered_model.py and above.
    gray = 32 if name.startswith("vgg") else 28
    for in_chans, side in ((1, gray), (3, 32)):
        model = cnnzoo.create_model(name, num_classes=10, in_chans=in_chans, **options).eval()
        assert model.min_input_size <= side
        with torch.no_grad():
            assert model(torch.randn(1, in_chans, side, side)).shape == (1, 10)
            m = model.min_input_size
            assert model(torch.randn(1, in_chans, m, m)).shape == (1, 10)


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet"])
def test_bad_inputs_raise_naming_the_model(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=10).eval()
    m = model.min_input_size
    for x in (torch.empty(1, 3, m - 1, m - 1), torch.empty(1, 1, 224, 224),
              torch.empty(3, 224, 224)):
        with pytest.raises(ValueError, match=rf"^{name}: expected \(N, 3, H, W\) with H, W >= {m}"):
            model(x.to("meta"))
    with pytest.raises(ValueError, match="transform_input needs in_chans=3"):
        cnnzoo.create_model("googlenet", in_chans=1, transform_input=True)


def test_transform_input_is_torchvisions_renormalisation():
    torch.manual_seed(0)
    plain = cnnzoo.create_model("googlenet", num_classes=10, small_input=True).eval()
    renorm = cnnzoo.create_model("googlenet", num_classes=10, small_input=True,
                                 transform_input=True).eval()
    renorm.load_state_dict(plain.state_dict())
    image = torch.rand(2, 3, 8, 8)  # in [0, 1]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(renorm((image - mean) / std), plain((image - 0.5) / 0.5))


def test_from_torchvision_googlenet_without_aux_heads():
    state = {k: v for k, v in filled_state_dict("googlenet").items() if not k.startswith("aux")}
    model = cnnzoo.from_torchvision("googlenet", state)
    assert model.aux1 is None and sum(p.numel() for p in model.parameters()) == 6_624_904
    with torch.no_grad():
        assert_logits_match("googlenet", model.eval()(reference_input()))
