"""`mnistlab runs`: every run directory under some roots, finished or not, as a table or JSON.

A run directory is any folder holding a config.yaml (trainer.open_run_dir writes it first), found
recursively, so compare's and sweep's output folders list their runs too. What a row says comes
from the files the run left: config.yaml (name, model, dataset, planned epochs, smoke settings),
summary.json (a finished run's scores), metrics.csv (an unfinished run's epochs so far), trial.json
(a sweep trial's outcome) and the run's lock (a run being trained now). Every file is read
defensively: a damaged one makes its row `damaged` with the reason, never a traceback, because
this is the command people run to find out what state their runs are in.

Reading imports no torch: listing a hundred runs takes a fraction of a second.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import shlex
from datetime import datetime
from pathlib import Path

from .. import runfolder
from ..errors import UserError, did_you_mean, one_line
from ..runfolder import CONFIG, METRICS, SUMMARY, TRIAL
from .runs import SUMMARY_NUMBERS, format_duration, well_formed

DEFAULT_ROOT = "checkpoints"
STATES = ("finished", "unfinished", "running", "pruned", "failed", "damaged")
# column -> True when larger is better (sorted first); `date` sorts newest first
SORT_COLUMNS = {"date": True, "test_acc": True, "val_acc": True, "name": False, "model": False, "params": False,
                "epochs": True, "time": False, "state": False}
SORT_KEYS = {"epochs": "epochs_run", "time": "time_s"}
FILTER_KEYS = ("name", "model", "dataset", "state", "smoke", "device", "study")
SKIPPED_DIRS = {"__pycache__", "node_modules"}  # and every hidden folder (.venv, .git)


def find_run_dirs(roots: list[str]) -> list[Path]:
    """Every folder under the roots holding a config.yaml (a run directory is not searched further)."""
    found: dict[str, Path] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise UserError(f"{root} is a file, not a folder of runs" if root.exists() else f"{root}: no such folder")
        for folder, dirnames, filenames in os.walk(root):  # symbolic links are not followed: no loops
            if CONFIG in filenames:  # a FIFO named so is found too, and shown damaged
                found.setdefault(os.path.realpath(folder), Path(folder))  # roots may overlap
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRS)
    return list(found.values())


def read_run(run_dir: Path) -> dict:
    """One row: what the run's files say, with `problem` naming every file that could not be read."""
    problems: list[str] = []
    config = read_part(run_dir, CONFIG, checked_config, problems) or {}
    summary = read_part(run_dir, SUMMARY, checked_summary, problems)
    trial = read_part(run_dir, TRIAL, runfolder.read_trial, problems) or {}
    rows = read_part(run_dir, METRICS, checked_metrics, problems) if summary is None else None
    state = state_of(run_dir, summary, trial, problems)
    train = section(config, "train")
    sweep = sweep_of(run_dir, trial)
    return {
        "name": text(config.get("name")) or run_dir.parent.name,  # run directories are <name>/<timestamp>
        "model": text(section(config, "model").get("name")),
        "init": init_of(config, summary),
        "dataset": text(section(config, "data").get("dataset")),
        "state": state,
        "smoke": runfolder.is_smoke(config),
        "epochs": whole(train.get("epochs")),
        **scores(summary, rows, train.get("checkpoint_monitor")),
        "date": run_date(run_dir, summary),
        "seed": whole(config.get("seed")),
        "study": text(trial.get("study")) or (sweep and sweep[1]),
        "trial": whole(trial.get("trial")),
        "directory": os.path.abspath(run_dir),
        # a sweep's trial is finished by its sweep (run again, it re-runs the trial inside the study); resumed
        # alone, it would end outside the study and the sweep would never count it
        "resume": f"mnistlab train --resume {shlex.quote(str(run_dir))}" if state == "unfinished" and not sweep
        else None,
        "problem": "; ".join(problems) or None,
    }


def sweep_of(run_dir: Path, trial: dict) -> tuple[Path, str] | None:
    """(the sweep's folder, its study) for a sweep trial's run, else None. A trial's runs lie in
    <sweep folder>/trials/<study>-trialNNNN/<time>/; trial.json is written only once the trial has ended."""
    folder = run_dir.parent
    named = re.fullmatch(r"(.+)-trial\d{4,}", folder.name)
    if folder.parent.name == "trials" and named:
        return folder.parent.parent, named[1]
    return (run_dir.parent, str(trial.get("study"))) if trial else None


def read_part(run_dir: Path, name: str, reader, problems: list[str]):
    """reader(run_dir), or None when the file `name` is absent or damaged (then its problem is noted, named
    by the file alone: the row names the run directory)."""
    try:
        return reader(run_dir)
    except UserError as exc:
        problems.append(one_line(str(exc).replace(f"{run_dir}{os.sep}", ""), 160))
    except (OSError, ValueError, RecursionError, OverflowError) as exc:  # our bug, but `runs` must still list
        problems.append(f"{name} is damaged: {one_line(exc, 120)}")
    return None


def checked_config(run_dir: Path) -> dict | None:
    raw = runfolder.read_config(run_dir)
    if raw is None:
        return None
    shown = {"train.epochs": whole(section(raw, "train").get("epochs")), "seed": whole(raw.get("seed"))}
    problem = next(filter(None, (figure_problem(k, v) for k, v in shown.items())), None)
    if problem:
        raise UserError(f"{CONFIG} is damaged: {problem}")
    return raw


# What each figure may be: (least, most, whole number). A figure outside makes its file damaged: the table would
# show nonsense (a 250% accuracy) or fail to print it (a 400-digit integer is no float).
FIGURES = {"test_acc": (0, 1, False), "val_acc": (0, 1, False), "train_acc": (0, 1, False),
           "test_loss": (0, math.inf, False), "val_loss": (0, math.inf, False), "train_loss": (0, math.inf, False),
           "train_time_s": (0, 1e9, False), "time_per_epoch_s": (0, 1e9, False), "time_s": (0, 1e9, False),
           "lr": (0, math.inf, False), "train_images_per_s": (0, math.inf, False), "params": (0, 1e15, True),
           "test_n": (0, 1e12, True), "epochs_run": (0, 1e9, True), "best_epoch": (0, 1e9, True),
           "epoch": (1, 1e9, True), "train.epochs": (1, 1e9, True), "seed": (0, 2**32 - 1, True)}


def figure_problem(key: str, value, nan_allowed: bool = False) -> str | None:
    """Why a figure of a run's file cannot be shown, or None (absent figures are fine)."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{key} is not a number"
    if isinstance(value, float) and math.isnan(value) and nan_allowed:
        return None  # a diverged run's loss
    least, most, whole_number = FIGURES.get(key, (-math.inf, math.inf, False))
    if isinstance(value, int) and abs(value) > 1e15:
        return f"{key} {str(value)[:12]}... is out of range"
    if not math.isfinite(value):
        return f"{key} is not a finite number"
    if not least <= value <= most or (whole_number and not float(value).is_integer()):
        return f"{key} {value:.6g} is out of range" + (" (a whole number)" if whole_number else "")
    return None


def checked_summary(run_dir: Path) -> dict | None:
    """summary.json, every figure in range (the table would show nonsense or fail to print it)."""
    summary = runfolder.read_summary(run_dir)
    if summary is None:
        return None
    problem = next(filter(None, (figure_problem(k, summary.get(k)) for k in SUMMARY_NUMBERS)), None)
    if not well_formed(summary) or problem:
        raise UserError(f"{SUMMARY} is damaged: {problem or 'a figure in it is not a number'}")
    finished = summary.get("finished_at")
    if finished is not None and local_time(finished) is None:
        raise UserError(f"{SUMMARY} is damaged: finished_at {one_line(repr(finished), 40)} is not a date")
    return summary


def local_time(value) -> str | None:
    """An ISO 8601 date from a file in local time, or None when it is not one (or out of range)."""
    try:
        return datetime.fromisoformat(value).astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def checked_metrics(run_dir: Path) -> list[dict] | None:
    """metrics.csv's rows, every figure in range ("nan" is a loss: a diverged run's last row)."""
    rows = runfolder.read_metrics(run_dir)
    for number, row in enumerate(rows or [], 2):
        problem = figure_problem("epoch", row["epoch"]) if row["epoch"] is not None else "no epoch"
        problem = problem or next(filter(None, (figure_problem(k, v, nan_allowed=k.endswith("loss"))
                                                for k, v in row.items())), None)
        if problem:
            raise UserError(f"{METRICS} is damaged: line {number}: {problem}")
    return rows


def init_of(config: dict, summary: dict | None) -> dict | None:
    """What a fine-tuned run started from: summary.json's record (from, path, sha256) of a finished run,
    else model.init as its config gives it; None for a run trained from scratch."""
    given = text(section(config, "model").get("init"))
    recorded = (summary or {}).get("init")
    if isinstance(recorded, dict) and all(isinstance(recorded.get(k), str) for k in ("from", "path", "sha256")):
        return {k: recorded[k] for k in ("from", "path", "sha256")}
    return {"from": given} if given else None


def section(config: dict | None, name: str) -> dict:
    value = (config or {}).get(name)
    return value if isinstance(value, dict) else {}


def text(value) -> str | None:
    return value if isinstance(value, str) else None


def whole(value) -> int | None:
    """A whole number from a file, else None (YAML also gives true/false and dates)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def scores(summary: dict | None, rows: list[dict] | None, monitor) -> dict:
    """The figures of the row: a finished run's summary, else the best epoch so far in metrics.csv."""
    if summary is not None:
        return {"params": summary.get("params"), "epochs_run": summary.get("epochs_run"),
                "best_epoch": summary.get("best_epoch"), "val_acc": summary.get("val_acc"),
                "test_acc": summary.get("test_acc"), "test_loss": summary.get("test_loss"),
                "test_n": summary.get("test_n"), "time_s": summary.get("train_time_s"),
                "device": text(summary.get("device"))}
    rows = rows or []
    best = best_row(rows, monitor if isinstance(monitor, str) else "val_loss")
    return {"params": None, "epochs_run": len(rows), "best_epoch": int(best["epoch"]) if best else None,
            "val_acc": best.get("val_acc") if best else None, "test_acc": None, "test_loss": None, "test_n": None,
            "time_s": sum(r.get("time_s") or 0.0 for r in rows) if rows else None, "device": None}


def best_row(rows: list[dict], monitor: str) -> dict | None:
    """The epoch the run's checkpoint_monitor holds best so far (the one best.pt holds)."""
    if monitor == "last" or not rows:
        return rows[-1] if rows else None
    scored = [r for r in rows if r.get(monitor) is not None and math.isfinite(r[monitor]) and r.get("epoch")]
    if not scored:
        return None
    return (min if monitor.endswith("loss") else max)(scored, key=lambda r: r[monitor])


def run_date(run_dir: Path, summary: dict | None) -> str | None:
    """When the run finished (summary.json), else when it last wrote a file; local time, ISO 8601."""
    finished = local_time((summary or {}).get("finished_at"))
    if finished:
        return finished
    times = []
    for path in (run_dir / METRICS, run_dir / CONFIG):
        try:
            times.append(datetime.fromtimestamp(path.stat().st_mtime).astimezone())
        except (OSError, OverflowError, ValueError):  # absent, deleted while we look, or a time out of range
            pass
    return max(times).isoformat(timespec="seconds") if times else None


def state_of(run_dir: Path, summary: dict | None, trial: dict, problems: list[str]) -> str:
    if problems:
        return "damaged"
    if trial.get("state") in ("pruned", "failed"):
        return trial["state"]
    if summary is not None:
        return "finished"
    return "running" if runfolder.being_trained(run_dir) else "unfinished"


# ---------------------------------------------------------------- choosing and ordering rows

def parse_filters(filters: list[str]) -> list[tuple[str, str]]:
    """--filter KEY=VALUE (VALUE may hold shell wildcards: model='iter*'); every mistake one line."""
    parsed = []
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"--filter {item!r}: expected KEY=VALUE, e.g. model=iter5 (keys: {', '.join(FILTER_KEYS)})")
        if key not in FILTER_KEYS:
            raise UserError(f"--filter: unknown key {key!r}; allowed: {', '.join(FILTER_KEYS)}"
                            f"{did_you_mean(key, FILTER_KEYS)}")
        if key == "state" and value not in STATES and not any(c in value for c in "*?["):
            raise UserError(f"--filter state={value}: allowed: {', '.join(STATES)}{did_you_mean(value, STATES)}")
        parsed.append((key, value))
    return parsed


def matches(record: dict, filters: list[tuple[str, str]]) -> bool:
    def shown(value) -> str:
        return str(value).lower() if isinstance(value, bool) else "" if value is None else str(value)

    return all(fnmatch.fnmatchcase(shown(record.get(key)), value) for key, value in filters)


def sort_records(records: list[dict], column: str) -> list[dict]:
    """Best first in the column's own sense (accuracy high, size and time low, date newest); blanks last."""
    key = SORT_KEYS.get(column, column)
    value = (lambda r: datetime.fromisoformat(r[key])) if key == "date" else (lambda r: r[key])  # offsets differ
    present = [r for r in records if r.get(key) is not None]
    present.sort(key=value, reverse=SORT_COLUMNS[column])
    return present + [r for r in records if r.get(key) is None]


def run_history(roots: list[str], sort: str = "date", filters: list[str] = ()) -> list[dict]:
    """The rows of every run under the roots (default: ./checkpoints) that passes the filters, sorted."""
    chosen = parse_filters(list(filters))
    if not roots and not Path(DEFAULT_ROOT).is_dir():
        raise UserError(f"no ./{DEFAULT_ROOT} folder here: give the folder your runs are in "
                        f"(mnistlab runs DIR ...; train, compare and sweep write under --out-dir)")
    records = [read_run(run_dir) for run_dir in find_run_dirs(list(roots) or [DEFAULT_ROOT])]
    records.sort(key=lambda r: r["directory"])  # a stable order beneath the sort
    return sort_records([r for r in records if matches(r, chosen)], sort)


# ---------------------------------------------------------------- the terminal table

WIDTH = 120
HEADERS = ["name", "model", "params", "epochs", "val acc", "test acc", "time", "date", "state", "directory"]
NUMERIC = [False, False, True, True, True, True, True, False, False, False]
# Who gives up characters when the table is too wide, in turn, down to these widths. The directory is a
# path to paste, so it gives up last and least: it keeps its first folders (the root given) and its last
# two (the run's name and start time) and loses the middle; a name keeps its start and end (trial names
# differ at the end).
SHRINKING = [("model", 12), ("name", 16), ("directory", 40), ("model", 8), ("name", 10), ("directory", 18)]


def format_history(records: list[dict], width: int = WIDTH) -> str:
    """The table (at most `width` columns: the directory is shortened first) and notes on what it shows."""
    cells = [row_cells(r) for r in records]
    widths = fit([max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)], width, cells)

    def line(values):
        clipped = [clip(v, w, path=h == "directory") for v, w, h in zip(values, widths, HEADERS)]
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(clipped, widths, NUMERIC)).rstrip()

    return "\n".join([line(HEADERS), "  ".join("-" * w for w in widths), *map(line, cells), *notes(records)])


def row_cells(r: dict) -> list[str]:
    def pct(value):
        return "—" if value is None else f"{value:.2%}"

    epochs = "—" if r["epochs_run"] is None else f"{r['epochs_run']}/{r['epochs'] or '?'}"
    state = r["state"] + (", smoke" if r["smoke"] else "")
    model = (r["model"] or "—") + ("*" if r.get("init") else "")  # notes() says what the mark means
    return [r["name"], model, "—" if r["params"] is None else f"{r['params']:,}", epochs,
            pct(r["val_acc"]), pct(r["test_acc"]), format_duration(r["time_s"]), short_date(r["date"]), state,
            shown_path(r["directory"])]


def fit(natural: list[int], width: int, cells: list[list[str]]) -> list[int]:
    """Column widths within `width`, taken from the SHRINKING columns in turn. Paths are cut at a folder,
    so they may need less than their column: what they leave goes back to the name and model."""
    widths = list(natural)
    for name, least in SHRINKING:
        i = HEADERS.index(name)
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        if excess <= 0:
            break
        widths[i] = max(min(least, widths[i]), widths[i] - excess)
    d = HEADERS.index("directory")
    used = max([len(HEADERS[d])] + [len(clip(c[d], widths[d], path=True)) for c in cells])
    spare, widths[d] = widths[d] - used, used
    for i in (HEADERS.index("name"), HEADERS.index("model")):
        grow = min(spare, natural[i] - widths[i])
        widths[i], spare = widths[i] + grow, spare - grow
    return widths


def clip(value: str, width: int, path: bool = False) -> str:
    """`value` in `width` characters: a path keeps its last whole folders, a name its start and end."""
    if len(value) <= width:
        return value
    if path:
        return clip_path(value, width)
    head = (width - 1) // 2
    return value[:head] + "…" + value[len(value) - (width - 1 - head):]


def clip_path(path: str, width: int) -> str:
    """`path` in `width` characters, cut in the middle at folders: as many first folders as fit, "…", and
    the last two (a run's <name>/<timestamp>), else the last one, else the end of it."""
    parts = path.split("/")
    for keep in (2, 1):
        tail = "/".join(parts[-keep:])
        if keep < len(parts) and len(tail) + 2 <= width:
            break
    else:
        return "…" + path[len(path) - width + 1:]
    for k in range(len(parts) - keep - 1, 0, -1):
        head = "/".join(parts[:k])
        if head and len(head) + len(tail) + 3 <= width:
            return f"{head}/…/{tail}"
    return f"…/{tail}"


def short_date(iso: str | None) -> str:
    """The day (the directory's name has the start time): month and day within half a year, as `ls -l`
    shows dates, else with the year."""
    if iso is None:
        return "—"
    when = datetime.fromisoformat(iso)
    recent = abs((datetime.now(when.tzinfo) - when).days) < 180
    return when.strftime("%b %d" if recent else "%Y-%m-%d")


def shown_path(directory: str) -> str:
    """The directory relative to the working folder when it lies inside it (as the user typed roots)."""
    relative = os.path.relpath(directory)
    return directory if relative.startswith("..") else relative


def notes(records: list[dict]) -> list[str]:
    out = []
    commands = [r["resume"] for r in records if r["state"] == "unfinished" and r["resume"]]
    if commands and len(commands) <= 3 and all(len(c) + 2 <= WIDTH for c in commands):  # a few: ready to paste
        out += ["unfinished: stopped before the end; to finish:", *(f"  {c}" for c in commands)]
    elif commands:
        out.append("unfinished: stopped before the end; `mnistlab train --resume DIRECTORY` finishes one "
                   "(--json: its command)")
    if any(r.get("init") for r in records):
        out.append("model*: fine-tuned: it started from model.init's checkpoint (--json's `init` names it and its hash)")
    if any(r["state"] == "unfinished" and not r["resume"] for r in records):
        out.append("unfinished sweep trials: their sweep finishes them (its `mnistlab sweep` command again), "
                   "not train --resume")
    if any(r["smoke"] for r in records):
        out.append("smoke: train.limit_* set, so trained or scored on part of the data; not comparable")
    if any(r["state"] in ("pruned", "failed") for r in records):
        out.append("pruned / failed: sweep trials that ended early (their trial.json says why)")
    out += [clip(f"damaged: {clip(shown_path(r['directory']), 40, path=True)}: {r['problem']}", WIDTH)
            for r in records if r["problem"]]  # the whole reason is in --json's `problem`
    return [""] + out if out else []
