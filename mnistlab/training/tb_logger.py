"""TensorBoard event files for a run (train.tensorboard: true), so `tensorboard --logdir checkpoints`
compares runs: every run directory is a TensorBoard run.

What is written, and on which axis:
- per epoch (step = epoch): train/loss, train/acc, val/loss, val/acc, train/lr, train/images_per_s,
  time/epoch_s (and val/test_acc when the checkpoint is selected on it);
- train/step_loss every STEP_EVERY optimizer steps (step = global step): the loss of that one step,
  read from the device only then, so the training loop gains no host sync per step;
- the hyperparameters (the resolved config, flattened) as the hparams plugin's session start, written
  when the run opens so a run in progress is listed, and at the end final/test_acc, final/val_acc, ...
  with the session's end. No `experiment` summary is written: TensorBoard then builds the hparams
  table from all runs' sessions (one run's experiment summary would fix the columns for every run).

A resumed run appends a new event file to the same directory. The epoch it starts with may have left
points before the kill (its step losses, or its row when the kill came before last.pt); the resumed run
repeats that epoch exactly (trainer.epoch_seed; on a GPU up to nondeterministic kernels), so a point
written twice has the same value both times and the curves read as one run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

STEP_EVERY = 50  # optimizer steps between train/step_loss points
FLUSH_S = 10  # a live TensorBoard sees a running epoch's points this soon
INSTALL = "pip install 'mnistlab[tensorboard]'"
# config keys that say where or how fast a run trains, not what is trained: left out of the hparams table
NOT_HPARAMS = ("device", "data.root", "data.download", "data.num_workers", "data.pin_memory",
               "train.eval_batch_size", "train.tensorboard", "train.compile", "train.sync_batchnorm")


def require_tensorboard():
    """torch's SummaryWriter, or the one line that says how to install it (called before any data loads)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it too when the tensorboard package is missing or too old
        raise UserError(f"train.tensorboard: true needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


class TensorBoardLogger:
    """One run's event files; the trainer calls it at the run's start, each epoch, and its end."""

    def __init__(self, run_dir: Path, config: dict, params: int, steps_per_epoch: int):
        from torch.utils.tensorboard.summary import hparams

        self.writer = require_tensorboard()(log_dir=str(run_dir), flush_secs=FLUSH_S)
        self.steps_per_epoch = steps_per_epoch
        _, self.session_start, self.session_end = hparams({**hparams_of(config), "params": params}, {})
        self.writer.file_writer.add_summary(self.session_start)

    def step_hook(self, epoch: int):
        """engine.train_one_epoch's on_step for this epoch: every STEP_EVERY-th global step's loss."""
        first = (epoch - 1) * self.steps_per_epoch

        def on_step(step: int, loss) -> None:
            if (first + step) % STEP_EVERY == 0:
                self.writer.add_scalar("train/step_loss", float(loss), first + step)  # float(): the one sync

        return on_step

    def log_epoch(self, row: dict) -> None:
        epoch = row["epoch"]
        for tag, key in (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("val/loss", "val_loss"),
                         ("val/acc", "val_acc"), ("val/test_acc", "test_acc"), ("train/lr", "lr"),
                         ("train/images_per_s", "train_images_per_s"), ("time/epoch_s", "time_s")):
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], epoch)
        self.writer.flush()  # an epoch's points survive a kill

    def finish(self, summary: dict) -> None:
        """The final scores (what the hparams table shows beside the hyperparameters); the session ends."""
        for key in ("test_acc", "test_loss", "val_acc", "val_loss", "best_epoch", "epochs_run", "train_time_s"):
            if summary.get(key) is not None:
                self.writer.add_scalar(f"final/{key}", summary[key], summary["epochs_run"])
        self.writer.file_writer.add_summary(self.session_end)
        self.close()

    def close(self) -> None:
        self.writer.close()  # flushes; a second call does nothing


def hparams_of(config: dict) -> dict:
    """The config flattened to dotted keys with values TensorBoard can show (numbers and text)."""
    flat = {}

    def walk(value, key):
        if isinstance(value, dict) and value:
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif key not in NOT_HPARAMS and value is not None:  # unset: an empty cell, not the text "None"
            # bools as text: torch's hparams() would store them as the numbers 1 and 0
            flat[key] = (str(value).lower() if isinstance(value, bool) else value
                         if isinstance(value, (int, float, str)) else str(value))

    walk(config, "")
    return flat
