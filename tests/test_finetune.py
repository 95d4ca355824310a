"""Fine-tuning: `model.init` starts a run from a checkpoint's weights, `train.freeze` keeps some of them.

Real MNIST and Fashion-MNIST ($MNISTLAB_DATA_DIR), the real CLI in-process, tiny runs: one epoch of
one to three batches, 500 validation images, one test batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mnistlab.reading.predict import SHIPPED
from mnistlab.training.choice import find_checkpoint

SMALL = ["--set", "data.val_split=500", "--set", "train.epochs=1", "--set", "train.limit_eval_batches=1",
         "--set", "train.batch_size=32", "--set", "device=cpu"]
STILL = ["--set", "train.optimizer.lr=1e-12", "--set", "train.limit_train_batches=1"]  # the weights barely move
HEAD = ("16.weight", "16.bias")  # cnn3_bn's classifier


def config(path: Path, model: str, *, dataset: str = "mnist", train: str = "") -> Path:
    train = ", ".join(["optimizer: adam", *([train] if train else [])])
    path.write_text(f"name: {path.stem}\ndata: {{dataset: {dataset}}}\nmodel: {model}\ntrain: {{{train}}}\n")
    return path


def only_run(root: Path) -> Path:
    (summary,) = root.glob("*/*/summary.json")
    return summary.parent


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def one_line_error(code, err) -> str:
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, (code, err)
    assert err.startswith("mnistlab train: error: "), err
    return err


@pytest.fixture(scope="module")
def from_default(mnist_root, tmp_path_factory):
    """`model: {init: default}` without a name, trained with a learning rate too small to move anything."""
    from mnistlab.cli import main

    root = tmp_path_factory.mktemp("init-default")
    cfg = config(root / "tuned.yaml", "{init: default}")
    code = main(["train", str(cfg), "--out-dir", str(root / "checkpoints"), "--data-dir", str(mnist_root),
                 *SMALL, *STILL, "--quiet"])
    assert code == 0
    return only_run(root / "checkpoints")


def test_init_default_loads_the_shipped_model_without_a_name(from_default, mnist_root, tmp_path, cli):
    summary = summary_of(from_default)
    assert summary["model"] == "cnn3_bn" and summary["init"] == {
        "from": "default", "path": "mnistlab/reading/weights/default.pt",
        "sha256": hashlib.sha256(SHIPPED.read_bytes()).hexdigest()}
    stored = yaml.safe_load((from_default / "config.yaml").read_text())
    assert stored["model"] == {"name": "cnn3_bn", "init": "default"}  # as given, with the resolved name
    shipped = torch.load(SHIPPED, weights_only=True)
    assert stored["data"]["normalize"] == shipped["normalize"]  # inputs as the checkpoint was trained on
    assert summary["val_acc"] > 0.97  # the shipped model's accuracy before any real step

    code, out, err = cli("train", config(tmp_path / "scratch.yaml", "cnn3_bn"), "--out-dir", tmp_path / "ck",
                         "--data-dir", mnist_root, *SMALL, *STILL, "--quiet")
    assert code == 0, err
    assert summary_of(only_run(tmp_path / "ck"))["val_acc"] < 0.5  # the same run from scratch: chance


def test_runs_shows_what_a_run_started_from(from_default, cli):
    code, out, _ = cli("runs", from_default.parent.parent)
    assert code == 0 and "cnn3_bn*" in out and "model*: fine-tuned" in out
    assert all(len(line) <= 120 for line in out.splitlines())
    code, out, _ = cli("runs", from_default.parent.parent, "--json")
    (record,) = json.loads(out)
    assert record["init"] == summary_of(from_default)["init"]


def test_init_by_path_and_latest_and_best(from_default, mnist_root, tmp_path, monkeypatch, cli):
    best = from_default / "best.pt"
    code, out, err = cli("train", config(tmp_path / "again.yaml", f"{{init: {best}}}"), "--out-dir", tmp_path / "a",
                         "--data-dir", mnist_root, *SMALL, *STILL)
    assert code == 0, err
    assert f"  model.init: {best} (sha256 " in out and "inputs normalised with mean 0.1307, std 0.3081" in out
    init = summary_of(only_run(tmp_path / "a"))["init"]
    assert init == {"from": str(best), "path": str(best), "sha256": hashlib.sha256(best.read_bytes()).hexdigest()}

    monkeypatch.chdir(tmp_path)  # latest and best look in ./checkpoints, as predict --ckpt does
    full = finished_run(tmp_path, "full", {"test_acc": 0.9991, "test_n": 10_000}, finished=1_000_000_000)
    newest = finished_run(tmp_path, "newest", {"test_acc": 0.5, "test_n": 10_000}, finished=1_000_000_100)
    for given, chosen in (("latest", newest), ("best", full)):
        code, _, err = cli("train", config(tmp_path / f"{given}.yaml", f"{{init: {given}}}"), "--out-dir",
                           tmp_path / given, "--data-dir", mnist_root, *SMALL, *STILL, "--quiet")
        assert code == 0, err
        assert summary_of(only_run(tmp_path / given))["init"]["path"] == str(chosen.relative_to(tmp_path))


def finished_run(root: Path, name: str, figures: dict, finished: int) -> Path:
    """A run directory as `mnistlab train` leaves a full run, holding a copy of the shipped model."""
    run_dir = root / "checkpoints" / name / "run"
    run_dir.mkdir(parents=True)
    shutil.copy(SHIPPED, run_dir / "best.pt")
    (run_dir / "config.yaml").write_text(f"name: {name}\ntrain:\n  limit_train_batches: null\n")
    (run_dir / "summary.json").write_text(json.dumps({"dataset": "mnist", **figures}))
    os.utime(run_dir / "summary.json", (finished, finished))
    return run_dir / "best.pt"


def test_a_run_with_non_finite_figures_is_never_chosen(tmp_path, monkeypatch):
    """Issue 28: json reads NaN and Infinity; such a run is neither the newest, the best nor the default choice."""
    monkeypatch.chdir(tmp_path)
    fine = finished_run(tmp_path, "fine", {"test_acc": 0.9, "test_n": 10_000}, finished=1_000_000_000)
    finished_run(tmp_path, "nan", {"test_acc": math.nan, "test_n": 10_000}, finished=1_000_000_300)
    finished_run(tmp_path, "inf", {"test_acc": 0.9999, "test_loss": math.inf, "test_n": 10_000},
                 finished=1_000_000_200)
    assert "NaN" in (tmp_path / "checkpoints" / "nan" / "run" / "summary.json").read_text()
    assert find_checkpoint("latest")[0] == find_checkpoint("best")[0] == fine.relative_to(tmp_path)
    assert find_checkpoint(None)[0] == SHIPPED  # 99.58% beats the one finite run


def test_other_classes_get_a_new_head_and_freeze_body_keeps_the_rest(mnist_root, tmp_path, cli):
    """Fashion-MNIST's ten names are not the digits: the head starts afresh (one line says so); with
    train.freeze: body and train.ema every other weight and BatchNorm statistic stays the shipped one."""
    cfg = config(tmp_path / "fashion.yaml", "{init: default}", dataset="fashion-mnist",
                 train="freeze: body, ema: {decay: 0.5}, limit_train_batches: 3")
    code, out, err = cli("train", cfg, "--out-dir", tmp_path / "ck", "--data-dir", mnist_root, *SMALL)
    assert code == 0, err
    line = ("  model.init: classes 0..9 (10) -> T-shirt/top..Ankle boot (10): the classifier head (16.weight, "
            "16.bias) starts afresh")
    assert out.count("classifier head") == 1 and line in out.splitlines()
    assert all(len(line) <= 120 for line in out.splitlines() if line.startswith(("  model.init", "  inputs")))
    assert "(241,994 params, 1,290 of them train)" in out
    run_dir = only_run(tmp_path / "ck")
    summary = summary_of(run_dir)
    assert summary["freeze"] == "body" and summary["trainable_params"] == 1290 and summary["init"]["from"] == "default"

    shipped, tuned = torch.load(SHIPPED, weights_only=True), torch.load(run_dir / "best.pt", weights_only=True)
    assert tuned["classes"][0] == "T-shirt/top"
    body = [k for k in shipped["state_dict"] if k not in HEAD]
    assert any("running_mean" in k for k in body)
    for key in body:  # weights and BatchNorm running statistics, bit for bit
        assert torch.equal(tuned["state_dict"][key], shipped["state_dict"][key]), key
    assert not torch.equal(tuned["state_dict"]["16.weight"], shipped["state_dict"]["16.weight"])


def test_the_same_classes_in_another_order_keep_the_head(mnist_root, tmp_path, cli):
    """A checkpoint whose classes are the digits backwards (its head's rows too): the rows are put back in the
    data's order rather than thrown away, so it reads MNIST as well as the shipped model."""
    ckpt = torch.load(SHIPPED, weights_only=True)
    ckpt["classes"] = ckpt["classes"][::-1]
    for key in HEAD:
        ckpt["state_dict"][key] = ckpt["state_dict"][key].flip(0)
    torch.save(ckpt, tmp_path / "backwards.pt")
    cfg = config(tmp_path / "back.yaml", f"{{init: {tmp_path / 'backwards.pt'}}}")
    code, out, err = cli("train", cfg, "--out-dir", tmp_path / "ck", "--data-dir", mnist_root, *SMALL, *STILL)
    assert code == 0, err
    assert "  model.init: the same classes in another order: the head's rows (16.weight, 16.bias) follow the " \
           "data's" in out.splitlines()
    assert summary_of(only_run(tmp_path / "ck"))["val_acc"] > 0.97


def test_resuming_a_fine_tuned_run_continues_its_own_weights(from_default, mnist_root, tmp_path, cli):
    """--resume loads the run's last.pt, never model.init's file again: here that file is gone by then."""
    start = tmp_path / "start.pt"
    shutil.copy(from_default / "best.pt", start)
    cfg = config(tmp_path / "resumed.yaml", f"{{init: {start}}}", train="freeze: [0, 1]")
    code, _, err = cli("train", cfg, "--out-dir", tmp_path / "ck", "--data-dir", mnist_root, *SMALL, *STILL,
                       "--quiet")
    assert code == 0, err
    run_dir = only_run(tmp_path / "ck")
    first = summary_of(run_dir)
    (run_dir / "summary.json").unlink()
    start.write_bytes(b"not a checkpoint any more")
    code, out, err = cli("train", "--resume", run_dir, "--set", "train.epochs=2", "--data-dir", mnist_root)
    assert code == 0, err
    assert f"resuming {run_dir} after epoch 1" in out and "model.init" in out
    again = summary_of(run_dir)
    assert again["epochs_run"] == 2 and again["init"] == first["init"] and again["freeze"] == ["0", "1"]


@pytest.mark.parametrize("model, train, expected", [
    ("{init: missing.pt}", "", "model.init: checkpoint not found: missing.pt"),
    ("{init: model.onnx}", "", "model.init: model.onnx is an exported ONNX model, which holds no weights to train"),
    ("{init: folder}", "", "model.init: folder is a directory; give a checkpoint file such as folder/best.pt"),
    ("{init: cut.pt}", "", "model.init: cut.pt: not a readable checkpoint (truncated or corrupt?)"),
    ("{init: default, name: mlp}", "", "model.name: got 'mlp', but model.init's checkpoint "),
    ("{init: default, dropout_p: 0.1}", "", "model.dropout_p: got 0.1, but model.init's checkpoint "),
    ("{lr: 1}", "", "model.name: required unless model.init names a checkpoint"),
    ("{init: default}", "freeze: [featurs]", "train.freeze: 'featurs' names no parameter of model 'cnn3_bn'"),
    ("{init: default}", "freeze: ['1.weigth']", "did you mean '1.weight'?"),
    ("{init: default}", "freeze: [0, 1, 4, 5, 8, 9, 13, 16]", "freezes every parameter of model 'cnn3_bn'"),
])
def test_bad_values_are_one_line(mnist_root, tmp_path, monkeypatch, cli, model, train, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "cut.pt").write_bytes(SHIPPED.read_bytes()[:5000])
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    cfg = config(tmp_path / "bad.yaml", model, train=train)
    code, _, err = cli("train", cfg, "--data-dir", mnist_root, *SMALL, *STILL, "--quiet")
    assert expected in one_line_error(code, err)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").glob("*/*/best.pt"))


def test_compare_reuses_a_fine_tuned_run(mnist_root, tmp_path, cli):
    """The run's config.yaml holds the resolved model: compare's second call finds the run it trained."""
    cfg = config(tmp_path / "tuned.yaml", "{init: default}", train="freeze: body")
    args = ["--out-dir", tmp_path / "cmp", "--data-dir", mnist_root, *SMALL, *STILL]
    code, out, err = cli("compare", cfg, *args)
    assert code == 0 and "1 run(s) trained, 0 reused" in out, err
    code, out, err = cli("compare", cfg, *args)
    assert code == 0 and "0 run(s) trained, 1 reused" in out, err
    assert "cnn3_bn" in (tmp_path / "cmp" / "comparison.md").read_text()
