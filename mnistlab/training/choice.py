"""Which checkpoint `default`, `latest` and `best` name, for every command that takes one.

One owner for the choice: predict, draw, serve, eval and export (`--ckpt`, or the checkpoint
argument) and the trainer's `model.init` all ask `find_checkpoint`. `default` is the model shipped
with mnistlab (mnistlab/reading/weights/default.pt), `latest` the newest finished run under
./checkpoints, `best` the finished full run with the best test accuracy. A run whose summary.json
holds a non-finite figure (a NaN or infinite accuracy or loss) is never chosen.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from ..runfolder import BEST, SUMMARY, is_smoke, read_config, read_summary

# the file lives beside the code that reads pictures with it; only its path is named here
SHIPPED = Path(__file__).resolve().parent.parent / "reading" / "weights" / "default.pt"
NAMED = ("default", "latest", "best")


def find_checkpoint(ckpt: str | None, search_root: Path = Path("checkpoints"), said_as: str = "--ckpt ") -> tuple[
        Path, str]:
    """--ckpt PATH, or `default` (the shipped model), `latest` (the newest finished run under ./checkpoints) or
    `best`; without --ckpt, the best test accuracy among the finished full runs under ./checkpoints and the
    shipped model, so a quick smoke run never quietly replaces a better model. Returns the path and why;
    `said_as` opens the error messages (eval and export take the name as an argument, not as --ckpt)."""
    if ckpt not in (None, *NAMED):
        return Path(ckpt), "given with --ckpt"
    if ckpt == "default":
        return shipped(), "the default model shipped with mnistlab"
    runs = finished_runs(search_root)
    if ckpt == "latest":
        if not runs:
            raise UserError(f"{said_as}latest: no finished run under ./{search_root}")
        newest = max(runs, key=lambda r: r["finished"])
        return newest["path"], f"the newest finished run under ./{search_root}"
    full = [r for r in runs if r["full"]]
    if ckpt is None and not full:
        return shipped(), "the default model shipped with mnistlab"
    if ckpt == "best" and not full:
        raise UserError(f"{said_as}best: no finished full run (scored on the whole test set) under ./{search_root}")
    candidates = full + ([] if ckpt == "best" else [{"path": shipped(), "test_acc": shipped_accuracy()}])
    best = max(candidates, key=lambda r: r["test_acc"])
    among = f"{len(full)} finished full run(s) under ./{search_root}" + ("" if ckpt == "best" else
                                                                         " and the shipped model")
    return best["path"], f"the best test accuracy, {best['test_acc']:.2%}, among {among}"


def shipped() -> Path:
    if not SHIPPED.is_file():
        raise UserError(f"the shipped model is missing ({SHIPPED}); reinstall mnistlab, or give --ckpt PATH")
    return SHIPPED


def shipped_accuracy() -> float:
    """The shipped model's test accuracy, as its checkpoint records it (read without loading the weights
    into a model)."""
    import torch

    metrics = torch.load(shipped(), map_location="cpu", weights_only=True).get("metrics", {})
    return float(metrics.get("test_acc") or 0.0)


def finished_runs(root: Path) -> list[dict]:
    """Finished runs under `root` with a test score: path of best.pt, accuracy, finish time, and whether the
    run was full: MNIST, no limit_* setting, all 10,000 test images scored (only those compare for `best`;
    `latest` is any run, a fine-tune on your own digits included). Damaged runs, and runs whose
    summary holds a non-finite figure, are left out."""
    found = []
    for summary_file in root.glob(f"**/{SUMMARY}") if root.is_dir() else []:
        run_dir = summary_file.parent
        try:
            summary = read_summary(run_dir)  # a FIFO or a huge file is passed over at once
            config = read_config(run_dir)
        except UserError:
            continue
        if config is None:
            continue  # not a run mnistlab wrote
        acc = (summary or {}).get("test_acc")
        if not isinstance(acc, (int, float)) or not (run_dir / BEST).is_file():
            continue
        if any(isinstance(v, float) and not math.isfinite(v) for v in summary.values()):
            continue  # json reads NaN and Infinity: a diverged or damaged run is no one's best
        smoke = is_smoke(config)
        found.append({"path": run_dir / BEST, "test_acc": float(acc), "finished": summary_file.stat().st_mtime,
                      "full": not smoke and summary.get("dataset") == "mnist" and summary.get("test_n") == 10_000})
    return found
