"""The Python API a notebook uses: train, evaluate, load_model, predict, compare, sweep; and `import mnistlab`
stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import mnistlab
from conftest import REPO
from mnistlab.errors import UserError

TINY = ["train.epochs=1", "train.limit_train_batches=20", "train.limit_eval_batches=2"]


def test_importing_mnistlab_imports_no_torch():
    code = "import sys, mnistlab\nassert 'torch' not in sys.modules\nprint(mnistlab.__version__, mnistlab.API)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_dir_lists_the_api_before_it_loads():
    code = ("import sys, mnistlab\nnames = dir(mnistlab)\nassert 'torch' not in sys.modules\n"
            "print(' '.join(n for n in names if not n.startswith('_')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.split()
    assert {"train", "evaluate", "load_model", "predict", "compare", "sweep"} <= set(shown)


def test_compare_returns_the_table_rows(trained, tmp_path, mnist_root):
    lines = []
    rows = mnistlab.compare([REPO / "configs" / "iter5.yaml", "mlp"], TINY, out_dir=tmp_path, log=lines.append,
                            data_dir=mnist_root)
    assert [r["config"] for r in rows] == ["iter5", "mlp"] and all(r["status"] == "trained" for r in rows)
    assert all(0 < r["test_acc"] <= 1 and r["error"] == "" for r in rows)
    assert (tmp_path / "comparison.csv").exists() and any("2 config(s)" in line for line in lines)


def test_sweep_returns_the_best_trial(tmp_path, mnist_root):
    path = tmp_path / "tiny.yaml"
    path.write_text("base: iter5\nstudy: tiny\nobjective: val_acc\nn_trials: 5\nsampler: random\npruner: none\n"
                    "space:\n  train.optimizer.lr: {low: 0.002, high: 0.01, log: true}\n")
    best = mnistlab.sweep(path, n_trials=2, overrides=TINY, out_dir=tmp_path / "out", data_dir=mnist_root,
                          log=lambda *a: None)
    trials = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert len(trials) == 3  # n_trials=2 overrode the file's 5
    assert best["study"] == "tiny" and best["state"] == "complete" and best["trial"] in (0, 1)
    assert 0 < best["objective_val_acc"] <= 1 and 0 < best["test_acc"] <= 1
    assert best["best_yaml"] == str(tmp_path / "out" / "best.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_root):
    out = tmp_path_factory.mktemp("api")
    config = {"name": "notebook", "model": "iter5", "data": {"root": str(mnist_root)},
              "train": {"optimizer": {"name": "adam", "lr": 0.003}}}
    return mnistlab.train(config, TINY, out_dir=out)


def test_train_takes_a_dict_and_returns_the_summary(trained):
    assert trained["name"] == "notebook" and trained["model"] == "iter5" and trained["epochs_run"] == 1
    assert 0.1 < trained["test_acc"] <= 1 and (Path(trained["run_dir"]) / "best.pt").exists()


def test_train_by_packaged_name(tmp_path, mnist_root):
    summary = mnistlab.train("iter5", TINY, out_dir=tmp_path, data_dir=str(mnist_root))
    assert summary["name"] == "iter5" and (tmp_path / "iter5").is_dir()


def test_evaluate_gives_the_summarys_numbers_with_the_limit_lifted(trained, mnist_root):
    report = mnistlab.evaluate(f"{trained['run_dir']}/best.pt", data_dir=str(mnist_root), device="cpu")
    assert report["n"] == 10_000 and 0 <= report["accuracy"] <= 1 and len(report["confusion_matrix"]) == 10
    with pytest.raises(UserError, match="split"):
        mnistlab.evaluate(f"{trained['run_dir']}/best.pt", split="holdout")


def test_load_model_is_a_ready_torch_module(trained):
    model = mnistlab.load_model(f"{trained['run_dir']}/best.pt")
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.classes == list("0123456789") and len(model.normalize) == 2
    with torch.inference_mode():
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_predict_takes_paths_pil_images_and_arrays(tmp_path):
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=16)
    image.save(tmp_path / "one.png")
    image.convert("RGB").save(tmp_path / "one.jpg")
    array = np.asarray(image)
    # Image.open() gives a picture not yet decoded (Pillow 13 no longer decodes it when its pixels are reached)
    opened = [Image.open(tmp_path / "one.png"), Image.open(tmp_path / "one.jpg")]
    results = mnistlab.predict([tmp_path / "one.png", image, array, array.astype(np.float32) / 255, *opened],
                               ckpt="default", top_k=2)
    assert [r["prediction"] for r in results] == ["1"] * 6
    assert results[0]["path"] == str(tmp_path / "one.png") and "path" not in results[1]
    assert len(results[2]["top_k"]) == 2
    with pytest.raises(UserError, match="images\\[0\\]"):
        mnistlab.predict([42], ckpt="default")


def test_a_dict_config_without_a_name_is_named_after_its_model(tmp_path, mnist_root):
    """The docstring's example, as written: {"model": "iter5", "train": {"epochs": 3}} (epochs cut for the test)."""
    summary = mnistlab.train({"model": "iter5", "train": {"epochs": 3}}, [*TINY, "train.limit_train_batches=3"],
                             out_dir=tmp_path, data_dir=str(mnist_root))
    assert summary["name"] == "iter5" and Path(summary["run_dir"]).parent == tmp_path / "iter5"
    report = mnistlab.evaluate(summary["run_dir"] + "/best.pt", data_dir=str(mnist_root), device="cpu")
    assert report["n"] == 10_000


def blank(shape, dtype=np.uint8, value=0):
    return np.full(shape, value, dtype)


BAD_CALLS = [
    ("predict", {"images": blank((28, 28)), "top_k": 0}, "top_k: got 0"),
    ("predict", {"images": blank((28, 28)), "top_k": True}, "top_k: got True"),
    ("predict", {"images": blank((28, 28)), "top_k": "3"}, "top_k: got '3'"),
    ("predict", {"images": blank((28, 28)), "frame": "no"}, "frame: got 'no'"),
    ("predict", {"images": blank((28, 28)), "ckpt": 5}, "ckpt: got 5"),
    ("predict", {"images": blank((28,))}, "images[0]: an array of shape 28; give H x W"),
    ("predict", {"images": blank((28, 28, 2))}, "shape 28 x 28 x 2"),
    ("predict", {"images": [blank((4, 28, 28, 3))]}, "shape 4 x 28 x 28 x 3"),
    ("predict", {"images": blank((28, 28), np.float64, np.nan)}, "floats must be finite and in [0, 1]"),
    ("predict", {"images": blank((28, 28), np.float32, 200.0)}, "floats must be finite and in [0, 1]"),
    ("predict", {"images": blank((28, 28), np.int64, 300)}, "whole numbers from 300 to 300"),
    ("predict", {"images": blank((28, 28), bool)}, "an array of bool"),
    ("predict", {"images": blank((28, 28), object)}, "an array of object"),
    ("train", {"config": 5}, "config: got 5"),
    ("train", {"config": "iter5", "overrides": "train.epochs=3"}, "overrides: got 'train.epochs=3'"),
    ("train", {"config": "iter5", "overrides": [3]}, "overrides: got 3 (type int) among them"),
    ("train", {"config": "iter5", "quiet": "yes"}, "quiet: got 'yes'"),
    ("train", {"config": "iter5", "log": 3}, "log: got 3"),
    ("train", {"config": "iter5", "out_dir": 7}, "out_dir: got 7"),
    ("evaluate", {"ckpt": 3}, "ckpt: got 3"),
    ("evaluate", {"ckpt": "x.pt", "split": ["test"]}, "split: got ['test']"),
    ("evaluate", {"ckpt": "x.pt", "tta": "yes"}, "tta: got 'yes'"),
    ("evaluate", {"ckpt": "x.pt", "device": None}, "device: got None"),
    ("load_model", {"ckpt": None}, "ckpt: got None"),
    ("compare", {"configs": "iter5"}, "configs: got 'iter5'"),
    ("compare", {"configs": []}, "configs: got an empty list"),
    ("compare", {"configs": ["iter5", 3]}, "configs: got 3"),
    ("compare", {"configs": ["iter5"], "seeds": "1,2"}, "seeds: got '1,2'"),
    ("compare", {"configs": ["iter5"], "seeds": [1, True]}, "seeds: got True"),
    ("compare", {"configs": ["iter5"], "jobs": 0}, "jobs: got 0"),
    ("compare", {"configs": ["iter5"], "reuse": "no"}, "reuse: got 'no'"),
    ("compare", {"configs": ["iter5"], "sort": "nope"}, "--sort: got 'nope'"),
    ("compare", {"configs": ["iter5"], "log": None}, "log: got None"),
    ("sweep", {"sweep_file": 3}, "sweep_file: got 3"),
    ("sweep", {"sweep_file": "s.yaml", "n_trials": 0}, "n_trials: got 0"),
    ("sweep", {"sweep_file": "s.yaml", "n_trials": 2.5}, "n_trials: got 2.5"),
    ("sweep", {"sweep_file": "s.yaml", "overrides": "train.epochs=1"}, "overrides: got 'train.epochs=1'"),
    ("sweep", {"sweep_file": "s.yaml", "jobs": "2"}, "jobs: got '2'"),
]


@pytest.mark.parametrize("function, kwargs, message", BAD_CALLS, ids=[f"{f}-{m[:24]}" for f, _, m in BAD_CALLS])
def test_arguments_are_checked_with_one_line(function, kwargs, message):
    """Each once raised a TypeError or IndexError from deep inside, or read a picture wrongly in silence."""
    with pytest.raises(UserError) as caught:
        getattr(mnistlab, function)(**kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_arrays_of_whole_numbers_and_single_channels_are_read(tmp_path):
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=16)
    array = np.asarray(image)
    results = mnistlab.predict([array.astype(np.int64), array[:, :, None], array.astype(np.float64) / 255],
                               ckpt="default")
    assert [r["prediction"] for r in results] == ["1"] * 3
