"""`mnistlab compare` and the plots, on tiny real runs (1 epoch, 5 batches, 4,096 val/test images) of the real MNIST.

The runs are trained once per module and shared: later tests reuse them, which is itself under test.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from mnistlab.experiments import plan, table
from mnistlab.experiments.runs import Run, find_finished_run
from mnistlab.cli import main

CONFIGS = REPO / "configs"
TINY = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=5", "--set", "train.eval_batch_size=2048",
        "--set", "train.limit_eval_batches=2"]


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def compare_cli(first: dict, *configs, extra=()) -> tuple[int, str, str]:
    return run_cli("compare", *configs, *TINY, "--out-dir", first["out"], "--data-dir", first["data"], *extra)


def read_csv(out_dir: Path) -> dict[str, dict]:
    with open(out_dir / "comparison.csv", newline="", encoding="utf-8") as f:
        return {row["config"]: row for row in csv.DictReader(f)}


def run_dirs(out_dir: Path) -> set[Path]:
    return {p.parent for p in out_dir.glob("*/*/config.yaml")}


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels.std() > 0.01, f"{path} looks blank"


@pytest.fixture(scope="module")
def first(mnist_root, tmp_path_factory):
    """The first comparison of two tiny real runs; the tests after it reuse them."""
    first = {"out": tmp_path_factory.mktemp("compare"), "data": mnist_root}
    code, stdout, stderr = compare_cli(first, CONFIGS / "iter5.yaml", CONFIGS / "mlp.yaml")
    return {**first, "code": code, "stdout": stdout, "stderr": stderr, "dirs": run_dirs(first["out"])}


# ---------------------------------------------------------------- two tiny runs

def test_table_columns_and_values(first):
    assert first["code"] == 0, first["stderr"]
    rows = read_csv(first["out"])
    assert list(rows) == ["iter5", "mlp"]
    expected = {"iter5": ("18422", "10", "5", "2", "1", "2", "0"), "mlp": ("669706", "3", "0", "0", "3", "0", "0")}
    for name, row in rows.items():
        summary = json.loads((Path(row["run_dirs"]) / "summary.json").read_text())
        assert (row["params"], row["layers"], row["conv"], row["maxpool"], row["linear"], row["batchnorm"],
                row["dropout"]) == expected[name]
        assert (row["model"], row["seeds"], row["epochs_run"], row["best_epoch"]) == (name, "1", "1", "1")
        for metric in ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc", "train_time_s"):
            assert float(row[metric]) == pytest.approx(summary[metric], rel=1e-5), metric
            assert row.get(f"{metric}_sd", "") == ""  # one seed: no spread to report
        for acc in ("train_acc", "val_acc", "test_acc"):
            assert 0 <= float(row[acc]) <= 1
        assert float(row["time_per_epoch_s"]) == pytest.approx(summary["time_per_epoch_s"], rel=1e-5)
        assert row["device"] == summary["device"]
        assert (row["test_n"], row["selected_on"]) == ("4096", "val_loss")
        assert (row["status"], row["error"]) == ("trained", "")
    narrow = ("params", "epochs run/best", "train acc", "val acc", "test loss", "test acc", "train time", "device")
    every = (*narrow, "conv", "maxpool", "linear", "batchnorm", "dropout", "train loss", "time/epoch")
    table = [line for line in first["stdout"].splitlines() if line.startswith(("config", "iter5", "mlp", "---"))]
    assert table and all(len(line) <= 120 for line in table)  # the terminal table fits 120 columns
    for text, headers in ((first["stdout"], narrow), ((first["out"] / "comparison.md").read_text(), every)):
        for header in headers:
            assert header in text
        assert "18,422" in text and "669,706" in text  # thousands separators
        test_acc = float(rows["iter5"]["test_acc"])
        assert f"{test_acc:.2%}" in text
        assert "on 4,096 test images" in text and "selected on val_loss" in text
    assert "2 run(s) trained, 0 reused, 0 failed" in first["stdout"]


def test_plots_written_and_not_empty(first):
    assert_png(first["out"] / "comparison_curves.png")
    assert_png(first["out"] / "comparison_acc_vs_params.png")
    for run_dir in first["dirs"]:
        assert_png(run_dir / "curves.png")
    assert "![validation curves](comparison_curves.png)" in (first["out"] / "comparison.md").read_text()


def test_second_call_trains_nothing(first, monkeypatch):
    import mnistlab.training.trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a finished identical run exists; nothing should be trained")

    monkeypatch.setattr(mnistlab.training.trainer, "run_training", no_training)
    before = read_csv(first["out"])
    code, stdout, _ = compare_cli(first, CONFIGS / "iter5.yaml", CONFIGS / "mlp.yaml")
    assert code == 0
    assert stdout.count("reusing the finished run") == 2
    assert "0 run(s) trained, 2 reused" in stdout
    assert run_dirs(first["out"]) == first["dirs"]
    after = read_csv(first["out"])
    for name in before:
        assert after[name]["status"] == "reused"
        assert {k: v for k, v in after[name].items() if k != "status"} == \
               {k: v for k, v in before[name].items() if k != "status"}


def test_sort_puts_the_best_first(first):
    code, stdout, _ = compare_cli(first, CONFIGS / "mlp.yaml", CONFIGS / "iter5.yaml", extra=["--sort", "test_acc"])
    assert code == 0
    rows = list(read_csv(first["out"]).values())
    accs = [float(r["test_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)


# ---------------------------------------------------------------- failures

def test_broken_configs_are_all_listed_before_anything_trains(first, tmp_path):
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text("model: {name: iter5\n")
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("model: iter5\ntrain: {epoks: 3}\n")
    bad_model = tmp_path / "bad_model.yaml"
    bad_model.write_text("model: iter55\n")
    out = tmp_path / "nothing"
    code, stdout, stderr = compare_cli({**first, "out": out}, bad_yaml, CONFIGS / "iter5.yaml", bad_key, bad_model,
                                       tmp_path / "missing.yaml")
    assert code == 2 and "Traceback" not in stderr
    assert "4 of 5 config(s) cannot run (listed above); nothing was trained" in stderr
    listed = [line for line in stderr.splitlines() if line.startswith("  ")]
    assert len(listed) == 4 and all("\n" not in line for line in listed)
    assert "YAML syntax error" in listed[0] and "train.epoks" in listed[1]
    assert "did you mean 'iter5'" in listed[2] and "not found" in listed[3]
    assert not any(out.glob("*/*/config.yaml"))  # nothing trained


def test_a_run_that_fails_is_a_failed_row(first, tmp_path):
    diverges = tmp_path / "diverges.yaml"
    diverges.write_text("model: baseline_cnn\ntrain: {optimizer: {name: sgd, lr: 1.0e+30}}\n")
    code, stdout, stderr = compare_cli(first, CONFIGS / "iter5.yaml", diverges)
    assert code == 1
    rows = read_csv(first["out"])
    assert rows["iter5"]["status"] == "reused" and float(rows["iter5"]["test_acc"]) > 0
    errors = {name: row["error"] for name, row in rows.items() if row["status"] == "failed"}
    assert set(errors) == {"diverges"} and "non-finite loss" in errors["diverges"]
    assert rows["diverges"]["params"] == "26698"  # what is known of a failed row is still shown
    assert "Traceback" not in stderr  # user errors are messages, not tracebacks
    assert "failed:" in stdout and "non-finite loss" in (first["out"] / "comparison.md").read_text()


def test_a_bug_is_a_failed_row_with_its_traceback(first, monkeypatch):
    import mnistlab.training.trainer

    def bug(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(mnistlab.training.trainer, "run_training", bug)
    code, _, stderr = compare_cli(first, CONFIGS / "iter5.yaml", CONFIGS / "mlp.yaml", extra=["--no-reuse"])
    assert code == 1
    assert stderr.count("Traceback") == 2 and "RuntimeError: boom" in stderr
    assert all(row["error"].startswith("RuntimeError: boom") for row in read_csv(first["out"]).values())


def test_ctrl_c_writes_the_finished_rows(first, tmp_path, monkeypatch):
    import mnistlab.training.trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnistlab.training.trainer, "run_training", interrupted)
    untrained = tmp_path / "untrained.yaml"
    untrained.write_text("model: iter3\n")
    code, stdout, _ = compare_cli(first, CONFIGS / "iter5.yaml", untrained, CONFIGS / "mlp.yaml")
    assert code == 130
    rows = read_csv(first["out"])
    assert list(rows) == ["iter5", "untrained"]
    assert rows["iter5"]["status"] == "reused" and rows["untrained"]["error"] == "interrupted"
    assert "1 config(s) not run" in stdout and "1 config(s) not run" in (first["out"] / "comparison.md").read_text()


# ---------------------------------------------------------------- eval plots

def test_eval_writes_confusion_matrix_and_misclassified_grid(first, tmp_path):
    best = sorted(first["out"].glob("iter5/*/best.pt"))[0]
    code, stdout, _ = run_cli("eval", best, "--plots", tmp_path / "plots", "--data-dir", first["data"])
    assert code == 0
    assert_png(tmp_path / "plots" / "confusion_test.png")
    assert_png(tmp_path / "plots" / "misclassified_test.png")
    assert "confusion_test.png" in stdout


# ---------------------------------------------------------------- no data needed

def test_layer_counts_match_seed_002():
    from mnistlab.config import validate_config

    # the seven-iteration 1x1-conv study's "Total Layers" column: iterations 1, 4, 6, 7
    for name, total, counts in [("iter1", 8, (5, 2, 1, 0, 0)), ("iter4", 10, (5, 2, 1, 2, 0)),
                                ("iter6", 11, (5, 2, 1, 2, 1)), ("iter7", 14, (5, 2, 1, 2, 4))]:
        params, layers = plan.describe_model(validate_config({"model": name}))
        assert tuple(layers[k] for k in table.LAYER_KINDS) == counts and sum(layers.values()) == total
    assert params == 18422


def test_seeds_aggregate_to_mean_and_sample_sd():
    runs = [Run(seed, Path(f"r{seed}"), {"test_acc": acc, "test_loss": 0.1, "train_acc": 0.9,
                                                 "train_loss": 0.2, "val_acc": 0.95, "epochs_run": 3,
                                                 "best_epoch": best, "train_time_s": 6.0, "time_per_epoch_s": 2.0,
                                                 "device": "cpu"}, reused=False)
            for seed, acc, best in [(1, 0.97, 3), (2, 0.98, 2), (3, 0.99, 3)]]
    row = plan.Row("c", "c.yaml", "iter5", 18422, {k: 1 for k in table.LAYER_KINDS}, runs)
    values = table.row_values(row)
    assert values["test_acc"] == pytest.approx(0.98)
    assert values["test_acc_sd"] == pytest.approx(0.01)  # sample sd (n - 1)
    assert values["test_loss_sd"] == pytest.approx(0.0) and values["seeds"] == "1,2,3"
    headers, cells, _ = table.table_cells([row])
    cell = dict(zip(headers, cells[0]))
    assert cell["test acc"] == "98.00 ± 1.00%" and cell["epochs run/best"] == "3/2–3" and cell["seeds"] == "1,2,3"


def test_reuse_needs_the_same_config_and_device(tmp_path):
    from mnistlab.config import config_to_dict, validate_config

    config = config_to_dict(validate_config({"name": "x", "model": "iter5", "data": {"root": "/a"}}))
    run_dir = tmp_path / "x" / "20260101-000000"
    run_dir.mkdir(parents=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "metrics.csv").write_text("epoch\n")
    (run_dir / "summary.json").write_text(json.dumps({"device": "cpu"}))
    moved = {**config, "data": {**config["data"], "root": "/elsewhere", "download": False}}
    assert find_finished_run(tmp_path, moved, "cpu") == run_dir  # where the data lives is not the run
    other_lr = json.loads(json.dumps(config))
    other_lr["train"]["optimizer"]["lr"] = 0.01
    assert find_finished_run(tmp_path, other_lr, "cpu") is None
    assert find_finished_run(tmp_path, {**config, "seed": 7}, "cpu") is None
    assert find_finished_run(tmp_path, config, "cuda:0 (NVIDIA H100)") is None  # times would not compare
    (run_dir / "summary.json").unlink()  # unfinished (crashed or interrupted)
    assert find_finished_run(tmp_path, config, "cpu") is None


def test_bad_arguments_are_rejected_before_training(tmp_path):
    assert run_cli("compare", CONFIGS / "iter5.yaml", "--seeds", "1,x", "--out-dir", tmp_path)[0] == 2
    assert run_cli("compare", CONFIGS / "iter5.yaml", "--sort", "accuracy", "--out-dir", tmp_path)[0] == 2
    assert not any(tmp_path.iterdir())


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys, contextlib, io\nfrom mnistlab.cli import main\n"
            "for argv in (['--help'], ['compare', '--help'], ['eval', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main(argv)\n"
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.strip() == "[]"
