"""The run folder: what a run directory holds, how each file is read back, and its lock, in one place.

A run directory is <out_dir>/<name>/<timestamp>/ (training/checkpoint.make_run_dir). Every module that
writes or reads one spells its file names through the constants below, and reads through the readers
here, so that a damaged file means the same thing to every command.

The one failure rule of the readers (read_summary, read_trial, read_config, read_metrics):
  - the file is absent: None (an unfinished run has no summary.json yet; that is a state, not an error);
  - the file is there but cannot be used (a FIFO or a device, too big, unreadable, not UTF-8, not JSON or
    YAML, not the shape mnistlab writes): one UserError naming the file's path. Callers that list or
    choose among many runs catch it and pass the run over or show it as damaged; callers that act on one
    run let it reach the user as one line.

The lock: the process training a run holds `.lock` (filelock, an flock the system drops when the
process ends, however it ends); a second process is refused in one line, and `runs` probes it without
creating or writing anything. Torch-free: `mnistlab runs` lists a hundred runs in a fraction of a second.
"""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import filelock

from .errors import UserError, one_line
from .files import read_small_text
from .yamlfile import read_yaml_file

CONFIG = "config.yaml"  # the run's resolved config, written first: a folder holding one is a run
SUMMARY = "summary.json"  # a finished run's scores, written last: a run without one is unfinished
METRICS = "metrics.csv"  # one row per epoch, written as each epoch ends (checkpoint_saver.METRIC_COLUMNS)
BEST = "best.pt"  # the checkpoint of the best epoch (by train.checkpoint_monitor), with test scores at the end
LAST = "last.pt"  # the latest epoch with its training state: what --resume continues from
TRIAL = "trial.json"  # a sweep trial's outcome (study, trial number, state), written by the sweep
CURVES = "curves.png"  # loss and accuracy per epoch (report.run_curves)
LOCK = ".lock"  # held by the process training the run (lock_run_dir)

MAX_JSON_BYTES = 1 << 20  # summary.json and trial.json are about a kilobyte
MAX_CSV_BYTES = 16 << 20  # metrics.csv: a row per epoch
SMOKE_KEYS = ("limit_train_batches", "limit_eval_batches")  # train.* settings that make a run partial


def is_run(folder: Path) -> bool:
    """Is this folder a run directory (it holds a config.yaml)?"""
    return (Path(folder) / CONFIG).is_file()


def is_smoke(config: dict) -> bool:
    """Was this run (its config.yaml as a dict) cut short by a limit_* setting? Its scores are partial, so it
    is no one's best run. A train section that is not a mapping claims nothing: smoke."""
    train = config.get("train") if isinstance(config, dict) else None
    if train is None:
        return False
    return not isinstance(train, dict) or any(train.get(k) is not None for k in SMOKE_KEYS)


def given_run_dir(path: str | Path, option: str = "--resume") -> Path:
    """The run directory a user named on the command line: the folder itself or a file in it (its last.pt)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option}: {path} not found; give a run directory")
    run_dir = path if path.is_dir() else path.parent
    if not is_run(run_dir):
        raise UserError(f"{option}: {run_dir} is not a run directory (it has no {CONFIG})")
    return run_dir


# ---------------------------------------------------------------- readers (one failure rule: see above)

def read_text(path: Path, limit: int) -> str | None:
    """The file's text, None when it is absent; every other failure one UserError naming it."""
    try:
        return read_small_text(path, limit)  # a FIFO or a huge file: one UserError at once, never a wait
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged: not UTF-8 text") from None


def read_json_object(path: Path) -> dict | None:
    text = read_text(path, MAX_JSON_BYTES)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path} is damaged: {one_line(exc, 120)}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is damaged: not a JSON object")
    return value


def read_summary(run_dir: Path) -> dict | None:
    """summary.json: a finished run's scores; None while the run is unfinished."""
    return read_json_object(Path(run_dir) / SUMMARY)


def finished_summary(run_dir: Path) -> dict:
    """summary.json of a run known to have finished (found finished, or a child process said so): there its
    absence is damage too, one UserError."""
    summary = read_summary(run_dir)
    if summary is None:
        raise UserError(f"{Path(run_dir) / SUMMARY} is missing: the run did not finish")
    return summary


def read_trial(run_dir: Path) -> dict | None:
    """trial.json: a sweep trial's outcome; None for a run of no sweep (or a trial still running)."""
    return read_json_object(Path(run_dir) / TRIAL)


def read_config(run_dir: Path) -> dict | None:
    """config.yaml as a dict (as written, not validated: an older version's keys are kept); None if absent."""
    path = Path(run_dir) / CONFIG
    if not path.exists() and not path.is_symlink():
        return None
    raw = read_yaml_file(path)  # size-capped, FIFOs refused, one UserError naming the file
    if not isinstance(raw, dict):
        raise UserError(f"{path} is damaged: not a mapping of keys")
    return raw


def read_metrics(run_dir: Path) -> list[dict] | None:
    """metrics.csv's rows, numbers as floats (None where a column was empty, e.g. no validation split;
    "nan" is a figure: a diverged run's last row); None when the run has no metrics.csv yet."""
    path = Path(run_dir) / METRICS
    text = read_text(path, MAX_CSV_BYTES)
    if text is None:
        return None
    try:
        reader = csv.DictReader(io.StringIO(text))
        if "epoch" not in (reader.fieldnames or []):  # the trainer writes the header with the first row
            raise UserError(f"{path} is damaged: no epoch column")
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items() if k is not None}
                for row in reader]
    except (ValueError, TypeError, csv.Error) as exc:  # TypeError: a row longer than the header
        raise UserError(f"{path} is damaged: {one_line(exc, 120)}") from None


# ---------------------------------------------------------------- the lock of a run being trained

def lock_run_dir(run_dir: Path):
    """Hold the run's lock while this process trains it; a second process is refused in one line.
    The lock is dropped by unlock() or when the process ends, however it ends."""
    path = Path(run_dir) / LOCK
    refuse_odd_lock_file(path)
    lock = filelock.FileLock(path, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UserError(f"{run_dir} is being trained by another process right now") from None
    refuse_odd_lock_file(path, lock)  # put there between the look and the lock
    return lock


def refuse_odd_lock_file(path: Path, lock=None) -> None:
    """A FIFO or a device named .lock is refused: the run's lock must be a plain file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        unlock(lock)
        raise UserError(f"{path} is not a regular file (a pipe or a device?); remove it")


def unlock(lock) -> None:
    """Give up a lock_run_dir lock; None is no lock."""
    if lock is not None:
        lock.release()


def being_trained(run_dir: Path) -> bool:
    """Does a process hold the run's lock now? Probed on the existing .lock only: nothing is created or
    written (a run of an older version, or one never started, has none: not being trained)."""
    path = Path(run_dir) / LOCK
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        probe = filelock.FileLock(path, timeout=0, thread_local=False)
        probe.acquire()
    except filelock.Timeout:
        return True
    except OSError:  # gone meanwhile, or not ours to open
        return False
    probe.release()
    return False
