"""The plan of a comparison: config by config and seed by seed, what to train and what to reuse.

`compare` consumes it one training after another in this process, `parallel` in worker processes;
both leave the rows the same way.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import UserError, one_line
from .runs import Run, find_unfinished_run, reusable_run


@dataclass
class Row:
    """One config: its finished runs (one per seed), or the reason it has none."""

    config: str
    path: str
    model: str = ""
    params: int | None = None
    layers: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    stopped: bool = False  # a run of it failed: plan no more of its seeds


@dataclass
class Comparison:
    rows: list[Row]  # filled by the plan, in the order of `paths`
    out_dir: Path
    overrides: list[str]
    seeds: list[int] | None
    interrupted: bool = False
    skipped: int = 0  # configs never started because of Ctrl-C
    paths: list[str] = field(default_factory=list)
    folds: int | None = None  # --folds k: every seed's run is k runs, one per cross-validation fold

    @property
    def runs_per_row(self) -> int:
        return len(self.seeds or [None]) * (self.folds or 1)

    @property
    def failed(self) -> bool:
        return any(row.error for row in self.rows)


@dataclass
class Step:
    """One (config, seed) of the plan: train `cfg`, or take `reused`, a finished run of it."""

    index: int  # the row's position
    row: Row
    seed: int
    cfg: object
    reused: Run | None = None
    fold: int | None = None
    resume: Path | None = None  # an unfinished run of this config to finish instead of starting afresh


def parse_seeds(text: str | None, option: str = "--seeds") -> list[int] | None:
    """The random seeds of `option` (named in its errors as the user gave it: --seeds, --confirm-seeds)."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option}: got {text!r}; expected whole numbers separated by commas, e.g. 1,2,3") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"{option}: got {text!r}; expected distinct non-negative whole numbers, e.g. 1,2,3")
    return seeds


def plan(comparison: Comparison, reuse: bool, log) -> Iterator[Step]:
    """Every (config, seed) in order: a finished run to reuse, or a training to do.

    Rows join comparison.rows as the plan reaches them. A config that fails to load ends its row with
    its error; a row marked `stopped` (one of its runs failed) gets no further seeds."""
    from ..config import load_config
    from ..training.finetune import resolved_config

    for index, path in enumerate(comparison.paths):
        row = Row(config=Path(path).stem, path=str(path))
        comparison.rows.append(row)
        seed = None
        try:
            cfg = load_row(row, comparison.overrides)
            for seed, fold in replicates(comparison, cfg.seed):
                if row.stopped:
                    break
                cfg = resolved_config(load_config(row.path, [*comparison.overrides,
                                                             *replicate_overrides(comparison, seed, fold)]))
                yield plan_step(Step(index, row, seed, cfg, fold=fold), comparison.out_dir, reuse, log)
        except Exception as exc:  # noqa: BLE001  (see failure_message)
            row.error, row.stopped = failure_message(exc), True
            end_row(row, seed, comparison.runs_per_row > 1, log)


def replicates(comparison: Comparison, config_seed: int) -> list[tuple[int, int | None]]:
    """(seed, fold) for each run of a row, seed by seed, fold by fold."""
    seeds = comparison.seeds if comparison.seeds is not None else [config_seed]
    return [(seed, fold) for seed in seeds for fold in (range(comparison.folds) if comparison.folds else [None])]


def replicate_overrides(comparison: Comparison, seed: int, fold: int | None) -> list[str]:
    return [f"seed={seed}", *([f"data.folds={comparison.folds}", f"data.fold={fold}"] if fold is not None else [])]


def replicate_key(seed: int, fold: int | None):
    """How the runs of a row are told apart: the seed, or (seed, fold) with --folds."""
    return seed if fold is None else (seed, fold)


def plan_step(step: Step, out_dir: Path, reuse: bool, log) -> Step:
    """Reuse a finished run of the step's config, or else finish an interrupted one, or else train."""
    from ..config import config_to_dict

    step.reused = reusable_run(step.cfg, step.seed, out_dir, reuse, log)
    if step.reused is None and reuse:
        step.resume = find_unfinished_run(out_dir, config_to_dict(step.cfg))
        if step.resume is not None:
            log(f"== {step.cfg.name} ({label(replicate_key(step.seed, step.fold))}): finishing the interrupted run "
                f"{step.resume}")
    return step


def load_row(row: Row, overrides: list[str]):
    """The config (without a seed override) with the row's model, parameters and layers filled in."""
    from ..config import load_config
    from ..training.finetune import resolved_config

    cfg = resolved_config(load_config(row.path, overrides))  # model.init's checkpoint names the model
    row.config, row.model = cfg.name, cfg.model.name
    try:
        row.params, row.layers = describe_model(cfg)
    except UserError as exc:
        raise UserError(f"{row.path}: {exc}") from None
    return cfg


def describe_model(cfg) -> tuple[int, dict[str, int]]:
    """The config's model's parameters and layer counts, without allocating its weights."""
    from ..data.datasets import dataset_classes
    from ..models import layer_counts, meta_model

    model = meta_model(cfg.model.name, len(dataset_classes(cfg.data)), 1, **cfg.model.kwargs)
    return sum(p.numel() for p in model.parameters()), layer_counts(model)


def failure_message(exc: Exception) -> str:
    """A row's one-line error. A UserError (a bad config, missing data, a diverged run) is this row's
    problem only; anything else is our bug: the row fails and its traceback is not hidden."""
    if isinstance(exc, UserError):
        return one_line(exc)
    if isinstance(exc, OSError):  # a full disk, a deleted folder: this row's environment, not our bug
        from ..files import environment_error

        return one_line(environment_error(exc))
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return f"{type(exc).__name__}: {one_line(exc)} (a bug in mnistlab; traceback above)"


def interrupted_message(row: Row) -> str:
    return "interrupted" + (f" after {len(row.runs)} finished seed(s)" if row.runs else "")


def end_row(row: Row, key, several: bool, log) -> None:
    """Log a failed row once; with several runs per row the error names the run (seed, fold)."""
    if row.error:
        if key is not None and several:
            row.error += f" ({label(key)})"
        log(f"== {row.config}: FAILED: {row.error}")


def label(key) -> str:
    return f"seed {key[0]}, fold {key[1]}" if isinstance(key, tuple) else f"seed {key}"
