"""`mnistlab compare`: train (or reuse) every config, then one table and plots of them all.

What the seeds did by hand (seed 002's iteration table, seed 003's NN/CNN/VGG16
table), measured on one machine in one go.

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

import csv
import io
import json
import re
import statistics
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError

REUSE_IGNORED = (("data", "root"), ("data", "download"))
METRICS = ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc")
LAYER_KINDS = ("conv", "maxpool", "linear", "batchnorm", "dropout")
# column -> True when larger is better (sorted first)
SORT_COLUMNS = {"config": False, "model": False, "params": False, "test_acc": True, "val_acc": True,
                "train_acc": True, "test_loss": False, "train_loss": False, "train_time": False,
                "time_per_epoch": False}
FILES = {"markdown": "comparison.md", "csv": "comparison.csv", "curves": "comparison_curves.png",
         "acc_vs_params": "comparison_acc_vs_params.png"}


@dataclass
class Run:
    seed: int
    run_dir: Path
    summary: dict
    reused: bool


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


@dataclass
class Comparison:
    rows: list[Row]
    out_dir: Path
    overrides: list[str]
    seeds: list[int] | None
    interrupted: bool = False
    skipped: int = 0  # configs never started because of Ctrl-C

    @property
    def failed(self) -> bool:
        return any(row.error for row in self.rows)


# ---------------------------------------------------------------- finding, reusing and training runs

def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds: got {text!r}; expected whole numbers separated by commas, e.g. 1,2,3") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: got {text!r}; expected distinct non-negative whole numbers, e.g. 1,2,3")
    return seeds


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


def find_finished_run(out_dir: Path, config: dict, device: str) -> Path | None:
    """The newest finished run of exactly this config on this kind of device, if any."""
    wanted = reuse_key(config)
    found = []
    for summary_file in (Path(out_dir) / str(config["name"])).glob("*/summary.json"):
        run_dir = summary_file.parent
        try:
            stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # a damaged run is simply not a candidate
        if isinstance(stored, dict) and reuse_key(stored) == wanted and same_device(summary.get("device"), device) \
                and (run_dir / "metrics.csv").exists():
            found.append((summary_file.stat().st_mtime, run_dir))
    return max(found)[1] if found else None


def layer_counts(model) -> dict[str, int]:
    """Module counts by kind, as seed 002's table reports them (ReLU and Flatten are not layers there)."""
    from torch import nn

    kinds = {"conv": (nn.Conv2d,), "maxpool": (nn.MaxPool2d,), "linear": (nn.Linear,),
             "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
             "dropout": (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)}
    return {kind: sum(isinstance(m, types) for m in model.modules()) for kind, types in kinds.items()}


def describe_model(cfg) -> tuple[int, dict[str, int]]:
    """Parameters and layer counts without allocating weights (the meta device), so VGG16 costs nothing."""
    import warnings

    import torch

    from .data import DATASETS
    from .registry import create_model

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(cfg.model.name, num_classes=len(DATASETS[cfg.data.dataset].classes), in_channels=1,
                             **cfg.model.kwargs)
    return sum(p.numel() for p in model.parameters()), layer_counts(model)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def load_row(row: Row, overrides: list[str]):
    """The config (without a seed override) with the row's model, parameters and layers filled in."""
    from .config import load_config

    cfg = load_config(row.path, overrides)
    row.config, row.model = cfg.name, cfg.model.name
    try:
        row.params, row.layers = describe_model(cfg)
    except UserError as exc:
        raise UserError(f"{row.path}: {exc}") from None
    return cfg


def reusable_run(cfg, seed: int, out_dir: Path, reuse: bool, log) -> Run | None:
    """The finished run of this config (with its seed) on the device it gets now, or None: it must be trained.

    The device is resolved even without reuse, so a device that is not there fails the row before training."""
    from .config import config_to_dict
    from .engine import resolve_device
    from .report import write_run_curves_safely
    from .train import device_name

    device = device_name(resolve_device(cfg.device))
    previous = find_finished_run(out_dir, config_to_dict(cfg), device) if reuse else None
    if previous is None:
        return None
    log(f"== {cfg.name} (seed {seed}): reusing the finished run {previous}")
    if not (previous / "curves.png").exists():
        write_run_curves_safely(previous, log)
    summary = json.loads((previous / "summary.json").read_text(encoding="utf-8"))
    return Run(seed, previous, summary, reused=True)


def failure_message(exc: Exception) -> str:
    """A row's one-line error. A UserError (a bad config, missing data, a diverged run) is this row's
    problem only; anything else is our bug: the row fails and its traceback is not hidden."""
    if isinstance(exc, UserError):
        return one_line(exc)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return f"{type(exc).__name__}: {one_line(exc)} (a bug in mnistlab; traceback above)"


def end_row(row: Row, seed: int | None, seeds: list[int] | None, log) -> None:
    if row.error:
        if seed is not None and seeds is not None and len(seeds) > 1:
            row.error += f" (seed {seed})"
        log(f"== {row.config}: FAILED: {row.error}")


def fill_row(row: Row, overrides: list[str], seeds: list[int] | None, out_dir: Path, reuse: bool,
             data_dir: str | None, log) -> None:
    """Train or reuse each seed of one config into `row`; the first failure ends the row with its message."""
    from .config import load_config
    from .train import run_training

    seed = None
    try:
        cfg = load_row(row, overrides)
        for seed in seeds if seeds is not None else [cfg.seed]:
            cfg = load_config(row.path, [*overrides, f"seed={seed}"])
            run = reusable_run(cfg, seed, out_dir, reuse, log)
            if run is None:
                log(f"== {cfg.name} (seed {seed}): training")
                summary = run_training(cfg, data_dir=data_dir, out_dir=out_dir, log=log, config_path=row.path)
                run = Run(seed, Path(summary["run_dir"]), summary, reused=False)
            row.runs.append(run)
    except Exception as exc:  # noqa: BLE001  (see failure_message)
        row.error = failure_message(exc)
    end_row(row, seed, seeds, log)


def compare_configs(paths: list[str], overrides: list[str] = (), seeds: list[int] | None = None,
                    out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
                    data_dir: str | None = None, log=print, jobs: int = 1) -> Comparison:
    if sort is not None and sort not in SORT_COLUMNS:
        raise UserError(f"--sort: got {sort!r}; allowed: {', '.join(SORT_COLUMNS)}")
    if jobs < 1:
        raise UserError(f"--jobs: got {jobs}; expected a whole number >= 1")
    comparison = Comparison([], Path(out_dir), list(overrides), seeds)
    if jobs > 1:  # worker processes; the rows come out as they do below
        from .jobs import fill_rows_in_parallel

        fill_rows_in_parallel(comparison, list(paths), list(overrides), seeds, Path(out_dir), reuse, data_dir, jobs,
                              log)
    else:
        for i, path in enumerate(paths):
            row = Row(config=Path(path).stem, path=str(path))
            comparison.rows.append(row)
            try:
                fill_row(row, list(overrides), seeds, Path(out_dir), reuse, data_dir, log)
            except KeyboardInterrupt:  # keep what finished; the table is written below all the same
                row.error = "interrupted" + (f" after {len(row.runs)} finished seed(s)" if row.runs else "")
                comparison.interrupted, comparison.skipped = True, len(paths) - i - 1
                break
    if sort is not None:
        comparison.rows = sort_rows(comparison.rows, sort)
    return comparison


# ---------------------------------------------------------------- the table

def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def row_values(row: Row) -> dict:
    """The row as plain values (fractions, seconds), one CSV line; means over seeds, sample sd beside them."""
    summaries = [run.summary for run in row.runs]
    values = {"config": row.config, "path": row.path, "model": row.model, "params": row.params,
              "layers": sum(row.layers.values()) if row.layers else None,
              **{kind: row.layers.get(kind) for kind in LAYER_KINDS},
              "seeds": ",".join(str(run.seed) for run in row.runs)}
    for key in ("epochs_run", "best_epoch"):
        mean, _ = mean_sd([s.get(key) for s in summaries])
        values[key] = int(mean) if mean is not None and mean == int(mean) else mean
    for metric in METRICS:
        values[metric], values[f"{metric}_sd"] = mean_sd([s.get(metric) for s in summaries])
    values["selected_on"] = ",".join(dict.fromkeys(str(s.get("selected_on")) for s in summaries))
    values["test_n"] = ",".join(map(str, dict.fromkeys(s.get("test_n") for s in summaries)))
    values["train_time_s"], _ = mean_sd([s.get("train_time_s") for s in summaries])
    values["time_per_epoch_s"], _ = mean_sd([s.get("time_per_epoch_s") for s in summaries])
    values["device"] = ", ".join(dict.fromkeys(str(s.get("device")) for s in summaries))
    reused = {run.reused for run in row.runs}
    values["status"] = ("failed" if row.error else "reused" if reused == {True} else "trained" if reused == {False}
                        else "trained+reused")
    values["error"] = row.error or ""
    values["run_dirs"] = ";".join(str(run.run_dir) for run in row.runs)
    return values


def sort_rows(rows: list[Row], column: str) -> list[Row]:
    """Best first in the column's own sense (accuracy high, loss/time/size low); failed rows last."""
    key = {"train_time": "train_time_s", "time_per_epoch": "time_per_epoch_s"}.get(column, column)
    descending = SORT_COLUMNS[column]
    done = [r for r in rows if row_values(r)[key] is not None]
    missing = [r for r in rows if row_values(r)[key] is None]
    done.sort(key=lambda r: row_values(r)[key], reverse=descending)
    return done + missing


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _stat(mean: float | None, sd: float | None, percent: bool) -> str:
    if mean is None:
        return "—"
    if percent:
        return f"{mean:.2%}" if sd is None else f"{mean * 100:.2f} ± {sd * 100:.2f}%"
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def _epochs(row: Row, key: str) -> str:
    values = sorted({run.summary.get(key) for run in row.runs})
    return "—" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cells and which columns are numeric (right-aligned), shared by the terminal and Markdown."""
    several = any(len(row.runs) > 1 for row in rows)
    columns = [("config", False), ("model", False), ("params", True), ("layers", True), ("conv", True),
               ("maxpool", True), ("linear", True), ("batchnorm", True), ("dropout", True),
               *([("seeds", False)] if several else []), ("epochs run/best", True), ("train loss", True),
               ("train acc", True), ("val acc", True), ("test loss", True), ("test acc", True),
               ("train time", True), ("time/epoch", True), ("device", False), ("run", False)]
    def count(x):
        return "—" if x is None else str(x)

    cells = []
    for row in rows:
        v = row_values(row)
        cells.append([
            v["config"], v["model"] or "—", "—" if v["params"] is None else f"{v['params']:,}",
            count(v["layers"]), *(count(v[kind]) for kind in LAYER_KINDS),
            *([v["seeds"] or "—"] if several else []),
            "—" if not row.runs else f"{_epochs(row, 'epochs_run')}/{_epochs(row, 'best_epoch')}",
            _stat(v["train_loss"], v["train_loss_sd"], False), _stat(v["train_acc"], v["train_acc_sd"], True),
            _stat(v["val_acc"], v["val_acc_sd"], True), _stat(v["test_loss"], v["test_loss_sd"], False),
            _stat(v["test_acc"], v["test_acc_sd"], True),
            format_duration(v["train_time_s"]), format_duration(v["time_per_epoch_s"]), v["device"] or "—",
            "FAILED" if row.error else v["status"],
        ])
    return [name for name, _ in columns], cells, [numeric for _, numeric in columns]


def _notes(rows: list[Row]) -> list[str]:
    """What the numbers stand on, from the runs themselves: checkpoint selection and test-set size."""
    summaries = [run.summary for row in rows for run in row.runs]
    if not summaries:
        return []
    selected = sorted({str(s.get("selected_on")) for s in summaries})
    counts = sorted({s.get("test_n") for s in summaries} - {None}, reverse=True)
    notes = [f"Metrics are those of each run's best checkpoint, selected on {' / '.join(selected)}"
             + ("; rows selected on test_acc have a biased test accuracy." if "test_acc" in selected else ".")]
    if counts:  # limit_eval_batches scores only part of the test set
        notes.append("Test loss and accuracy are on " + " / ".join(f"{n:,}" for n in counts) + " test images"
                     + (" (runs differ: see test_n in the CSV)." if len(counts) > 1 else "."))
    if any(len(row.runs) > 1 for row in rows):
        notes.append("With several seeds: mean ± sample sd.")
    with_tta = [(row.config, [run.summary["test_acc_single_view"] for run in row.runs]) for row in rows
                if row.runs and all(run.summary.get("tta") for run in row.runs)]
    if with_tta:
        notes.append("Scored with test-time augmentation (train.tta, 7 views; selection stays single-view): "
                     + ", ".join(f"{name} (single view {sum(accs) / len(accs):.2%})" for name, accs in with_tta)
                     + ".")
    return notes


def _failures(rows: list[Row]) -> list[str]:
    return [f"{row.config}: {row.error}" if row.path in row.error else f"{row.config} ({row.path}): {row.error}"
            for row in rows if row.error]


def format_text_table(rows: list[Row]) -> str:
    headers, cells, numeric = table_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)] + [line(c) for c in cells]
    out += ["", *_notes(rows)] if _notes(rows) else []
    failures = _failures(rows)
    if failures:
        out += ["", "failed:"] + [f"  {f}" for f in failures]
    return "\n".join(out)


def format_markdown(comparison: Comparison) -> str:
    headers, cells, numeric = table_cells(comparison.rows)

    def line(values):
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    settings = [f"overrides: {', '.join(f'`{o}`' for o in comparison.overrides) or 'none'}",
                f"seeds: {', '.join(map(str, comparison.seeds)) if comparison.seeds else 'each config’s own'}"]
    out = ["# mnistlab comparison", "", "; ".join(settings) + ".",
           " ".join(_notes(comparison.rows)), "",
           line(headers), "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
           *(line(c) for c in cells)]
    failures = _failures(comparison.rows)
    if failures:
        out += ["", "Failed:", ""] + [f"- {f}" for f in failures]
    if comparison.interrupted:
        out += ["", f"Interrupted (Ctrl-C): {comparison.skipped} config(s) not run."]
    figures = [(FILES["curves"], "validation curves"), (FILES["acc_vs_params"], "test accuracy against parameters")]
    out += ["", *(f"![{alt}]({name})" for name, alt in figures if (comparison.out_dir / name).exists())]
    return "\n".join(out).rstrip() + "\n"


def format_csv(rows: list[Row]) -> str:
    records = [row_values(row) for row in rows]
    out = io.StringIO()
    fieldnames = list(records[0]) if records else ["config"]
    writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else f"{v:.6g}" if isinstance(v, float) else v
                         for k, v in record.items()})
    return out.getvalue()


# ---------------------------------------------------------------- files

def write_outputs(comparison: Comparison) -> list[Path]:
    from . import report
    from .checkpoint import atomic_write_text

    out_dir = comparison.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out-dir: cannot create {out_dir}: {exc.strerror}") from None
    done = [row for row in comparison.rows if row.runs]
    files = []
    seeds = [f"seeds {','.join(map(str, comparison.seeds))}"] if comparison.seeds else []
    subtitle = ", ".join([*comparison.overrides, *seeds])
    if done:
        series = [(row.config, [report.read_metrics(run.run_dir) for run in row.runs]) for row in done]
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


def run_compare(paths: list[str], *, overrides: list[str] = (), seeds: str | None = None,
                out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
                data_dir: str | None = None, log=print, jobs: int = 1) -> int:
    """The whole command: runs, table on the terminal, files. Exit code 0, 1 (a row failed) or 130 (Ctrl-C)."""
    comparison = compare_configs(paths, list(overrides), parse_seeds(seeds), out_dir, reuse, sort, data_dir, log,
                                 jobs)
    files = write_outputs(comparison)
    trained = sum(not run.reused for row in comparison.rows for run in row.runs)
    reused = sum(run.reused for row in comparison.rows for run in row.runs)
    failed = sum(bool(row.error) for row in comparison.rows)
    log("")
    log(format_text_table(comparison.rows))
    log("")
    log(f"{len(comparison.rows)} config(s): {trained} run(s) trained, {reused} reused, {failed} failed"
        + (f"; interrupted, {comparison.skipped} config(s) not run" if comparison.interrupted else ""))
    log("wrote " + ", ".join(str(f) for f in files))
    return 130 if comparison.interrupted else 1 if comparison.failed else 0
