"""What a sweep leaves: trials.csv and trials.md, three plots, best.yaml, and the best trial's test score.

Honesty: trials are chosen on validation data only. The test set is looked at once per chosen trial,
after the choice, and every look is recorded in the study (so another worker's report or a later
continuation does not look again, and trials.md says how many trials were ever scored on it).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from ..errors import UserError, one_line
from ..files import atomic_write_text, csv_value
from ..runfolder import BEST, CONFIG, SUMMARY, is_run, read_summary
from .runs import format_duration

SCORED = "mnistlab:test_scored"  # study user attribute: the trials scored on the test set, in order
RETRY_OF = "mnistlab:retry_of"  # trial user attribute: the trial whose parameters a retry runs again
RETRIES = "mnistlab:retries"  # trial user attribute: how many times those parameters have been retried
FIGURES = {"history": "optimization_history.png", "importance": "param_importances.png",
           "parallel": "parallel_coordinates.png"}


def run_dir_path(sweep_dir: Path, stored: str) -> Path:
    """A trial's run directory in this sweep folder. The study records trials/NAME/STAMP; a study of an
    earlier mnistlab recorded the path as the worker wrote it (from its own folder, or absolute): its
    last three parts are the same trials/NAME/STAMP."""
    return sweep_dir.joinpath(*Path(stored).parts[-3:])


def run_dirs_of(trial, sweep_dir: Path) -> list[Path]:
    return [run_dir_path(sweep_dir, p) for p in trial.user_attrs.get("run_dirs", [])]


def trial_rows(study, sweep, sweep_dir: Path) -> list[dict]:
    """One row per trial: number, state, objective, parameters, and the figures of its first run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dirs = run_dirs_of(t, sweep_dir)
        summary = row_summary(run_dirs[0]) if run_dirs else {}
        row = {"trial": t.number, "state": t.state.name.lower(), f"objective_{sweep.objective}": t.value,
               **{key: t.params.get(key) for key in sweep.space},
               "model": summary.get("model"), "params": summary.get("params"), "folds": len(run_dirs) or None,
               "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
               "train_acc": summary.get("train_acc"), "val_acc": summary.get("val_acc"),
               "val_loss": summary.get("val_loss"), "train_time_s": summary.get("train_time_s"),
               "note": t.user_attrs.get("error") or t.user_attrs.get("note") or retry_note(t),
               "run_dir": t.user_attrs["run_dirs"][0] if run_dirs else ""}
        rows.append(row)
    return rows


def retry_note(trial) -> str:
    failed = trial.user_attrs.get(RETRY_OF, trial.system_attrs.get("failed_trial"))  # or Optuna's, before
    return f"retry of trial {failed}" if failed is not None else ""


def row_summary(run_dir: Path) -> dict:
    """A trial's summary for its row: {} where it has none or a damaged one (the row shows the rest)."""
    try:
        return read_summary(run_dir) or {}
    except UserError:
        return {}


def trials_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["trial"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(v) for k, v in row.items()})
    return out.getvalue()


def cell(key: str, value) -> str:
    if value is None or value == "":
        return "—"
    if key in ("val_acc", "train_acc", "objective_val_acc"):
        return f"{value:.2%}"
    if key == "train_time_s":
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and key == "params" else str(value)


def trials_markdown(rows: list[dict], sweep, best: dict | None, scored: list[dict]) -> str:
    columns = ["trial", "state", f"objective_{sweep.objective}", *sweep.space, "epochs_run", "train_acc",
               *(["val_acc"] if sweep.objective != "val_acc" else []), "train_time_s", "note"]
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running", "waiting")}
    lines = [f"# mnistlab sweep: {sweep.study}", "",
             f"{len(rows)} trials of `{sweep.base}` ({', '.join(f'{n} {s}' for s, n in states.items() if n)}), "
             f"sampler {sweep.sampler}, pruner {sweep.pruner}, objective {sweep.objective} on validation data"
             + (f", mean over {sweep.folds} folds" if sweep.folds else "") + ".", ""]
    if best is not None:
        objective = f"objective_{sweep.objective}"
        lines.append(f"Best: trial {best['trial']}, {sweep.objective} {cell(objective, best[objective])}"
                     f" (chosen on validation data). `best.yaml` is its config.")
    lines += [f"Test set: looked at {len(scored)} time(s) in this study, each time once for the trial chosen then: "
              + "; ".join(f"trial {s['trial']}: test accuracy {s['test_acc']:.2%} on {s['test_n']:,} images"
                          for s in scored) + "." if scored else "Test set: not looked at.", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    lines += ["", *(f"![{name}]({file})" for name, file in FIGURES.items())]
    return "\n".join(lines) + "\n"


def write_report(study, sweep, sweep_dir: Path, data_dir, lock, log) -> tuple[dict | None, Path | None]:
    """trials.csv, trials.md, plots, best.yaml, and the best trial's test score (once); the best row and
    best.yaml (None where there is no best trial, or its run directory is not on this machine)."""
    from optuna.trial import TrialState

    rows = trial_rows(study, sweep, sweep_dir)
    complete = [r for r in rows if r["state"] == "complete"]
    best = best_yaml = None
    if complete:
        best_trial = study.best_trial
        best = next(r for r in rows if r["trial"] == best_trial.number)
        best_yaml = write_best_yaml(best_trial, sweep, sweep_dir, len(rows), log)
        with lock():
            scored = score_best_once(study, best_trial, sweep_dir, data_dir, log)
    else:
        scored = study.user_attrs.get(SCORED, [])
    atomic_write_text(sweep_dir / "trials.csv", trials_csv(rows))
    atomic_write_text(sweep_dir / "trials.md", trials_markdown(rows, sweep, best, scored))
    write_plots(study, sweep, sweep_dir, [t for t in study.get_trials(deepcopy=False)
                                          if t.state == TrialState.COMPLETE], log)
    return best, best_yaml


def write_best_yaml(best, sweep, sweep_dir: Path, n_trials: int, log) -> Path | None:
    """The best trial's resolved config, trainable as it is (folds dropped: it trains on the usual split);
    None, said in a note, where its run directory is not on this machine (a worker elsewhere ran it)."""
    import yaml

    from ..yamlfile import read_yaml_file

    run_dirs = run_dirs_of(best, sweep_dir)
    if not run_dirs:
        raise UserError(f"trial {best.number} left no run directory to take its config from")
    if not is_run(run_dirs[0]):
        log(f"note: trial {best.number}'s run directory is not on this machine ({run_dirs[0]}); best.yaml is left "
            f"to a report run where it is")
        return None
    config = read_yaml_file(run_dirs[0] / CONFIG)
    config["name"] = f"{sweep.study}-best"
    if isinstance(config.get("data"), dict):
        config["data"].pop("folds", None)
        config["data"].pop("fold", None)
    params = ", ".join(f"{k}={v}" for k, v in best.params.items())
    header = (f"# The best of {n_trials} trials of sweep {sweep.study!r}: trial {best.number} ({params}),\n"
              f"# {sweep.objective} {best.value:.6g} on validation data. Train it: mnistlab train best.yaml\n")
    path = sweep_dir / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def score_best_once(study, best, sweep_dir: Path, data_dir, log) -> list[dict]:
    """Score the chosen trial's checkpoints on the test set unless that was done; every look recorded."""
    from .evaluate import evaluate_checkpoint

    scored = list(study.user_attrs.get(SCORED, []))
    if any(s["trial"] == best.number for s in scored):
        return scored
    run_dirs = run_dirs_of(best, sweep_dir)
    missing = [d for d in run_dirs if not (d / BEST).is_file()]
    if missing or not run_dirs:
        log(f"note: trial {best.number}'s checkpoints are not on this machine ({missing[0] if missing else '-'}); "
            f"its test score is left to a report run where they are")
        return scored
    reports = [evaluate_checkpoint(str(d / BEST), split="test", data_dir=data_dir) for d in run_dirs]
    record = {"trial": best.number, "test_acc": statistics.fmean(r["accuracy"] for r in reports),
              "test_loss": statistics.fmean(r["loss"] for r in reports), "test_n": reports[0]["n"],
              "runs": len(reports)}
    for run_dir, report in zip(run_dirs, reports):
        summary = row_summary(run_dir)
        summary.update(test_acc=report["accuracy"], test_loss=report["loss"], test_n=report["n"],
                       test_scored="once, after the sweep chose this trial on validation data")
        atomic_write_text(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    study.set_user_attr(SCORED, [*scored, record])
    return [*scored, record]


def write_plots(study, sweep, sweep_dir: Path, complete: list, log) -> None:
    """Optimization history, parameter importances, parallel coordinates (matplotlib, as all of mnistlab's)."""
    from .. import report

    if not complete:
        return
    try:
        report.sweep_history([(t.number, t.value) for t in complete], sweep.objective, sweep.direction,
                             sweep_dir / FIGURES["history"], sweep.study)
        report.sweep_parallel([(t.params, t.value) for t in complete], list(sweep.space), sweep.objective,
                              sweep_dir / FIGURES["parallel"], sweep.study)
        importances = param_importances(study)
        if importances:
            report.sweep_importances(importances, sweep_dir / FIGURES["importance"], sweep.study)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001  (a picture must not cost the study its table)
        log(f"warning: a sweep plot could not be drawn: {type(exc).__name__}: {one_line(exc, 120)}")


def param_importances(study) -> dict[str, float]:
    """Optuna's importance of each parameter (fANOVA); empty while there is too little to tell."""
    import optuna

    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
