"""`mnistlab compare --jobs N`: worker processes give the table of the in-process path, failed rows included."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest

from conftest import REPO
from mnistlab.experiments import parallel as jobs
from mnistlab.experiments import plan
from mnistlab.experiments.runs import Run, find_finished_run
from mnistlab.experiments.table import METRICS
from mnistlab.cli import main

CONFIGS = REPO / "configs"
TINY = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=5", "--set", "train.eval_batch_size=2048",
        "--set", "train.limit_eval_batches=2"]
VARIES = {"train_time_s", "time_per_epoch_s", "device", "run_dirs"}  # what may differ between two identical runs


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def table(out_dir: Path) -> list[dict]:
    with open(out_dir / "comparison.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in VARIES} for row in csv.DictReader(f)]


def exact_metrics(out_dir: Path) -> dict[str, dict]:
    """Each trained row's metrics at full precision (the CSV rounds to 6 digits), from its summary.json."""
    with open(out_dir / "comparison.csv", newline="", encoding="utf-8") as f:
        run_dirs = {row["config"]: row["run_dirs"] for row in csv.DictReader(f) if row["run_dirs"]}
    return {name: {k: v for k, v in json.loads((Path(d) / "summary.json").read_text()).items() if k in METRICS}
            for name, d in run_dirs.items()}


@pytest.fixture(scope="module")
def both(mnist_root, tmp_path_factory):
    """The same comparison (two tiny runs and one that diverges) with --jobs 1 and with --jobs 2."""
    import torch

    tmp = tmp_path_factory.mktemp("jobs")
    diverges = tmp / "diverges.yaml"
    diverges.write_text("model: baseline_cnn\ntrain: {optimizer: {name: sgd, lr: 1.0e+30}}\n")
    configs = [CONFIGS / "iter5.yaml", diverges, CONFIGS / "mlp.yaml"]
    results = {}
    threads = torch.get_num_threads()
    # On the CPU a run is bit-identical only with the same number of threads (convolutions sum in
    # per-thread chunks): the in-process run gets what each of two workers gets.
    torch.set_num_threads(jobs.worker_threads(2))
    try:
        for n in (1, 2):
            out = tmp / f"jobs{n}"
            results[n] = (out, *run_cli("compare", *configs, *TINY, "--out-dir", out, "--data-dir", mnist_root,
                                        "--jobs", n))
    finally:
        torch.set_num_threads(threads)
    return {**results, "configs": configs, "data": mnist_root}


def test_jobs_2_gives_the_table_of_jobs_1(both):
    (one, code1, _, err1), (two, code2, stdout, err2) = both[1], both[2]
    assert (code1, code2) == (1, 1), err1 + err2  # 1: the diverging row failed
    assert table(two) == table(one)  # same rows, same order, same losses and accuracies, same error
    assert exact_metrics(two) == exact_metrics(one) and len(exact_metrics(two)) == 2
    rows = {row["config"]: row for row in table(two)}
    assert list(rows) == ["iter5", "diverges", "mlp"]
    assert rows["iter5"]["status"] == rows["mlp"]["status"] == "trained" and float(rows["iter5"]["test_acc"]) > 0
    # one line when each run starts and one when it ends, no progress bars
    assert stdout.count("training in worker") == 3 and stdout.count("finished in") == 2
    assert stdout.count("diverges (seed 0): FAILED after") == 1 and "\r" not in stdout
    assert "2 run(s) trained, 0 reused, 1 failed" in stdout


def test_a_failing_run_in_a_worker_is_its_failed_row(both):
    rows = {row["config"]: row for row in table(both[2][0])}
    assert rows["diverges"]["status"] == "failed" and "non-finite loss" in rows["diverges"]["error"]
    assert rows["diverges"]["params"] == "26698"  # what is known of a failed row is still shown
    assert "Traceback" not in both[2][3]  # a UserError in a worker is its message, not a traceback


def test_reused_runs_are_not_sent_to_workers(both):
    out = both[2][0]
    before = sorted(out.glob("*/*/summary.json"))
    code, stdout, _ = run_cli("compare", both["configs"][0], both["configs"][2], *TINY, "--out-dir", out,
                              "--data-dir", both["data"], "--jobs", 2)
    assert code == 0
    assert "training in worker" not in stdout and stdout.count("reusing the finished run") == 2
    assert sorted(out.glob("*/*/summary.json")) == before


def test_bad_jobs_exit_2_with_one_line(tmp_path, capsys):
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["compare", str(CONFIGS / "iter5.yaml"), "--jobs", bad, "--out-dir", str(tmp_path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--jobs" in err
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- no data needed

def test_rows_are_assembled_in_seed_order_up_to_the_first_failure():
    def run(seed):
        return Run(seed, Path(f"r{seed}"), {"seed": seed}, reused=False)

    rows = [plan.Row(name, f"{name}.yaml") for name in "abc"]
    comparison = plan.Comparison(rows, Path("."), [], [1, 2, 3], interrupted=True)
    # workers finish out of order; b's seed 3 failed first, its seed 2 later; c was stopped by Ctrl-C
    outcomes = {(0, 3): run(3), (0, 1): run(1), (0, 2): run(2), (1, 3): "boom", (1, 1): run(1), (1, 2): "bang",
                (2, 1): run(1), (2, 2): jobs.INTERRUPTED}
    jobs.assemble(comparison, outcomes, [[1, 2, 3]] * 3)
    a, b, c = comparison.rows
    assert [r.seed for r in a.runs] == [1, 2, 3] and a.error is None
    assert [r.seed for r in b.runs] == [1] and b.error == "bang (seed 2)"
    assert [r.seed for r in c.runs] == [1] and c.error == "interrupted after 1 finished seed(s)"


def test_worker_errors_read_as_in_process():
    assert jobs.worker_error(3, "warn\nmnistlab train: error: training diverged:\n non-finite loss\n") == \
        "training diverged: non-finite loss"
    assert jobs.worker_error(1, "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n") == \
        "RuntimeError: boom (a bug in mnistlab; traceback above)"
    assert jobs.worker_error(-9, "") == "the training process was killed by SIGKILL (out of memory?)"


def test_a_run_on_another_gpu_of_the_same_model_is_reused(tmp_path):
    """--jobs puts runs on cuda:0, cuda:1, ... and records it; a later compare (device auto) reuses them."""
    import yaml

    from mnistlab.config import config_to_dict, validate_config

    config = config_to_dict(validate_config({"name": "x", "model": "iter5"}))
    run_dir = tmp_path / "x" / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "device": "cuda:1"}, sort_keys=False))
    (run_dir / "metrics.csv").write_text("epoch\n")
    (run_dir / "summary.json").write_text(json.dumps({"device": "cuda:1 (NVIDIA H100)"}))
    assert find_finished_run(tmp_path, config, "cuda (NVIDIA H100)") == run_dir
    assert find_finished_run(tmp_path, config, "cuda (NVIDIA A100)") is None
    assert find_finished_run(tmp_path, config, "cpu") is None
