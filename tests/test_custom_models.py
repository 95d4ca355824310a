"""Custom models from the CLI: an import path `package.module:function`, and a plugin a real installed
third-party package declares in the `mnistlab.models` entry-point group."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_subprocess

MODULE = '''
from torch import nn


def tinynet(num_classes=10, in_channels=1, width=4):
    """A tiny plugin net: one conv, global pooling, one linear layer."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def not_a_model(num_classes=10, in_channels=1):
    return "hello"


NOT_CALLABLE = 3
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "mnistlab-tinynet"
version = "0.1"

[tool.setuptools]
py-modules = ["tinynet_models"]

[project.entry-points."mnistlab.models"]
tinynet = "tinynet_models:tinynet"
brokennet = "tinynet_gone:build"
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The package really installed (offline, by pip) into a folder the tests put on PYTHONPATH."""
    src = tmp_path_factory.mktemp("src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "tinynet_models.py").write_text(MODULE)
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def env(path: Path) -> dict:
    return {"PYTHONPATH": f"{path}"}


def tiny_train(tmp_path, mnist_root, name, path, *extra):
    out = tmp_path / "runs"
    done = run_subprocess("train", REPO / "configs" / "iter5.yaml", *TINY, "--set", f"model.name={name}",
                          "--set", "name=custom", "--set", "train.limit_eval_batches=1", *extra,
                          "--out-dir", out, "--data-dir", mnist_root, env=env(path))
    assert done.returncode == 0, done.stderr
    return next(out.glob("custom/*/best.pt"))


def test_models_lists_the_plugin_and_names_the_broken_one(plugin_dir):
    done = run_subprocess("models", env=env(plugin_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    plugins = lines[lines.index(next(l for l in lines if l.startswith("-- plugins"))):]
    assert any(l.startswith("tinynet") and "A tiny plugin net" in l and "90" in l for l in plugins)
    assert any(l.startswith("brokennet") and "?" in l for l in plugins) and "does not load" in " ".join(plugins)
    rows = json.loads(run_subprocess("models", "tinynet", "--json", env=env(plugin_dir)).stdout)
    assert rows == [{"name": "tinynet", "params": 90, "description": "A tiny plugin net: one conv, global pooling, "
                     "one linear layer.", "origin": "plugin"}]


def test_a_plugin_trains_and_its_checkpoint_evaluates(plugin_dir, tmp_path, mnist_root):
    best = tiny_train(tmp_path, mnist_root, "tinynet", plugin_dir, "--set", "model.width=6")
    done = run_subprocess("eval", best, "--json", "--data-dir", mnist_root, env=env(plugin_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 10_000
    done = run_subprocess("eval", best, "--data-dir", mnist_root)  # the package is gone
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "tinynet" in done.stderr and "Traceback" not in done.stderr


def test_an_import_path_trains_and_evaluates(tmp_path, mnist_root):
    (tmp_path / "mymodels.py").write_text(MODULE)
    best = tiny_train(tmp_path, mnist_root, "mymodels:tinynet", tmp_path)
    done = run_subprocess("eval", best, "--json", "--data-dir", mnist_root, env=env(tmp_path))
    assert done.returncode == 0, done.stderr
    done = run_subprocess("eval", best, "--data-dir", mnist_root)
    assert done.returncode == 2 and "cannot import module 'mymodels'" in done.stderr
    assert "importable" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, said", [
    ("nomodule_xyz:build", "cannot import module 'nomodule_xyz'"),
    ("mymodels:nothing", "module 'mymodels' has no 'nothing'"),
    ("mymodels:NOT_CALLABLE", "is a int, not a function"),
    ("mymodels:not_a_model", "returned a str, not a torch.nn.Module"),
    ("mymodels:", "is not an import path"),
    ("brokennet", "plugin model 'brokennet' (tinynet_gone:build in entry-point group mnistlab.models) does not load"),
])
def test_every_broken_custom_model_is_one_line(plugin_dir, tmp_path, name, said):
    (tmp_path / "mymodels.py").write_text(MODULE)
    done = run_subprocess("summary", name, env={"PYTHONPATH": f"{plugin_dir}:{tmp_path}"})
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_options_of_a_custom_model_are_checked_from_its_signature(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    done = run_subprocess("summary", "mymodels:tinynet", "--set", "model.width=1.5", env=env(tmp_path))
    assert done.returncode == 2 and "model.width: got 1.5" in done.stderr and "a whole number" in done.stderr
    done = run_subprocess("summary", "mymodels:tinynet", "--set", "model.depth=2", env=env(tmp_path))
    assert done.returncode == 2 and "model.depth: unknown option" in done.stderr and "width" in done.stderr


def test_a_misspelt_plugin_name_is_suggested(plugin_dir):
    done = run_subprocess("train", REPO / "configs" / "iter5.yaml", "--set", "model.name=tinynett", env=env(plugin_dir))
    assert done.returncode == 2 and "did you mean 'tinynet'" in done.stderr
