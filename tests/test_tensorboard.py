"""train.tensorboard: event files TensorBoard reads back (per-epoch metrics, the step loss, the hparams),
a missing package named before training starts, and the step loss read from the device only now and then."""

import csv
import gc
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata  # noqa: E402

from mnistlab.training.tb_logger import STEP_EVERY, TensorBoardLogger  # noqa: E402

EPOCH_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "train/images_per_s", "time/epoch_s"}
FINAL_TAGS = {"final/test_acc", "final/test_loss", "final/val_acc", "final/val_loss", "final/best_epoch",
              "final/epochs_run", "final/train_time_s"}


def only_run(out: Path) -> Path:
    (run_dir,) = (out / "iter5").iterdir()
    return run_dir


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def tiny(out, mnist_root, *extra):
    return ["train", REPO / "configs" / "iter5.yaml", "--set", "train.limit_eval_batches=1", "--quiet",
            "--out-dir", out, "--data-dir", mnist_root, *extra]


def test_a_run_writes_events_tensorboard_reads_back(cli, tmp_path, mnist_root):
    # 2 epochs of 26 steps: global steps 0..51, so the step loss is read at steps 0 and 50
    code, _, err = cli(*tiny(tmp_path, mnist_root, "--set", "train.epochs=2", "--set", "train.limit_train_batches=26",
                             "--set", "train.tensorboard=true"))
    assert code == 0, err
    run_dir = only_run(tmp_path)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    acc = events(run_dir)
    assert set(acc.Tags()["scalars"]) == EPOCH_TAGS | FINAL_TAGS | {"train/step_loss"}
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for tag, column in (("val/acc", "val_acc"), ("train/loss", "train_loss"), ("train/lr", "lr")):
        points = acc.Scalars(tag)
        assert [p.step for p in points] == [1, 2]  # one point per epoch, on the epoch axis
        assert [p.value for p in points] == pytest.approx([float(r[column]) for r in rows], rel=1e-5)
    assert [p.step for p in acc.Scalars("train/step_loss")] == [0, STEP_EVERY]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert acc.Scalars("final/test_acc")[0].value == pytest.approx(summary["test_acc"], rel=1e-6)
    plugin = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model.name"].string_value == "iter5"
    assert start.hparams["params"].number_value == 18_422
    assert start.hparams["train.optimizer.lr"].number_value == pytest.approx(0.004)
    assert start.hparams["train.tta"].string_value == "false"
    assert "data.root" not in start.hparams and "train.scheduler.max_lr" not in start.hparams  # where / unset
    assert metadata.EXPERIMENT_TAG not in plugin  # TensorBoard builds the table from every run's session
    end = metadata.parse_session_end_info_plugin_data(plugin[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS


def test_missing_tensorboard_is_one_line_before_training(cli, tmp_path, mnist_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an install without it raises
    code, out, err = cli(*tiny(tmp_path, mnist_root, "--set", "train.tensorboard=true"))
    assert code == 2
    assert err == ("mnistlab train: error: train.tensorboard: true needs the tensorboard package: "
                   "pip install 'mnistlab[tensorboard]'\n")
    assert out == "" and not (tmp_path / "iter5").exists()  # no run directory, no data loaded


def test_resuming_can_turn_tensorboard_on(cli, tmp_path, mnist_root):
    from mnistlab.config import load_config
    from mnistlab.training.trainer import run_training

    cfg = load_config(REPO / "configs" / "iter5.yaml", ["train.epochs=2", "train.limit_train_batches=3",
                                                          "train.limit_eval_batches=1"])

    def stop(row):
        raise KeyboardInterrupt

    try:
        run_training(cfg, data_dir=str(mnist_root), out_dir=tmp_path, quiet=True, log=lambda *a: None,
                     on_epoch=stop)
    except KeyboardInterrupt:
        pass
    gc.collect()  # the interrupted run's lock goes with its last reference
    run_dir = only_run(tmp_path)
    assert not list(run_dir.glob("events.out.tfevents.*"))
    code, _, err = cli("train", "--resume", run_dir, "--set", "train.tensorboard=true", "--quiet",
                       "--data-dir", mnist_root)
    assert code == 0, err
    acc = events(run_dir)
    assert [p.step for p in acc.Scalars("val/acc")] == [2]  # the epoch trained after the resume
    assert "train/step_loss" not in acc.Tags()["scalars"]  # global steps 3..5: none is a multiple of 50


class CountingLoss:
    """A loss that counts how often it is read (on a GPU each read waits for the device)."""

    reads = 0

    def __float__(self):
        CountingLoss.reads += 1
        return 0.5


def test_the_step_loss_is_read_every_50_steps_only(tmp_path):
    logger = TensorBoardLogger(tmp_path, {"model": {"name": "iter5"}}, params=1, steps_per_epoch=120)
    try:
        for epoch in (1, 2):
            hook = logger.step_hook(epoch)
            for step in range(120):
                hook(step, CountingLoss())
    finally:
        logger.close()
    assert CountingLoss.reads == len(range(0, 240, STEP_EVERY))  # steps 0, 50, ..., 200
    assert [p.step for p in events(tmp_path).Scalars("train/step_loss")] == list(range(0, 240, STEP_EVERY))
