"""Checks that grow with the registry: every registered model, the same contract."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

import cnnzoo
from cnnzoo.models import registry

ALL = cnnzoo.list_models()
# The largest nets are checked on the meta device only where a real pass adds nothing new.
HUGE = {"resnet1202", "efficientnet_b6", "efficientnet_b7"}


def small_model(name: str, *, in_chans: int = 1, num_classes: int = 10):
    """The model configured for small images: its small-image stem where it has one."""
    options = {}
    if "small_input" in inspect.signature(registry.get_builder(name)).parameters:
        options["small_input"] = True
    return cnnzoo.create_model(name, num_classes=num_classes, in_chans=in_chans, **options)


def small_side(model) -> int:
    """28 (Fashion-MNIST) unless the model documents a larger minimum, as the pipeline resizes."""
    return max(28, model.min_input_size)


def test_registry_is_populated():
    families = {"alexnet", "vgg11", "vgg16_bn", "googlenet", "resnet18", "resnet152", "resnet20",
                "plain56", "resnet1202", "densenet121", "densenet_bc100", "se_resnet50",
                "efficientnet_b0", "efficientnet_b7", "resnet50_dcn", "resnet50_dcnv2"}
    assert families <= set(ALL), f"missing: {sorted(families - set(ALL))}"


def test_every_public_builder_is_registered():
    import cnnzoo.models as models_pkg

    for module_name in ("alexnet", "vgg", "googlenet", "resnet", "resnet_cifar", "densenet",
                        "efficientnet", "deformable", "senet", "compact"):
        module = getattr(models_pkg, module_name)
        for fname, fn in vars(module).items():
            own = inspect.isfunction(fn) and fn.__module__ == module.__name__
            if fname.startswith("_") or not own:
                continue
            params = inspect.signature(fn).parameters
            if "num_classes" in params and "in_chans" in params:
                assert fname in ALL, f"{module.__name__}.{fname} is a builder but not registered"


def test_register_twice_raises():
    def resnet18(*, num_classes=1000, in_chans=3):  # same name as a registered model
        return None

    with pytest.raises(ValueError, match="registered twice"):
        registry.register_model(resnet18)


def test_list_models_pattern():
    assert cnnzoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert cnnzoo.list_models("no_such_*") == []


def test_unknown_model_lists_closest():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        cnnzoo.create_model("resnet51")


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="'depth_multiplier'"):
        cnnzoo.create_model("resnet18", depth_multiplier=2)


@pytest.mark.parametrize("name", ALL)
def test_metadata_on_meta_device(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=7, in_chans=1)
    assert model.name == name
    assert model.num_classes == 7
    assert model.family and model.paper, "family and paper must be recorded"
    assert model.input_size[0] == 1
    assert model.num_features > 0
    assert 1 <= model.min_input_size <= model.input_size[1]


@pytest.mark.parametrize("name", [n for n in ALL if n not in HUGE])
def test_small_image_forward_backward(name):
    torch.manual_seed(0)
    model = small_model(name)
    side = small_side(model)
    model.train()
    x = torch.randn(2, 1, side, side)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 10)
    loss = sum(o.float().pow(2).mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"

    model.eval()
    with torch.no_grad():
        a = model(x)
        b = model(x)
        feats = model.forward_features(x)
        head = model.forward_head(feats)
    assert isinstance(a, torch.Tensor), "eval mode must return plain logits"
    assert torch.equal(a, b), "eval mode must be deterministic (dropout, stochastic depth off)"
    torch.testing.assert_close(head, a)


@pytest.mark.parametrize("name", [n for n in ALL if n not in HUGE])
def test_rgb_32x32(name):
    model = small_model(name, in_chans=3).eval()
    side = max(32, model.min_input_size)
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, 10)


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_name_the_model(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=10, in_chans=3).eval()
    side = model.min_input_size
    bad = {
        "channels": torch.empty(1, 1, max(side, 32), max(side, 32), device="meta"),
        "3-D": torch.empty(3, max(side, 32), max(side, 32), device="meta"),
    }
    if side > 1:
        bad["too small"] = torch.empty(1, 3, side - 1, side - 1, device="meta")
    for what, x in bad.items():
        with pytest.raises(ValueError, match=name) as info:
            model(x)
        msg = str(info.value)
        assert str(tuple(x.shape)) in msg, f"{what}: message must show the received shape: {msg}"
        assert "\n" not in msg


def test_import_does_no_work():
    code = (
        "import torch, torch.nn as nn\n"
        "calls = []\n"
        "orig = nn.Module.__init__\n"
        "def spy(self, *a, **k):\n"
        "    calls.append(type(self).__name__); orig(self, *a, **k)\n"
        "nn.Module.__init__ = spy\n"
        "import cnnzoo, cnnzoo.models\n"
        "assert not calls, calls\n"
        "assert 'matplotlib' not in __import__('sys').modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_list_prints_every_model():
    result = subprocess.run(
        [sys.executable, "-m", "cnnzoo", "list"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "params"]
    listed = {line.split()[0] for line in lines[1:]}
    assert listed == set(ALL)
    row = next(line for line in lines if line.startswith("resnet50 "))
    assert "25,557,032" in row and "3x224x224" in row


def test_cli_unknown_pattern_fails_cleanly():
    result = subprocess.run([sys.executable, "-m", "cnnzoo", "list", "nothing*"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "no model matches" in result.stderr


def test_top_level_api_is_callable_and_packages_stay_importable():
    code = (
        "import cnnzoo, inspect\n"
        "import cnnzoo.train.checkpoint as ck, cnnzoo.profile.compare as cmp\n"
        "assert callable(cnnzoo.train) and callable(cnnzoo.profile)\n"
        "assert cnnzoo.train.checkpoint is ck and cnnzoo.profile.compare is cmp\n"
        "assert 'timing' in inspect.signature(cnnzoo.profile).parameters\n"
        "assert cnnzoo.profile('resnet18').macs == 1814073344\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
