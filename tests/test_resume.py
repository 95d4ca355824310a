"""Nothing lost: a run killed mid-epoch resumes to exactly the rows of an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import REPO

KEEP = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
ARGS = ["--set", "train.epochs=4", "--set", "train.limit_train_batches=60", "--set", "train.limit_eval_batches=2",
        "--set", "train.eval_batch_size=500", "--quiet"]


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: r[k] for k in KEEP} for r in csv.DictReader(f)]


def train(out: Path, mnist_root: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", "train", str(REPO / "configs" / "iter7.yaml"), *ARGS,
                           "--out-dir", str(out), "--data-dir", str(mnist_root), *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, mnist_root):
    # iter7 has dropout, and the config augments: both RNG streams must be restored exactly
    full = train(tmp_path / "full", mnist_root)
    assert full.returncode == 0, full.stderr
    (full_dir,) = (tmp_path / "full" / "iter7").iterdir()

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", str(REPO / "configs" / "iter7.yaml"), *ARGS,
                             "--out-dir", str(out), "--data-dir", str(mnist_root)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    metrics = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("iter7/*/last.pt"))  # written atomically after each epoch's metrics.csv row
        if found:
            metrics = found[0].parent / "metrics.csv"
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert metrics is not None, "the run never finished an epoch"
    run_dir = metrics.parent
    assert not (run_dir / "summary.json").exists(), "killed too late: the run had finished"
    assert (run_dir / "last.pt").exists() and (run_dir / "best.pt").exists()

    resumed = train(tmp_path / "unused", mnist_root, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert rows(run_dir) == rows(full_dir)
    assert len(rows(run_dir)) == 4
    assert (run_dir / "summary.json").exists()
    assert not (tmp_path / "unused").exists()  # resuming writes into the original run directory


def test_resume_refuses_a_different_config_and_a_finished_run(tmp_path, mnist_root, cli):
    first = train(tmp_path, mnist_root, "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr
    (run_dir,) = (tmp_path / "iter7").iterdir()
    code, out, err = cli("train", "--resume", run_dir)
    assert code == 0 and "already finished" in out  # finishing a finished run is done at once
    for extra in (["--set", "train.epochs=3"], ["--set", "train.optimizer.lr=0.5"],  # were ignored in silence
                  [REPO / "configs" / "iter7.yaml", *ARGS]):  # ARGS say 4 epochs; the run had 1
        code, out, err = cli("train", "--resume", run_dir, *extra)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"{run_dir} has already finished: train." in err and "would not apply" in err
        assert f"--set model.init={run_dir / 'best.pt'}" in err  # the way on from its weights: a new run
    (run_dir / "summary.json").unlink()
    code, _, err = cli("train", REPO / "configs" / "iter7.yaml", *ARGS, "--set", "train.optimizer.lr=0.1",
                       "--resume", run_dir)
    assert code == 2 and "differs from the run's at train.optimizer.lr" in err
    code, _, err = cli("train", REPO / "configs" / "iter7.yaml", *ARGS, "--resume", run_dir / "best.pt")
    assert code == 2 and "no training state" in err
    code, _, err = cli("train", REPO / "configs" / "iter7.yaml", *ARGS, "--resume", tmp_path / "nothing")
    assert code == 2 and "not found" in err

    import torch

    last = torch.load(run_dir / "last.pt", weights_only=True)
    last["training_state"]["world_size"] = 2
    torch.save(last, run_dir / "last.pt")
    code, _, err = cli("train", REPO / "configs" / "iter7.yaml", *ARGS, "--resume", run_dir)
    assert code == 2 and "trained by 2 process(es), this is 1" in err and "--nproc_per_node=2" in err


def as_from_a_terminal() -> None:
    """pytest may itself run with SIGINT ignored (started in the background of a script), and a child
    inherits that; a user's terminal gives SIGINT its default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_the_resume_command(tmp_path, mnist_root):
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", str(REPO / "configs" / "iter5.yaml"),
                             "--set", "train.epochs=50", "--set", "train.limit_train_batches=60", "--set",
                             "train.limit_eval_batches=1", "--out-dir", str(tmp_path), "--data-dir", str(mnist_root)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("iter5/*/last.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert "resume with: mnistlab train" in out and "--resume" in out
    assert "Traceback" not in err
    (run_dir,) = (tmp_path / "iter5").iterdir()
    assert (run_dir / "last.pt").exists()
