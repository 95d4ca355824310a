"""Runs stopped at any moment, on disks that fill up and folders that vanish: nothing lost, and
`mnistlab train --resume RUN_DIR` (nothing else) always finishes the run.

Each case trains for real in a fresh interpreter, on tiny settings, and is stopped where a kill can
land: before the first epoch ends, between epochs, during the final scoring, after early stopping,
after the summary. Environment failures are made for real too: RLIMIT_FSIZE makes writes fail as a
full disk does, and the run folder is deleted under a running process.
"""

from __future__ import annotations

import csv
import json
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO

TINY = ["--set", "train.limit_train_batches=12", "--set", "train.limit_eval_batches=2",
        "--set", "train.eval_batch_size=500", "--quiet"]
KEEP = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def mnistlab(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, **kwargs)


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnistlab", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"finished before {pattern} appeared: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: r[k] for k in KEEP} for r in csv.DictReader(f)]


def one_line(result: subprocess.CompletedProcess, command="train") -> str:
    assert result.returncode not in (0, None), result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith(f"mnistlab {command}: error: ") and len(err) <= 401, err[-2000:]
    return err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_root) -> Path:
    """The reference: iter7 (dropout and augmentation, so every random stream matters), 3 epochs."""
    out = tmp_path_factory.mktemp("full")
    result = mnistlab("train", REPO / "configs" / "iter7.yaml", "--set", "train.epochs=3", *TINY, "--out-dir", out,
                      "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (out / "iter7").iterdir()
    return run_dir


def resume(run_dir: Path, mnist_root: Path) -> subprocess.CompletedProcess:
    return mnistlab("train", "--resume", run_dir, "--data-dir", mnist_root)


@pytest.mark.parametrize("stage", ["first-epoch", "between-epochs"])
def test_a_kill_at_any_epoch_is_finished_by_resume_alone(tmp_path, mnist_root, uninterrupted, stage):
    proc = start("train", REPO / "configs" / "iter7.yaml", "--set", "train.epochs=3", *TINY, "--out-dir", tmp_path,
                 "--data-dir", mnist_root)
    wait_for("iter7/*/config.yaml" if stage == "first-epoch" else "iter7/*/last.pt", tmp_path, proc)
    proc.kill()
    proc.communicate()
    (run_dir,) = (tmp_path / "iter7").iterdir()
    assert not (run_dir / "summary.json").exists()
    result = resume(run_dir, mnist_root)
    assert result.returncode == 0, result.stderr
    assert rows(run_dir) == rows(uninterrupted)  # the same run, whatever the kill interrupted
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] == json.loads((uninterrupted / "summary.json").read_text())["test_acc"]
    assert not list(run_dir.glob(".*.tmp"))


def test_a_kill_during_the_final_scoring_is_finished(tmp_path, mnist_root, uninterrupted):
    run_dir = tmp_path / "iter7" / "run"
    shutil.copytree(uninterrupted, run_dir)
    (run_dir / "summary.json").unlink()  # every epoch done, the test score never written
    (run_dir / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    result = resume(run_dir, mnist_root)
    assert result.returncode == 0, result.stderr
    assert "every epoch is done" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] == json.loads((uninterrupted / "summary.json").read_text())["test_acc"]
    assert summary["epochs_run"] == 3 and rows(run_dir) == rows(uninterrupted)
    assert not list(run_dir.glob(".*.tmp"))
    again = resume(run_dir, mnist_root)  # and once more: it has finished, so there is nothing to do
    assert again.returncode == 0 and "already finished" in again.stdout


def test_an_early_stopped_run_killed_before_its_summary(tmp_path, mnist_root):
    stop_at_once = ["--set", "train.early_stopping={monitor: val_loss, patience: 1, min_delta: 100}"]
    result = mnistlab("train", REPO / "configs" / "iter5.yaml", "--set", "train.epochs=5", *stop_at_once, *TINY,
                      "--out-dir", tmp_path, "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "iter5").iterdir()
    before = json.loads((run_dir / "summary.json").read_text())
    assert before["stopped_early"] and before["epochs_run"] == 2
    (run_dir / "summary.json").unlink()
    result = resume(run_dir, mnist_root)
    assert result.returncode == 0, result.stderr
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["epochs_run"] == 2 and after["stopped_early"] and after["test_acc"] == before["test_acc"]


def as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("when", ["first-epoch", "later"])
def test_the_resume_command_printed_at_ctrl_c_works_as_printed(tmp_path, mnist_root, when):
    proc = start("train", REPO / "configs" / "iter5.yaml", "--set", "train.epochs=3", "--set",
                 "train.optimizer.lr=0.004", *TINY, "--device", "cpu", "--out-dir", tmp_path,
                 "--data-dir", mnist_root, preexec_fn=as_from_a_terminal)
    wait_for("iter5/*/config.yaml" if when == "first-epoch" else "iter5/*/last.pt", tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    (line,) = [x for x in out.splitlines() if "resume with: " in x]
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["mnistlab", "train"]
    result = subprocess.run([sys.executable, "-m", "mnistlab", *command[1:]], capture_output=True, text=True,
                            cwd=REPO, timeout=300)  # literally what was printed
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "iter5").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert summary["epochs_run"] == 3 and config["train"]["optimizer"]["lr"] == 0.004  # the --set kept


def test_stretching_a_one_cycle_schedule_is_refused_before_anything_runs(tmp_path, mnist_root, uninterrupted):
    result = mnistlab("train", REPO / "configs" / "iter5.yaml", "--set", "train.epochs=1", *TINY,
                      "--out-dir", tmp_path, "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "iter5").iterdir()
    (run_dir / "summary.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    err = one_line(mnistlab("train", "--resume", run_dir, "--set", "train.epochs=3", "--data-dir", mnist_root))
    assert "onecycle" in err and "train.epochs 1 -> 3" in err
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    # a step schedule continues: more epochs mean what they say
    result = mnistlab("train", REPO / "configs" / "iter7.yaml", "--set", "train.epochs=1", *TINY,
                      "--out-dir", tmp_path, "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    (step_run,) = (tmp_path / "iter7").iterdir()
    (step_run / "summary.json").unlink()
    result = mnistlab("train", "--resume", step_run, "--set", "train.epochs=3", "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    assert rows(step_run) == rows(uninterrupted)


def test_a_damaged_training_state_is_one_line(tmp_path, mnist_root, uninterrupted):
    run_dir = tmp_path / "iter7" / "run"
    shutil.copytree(uninterrupted, run_dir)
    (run_dir / "summary.json").unlink()
    for damage in ({"rows": "x"}, {"optimizer": [1]}, {"best_epoch": 99}):
        last = torch.load(uninterrupted / "last.pt", weights_only=True)
        last["training_state"].update(damage)
        torch.save(last, run_dir / "last.pt")
        assert "is damaged" in one_line(resume(run_dir, mnist_root))


def test_two_processes_never_train_one_run_directory(tmp_path, mnist_root):
    proc = start("train", REPO / "configs" / "iter7.yaml", "--set", "train.epochs=50", *TINY, "--out-dir", tmp_path,
                 "--data-dir", mnist_root)
    try:
        run_dir = wait_for("iter7/*/last.pt", tmp_path, proc).parent
        assert "another process" in one_line(resume(run_dir, mnist_root))
    finally:
        proc.kill()
        proc.communicate()


# ---------------------------------------------------------------- a full disk, a vanished folder

def small_files(limit: int):
    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


def test_a_full_disk_during_training_is_one_line_and_leaves_nothing_half_written(tmp_path, mnist_root):
    result = mnistlab("train", REPO / "configs" / "cnn3_bn.yaml", "--set", "train.epochs=1", *TINY,
                      "--out-dir", tmp_path, "--data-dir", mnist_root, preexec_fn=small_files(200_000))
    err = one_line(result)
    assert "File too large" in err
    (run_dir,) = (tmp_path / "cnn3_bn").iterdir()
    assert not list(run_dir.glob(".*.tmp"))
    for checkpoint in run_dir.glob("*.pt"):  # whatever exists is whole
        torch.load(checkpoint, weights_only=True)


def test_a_full_disk_under_eval_plots_leaves_no_partial_png(tmp_path, mnist_root):
    shipped = REPO / "mnistlab" / "reading" / "weights" / "default.pt"
    result = mnistlab("eval", shipped, "--data-dir", mnist_root, "--plots", tmp_path / "plots", "--device", "cpu",
                      preexec_fn=small_files(20_000))
    one_line(result, "eval")
    for png in (tmp_path / "plots").glob("*"):
        assert png.suffix == ".png" and png.read_bytes().endswith(b"IEND\xaeB`\x82")


def test_the_run_folder_deleted_mid_run(tmp_path, mnist_root):
    proc = start("train", REPO / "configs" / "iter7.yaml", "--set", "train.epochs=50", *TINY, "--out-dir", tmp_path,
                 "--data-dir", mnist_root)
    run_dir = wait_for("iter7/*/last.pt", tmp_path, proc).parent
    shutil.rmtree(run_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode not in (0, None) and "Traceback" not in err, err[-3000:]
    assert err.count("\n") == 1 and "No such file or directory" in err


# ---------------------------------------------------------------- compare: finish what was stopped, show what is damaged

def compare(out: Path, mnist_root: Path, *configs: str) -> subprocess.CompletedProcess:
    return mnistlab("compare", *(REPO / "configs" / c for c in configs), "--set", "train.epochs=1",
                    "--set", "train.limit_train_batches=12", "--set", "train.limit_eval_batches=2", "--out-dir", out,
                    "--data-dir", mnist_root)


def test_compare_finishes_an_interrupted_run_instead_of_training_it_again(tmp_path, mnist_root):
    assert compare(tmp_path, mnist_root, "iter7.yaml").returncode == 0
    (run_dir,) = (tmp_path / "iter7").iterdir()
    (run_dir / "summary.json").unlink()
    result = compare(tmp_path, mnist_root, "iter7.yaml")
    assert result.returncode == 0, result.stderr
    assert f"finishing the interrupted run {run_dir}" in result.stdout
    assert [p.name for p in (tmp_path / "iter7").iterdir()] == [run_dir.name] and (run_dir / "summary.json").exists()


def test_compare_with_a_damaged_metrics_csv_still_writes_the_table(tmp_path, mnist_root):
    assert compare(tmp_path, mnist_root, "iter7.yaml", "iter5.yaml").returncode == 0
    (run_dir,) = (tmp_path / "iter7").iterdir()
    (run_dir / "metrics.csv").write_text("epoch,train_loss\nnot,numbers\n")
    result = compare(tmp_path, mnist_root, "iter7.yaml", "iter5.yaml")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    table = (tmp_path / "comparison.md").read_text()
    assert "metrics.csv is damaged" in table and "| iter5 |" in table
    assert (tmp_path / "comparison_curves.png").exists()
