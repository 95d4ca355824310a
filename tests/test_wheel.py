"""The wheel carries everything the docs use by name: built from the repository and installed as users
install it, it runs `init`, `configs`, `predict` with the shipped model and `export` from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from PIL import Image, ImageDraw

from conftest import REPO

PACKAGE_DATA = ["mnistlab/configs/_template.yaml.txt", "mnistlab/configs/iter5.yaml", "mnistlab/sweeps/iter5_lr.yaml",
                "mnistlab/reading/weights/default.pt", "mnistlab/reading/page.html", "mnistlab/models/catalog.json"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built without build isolation (offline) and unpacked as pip installs it into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    wheel = next(out.glob("mnistlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in PACKAGE_DATA if name not in names] == []
    target = out / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return target


def mnistlab(installed, cwd, *args):
    # PYTHONPATH comes before site-packages, where the repository's editable install lies
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_the_installed_wheel_runs_the_readme_commands_from_an_empty_folder(installed, tmp_path, mnist_root):
    where = mnistlab(installed, tmp_path, "--version")
    check = subprocess.run([sys.executable, "-c", "import mnistlab; print(mnistlab.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)})
    assert check.stdout.startswith(str(installed)), check.stdout  # the wheel's code, not the repository's
    assert where.returncode == 0, where.stderr

    init = mnistlab(installed, tmp_path, "init", "mine")
    assert init.returncode == 0 and (tmp_path / "mine.yaml").is_file(), init.stderr
    assert "iter5" in mnistlab(installed, tmp_path, "configs").stdout

    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(60, 40), (140, 40), (90, 170)], fill=0, width=14)  # a 7
    image.save(tmp_path / "seven.png")
    read = mnistlab(installed, tmp_path, "predict", "seven.png", "--ckpt", "default")
    assert read.returncode == 0 and "seven.png: 7" in read.stdout, read.stdout + read.stderr

    sweep = mnistlab(installed, tmp_path, "sweep", "iter5_lr", "--n-trials", "1", "--set", "train.epochs=1", "--set",
                     "train.limit_train_batches=2", "--set", "train.limit_eval_batches=1", "--data-dir", mnist_root)
    assert sweep.returncode == 0, sweep.stderr  # a packaged sweep file by name, as configs load
    assert (tmp_path / "checkpoints" / "sweeps").is_dir()

    pytest.importorskip("onnxruntime")
    export = mnistlab(installed, tmp_path, "export", "default", "-o", "model.onnx", "--check", "100")
    assert export.returncode == 0 and (tmp_path / "model.onnx").is_file(), export.stderr
    onnx_bytes = (tmp_path / "model.onnx").read_bytes().decode("latin-1")
    assert str(installed) not in onnx_bytes and str(tmp_path) not in onnx_bytes  # no machine paths
