"""`mnistlab compare`: train (or reuse) every config, then one table and plots of them all.

What the reference projects did by hand (the seven-iteration study's table, the NN/CNN/VGG16
comparison's table), measured on one machine in one go. One plan (`plan.plan`) says, config by
config and seed by seed, what to train and what to reuse; it is consumed here, one training after
another in this process, or by `parallel` in worker processes (`--jobs N`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from ..errors import UserError, one_line
from ..files import atomic_write_text, make_dir
from ..runfolder import METRICS, read_metrics
from .plan import (Comparison, Step, end_row, failure_message, interrupted_message, label, parse_seeds, plan,
                   replicate_key)
from .runs import Run
from .table import FILES, SORT_COLUMNS, format_csv, format_markdown, format_text_table, row_values, sort_rows


# ---------------------------------------------------------------- running it

def compare_configs(paths: list[str], overrides: list[str] = (), seeds: list[int] | None = None,
                    out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
                    data_dir: str | None = None, log=print, jobs: int = 1, folds: int | None = None) -> Comparison:
    if sort is not None and sort not in SORT_COLUMNS:
        raise UserError(f"--sort: got {sort!r}; allowed: {', '.join(SORT_COLUMNS)}")
    if jobs < 1:
        raise UserError(f"--jobs: got {jobs}; expected a whole number >= 1")
    make_dir(out_dir, "--out-dir")  # before any training: the table must have somewhere to go
    check_all(list(paths), list(overrides))
    if folds is not None and not 2 <= folds <= 100:
        raise UserError(f"--folds: got {folds}; expected a whole number from 2 to 100")
    comparison = Comparison([], Path(out_dir), list(overrides), seeds, paths=list(paths), folds=folds)
    steps = plan(comparison, reuse, log)
    if jobs > 1:  # worker processes; the rows come out as they do in this process
        from .parallel import ParallelRunner

        ParallelRunner(comparison, jobs, data_dir, log).run(steps)
    else:
        run_in_process(comparison, steps, data_dir, log)
    if sort is not None:
        comparison.rows = sort_rows(comparison.rows, sort)
    return comparison


def check_all(paths: list[str], overrides: list[str]) -> None:
    """Every config, with the overrides, loads and names a model that builds: all problems at once, before
    anything trains (a typo in the fifth config must not wait for four trainings to surface)."""
    from ..config import load_config
    from ..models import check_model
    from ..training.finetune import resolved_config

    problems = []
    for path in paths:
        try:
            cfg = resolved_config(load_config(path, overrides))
            check_model(cfg.model.name, cfg.model.kwargs)
        except UserError as exc:
            problems.append(one_line(exc if str(path) in str(exc) else f"{path}: {exc}"))
    if problems:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        raise UserError(f"{len(problems)} of {len(paths)} config(s) cannot run (listed above); nothing was trained")


def run_in_process(comparison: Comparison, steps: Iterator[Step], data_dir: str | None, log) -> None:
    """The plan, one training after another; Ctrl-C keeps what finished (the table is written all the same)."""
    from ..training.trainer import run_training

    try:
        for step in steps:
            if step.reused is not None:
                step.row.runs.append(step.reused)
                continue
            if step.resume is None:
                log(f"== {step.cfg.name} ({label(replicate_key(step.seed, step.fold))}): training")
            try:
                summary = run_training(step.cfg, data_dir=data_dir, out_dir=comparison.out_dir, log=log,
                                       resume=step.resume)
            except Exception as exc:  # noqa: BLE001  (see failure_message)
                step.row.error, step.row.stopped = failure_message(exc), True
                end_row(step.row, replicate_key(step.seed, step.fold), comparison.runs_per_row > 1, log)
                continue
            step.row.runs.append(Run(step.seed, Path(summary["run_dir"]), summary, reused=False))
    except KeyboardInterrupt:
        row = comparison.rows[-1]
        row.error = interrupted_message(row)
        comparison.interrupted, comparison.skipped = True, len(comparison.paths) - len(comparison.rows)


# ---------------------------------------------------------------- files

def write_outputs(comparison: Comparison) -> list[Path]:
    from .. import report

    out_dir = make_dir(comparison.out_dir, "--out-dir")
    done = [row for row in comparison.rows if row.runs]
    files = []
    seeds = [f"seeds {','.join(map(str, comparison.seeds))}"] if comparison.seeds else []
    subtitle = ", ".join([*comparison.overrides, *seeds])
    curves = [(row, row_curves(row)) for row in done]
    done = [row for row, rows in curves if rows is not None]  # a damaged metrics.csv: in the table, not drawn
    series = [(row.config, rows) for row, rows in curves if rows is not None]
    if done:
        files.append(report.comparison_curves(series, out_dir / FILES["curves"], subtitle))
        values = [row_values(row) for row in done]
        points = [{"label": v["config"], "params": v["params"], "acc": v["test_acc"], "sd": v["test_acc_sd"]}
                  for v in values]
        files.append(report.accuracy_vs_params(points, out_dir / FILES["acc_vs_params"], subtitle))
    else:  # stale plots of an earlier comparison would read as this one's
        for name in (FILES["curves"], FILES["acc_vs_params"]):
            (out_dir / name).unlink(missing_ok=True)
    atomic_write_text(out_dir / FILES["csv"], format_csv(comparison.rows))
    atomic_write_text(out_dir / FILES["markdown"], format_markdown(comparison))
    return [out_dir / FILES["markdown"], out_dir / FILES["csv"], *files]


def row_curves(row) -> list[list[dict]] | None:
    """Each run's metrics.csv; a damaged one marks the row failed (its numbers stay in the table)."""
    curves = []
    for run in row.runs:
        try:
            rows = read_metrics(run.run_dir)  # None when absent; damaged: one UserError naming it
            if not rows or any(r.get("epoch") is None for r in rows):
                raise UserError(f"{run.run_dir / METRICS} is damaged: no epochs in it")
        except UserError as exc:
            row.error = one_line(exc)
            return None
        curves.append(rows)
    return curves


def run_compare(paths: list[str], *, overrides: list[str] = (), seeds: str | None = None,
                out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
                data_dir: str | None = None, log=print, jobs: int = 1, folds: int | None = None,
                wide: bool = False) -> int:
    """The whole command: runs, table on the terminal, files. Exit code 0, 1 (a row failed) or 130 (Ctrl-C)."""
    comparison = compare_and_report(paths, overrides=overrides, seeds=seeds, out_dir=out_dir, reuse=reuse,
                                    sort=sort, data_dir=data_dir, log=log, jobs=jobs, folds=folds, wide=wide)
    return 130 if comparison.interrupted else 1 if comparison.failed else 0


def compare_and_report(paths: list[str], *, overrides: list[str] = (), seeds: str | None = None,
                       out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
                       data_dir: str | None = None, log=print, jobs: int = 1, folds: int | None = None,
                       wide: bool = False) -> Comparison:
    """run_compare's work: the comparison, its table logged and its files written."""
    comparison = compare_configs(paths, list(overrides), parse_seeds(seeds), out_dir, reuse, sort, data_dir, log,
                                 jobs, folds)
    files = write_outputs(comparison)
    trained = sum(not run.reused for row in comparison.rows for run in row.runs)
    reused = sum(run.reused for row in comparison.rows for run in row.runs)
    failed = sum(bool(row.error) for row in comparison.rows)
    log("")
    log(format_text_table(comparison.rows, wide))
    log("")
    log(f"{len(comparison.rows)} config(s): {trained} run(s) trained, {reused} reused, {failed} failed"
        + (f"; interrupted, {comparison.skipped} config(s) not run" if comparison.interrupted else ""))
    log(f"wrote into {files[0].parent}: " + ", ".join(f.name for f in files))  # one folder (write_outputs)
    return comparison
