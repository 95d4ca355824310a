"""`mnistlab lr-find`: the learning-rate range test on real MNIST, a few steps."""

import math
import re

import pytest

from conftest import REPO, run_subprocess


def test_lr_find_draws_the_curve_and_suggests_a_finite_lr_in_the_range(cli, tmp_path, mnist_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("lr-find", REPO / "configs" / "iter5.yaml", "--steps", "8", "--start", "1e-4", "--end", "1",
            "--set", "train.limit_train_batches=3", "--data-dir", mnist_root, "--quiet")
    code, out, err = cli(*args)
    assert code == 0, err
    line = out.strip()
    assert "\n" not in line and len(line) <= 120
    found = float(re.search(r"suggested lr (\S+) \(", line).group(1))
    assert math.isfinite(found) and 1e-4 <= found <= 1
    assert "steepest descent of the smoothed loss" in line and line.endswith("curve: lr_find.png")
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli(*args)  # never over the first curve
    assert code == 0 and out.strip().endswith("curve: lr_find_1.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find.png", "lr_find_1.png"]  # no run folder


@pytest.mark.parametrize("extra, said", [
    (["--steps", "1"], "--steps: got 1"),
    (["--start", "0"], "--start: got 0.0"),
    (["--start", "nan"], "--start: got nan"),
    (["--end", "1e-9"], "--end: got 1e-09; give a learning rate above --start"),
    (["--set", "train.optimizer.lr=-1"], "train.optimizer.lr"),
])
def test_bad_lr_find_arguments_are_one_line(tmp_path, extra, said):
    done = run_subprocess("lr-find", REPO / "configs" / "iter5.yaml", *extra)
    assert done.returncode == 2 and said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_an_output_that_exists_is_refused(cli, tmp_path, mnist_root):
    taken = tmp_path / "curve.png"
    taken.write_bytes(b"mine")
    code, _, err = cli("lr-find", REPO / "configs" / "iter5.yaml", "--steps", "2", "--set",
                       "train.limit_train_batches=2", "--data-dir", mnist_root, "--quiet", "-o", taken)
    assert code == 2 and "curve.png exists" in err and taken.read_bytes() == b"mine"
