"""The comparison table: one row per config, means over seeds, as text, Markdown and CSV.

Rows are duck-typed (config, path, model, params, layers, runs, error): this module reads them and
imports nothing of the experiments that fill them.
"""

from __future__ import annotations

import csv
import io
import statistics

from ..files import csv_value
from ..models._factory import LAYER_KINDS
from .runs import format_duration

METRICS = ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc")
# column -> True when larger is better (sorted first)
SORT_COLUMNS = {"config": False, "model": False, "params": False, "test_acc": True, "val_acc": True,
                "train_acc": True, "test_loss": False, "train_loss": False, "train_time": False,
                "time_per_epoch": False}
FILES = {"markdown": "comparison.md", "csv": "comparison.csv", "curves": "comparison_curves.png",
         "acc_vs_params": "comparison_acc_vs_params.png"}


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def row_values(row) -> dict:
    """The row as plain values (fractions, seconds), one CSV line; means over seeds, sample sd beside them."""
    summaries = [run.summary for run in row.runs]
    values = {"config": row.config, "path": row.path, "model": row.model, "params": row.params,
              "layers": sum(row.layers.values()) if row.layers else None,
              **{kind: row.layers.get(kind) for kind in LAYER_KINDS},
              "seeds": ",".join(dict.fromkeys(str(run.seed) for run in row.runs))}
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


def sort_rows(rows: list, column: str) -> list:
    """Best first in the column's own sense (accuracy high, loss/time/size low); failed rows last."""
    key = {"train_time": "train_time_s", "time_per_epoch": "time_per_epoch_s"}.get(column, column)
    descending = SORT_COLUMNS[column]
    done = [r for r in rows if row_values(r)[key] is not None]
    missing = [r for r in rows if row_values(r)[key] is None]
    done.sort(key=lambda r: row_values(r)[key], reverse=descending)
    return done + missing


def _stat(mean: float | None, sd: float | None, percent: bool) -> str:
    if mean is None:
        return "—"
    if percent:
        return f"{mean:.2%}" if sd is None else f"{mean * 100:.2f} ± {sd * 100:.2f}%"
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def _epochs(row, key: str) -> str:
    values = sorted({run.summary.get(key) for run in row.runs})
    return "—" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def table_cells(rows: list) -> tuple[list[str], list[list[str]], list[bool]]:
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


def _notes(rows: list) -> list[str]:
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
    folds = sorted({s.get("folds") for s in summaries} - {None})
    if folds:
        notes.append(f"Cross-validated: each seed trained on {' / '.join(map(str, folds))} folds, fold i of the "
                     f"training set as validation; figures are mean ± sample sd over every run.")
    elif any(len(row.runs) > 1 for row in rows):
        notes.append("With several seeds: mean ± sample sd.")
    with_tta = [(row.config, [run.summary["test_acc_single_view"] for run in row.runs]) for row in rows
                if row.runs and all(run.summary.get("tta") for run in row.runs)]
    if with_tta:
        notes.append("Scored with test-time augmentation (train.tta, 7 views; selection stays single-view): "
                     + ", ".join(f"{name} (single view {sum(accs) / len(accs):.2%})" for name, accs in with_tta)
                     + ".")
    return notes


def _failures(rows: list) -> list[str]:
    return [f"{row.config}: {row.error}" if row.path in row.error else f"{row.config} ({row.path}): {row.error}"
            for row in rows if row.error]


NARROW_DROPS = {"layers", *LAYER_KINDS, "train loss", "time/epoch"}  # in comparison.md/.csv, and with --wide


def format_text_table(rows: list, wide: bool = False) -> str:
    """The terminal table: within 120 columns unless `wide` (the layer counts live in the files)."""
    headers, cells, numeric = table_cells(rows)
    if not wide:
        keep = [i for i, h in enumerate(headers) if h not in NARROW_DROPS]
        headers, numeric = [headers[i] for i in keep], [numeric[i] for i in keep]
        cells = [[c[i] if headers[n] != "device" else short_device(c[i]) for n, i in enumerate(keep)] for c in cells]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)] + [line(c) for c in cells]
    out += ["", *_notes(rows)] if _notes(rows) else []
    failures = _failures(rows)
    if failures:
        out += ["", "failed:"] + [f"  {f}" for f in failures]
    return "\n".join(out)


def short_device(text: str) -> str:
    """`cuda:0 (NVIDIA H200), cuda:1 (NVIDIA H200)` -> `cuda`: the full names are in the files."""
    kinds = dict.fromkeys(part.strip().split(" ")[0].split(":")[0] for part in text.split(","))
    return ",".join(kinds) or text


def format_markdown(comparison) -> str:
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


def format_csv(rows: list) -> str:
    records = [row_values(row) for row in rows]
    out = io.StringIO()
    fieldnames = list(records[0]) if records else ["config"]
    writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: csv_value(v) for k, v in record.items()})
    return out.getvalue()
