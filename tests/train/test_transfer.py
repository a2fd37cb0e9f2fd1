"""Transfer learning: `cnnzoo train MODEL --init WEIGHTS --num-classes N --freeze STAGE`.

The pretrained weights are the reference-filled torchvision state dicts of `tests/reference.py`
(the deterministic fill of tests/fixtures/reference/README.md, in torchvision's key layout), the
data 400 images of the CIFAR-10 training split (JPEGs, 40 per class) in tests/fixtures/.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import cnnzoo.train
from cnnzoo.cli import main as cli_main
from cnnzoo.data import load_dataset
from cnnzoo.infer.export import export_model
from cnnzoo.models import create_model
from cnnzoo.train import TrainConfig, load_checkpoint, transfer
from cnnzoo.train.optim import build_optimizer, param_groups
from reference import REPO, filled_state_dict

# Every 125th image of the project's cifar10-train-jpeg.tar.gz (sorted by class): files
# 0000, 0125, ..., 4875 of each class, 130 kB; see tests/fixtures/README.md.
CIFAR = REPO / "tests" / "fixtures" / "cifar10-400-jpeg.tar.gz"
FROZEN = ("conv1.", "bn1.", "layer1.", "layer2.")  # resnet18 --freeze layer2
TRAINED = ("layer3.", "layer4.")


@pytest.fixture(scope="module")
def cifar400():
    """400 images, 40 per class: 300 train + 100 validation."""
    return load_dataset(str(CIFAR))


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18-filled.pth"
    torch.save(filled_state_dict("resnet18"), path)
    return path


@pytest.fixture(scope="module")
def finetuned(cifar400, torchvision_file, tmp_path_factory):
    """One epoch of resnet18 from the torchvision-layout file, layers up to layer2 frozen."""
    out = tmp_path_factory.mktemp("runs") / "ft"
    result = cnnzoo.train("resnet18", cifar400, init=str(torchvision_file), num_classes=10,
                          freeze="layer2", backbone_lr_scale=0.1, lr=0.01, epochs=1,
                          batch_size=32, val_size=100, out=str(out), threads=1, quiet=True)
    return result, out


def test_finetune_starts_from_the_file_with_a_new_head_and_frozen_stages(finetuned,
                                                                          torchvision_file):
    result, out = finetuned
    source = filled_state_dict("resnet18")
    model = result.model
    after = model.state_dict()

    # The head has the new size and was not loaded (the file's is 1000 x 512).
    assert model.fc.out_features == 10 and model.num_classes == 10
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["num_classes"] == 10 and ckpt["model"]["fc.weight"].shape == (10, 512)

    # Frozen stages: every parameter and BatchNorm statistic still equals the file's.
    frozen = [k for k in after if k.startswith(FROZEN)]
    assert len(frozen) == 60
    assert all(torch.equal(after[k], source[k]) for k in frozen)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(FROZEN))

    # Trained stages moved, and from the file's values: one epoch at lr 0.001 changes a
    # conv weight by a small fraction of its norm, while a fresh init is as far away as the
    # weight is long (independent draws: ~sqrt(2)).
    trained = [k for k, p in model.named_parameters() if k.startswith(TRAINED)]
    assert trained and all(not torch.equal(after[k], source[k]) for k in trained)
    assert all(not torch.equal(after[k], source[k]) for k in after
               if k.startswith(TRAINED) and k.endswith("running_mean"))
    convs = [k for k in trained if after[k].dim() == 4]
    drift = max(float((after[k] - source[k]).norm() / source[k].norm()) for k in convs)
    fresh = create_model("resnet18", num_classes=10).state_dict()
    fresh_gap = min(float((fresh[k] - source[k]).norm() / source[k].norm()) for k in convs)
    assert drift < 0.1 < 1.0 < fresh_gap

    # The checkpoint records where the weights came from.
    init = ckpt["init"]
    digest = hashlib.sha256(torchvision_file.read_bytes()).hexdigest()
    assert init["path"] == str(torchvision_file) and init["sha256"] == digest
    assert (init["kind"], init["source"], init["reference_name"]) == (
        "state dict", "torchvision", "resnet18")
    assert init["reinitialized"] == ["fc.weight", "fc.bias"]
    assert init["loaded"] == len(source) - 2
    assert init["frozen"] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
    assert ckpt["config"]["init"] == str(torchvision_file)

    # Backbone at a tenth of the head's rate, the no-decay rule kept in both parts.
    groups = load_checkpoint(out / "last.pt")["optimizer"]["param_groups"]
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [
        (0.01, 5e-4), (0.01, 0.0), (pytest.approx(0.001), 5e-4), (pytest.approx(0.001), 0.0)]
    m = result.metrics[0]
    assert math.isfinite(m["train_loss"]) and 0.0 <= m["val_acc"] <= 1.0
    print(f"\nfine-tune: train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}, val acc "
          f"{m['val_acc']:.3f} on 100 images; trained {len(trained)} tensors, max relative "
          f"drift {drift:.4f}, fresh-init gap {fresh_gap:.3f}, {len(frozen)} frozen unchanged")


def test_init_from_a_cnnzoo_checkpoint_and_its_safetensors_export(finetuned, cifar400,
                                                                  tmp_path):
    _, out = finetuned
    best = load_checkpoint(out / "best.pt")["model"]
    exported = export_model(out / "best.pt", "safetensors", tmp_path / "ft.safetensors")
    for path, kind in ((out / "best.pt", "cnnzoo checkpoint"),
                       (exported.path, "cnnzoo safetensors")):
        # Freeze everything but the classifier (a linear probe): the backbone must stay equal
        # to the file's, and the classifier (same size) starts from the file's too.
        run = tmp_path / kind.replace(" ", "-")
        result = cnnzoo.train("resnet18", cifar400, init=str(path), freeze="-1", epochs=1,
                              batch_size=32, val_size=100, lr=0.01, out=str(run), threads=1,
                              quiet=True)
        after = result.model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in best.items() if not k.startswith("fc."))
        assert not torch.equal(after["fc.weight"], best["fc.weight"])
        init = load_checkpoint(run / "last.pt")["init"]
        assert (init["kind"], init["model_name"], init["reinitialized"]) == (kind, "resnet18", [])


def test_state_dicts_are_recognised_by_their_keys(tmp_path):
    sd = filled_state_dict("resnet18")
    files = {"plain.safetensors": None, "wrapped.pth": {"state_dict": sd},
             "ddp.pth": {f"module.{k}": v for k, v in sd.items()}}
    for name, content in files.items():
        path = tmp_path / name
        if content is None:
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            torch.save(content, path)
        plan = transfer.plan_init(path, "resnet18", num_classes=10, in_chans=3, model_options={})
        assert (plan.weights.kind, plan.source) == ("state dict", "torchvision"), name
        assert plan.state_dict.keys() == sd.keys()

    # timm's SE-ResNet: only timm's table maps seresnet50 -> se_resnet50.
    path = tmp_path / "seresnet50.pth"
    torch.save(filled_state_dict("timm_seresnet50"), path)
    plan = transfer.plan_init(path, "se_resnet50", num_classes=10, in_chans=3, model_options={})
    assert (plan.source, plan.reference_name) == ("timm", "seresnet50")


def test_googlenet_and_efficientnet_keys_are_converted_and_every_classifier_replaced(tmp_path):
    path = tmp_path / "googlenet.pth"
    torch.save(filled_state_dict("googlenet"), path)
    plan = transfer.plan_init(path, "googlenet", num_classes=7, in_chans=3, model_options={})
    assert plan.model_options == {"torchvision_compat": True, "aux_logits": True}
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=7, **plan.model_options)
    fresh = transfer.load_backbone(model, plan.state_dict, what="googlenet")
    # The main classifier and both auxiliary ones (Linear layers with 7 outputs), nothing else.
    assert sorted(fresh) == ["aux1.fc2.bias", "aux1.fc2.weight", "aux2.fc2.bias",
                             "aux2.fc2.weight", "fc.bias", "fc.weight"]
    assert torch.equal(model.inception3a.branch1[0].weight,
                       plan.weights.state_dict["inception3a.branch1.conv.weight"])
    assert model.aux1.fc1.weight.shape == (1024, 2048)  # loaded: same shape as the file's

    path = tmp_path / "effnet.pth"
    torch.save(filled_state_dict("efficientnet_b0"), path)
    plan = transfer.plan_init(path, "efficientnet_b0", num_classes=3, in_chans=3,
                              model_options={})
    assert plan.source == "torchvision" and "stages.0.0.dw.0.weight" in plan.state_dict


def test_backbone_learns_at_a_fraction_of_the_head_rate():
    model = create_model("resnet20", num_classes=10)
    groups = param_groups(model, 1e-4, backbone_lr_scale=0.25)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] == {id(model.fc.weight)} and ids[1] == {id(model.fc.bias)}
    backbone = {id(p) for n, p in model.named_parameters() if not n.startswith("fc.")}
    assert ids[2] | ids[3] == backbone and not ids[2] & ids[3]
    assert all(p.ndim >= 2 for p in groups[2]["params"])
    assert all(p.ndim == 1 for p in groups[3]["params"])
    opt = build_optimizer(model, TrainConfig(lr=0.2, backbone_lr_scale=0.25))
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2, 0.05, 0.05]
    with pytest.raises(ValueError, match="backbone_lr_scale: Sequential is not a zoo model"):
        param_groups(nn.Sequential(nn.Linear(2, 2)), 0.0, backbone_lr_scale=0.5)


def test_freeze_names_stages_by_name_or_index():
    model = create_model("resnet20", num_classes=10)
    names = [i.module for i in model.feature_info]
    assert transfer.frozen_steps(model, names[1]) == transfer.frozen_steps(model, "1")
    assert transfer.frozen_steps(model, "-1") == model.forward_steps()[
        :model.forward_steps().index(names[-1]) + 1]
    with pytest.raises(ValueError, match=r"freeze: resnet20 has no stage '9'; expected"):
        transfer.frozen_steps(model, "9")


def _cli_error(capsys, tmp_path, *args: str) -> str:
    out = tmp_path / "run"
    code = cli_main(["train", "resnet18", "--data", str(CIFAR), "--out", str(out),
                     "--epochs", "1", "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert not out.exists()  # nothing written
    return err[0]


def test_weights_of_another_architecture_name_first_keys_and_counts(capsys, tmp_path,
                                                                   torchvision_file):
    path = tmp_path / "resnet34.pth"
    r34 = filled_state_dict("resnet34")
    torch.save(r34, path)
    own = create_model("resnet18", num_classes=10).state_dict()
    unexpected = [k for k in r34 if k not in own]
    line = _cli_error(capsys, tmp_path, "--init", str(path))
    assert f"does not fit resnet18: 0 missing keys (first: []), {len(unexpected)} unexpected " \
           f"keys (first: ['{unexpected[0]}'])" in line

    path = tmp_path / "densenet121.pth"
    dense = filled_state_dict("densenet121")
    torch.save(dense, path)
    line = _cli_error(capsys, tmp_path, "--init", str(path))
    assert (f"{len(own)} missing keys (first: ['conv1.weight']), {len(dense)} unexpected keys "
            f"(first: ['features.conv0.weight'])") in line

    # Same keys, another configuration: the 3x3 CIFAR stem does not take the 7x7 conv1.
    line = _cli_error(capsys, tmp_path, "--init", str(torchvision_file),
                      "--model-opt", "small_input=True")
    assert ("1 tensors of another shape (first: conv1.weight has shape (64, 3, 7, 7), the "
            "model expects (64, 3, 3, 3))") in line


def test_class_count_and_freeze_stage_mismatches_are_one_line(capsys, tmp_path,
                                                              torchvision_file):
    line = _cli_error(capsys, tmp_path, "--init", str(torchvision_file), "--num-classes", "5")
    assert "num_classes: 5 given, but" in line and "has 10 classes (airplane," in line
    line = _cli_error(capsys, tmp_path, "--init", str(torchvision_file), "--freeze", "layer5")
    assert ("freeze: resnet18 has no stage 'layer5'; expected a stage name or index (0: relu, "
            "1: layer1, 2: layer2, 3: layer3, 4: layer4)") in line
