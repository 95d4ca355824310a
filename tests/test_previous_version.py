"""What the previous version wrote still works: its checkpoints load, evaluate to their summary, read
digits, and its finished runs are reused by compare, not trained again.

tests/fixtures/previous_version holds a run written by mnistlab before the package was split into
subpackages (baseline_cnn_small, 2 epochs of 30 batches, seed 1, on the CPU).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "previous_version"


@pytest.fixture
def old_run(tmp_path) -> Path:
    root = tmp_path / "checkpoints"
    shutil.copytree(FIXTURE, root)
    (run_dir,) = (root / "old_version_run").iterdir()
    return run_dir


def test_its_checkpoint_evaluates_to_its_summary(cli, old_run, mnist_root):
    summary = json.loads((old_run / "summary.json").read_text())
    code, out, err = cli("eval", old_run / "best.pt", "--data-dir", mnist_root, "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == summary["test_acc"] and report["n"] == summary["test_n"] == 10_000
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_its_checkpoint_reads_digits(cli, old_run, tmp_path):
    from PIL import Image, ImageDraw

    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=14)
    image.save(tmp_path / "one.png")
    code, out, err = cli("predict", tmp_path / "one.png", "--ckpt", old_run / "best.pt", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["prediction"] in "0123456789"


def test_compare_reuses_its_finished_run(cli, old_run, mnist_root):
    out_dir = old_run.parents[1]
    code, out, err = cli("compare", old_run / "config.yaml", "--out-dir", out_dir, "--data-dir", mnist_root)
    assert code == 0, err
    assert "reusing the finished run" in out and "0 run(s) trained, 1 reused" in out
    assert (old_run / "curves.png").exists()  # drawn for the reused run
