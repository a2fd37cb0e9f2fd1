"""`cnnzoo summary`: the receptive-field and jump (cumulative stride) columns.

The numbers checked are the hand sums of tests/profile/test_receptive_field.py and the papers'
strides: ResNet-50 (He et al. 2015, Table 1) and VGG-16
(Simonyan & Zisserman 2014, configuration D).
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from torch import nn

from cnnzoo.cli import main
from cnnzoo.profile import profile
from cnnzoo.profile.report import ProfileReport
from cnnzoo.profile.summary import RF_LEGEND


def _cells(text: str, label: str) -> list[str]:
    """The cells of the table line whose label column contains `label`."""
    line = next(line for line in text.splitlines() if label in line)
    return line.split()


@pytest.fixture(scope="module")
def resnet50():
    return profile("resnet50", (1, 3, 224, 224), receptive_fields=True)


def test_resnet50_layer_rows_show_field_and_jump(resnet50):
    text = resnet50.table(depth=1)
    assert "RF (px)" in text.splitlines()[2] and "Jump" in text.splitlines()[2]
    # conv1 7x7/2; + 3x3/2 max-pool: 7 + 2*2 = 11 at jump 4; conv5_x ends at 427 px, jump 32.
    expected = {"├─conv1 (Conv2d)": ["7", "2"], "├─maxpool (MaxPool2d)": ["11", "4"],
                "├─layer1 (Sequential)": ["35", "4"], "├─layer2 (Sequential)": ["91", "8"],
                "├─layer3 (Sequential)": ["267", "16"], "├─layer4 (Sequential)": ["427", "32"],
                "├─avgpool (AdaptiveAvgPool2d)": ["global", "--"],
                "└─fc (Linear)": ["global", "--"]}
    for label, cells in expected.items():
        assert _cells(text, label)[-2:] == cells, label
    for line in RF_LEGEND:  # wrapped to the table's width, every word kept
        assert " ".join(line.split()) in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) == len(text.splitlines()[1])


def test_resnet50_stages_show_the_field_of_their_output(resnet50):
    text = resnet50.table(by_stage=True)
    rows = [line.split() for line in text.splitlines() if line.startswith("stage ")]
    assert [r[-2:] for r in rows] == [["7", "2"], ["35", "4"], ["91", "8"], ["267", "16"],
                                      ["427", "32"], ["global", "--"]]


def test_vgg16_conv5_3_and_pool5():
    text = profile("vgg16", (1, 3, 224, 224), receptive_fields=True).table(depth=2)
    # conv5_3 (features.28) + ReLU (features.29): 196 px; pool5 (features.30): 212 px, jump 32.
    assert _cells(text, "├─features.29 (ReLU)")[-2:] == ["196", "16"]
    assert _cells(text, "└─features.30 (MaxPool2d)")[-2:] == ["212", "32"]


def test_markers_for_se_gates_and_deformable_convs():
    se = profile("se_resnet18", (1, 3, 224, 224), receptive_fields=True).table(depth=1)
    assert _cells(se, "├─layer1 (Sequential)")[-2:] == ["43+", "4"]  # ResNet-18's 43, + SE
    dcn = profile("resnet50_dcn", (1, 3, 224, 224), receptive_fields=True).table(depth=1)
    assert _cells(dcn, "├─layer3 (Sequential)")[-2:] == ["267", "16"]  # plain convs
    assert _cells(dcn, "├─layer4 (Sequential)")[-2:] == ["427~", "32"]  # deformable conv5_x


def test_shared_module_reports_the_call_its_shape_describes(resnet50):
    """A bottleneck's ReLU runs three times; the row shows its first output (after bn1)."""
    rows = {r.path: r for r in resnet50.layers}
    relu, bn1 = rows["layer3.0.relu"], rows["layer3.0.bn1"]
    assert relu.calls == 3 and relu.output_shape == bn1.output_shape == (1, 256, 28, 28)
    assert (relu.rf, relu.jump) == (bn1.rf, bn1.jump) == ((91, 91), (8, 8))


def test_json_csv_round_trip_and_reports_without_fields(resnet50, tmp_path):
    path = tmp_path / "r.json"
    resnet50.to_json(path)
    again = ProfileReport.from_dict(json.loads(path.read_text()))
    assert again == resnet50 and again.table() == resnet50.table()
    assert {r.path: r for r in again.layers}["layer4"].rf == (427, 427)
    layers = {r["path"]: r for r in csv.DictReader(io.StringIO(resnet50.layers_csv()))}
    assert (layers["layer4"]["rf"], layers["layer4"]["jump"]) == ("427x427", "32x32")
    assert (layers["fc"]["rf_notes"], layers["fc"]["jump"]) == ("global", "")

    # A report written before these columns existed still loads and prints, without them.
    old = json.loads(path.read_text())
    for row in old["layers"]:
        for key in ("rf", "jump", "rf_notes"):
            del row[key]
    text = ProfileReport.from_dict(old).table(depth=1)
    assert _cells(text, "├─layer4 (Sequential)")[-2:] == ["--", "--"]
    assert RF_LEGEND[0][:20] not in text


def test_non_square_kernels_and_unfollowed_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, (3, 5), stride=(1, 2)), nn.Conv2d(4, 4, 3))
    text = profile(net, (1, 3, 16, 16), receptive_fields=True).table()
    assert _cells(text, "├─0 (Conv2d)")[-2:] == ["3x5", "1x2"]
    assert _cells(text, "└─1 (Conv2d)")[-2:] == ["5x9", "1x2"]  # 3 + 2*1, 5 + 2*2

    up_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2))
    up = profile(up_net, (1, 3, 8, 8), receptive_fields=True)
    assert all(r.rf is None for r in up.layers)
    assert any(n.startswith("no receptive fields: ") for n in up.notes)
    assert "Note: no receptive fields" in up.table() and RF_LEGEND[0][:20] not in up.table()


def test_cli_summary_prints_the_columns(capsys):
    assert main(["summary", "resnet20", "--depth", "1"]) == 0
    text = capsys.readouterr().out
    # CIFAR ResNet-20 (He et al. section 4.2): 3x3 convs only, jumps 1, 2, 4.
    assert _cells(text, "├─layer3 (Sequential)")[-1] == "4"
    assert "RF (px)" in text


def test_plain_profile_skips_the_receptive_field_pass():
    """Counting stays one meta forward unless the fields are asked for (whole-zoo time)."""
    assert all(r.rf is None for r in profile("resnet18", (1, 3, 64, 64)).layers)
