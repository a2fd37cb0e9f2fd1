"""cnnzoo eval / predict / export, on a real (tiny) training run made once per module.

The run: resnet20 on a 4-class synthetic set of 1x12x12 images resized to 14x14, one epoch
with an EMA of the weights, a validation split held out. Every number the tests compare
against is recomputed here from the checkpoint by other means (a direct forward pass, the
trainer's own validation record, onnxruntime, torch.jit.load).
"""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from cnnzoo.cli import main
from cnnzoo.data import load_dataset, make_synthetic, normalize, resize
from cnnzoo.infer import (
    Predictor,
    Preprocess,
    evaluate_checkpoint,
    evaluate_model,
    export_model,
    load_model,
    load_safetensors_model,
    predict_images,
    read_image,
    write_report,
)
from cnnzoo.infer import export as export_module
from cnnzoo.infer.evaluate import calibration_batches, load_split
from cnnzoo.models import create_model
from cnnzoo.train.device import describe

DATA = "synthetic:1x12x12:4:96"
SIZE = 14  # the run resizes 12x12 images to 14x14, so preprocessing has work to do


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("infer") / "run"
    cnnzoo.train("resnet20", DATA, out=str(out), epochs=1, batch_size=16, val_size=32,
                 image_size=SIZE, ema_decay=0.5, lr=0.05, quiet=True)
    return out


def reference_logits(ckpt: dict, images: torch.Tensor, weights: str = "auto") -> torch.Tensor:
    """Logits computed by hand from the checkpoint: resize, normalise, forward."""
    pre = ckpt["preprocess"]
    x = normalize(resize(images.float(), tuple(pre["image_size"])), pre["mean"], pre["std"])
    with torch.no_grad():
        return model_from_checkpoint(ckpt, weights=weights)(x)


def one_error_line(capsys, *names) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, err
    return err


# ---------------------------------------------------------------------------------- eval


def test_eval_on_the_val_split_reproduces_the_trainers_validation(run):
    ckpt = load_checkpoint(run / "last.pt")
    result = evaluate_checkpoint(run / "last.pt", split="val")
    assert result.weights == "ema" == ckpt["eval_weights"]
    assert result.num_images == 32
    assert result.top1 == ckpt["metrics"][-1]["val_acc"]
    assert result.loss == pytest.approx(ckpt["metrics"][-1]["val_loss"], rel=1e-5)


def test_eval_counts_match_a_direct_forward_pass(run, tmp_path):
    ckpt = load_checkpoint(run / "best.pt")
    test = load_dataset(DATA, "test")
    result = evaluate_checkpoint(run / "best.pt", DATA, split="test", batch_size=40)
    logits = reference_logits(ckpt, test.images)
    pred = logits.argmax(1)
    confusion = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(test.labels.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    assert torch.equal(result.confusion, confusion)
    assert result.top1 == pytest.approx((pred == test.labels).float().mean().item())
    top2 = (logits.topk(2, 1).indices == test.labels[:, None]).any(1).float().mean().item()
    assert result.loss == pytest.approx(
        torch.nn.functional.cross_entropy(logits, test.labels).item(), rel=1e-5)
    # Top-5 of 4 classes is top-4: every image counts.
    assert result.k == 4 and result.topk == 1.0
    support = confusion.sum(1)
    assert result.per_class == pytest.approx((confusion.diagonal() / support).tolist())
    assert result.support == support.tolist()
    assert 0 < top2 <= 1  # sanity: top-k is a property the logits have, not a constant

    paths = write_report(result, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["top1"] == result.top1 and metrics["top5_k"] == 4
    assert metrics["confusion"] == confusion.tolist()
    with paths["confusion_csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == ckpt["classes"]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == confusion.tolist()
    with paths["per_class"].open() as f:
        per_class = list(csv.DictReader(f))
    assert [int(r["support"]) for r in per_class] == support.tolist()
    with Image.open(paths["confusion_png"]) as png:
        assert png.format == "PNG" and min(png.size) > 200
    assert not list((tmp_path / "report").glob(".*.tmp"))  # atomic writes leave no temp file


def test_label_smoothing_stays_out_of_the_validation_loss(tmp_path, capsys):
    """One definition of validation loss: plain cross-entropy, in training and in eval."""
    out = tmp_path / "smoothed"
    cnnzoo.train("resnet20", DATA, out=str(out), epochs=1, batch_size=16, val_size=32,
                 image_size=SIZE, lr=0.05, label_smoothing=0.2, quiet=True)
    ckpt = load_checkpoint(out / "last.pt")
    recorded = ckpt["metrics"][-1]["val_loss"]
    assert main(["eval", str(out / "last.pt"), "--split", "val", "--out", str(tmp_path / "e")]) == 0
    reported = json.loads((tmp_path / "e" / "metrics.json").read_text())["loss"]
    assert reported == pytest.approx(recorded, rel=1e-5)
    # The test can tell: the smoothed loss of the same images is another number.
    val = load_split(ckpt["config"], DATA, "val")
    logits = reference_logits(ckpt, val.images)
    plain = torch.nn.functional.cross_entropy(logits, val.labels).item()
    smoothed = torch.nn.functional.cross_entropy(logits, val.labels, label_smoothing=0.2).item()
    assert recorded == pytest.approx(plain, rel=1e-5) and abs(smoothed - plain) > 1e-3


def test_eval_command_prints_the_header_first(run, tmp_path, capsys):
    assert main(["eval", str(run / "best.pt"), "--data", DATA, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == describe("cpu", "fp32")


def test_val_split_needs_a_run_that_held_one_out():
    with pytest.raises(ValueError, match="held out no validation split"):
        load_split({"val_size": 0, "seed": 0}, DATA, "val")


def test_eval_weights_choice_changes_the_result(run):
    ema = evaluate_checkpoint(run / "last.pt", split="val", weights="ema")
    auto = evaluate_checkpoint(run / "last.pt", split="val")
    raw = evaluate_checkpoint(run / "last.pt", split="val", weights="model")
    assert auto.loss == ema.loss and raw.loss != ema.loss and raw.weights == "model"


@pytest.mark.parametrize("data, words", [
    ("synthetic:1x12x12:5:40", "class count mismatch"),
    ("synthetic:3x12x12:4:40", "channel mismatch"),
])
def test_eval_on_data_that_does_not_fit_is_one_line(run, tmp_path, capsys, data, words):
    rc = main(["eval", str(run / "best.pt"), "--data", data, "--out", str(tmp_path)])
    assert rc != 0
    one_error_line(capsys, words, run / "best.pt")
    assert not list(tmp_path.iterdir())


def test_eval_command_prints_a_table_and_writes_the_report(run, tmp_path, capsys):
    assert main(["eval", str(run / "best.pt"), "--data", DATA, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "top-4" in out and "class3" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confusion.csv", "confusion.png", "metrics.json", "per_class.csv"]


# ------------------------------------------------------------------------------- predict


def save_png(images: torch.Tensor, folder, rgb: bool = False) -> list:
    paths = []
    for i, img in enumerate(images):
        array = img[0].numpy()
        if rgb:  # equal channels: Pillow's luma conversion returns the gray value exactly
            array = np.repeat(array[:, :, None], 3, axis=2)
        path = folder / f"{i}{'_rgb' if rgb else ''}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def test_predict_applies_the_recorded_preprocessing(run, tmp_path):
    ckpt = load_checkpoint(run / "best.pt")
    test = load_dataset(DATA, "test").subset(range(6))
    gray = save_png(test.images, tmp_path)
    rgb = save_png(test.images, tmp_path, rgb=True)
    predictor = Predictor.from_file(run / "best.pt")
    x = predictor.inputs(gray)
    assert x.shape == (6, 1, SIZE, SIZE)
    expected = reference_logits(ckpt, test.images).softmax(1)
    torch.testing.assert_close(predictor.probabilities(gray), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(predictor.probabilities(rgb), expected, atol=1e-6, rtol=1e-5)

    preds = predict_images(run / "best.pt", gray, topk=10)  # capped at 4 classes
    for pred, p in zip(preds, expected, strict=True):
        assert len(pred.labels) == 4 and pred.probs == sorted(pred.probs, reverse=True)
        assert pred.labels[0] == int(p.argmax()) and sum(pred.probs) == pytest.approx(1, abs=1e-5)
        assert pred.classes[0] == ckpt["classes"][pred.labels[0]]
    assert [p.labels for p in predict_images(run / "best.pt", gray, topk=2)] == \
        [p.labels[:2] for p in preds]


def test_read_image_converts_and_orients(tmp_path):
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png", 3).shape == (3, 5, 7)
    gray = read_image(tmp_path / "c.png", 1)
    # ITU-R 601-2 luma, as Pillow computes it: 0.299 R + 0.587 G + 0.114 B.
    assert gray.shape == (1, 5, 7) and int(gray[0, 0, 0]) == round(0.299 * 200 + 0.587 * 100
                                                                    + 0.114 * 50)
    with pytest.raises(ValueError, match="4-channel"):
        read_image(tmp_path / "c.png", 4)


@pytest.mark.parametrize("content", [None, b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_predict_on_a_missing_or_corrupt_image_is_one_line(run, tmp_path, capsys, content):
    bad = tmp_path / "bad.png"
    if content is not None:
        bad.write_bytes(content)
    good = save_png(load_dataset(DATA, "test").images[:1], tmp_path)[0]
    assert main(["predict", str(run / "best.pt"), str(good), str(bad)]) != 0
    one_error_line(capsys, bad)


def test_predict_command(run, tmp_path, capsys):
    paths = save_png(load_dataset(DATA, "test").images[:2], tmp_path)
    assert main(["predict", str(run / "best.pt"), *map(str, paths), "--topk", "3",
                 "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in lines] == [str(p) for p in paths]
    assert all(len(r["top"]) == 3 for r in lines)


# -------------------------------------------------------------------------------- export


def test_onnx_export_gives_pytorchs_logits(run, tmp_path):
    import onnx
    import onnxruntime as ort

    ckpt = load_checkpoint(run / "best.pt")
    result = export_model(run / "best.pt", "onnx", tmp_path / "m.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    images = load_dataset(DATA, "test").images[:5]  # another batch size than traced (2)
    pre = Preprocess.from_dict(ckpt["preprocess"], in_chans=1, source="test")
    x = pre.apply(images)
    got = session.run(["logits"], {"images": x.numpy()})[0]
    expected = reference_logits(ckpt, images).numpy()
    diff = float(np.abs(got - expected).max())
    print(f"ONNX vs PyTorch max |logit diff| = {diff:.3g}")
    assert diff < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    record = json.loads(meta["cnnzoo"])
    assert record["classes"] == ckpt["classes"] and record["preprocess"] == ckpt["preprocess"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_loads_with_jit_and_matches(run, tmp_path):
    ckpt = load_checkpoint(run / "best.pt")
    result = export_model(run / "best.pt", "torchscript", tmp_path / "m.pt")
    extra = {"cnnzoo.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=extra)
    images = load_dataset(DATA, "test").images[:5]
    pre = Preprocess.from_dict(ckpt["preprocess"], in_chans=1, source="test")
    with torch.no_grad():
        got = module(pre.apply(images))
    torch.testing.assert_close(got, reference_logits(ckpt, images), atol=1e-5, rtol=1e-5)
    assert json.loads(extra["cnnzoo.json"])["model_name"] == "resnet20"


def test_safetensors_export_reloads_the_same_model(run, tmp_path):
    ckpt = load_checkpoint(run / "best.pt")
    result = export_model(run / "best.pt", "safetensors", tmp_path / "m.safetensors")
    assert result.max_abs_diff == 0.0
    model, info = load_safetensors_model(result.path)
    original = model_from_checkpoint(ckpt)  # the EMA weights, as eval_weights says
    assert not model.training and type(model) is type(original)
    for (k, a), (k2, b) in zip(model.state_dict().items(), original.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    assert info.classes == ckpt["classes"] and info.weights == "ema"
    assert info.preprocess.to_dict() == ckpt["preprocess"]
    # The export is a complete model file: predict and eval take it like a checkpoint.
    paths = save_png(load_dataset(DATA, "test").images[:3], tmp_path)
    assert [p.probs for p in predict_images(result.path, paths)] == \
        [p.probs for p in predict_images(run / "best.pt", paths)]
    # It records the run's config too, so --split val still finds the held-out images.
    assert evaluate_checkpoint(result.path, split="val").top1 == ckpt["metrics"][-1]["val_acc"]


def test_safetensors_without_cnnzoo_metadata_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a cnnzoo safetensors export"):
        load_model(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="y.safetensors: not a readable"):
        load_safetensors_model(tmp_path / "y.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_export_of_a_damaged_checkpoint_is_one_line(run, tmp_path, capsys, damage):
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        data = (run / "best.pt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"state_dict": {"w": torch.zeros(1)}}, bad)
    assert main(["export", str(bad), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) != 0
    one_error_line(capsys, bad)
    assert not (tmp_path / "m.onnx").exists()


def shifted_writer(monkeypatch, fmt: str, shift: float) -> None:
    """Break the `fmt` writer on purpose: the file it writes adds `shift` to every logit."""
    name = {"safetensors": "write_safetensors", "torchscript": "_write_torchscript",
            "onnx": "_write_onnx"}[fmt]
    real = getattr(export_module, name)

    def write(model, info, out):
        broken = copy.deepcopy(model)
        classifier = [m for m in broken.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            classifier.bias += shift
        real(broken, info, out)

    monkeypatch.setattr(export_module, name, write)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_an_export_that_does_not_match_is_refused(run, tmp_path, capsys, monkeypatch, fmt):
    shifted_writer(monkeypatch, fmt, 1.0)
    folder = tmp_path / "exports"
    folder.mkdir()
    dest = folder / "m.bin"
    assert main(["export", str(run / "best.pt"), "--format", fmt, "--out", str(dest)]) == 2
    err = one_error_line(capsys, dest, "max |logit difference|", "1.00e+00", "tolerance",
                         "--force")
    assert err.startswith("cnnzoo export: error:")
    assert list(folder.iterdir()) == []  # no file, no staged temp file

    # --force keeps it, says so on one warning line, and exits 0.
    assert main(["export", str(run / "best.pt"), "--format", fmt, "--out", str(dest),
                 "--force"]) == 0
    captured = capsys.readouterr()
    assert "1.00e+00" in captured.out
    assert captured.err.count("\n") == 1 and "warning" in captured.err and "--force" in captured.err
    assert [p.name for p in folder.iterdir()] == ["m.bin"]


def test_the_export_tolerance(run, tmp_path, monkeypatch):
    assert export_module.tolerance(20.0) == pytest.approx(2e-3)
    assert export_module.tolerance(0.0) == export_module.ATOL_FLOOR
    good = export_model(run / "best.pt", "safetensors", tmp_path / "a.safetensors")
    assert good.matches is True and good.tolerance > 0 and good.max_abs_diff == 0.0
    # A shift well inside the tolerance passes; one just beyond it does not.
    shifted_writer(monkeypatch, "safetensors", good.tolerance / 4)
    assert export_model(run / "best.pt", "safetensors", tmp_path / "b.safetensors").matches
    monkeypatch.undo()  # back to the real writer before breaking it again
    shifted_writer(monkeypatch, "safetensors", good.tolerance * 8)
    with pytest.raises(export_module.ExportMismatchError, match="too large"):
        export_model(run / "best.pt", "safetensors", tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()
    kept = export_model(run / "best.pt", "safetensors", tmp_path / "c.safetensors", force=True)
    assert kept.matches is False and kept.path.is_file()
    unchecked = export_model(run / "best.pt", "safetensors", tmp_path / "d.safetensors",
                             verify=False)
    assert unchecked.matches is None and unchecked.path.is_file()


def test_export_command_default_path(run, tmp_path, capsys):
    src = tmp_path / "best.pt"
    src.write_bytes((run / "best.pt").read_bytes())
    assert main(["export", str(src), "--format", "safetensors"]) == 0
    assert (tmp_path / "best.safetensors").is_file()
    assert "max |logit difference|" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_googlenet_is_evaluated_and_exported_in_eval_mode(tmp_path):
    """GoogLeNet returns (logits, aux2, aux1) in training; eval and export see logits only."""
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3)
    data = make_synthetic(4, 3, (3, 16, 16))
    pre = {"mean": list(data.mean), "std": list(data.std), "image_size": [16, 16],
           "resize": False}
    save_checkpoint(tmp_path / "g.pt", {
        "kind": "best", "model_name": "googlenet", "model_options": {},
        "num_classes": 3, "in_chans": 3, "classes": data.classes, "preprocess": pre,
        "model": model.state_dict(), "ema": None, "eval_weights": "model", "epoch": 0,
        "global_step": 0, "best_val_acc": None, "metrics": [], "config": {}, "versions": {}})
    loaded, info = load_model(tmp_path / "g.pt")
    assert not loaded.training and loaded.aux1 is not None
    result = evaluate_model(loaded, data, info.preprocess)
    assert result.num_images == 4 and result.k == 3
    exported = export_model(tmp_path / "g.pt", "torchscript")
    assert exported.path == tmp_path / "g.torchscript.pt" and exported.max_abs_diff < 1e-5
    out = torch.jit.load(str(exported.path))(info.preprocess.apply(data.images))
    assert isinstance(out, torch.Tensor) and out.shape == (4, 3)


# ----------------------------------------------------------------------- deployed backends


def test_eval_with_the_fused_backend_scores_as_eager(run, tmp_path, capsys):
    eager = evaluate_checkpoint(run / "best.pt", DATA, split="test")
    fused = evaluate_checkpoint(run / "best.pt", DATA, split="test", backend="fused")
    assert fused.backend == "fused" and fused.eager_top1 == eager.top1
    assert torch.equal(fused.confusion, eager.confusion)  # the same top-1 for every image
    assert fused.deploy_check["max_abs_diff"] <= fused.deploy_check["tolerance"]
    assert main(["eval", str(run / "best.pt"), "--data", DATA, "--backend", "fused",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(", backend fused")
    assert f"backend fused: top-1 {100 * eager.top1:.2f}% vs eager {100 * eager.top1:.2f}% " \
           f"(+0.00 points)" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["backend"] == "fused"


def test_eval_int8_calibrates_on_training_images_never_the_evaluated_ones(run):
    ckpt = load_checkpoint(run / "best.pt")
    pre = Preprocess.from_dict(ckpt["preprocess"], in_chans=1, source="t")
    batches = calibration_batches(ckpt["config"], DATA, "test", pre)
    # 96 training images, 32 of them held out for validation: 64 left, all 4 classes alike.
    assert sum(len(b) for b in batches) == 64 and batches[0].shape[1:] == (1, SIZE, SIZE)
    val = pre.apply(load_split(ckpt["config"], DATA, "val").images)
    cal = torch.cat(batches)
    assert not any(torch.equal(v, c) for v in val for c in cal)  # no validation image in it
    with pytest.raises(ValueError, match="--backend int8: calibration comes from the training"):
        calibration_batches(ckpt["config"], DATA, "train", pre)


def test_predict_with_the_fused_backend_gives_eagers_top1(run, tmp_path, capsys):
    paths = save_png(load_dataset(DATA, "test").images[:5], tmp_path)
    eager = Predictor.from_file(run / "best.pt").predict(paths, 2)
    fused = Predictor.from_file(run / "best.pt", backend="fused")
    assert [p.labels for p in fused.predict(paths, 2)] == [p.labels for p in eager]
    assert fused.deployed is not None and fused.deployed.backend == "fused"
    assert main(["predict", str(run / "best.pt"), *map(str, paths), "--backend", "fused",
                 "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["top"][0]["label"] for r in lines] == [p.labels[0] for p in eager]


def test_predict_int8_without_calibration_images_is_one_line(run, tmp_path, capsys):
    paths = save_png(load_dataset(DATA, "test").images[:1], tmp_path)
    assert main(["predict", str(run / "best.pt"), *map(str, paths), "--backend", "int8"]) == 2
    assert "--backend int8: needs --calibration DIR" in one_error_line(capsys)
