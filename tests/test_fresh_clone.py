"""A clone of the repository, with nothing beside it, passes the tests that read fixtures.

The reference logits, the deform_conv2d cases and the CIFAR-10 JPEG subset used to be read from
a folder beside the repository, which only this project's machines have: a clone elsewhere
failed 36 tests. This clones HEAD into a temporary directory that holds nothing else and runs
one test of each fixture there, so a test that reaches outside the repository again fails here
first. `make clone-test` runs the whole suite the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from reference import REPO

# (test file, test name): one per fixture in tests/fixtures/.
PROBES = [
    ("test_reference_logits.py", "test_reference_logits_and_params[resnet18]"),
    ("test_layers.py", "test_deform_conv2d_matches_torchvision[v2_mask]"),
    ("test_transfer.py", "test_class_count_and_freeze_stage_mismatches_are_one_line"),
]


def _node(root: Path, file: str, name: str) -> str:
    (path,) = (root / "tests").rglob(file)
    return f"{path.relative_to(root)}::{name}"


def test_a_clone_with_nothing_beside_it_passes_the_fixture_tests(tmp_path):
    assert shutil.which("git"), "git is needed to clone the repository"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
                   check=True, capture_output=True)
    assert [p.name for p in clone.parent.iterdir()] == ["clone"]  # nothing beside it
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNZOO_")}
    env["PYTHONPATH"] = str(clone / "src")
    nodes = [_node(clone, f, n) for f, n in PROBES]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", *nodes], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600)
    tail = done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert f"{len(nodes)} passed" in done.stdout and "skipped" not in done.stdout, tail
