"""Pretrained weights by name: the weights table, the download, `create_model(pretrained=)`.

No internet: a local HTTP server on 127.0.0.1 (a thread, stopped at the end) serves a state dict
built from the reference fixture fill (`reference.filled_state_dict("resnet18")`, torchvision
key names) under a torchvision-style name carrying its own SHA-256 prefix. The real table's
entries name torchvision's files and hashes; the tests replace the table with one test entry
for that file (`weights.WEIGHTS` monkeypatched) and point the download at the server with
`CNNZOO_WEIGHTS_URL`, the cache at a temp folder with `CNNZOO_HOME`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import threading
from dataclasses import replace

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.infer.predict import PublishedPreprocess
from cnnzoo.models import hub, registry, weights
from cnnzoo.models.imagenet_classes import IMAGENET_CLASSES
from cnnzoo.models.keymap import check_strict, convert_keys
from cnnzoo.models.pretrained import key_rules
from cnnzoo.profile.published import PUBLISHED_TOP1, TORCHVISION
from reference import (
    assert_logits_match,
    filled_state_dict,
    manifest,
    reference_input,
    reference_names,
)

TABLE = weights.WEIGHTS  # the real table, before `home` replaces it with the test entry


@pytest.fixture(scope="module")
def weights_file() -> tuple[str, bytes]:
    """(torchvision-style file name with its own SHA-256 prefix, the file's bytes)."""
    buf = io.BytesIO()
    torch.save(filled_state_dict("resnet18"), buf)
    data = buf.getvalue()
    return f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth", data


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files[path] = (mode, bytes)`; modes break the transfer on purpose."""

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):  # noqa: N802  (the name http.server calls)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        mode, data = server.files.get(self.path, ("404", b""))
        if mode == "404":
            self.send_error(404)
            return
        if mode == "html":
            page = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and mode in ("ok", "drop_once"):
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = mode == "truncate" or (mode == "drop_once" and len(server.requests) == 1)
        # Half the file, then the connection closes: the server dying mid-stream.
        self.wfile.write(data[start: len(data) // 2] if cut else data[start:])
        if cut:
            self.close_connection = True


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests = {}, []
    srv.timeout = 5
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def home(tmp_path, monkeypatch, server, weights_file):
    """The cache in tmp_path, downloads from the server, the table reduced to the test entry."""
    name, _ = weights_file
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path))
    monkeypatch.setenv("CNNZOO_WEIGHTS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setattr(hub, "RETRIES", 2)
    entry = replace(weights.get_weights("resnet18"), tag="TEST",
                    url=weights.TORCHVISION_URL + name, sha256_prefix=name[9:17])
    monkeypatch.setattr(weights, "WEIGHTS", (entry,))
    return tmp_path / "weights"


def _serve(server, name, data, mode="ok"):
    server.files[f"/{name}"] = (mode, data)


def _cache_is_clean(folder):
    return not folder.exists() or list(folder.iterdir()) == []


# -- the download, through create_model -------------------------------------------------------


def test_pretrained_reproduces_the_reference_logits(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data)
    model = cnnzoo.create_model("resnet18", pretrained=True).eval().double()
    with torch.no_grad():
        logits = model(reference_input().double())
    assert_logits_match("resnet18", logits.float())
    expected = torch.tensor(manifest("resnet18")["logits_f64"], dtype=torch.float64)
    assert ((logits - expected).abs().max() / expected.abs().max()).item() <= 1e-9
    assert (home / name).read_bytes() == data
    assert [p.name for p in home.iterdir()] == [name]  # no part file left beside it


def test_the_cache_is_used_once_filled(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data)
    cnnzoo.create_model("resnet18", pretrained="TEST")
    cnnzoo.create_model("resnet18", pretrained="TEST")
    assert len(server.requests) == 1


def test_a_dropped_connection_resumes_with_a_range_request(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data, "drop_once")
    hub.cached_file(weights.get_weights("resnet18").url, name[9:17])
    assert (home / name).read_bytes() == data
    assert server.requests[1] == (f"/{name}", f"bytes={len(data) // 2}-")


def _one_line_error(match, *, model="resnet18"):
    with pytest.raises(hub.WeightsDownloadError, match=match) as info:
        cnnzoo.create_model(model, pretrained=True)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_wrong_hash_leaves_the_cache_clean(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data[:-1] + bytes([data[-1] ^ 1]))  # one bit differs
    _one_line_error("SHA-256 .* is not the published")
    assert _cache_is_clean(home)


def test_a_truncated_transfer_leaves_the_cache_clean(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data, "truncate")
    message = _one_line_error("transfer cut short")
    assert "3 attempts" in message  # RETRIES=2 retries after the first
    assert _cache_is_clean(home)


def test_an_html_page_leaves_the_cache_clean(home, server, weights_file):
    name, _ = weights_file
    server.files[f"/{name}"] = ("html", b"")
    _one_line_error("web page, not a weights file")
    assert _cache_is_clean(home)


def test_a_missing_file_names_the_http_status(home, server):
    _one_line_error("HTTP 404")
    assert _cache_is_clean(home)


def test_offline_names_the_url_and_the_cache_path(home, weights_file, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CNNZOO_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    name, data = weights_file
    message = _one_line_error("cannot connect")
    assert f"http://127.0.0.1:{port}/{name}" in message
    assert message.endswith(str(home / name))
    home.mkdir(parents=True, exist_ok=True)
    (home / name).write_bytes(data)  # what the message says to do
    cnnzoo.create_model("resnet18", pretrained=True)


def test_a_file_of_another_model_is_refused_by_the_strict_load(home, server, monkeypatch):
    state = filled_state_dict("resnet34")
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    entry = replace(weights.WEIGHTS[0], url=weights.TORCHVISION_URL + name,
                    sha256_prefix=name[9:17])
    monkeypatch.setattr(weights, "WEIGHTS", (entry,))
    _serve(server, name, data)
    with pytest.raises(ValueError, match="does not fit resnet18: .* unexpected keys"):
        cnnzoo.create_model("resnet18", pretrained=True)
    assert _cache_is_clean(home)  # checked before the file entered the cache


def test_a_timm_entry_without_hash_loads_through_the_strict_check(home, server, monkeypatch):
    """timm publishes no hash: the file is checked key by key, shape by shape, instead."""
    buf = io.BytesIO()
    torch.save(filled_state_dict("timm_seresnet50"), buf)
    entry = next(w for w in TABLE if w.key == "se_resnet50:ra2_in1k")  # the real entry
    assert entry.source == "timm" and entry.sha256_prefix is None
    monkeypatch.setattr(weights, "WEIGHTS", (entry,))
    _serve(server, entry.file_name, buf.getvalue())
    model = cnnzoo.create_model("se_resnet50", pretrained=True).eval().double()
    with torch.no_grad():  # float64 and 3e-4, as the reference-logit test for this model
        logits = model(reference_input().double())
    assert_logits_match("timm_seresnet50", logits.float(), tol=3e-4)
    # A file of another model under that name never enters the cache.
    (home / entry.file_name).unlink()
    buf = io.BytesIO()
    torch.save(filled_state_dict("resnet50"), buf)
    _serve(server, entry.file_name, buf.getvalue())
    with pytest.raises(ValueError, match="timm weights se_resnet50:ra2_in1k .* does not fit"):
        cnnzoo.create_model("se_resnet50", pretrained=True)
    assert _cache_is_clean(home)


def test_features_only_keeps_the_pretrained_stages(home, server, weights_file):
    name, data = weights_file
    _serve(server, name, data)
    backbone = cnnzoo.create_model("resnet18", pretrained=True, features_only=True)
    state = filled_state_dict("resnet18")
    assert torch.equal(backbone.state_dict()["layer4.1.conv2.weight"],
                       state["layer4.1.conv2.weight"])


def test_pretrained_refuses_another_head_or_input(home):
    with pytest.raises(ValueError, match="1000 classes.*cnnzoo train MODEL --pretrained"):
        cnnzoo.create_model("resnet18", pretrained=True, num_classes=10)
    with pytest.raises(ValueError, match="3 input channels"):
        cnnzoo.create_model("resnet18", pretrained=True, in_chans=1)
    with pytest.raises(ValueError, match="no weights tagged 'IMAGENET1K_V9'; tags: TEST"):
        cnnzoo.create_model("resnet18", pretrained="IMAGENET1K_V9")
    with pytest.raises(ValueError, match="resnet20: no published weights"):
        cnnzoo.create_model("resnet20", pretrained=True)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_weights_download_list_and_verify(home, server, weights_file, capsys):
    name, data = weights_file
    _serve(server, name, data)
    assert main(["weights", "download", "resnet18:TEST", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{home / name}" in out and "ok" in out
    assert main(["weights", "list", "resnet*"]) == 0
    assert re.search(r"resnet18:TEST\*\s+torchvision\s+69\.76\s+89\.08\s+256/224.*yes",
                     capsys.readouterr().out)
    assert main(["weights", "verify"]) == 0
    assert "1 files" in capsys.readouterr().out
    (home / name).write_bytes(data[:-10])  # damaged in the cache
    assert main(["weights", "verify"]) == 1
    assert "BAD: SHA-256" in capsys.readouterr().out


def test_cli_weights_download_error_is_one_line(home, server, capsys):
    assert main(["weights", "download", "resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo weights: error: http://") and "HTTP 404" in err
    assert "\n" not in err


# -- the table ---------------------------------------------------------------------------------


def test_every_entry_names_a_registered_model_and_a_key_mapping():
    for w in weights.WEIGHTS:
        assert w.model in cnnzoo.list_models(), w.key
        key_rules(w)  # the source's mapping knows the model
        assert registry.get_builder(w.model)


def test_every_model_has_one_default_and_unique_tags():
    for model in {w.model for w in weights.WEIGHTS}:
        entries = [w for w in weights.WEIGHTS if w.model == model]
        assert sum(w.default for w in entries) == 1, model
        assert len({w.tag for w in entries}) == len(entries), model


def test_every_torchvision_file_name_carries_a_hash_prefix():
    for w in weights.WEIGHTS:
        if w.source == "torchvision":
            assert w.url.startswith("https://download.pytorch.org/models/"), w.key
            assert re.fullmatch(r"[0-9a-f]{8}", w.sha256_prefix or ""), w.key
            assert w.file_name.endswith(f"-{w.sha256_prefix}.pth"), w.key
        else:
            assert w.sha256_prefix is None or re.fullmatch(r"[0-9a-f]{8,64}", w.sha256_prefix)


def test_every_preprocessing_is_complete():
    for w in weights.WEIGHTS:
        p = w.preprocessing
        assert p.interpolation in ("bilinear", "bicubic"), w.key
        assert 32 <= p.crop <= p.resize <= 2 * p.crop, w.key
        assert len(p.mean) == len(p.std) == 3 and all(s > 0 for s in p.std), w.key
        assert 0 < w.top5 <= 100 and 0 < w.top1 < w.top5, w.key
        assert w.metrics_source and w.license and w.num_classes == len(IMAGENET_CLASSES)


def test_the_published_accuracy_equals_profile_published():
    """published.py quotes torchvision's IMAGENET1K_V1 acc@1 (and its evaluation crop)."""
    compared = 0
    for w in weights.WEIGHTS:
        published = PUBLISHED_TOP1.get(w.model)
        if published is None or published.source != TORCHVISION or w.tag != "IMAGENET1K_V1":
            continue
        assert w.top1 == pytest.approx(published.top1_percent, abs=1e-9), w.key
        assert w.preprocessing.crop == published.eval_size, w.key
        compared += 1
    assert compared == sum(p.source == TORCHVISION for p in PUBLISHED_TOP1.values())


def test_the_imagenet_classes():
    assert len(IMAGENET_CLASSES) == len(set(IMAGENET_CLASSES)) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[999] == "toilet tissue"


def _fixture(entry: weights.WeightsEntry) -> str:
    return entry.model if entry.source == "torchvision" else f"timm_{entry.source_name}"


@pytest.mark.parametrize("entry", [w for w in weights.WEIGHTS if w.default
                                   and _fixture(w) in reference_names()],
                         ids=lambda w: w.key)
def test_entries_fit_the_reference_structure(entry):
    """The entry's builder options and key mapping take the reference file's every key and
    shape (the fixture files are torchvision's and timm's own structures, filled)."""
    with torch.device("meta"):
        model = cnnzoo.create_model(entry.model, **entry.options)
    state = convert_keys(filled_state_dict(_fixture(entry)), key_rules(entry))
    check_strict(model, state, what=entry.key)


# -- predict --pretrained ----------------------------------------------------------------------


def test_cli_predict_pretrained_prints_imagenet_class_names(home, server, weights_file, tmp_path,
                                                            capsys):
    name, data = weights_file
    _serve(server, name, data)
    image = tmp_path / "photo.png"
    pixels = torch.randint(0, 256, (300, 400, 3), generator=torch.Generator().manual_seed(0))
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(image)
    assert main(["predict", "resnet18", "--pretrained", str(image), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 4
    for line in lines[1:]:
        percent, rest = line.split("%", 1)
        assert 0 <= float(percent) <= 100
        assert rest.strip().rsplit("  (label ", 1)[0].strip() in IMAGENET_CLASSES


def test_published_preprocess_resizes_the_shorter_side_then_crops():
    pre = PublishedPreprocess(weights.Preprocessing(resize=256, crop=224, interpolation="bicubic"))
    image = torch.zeros((1, 3, 300, 600), dtype=torch.uint8)
    image[..., 300:] = 255  # the right half white
    out = pre.apply(image)
    assert out.shape == (1, 3, 224, 224)
    mean, std = torch.tensor(weights.IMAGENET_MEAN), torch.tensor(weights.IMAGENET_STD)
    # 300x600 -> 256x512, crop columns 144..368: the edge (column 256) lands on column 112
    torch.testing.assert_close(out[0, :, 50, 100], (0 - mean) / std, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, :, 50, 124], (1 - mean) / std, atol=1e-4, rtol=0)


# -- train --pretrained ------------------------------------------------------------------------


def test_cli_train_pretrained_fine_tunes_from_the_cached_weights(home, server, weights_file,
                                                                 tmp_path, capsys):
    name, data = weights_file
    _serve(server, name, data)
    out = tmp_path / "run"
    code = main(["train", "resnet18", "--pretrained", "--data", "synthetic:3x32x32:4:32",
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "--val-size", "0",
                 "--freeze", "layer4", "--threads", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["init"]["path"] == str(home / name)
    assert ckpt["init"]["reinitialized"] == ["fc.weight", "fc.bias"]
    state = filled_state_dict("resnet18")
    assert torch.equal(ckpt["model"]["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])


def test_cli_train_refuses_pretrained_with_init(home, capsys, tmp_path):
    code = main(["train", "resnet18", "--pretrained", "--init", "x.pth", "--data", "synthetic",
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"])
    assert code == 2
    assert "--pretrained and --init" in capsys.readouterr().err


def test_every_torchvision_entry_builds_the_published_parameter_count():
    """For the models without a reference file too (EfficientNet B4-B7, VGG 13/19, ...): the
    model the entry builds has torchvision's parameter count (profile/published.py, from the
    same weights enums), so its file can fit."""
    for w in TABLE:
        published = PUBLISHED_TOP1.get(w.model)
        if w.source != "torchvision" or published is None or published.params is None:
            continue
        with torch.device("meta"):
            model = cnnzoo.create_model(w.model, **w.options)
        count = sum(p.numel() for n, p in model.named_parameters()
                    if not n.startswith(("aux1.", "aux2.")))  # published: without aux heads
        assert count == published.params, w.key


def test_the_progress_bar_goes_to_stderr_when_asked(home, server, weights_file, capsys):
    name, data = weights_file
    _serve(server, name, data)
    hub.cached_file(weights.get_weights("resnet18").url, name[9:17], progress=True)
    err = capsys.readouterr().err
    assert f"{name} [" in err and "100.0%" in err and err.endswith("\n")
