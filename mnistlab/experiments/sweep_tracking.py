"""A sweep on MLflow (the base config's train.mlflow): the study is a parent run, each trial a nested run.

- `mnistlab sweep` makes one parent run per command, named after the study, with the search as params
  (a continued study gets a new parent for the trials that command runs).
- Each trial's run (one per fold) is nested under it (the tag mlflow.parentRunId, which MLflow's UI
  shows as a tree) and tagged mnistlab.study and mnistlab.trial; its params are its config, the trial's
  parameters included. Workers in other processes (--jobs) find the parent's id in their environment.
- At the end the best trial's runs are tagged mnistlab.best_trial = true, and the parent gets the tag
  mnistlab.best_trial (its number) and the metric best_<objective>. The parent ends FINISHED, KILLED
  when the sweep is interrupted, FAILED when it fails.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .sweep_file import SweepConfig, fixed_overrides

PARENT_ENV = "MNISTLAB_MLFLOW_PARENT_RUN"  # the parent run's id, for the trials of every worker


@contextlib.contextmanager
def parent_run(base: Path, sweep: SweepConfig, sweep_dir: Path, log):
    """The study's parent run while the workers run (None without train.mlflow); an unreachable server
    is one line here, before any trial."""
    from ..config import load_config
    from ..training.mlflow_logger import connect

    setting = load_config(base, fixed_overrides(sweep)).train.mlflow  # the base with the sweep's `set`
    if setting is None:
        yield None
        return
    tracker = connect(setting)
    tracker.warn = log
    tracker.create(sweep.study, {"mnistlab.study": sweep.study, "mnistlab.sweep_dir": str(sweep_dir)})
    search = {"objective": sweep.objective, "direction": sweep.direction, "sampler": sweep.sampler,
              "pruner": sweep.pruner, "n_trials": sweep.n_trials, "folds": sweep.folds,
              **{f"space.{key}": space if isinstance(space, list) else space.model_dump()
                 for key, space in sweep.space.items()}}
    tracker.log_params({key: value for key, value in search.items() if value is not None})
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = tracker.run_id or ""
    try:
        yield tracker
    except BaseException as e:
        tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
        tracker.end("FINISHED")  # does nothing if it has ended


def trial_tags(study: str, trial: int) -> dict:
    """The tags of a trial's runs: nested under this command's parent run, if there is one."""
    parent = os.environ.get(PARENT_ENV)
    return {"mnistlab.study": study, "mnistlab.trial": trial, **({"mlflow.parentRunId": parent} if parent else {})}


def mark_best(tracker, sweep: SweepConfig, trial: int, value: float) -> None:
    tracker.tag_runs({"mnistlab.study": sweep.study, "mnistlab.trial": trial}, "mnistlab.best_trial", "true")
    tracker.log_batch(tags=[{"key": "mnistlab.best_trial", "value": str(trial)}])
    tracker.log_metrics({f"best_{sweep.objective}": value}, 0)
