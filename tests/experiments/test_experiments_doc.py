"""scripts/experiments_doc.py: the docs page and README put quick and standard side by side."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "docs" / "experiments" / "paths" / "results.json"


def _script():
    spec = importlib.util.spec_from_file_location("experiments_doc",
                                                  ROOT / "scripts" / "experiments_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(tmp_path: Path) -> Path:
    """A docs/experiments tree with paths' committed quick run and a made-up standard run."""
    root = tmp_path / "experiments"
    (root / "paths" / "standard").mkdir(parents=True)
    shutil.copy(QUICK, root / "paths" / "results.json")
    standard = json.loads(QUICK.read_text())
    standard.update(preset="standard", verdict="supported", wall_s=600.0,
                    claims={c: "supported" for c in standard["claims"]})
    standard["environment"] = {**standard["environment"], "cpu": "Test CPU",
                               "cpu_id": "family 1 model 2", "cpu_flags": ["amx_bf16"]}
    (root / "paths" / "standard" / "results.json").write_text(json.dumps(standard))
    return root


def test_table_and_readme_show_both_presets(tmp_path):
    doc = _script()
    root = _runs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{doc.README_BEGIN}\nold table\n{doc.README_END}\noutro\n")
    out = tmp_path / "experiments.md"
    assert doc.main(["--root", str(root), "--out", str(out), "--readme", str(readme)]) == 0
    page = out.read_text()
    row = next(line for line in page.splitlines() if line.startswith("| [`paths`]"))
    assert "**mixed**" in row and "**supported**" in row and "10.0 min" in row
    assert "Test CPU (family 1 model 2, amx_bf16)" in page  # the standard run's machine
    assert "preset standard" in page and "preset quick" in page  # both findings shown
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| **mixed** | **supported** |" in text  # quick, then standard


def test_readme_without_markers_is_refused(tmp_path):
    doc = _script()
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="expected the markers"):
        doc.update_readme(readme, "| table |")


def test_a_standard_2se_run_heads_the_section_and_its_claims_fill_the_readme(tmp_path):
    doc = _script()
    root = _runs(tmp_path)
    two_se = json.loads((root / "paths" / "standard" / "results.json").read_text())
    two_se.update(preset="standard-2se", verdict="not supported", wall_s=900.0,
                  claims={c: "not supported" for c in two_se["claims"]})
    (root / "paths" / "standard-2se").mkdir()
    (root / "paths" / "standard-2se" / "results.json").write_text(json.dumps(two_se))
    readme = tmp_path / "README.md"
    readme.write_text(f"{doc.README_BEGIN}\n{doc.README_END}\n")
    out = tmp_path / "experiments.md"
    assert doc.main(["--root", str(root), "--out", str(out), "--readme", str(readme)]) == 0
    page = out.read_text()
    # the newest finding first, the older two still on the page after it
    assert (page.index("preset standard-2se") < page.index("preset standard)")
            < page.index("preset quick"))
    text = readme.read_text()
    assert "| **mixed** | **supported** | **not supported** |" in text
    row = next(line for line in text.splitlines() if line.startswith("| [`paths`]"))
    assert ": not supported" in row and ": supported;" not in row  # the 2se run's claims
    assert "10.0 min / 15.0 min" in row
