"""Finished runs: finding one to reuse, and reading what it left.

Reuse: a (config, seed) is not trained again when a finished run (its run
directory has summary.json) under `<out-dir>/<name>/` has the identical
resolved config and ran on the device this config gets now. Only data.root and
data.download are left out of the comparison: they say where the dataset files
live and whether they may be fetched, not what is trained. Everything else
counts, even eval_batch_size or num_workers, because the table reports timings
as well as accuracies. A run from another device is not reused either: its
times would not be comparable with the rest of the table. The `device` setting
itself is compared through the device the run used, and GPUs of one model count
as one device (`compare --jobs` puts runs on cuda:0, cuda:1, ... by turns).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..runfolder import (CONFIG, CURVES, METRICS, SUMMARY, being_trained, finished_summary, read_config,
                         read_summary)

REUSE_IGNORED = (("data", "root"), ("data", "download"))


@dataclass
class Run:
    """A finished run of one config with one seed."""

    seed: int
    run_dir: Path
    summary: dict
    reused: bool


def reuse_key(config: dict) -> dict:
    key = json.loads(json.dumps(config))  # a deep copy with tuples as lists, as config.yaml stores them
    for section, name in REUSE_IGNORED:
        if isinstance(key.get(section), dict):
            key[section].pop(name, None)
    key.pop("device", None)  # the device the run used is compared instead: same_device
    return key


def same_device(a, b) -> bool:
    """`cuda:1 (NVIDIA H100)` and `cuda (NVIDIA H100)` are the same kind of device; `cpu` and `cuda ...` are not."""
    def kind(device) -> str:
        return re.sub(r"^([a-z]+):\d+", r"\1", str(device))

    return kind(a) == kind(b)


def resolved(stored: dict) -> dict:
    """A stored config.yaml as this version resolves it: keys added since it was written get their
    defaults, so a run stays reusable when the schema grows. One that no longer validates is kept as
    it is (and matches nothing)."""
    from ..config import config_to_dict, validate_config
    from ..errors import UserError

    try:
        return config_to_dict(validate_config(stored))
    except UserError:
        return stored


SUMMARY_NUMBERS = ("test_acc", "test_loss", "train_acc", "train_loss", "val_acc", "val_loss", "train_time_s",
                   "time_per_epoch_s", "params", "test_n", "epochs_run", "best_epoch")


def well_formed(summary) -> bool:
    """A summary.json the table can show: a mapping whose figures are numbers (or absent/null)."""
    return isinstance(summary, dict) and all(
        summary.get(key) is None or (isinstance(summary[key], (int, float)) and not isinstance(summary[key], bool))
        for key in SUMMARY_NUMBERS)


def format_duration(seconds: float | None) -> str:
    """A run's time as the tables show it (here, not in table.py, so `mnistlab runs` needs no torch)."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def find_finished_run(out_dir: Path, config: dict, device: str) -> Path | None:
    """The newest finished run of exactly this config on this kind of device, if any."""
    wanted = reuse_key(config)
    found = []
    for summary_file in (Path(out_dir) / str(config["name"])).glob(f"*/{SUMMARY}"):
        run_dir = summary_file.parent
        try:
            stored = read_config(run_dir)
            summary = read_summary(run_dir)
        except UserError:
            continue  # a damaged run is simply not a candidate
        if stored is not None and summary is not None and well_formed(summary) \
                and reuse_key(resolved(stored)) == wanted \
                and same_device(summary.get("device"), device) and (run_dir / METRICS).exists():
            found.append((summary_file.stat().st_mtime, run_dir))
    return max(found)[1] if found else None


def find_unfinished_run(out_dir: Path, config: dict) -> Path | None:
    """The newest run of exactly this config that was stopped before it finished (no summary.json) and
    that no process is training now: compare finishes it with --resume instead of starting afresh."""
    wanted = reuse_key(config)
    found = []
    for config_file in (Path(out_dir) / str(config["name"])).glob(f"*/{CONFIG}"):
        run_dir = config_file.parent
        if (run_dir / SUMMARY).exists():
            continue
        try:
            stored = read_config(run_dir)
        except UserError:
            continue
        if stored is not None and reuse_key(resolved(stored)) == wanted and not being_trained(run_dir):
            found.append((config_file.stat().st_mtime, run_dir))
    return max(found)[1] if found else None


def reusable_run(cfg, seed: int, out_dir: Path, reuse: bool, log) -> Run | None:
    """The finished run of this config (with its seed) on the device it gets now, or None: it must be trained.

    The device is resolved even without reuse, so a device that is not there fails the row before training."""
    from ..config import config_to_dict
    from ..report import write_run_curves_safely
    from ..training.engine import resolve_device
    from ..training.trainer import device_name

    device = device_name(resolve_device(cfg.device))
    previous = find_finished_run(out_dir, config_to_dict(cfg), device) if reuse else None
    if previous is None:
        return None
    log(f"== {cfg.name} (seed {seed}): reusing the finished run {previous}")
    if not (previous / CURVES).exists():
        write_run_curves_safely(previous, log)
    return Run(seed, previous, finished_summary(previous), reused=True)
