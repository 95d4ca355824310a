"""PNG plots: comparison curves, accuracy against size, per-run curves, confusion matrix, misclassified digits.

Figures are built as bare `matplotlib.figure.Figure`s, never through pyplot: no
global figure registry to leak from, no GUI backend to pick, and nothing here
touches the caller's matplotlib state. matplotlib is imported only when a plot
is drawn, so the CLI and training stay fast to start.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from .runfolder import CURVES, METRICS, read_metrics, read_summary


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: str | Path) -> Path:
    """Drawn in memory, then written atomically: a full disk leaves no half PNG behind."""
    from .files import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _png(fig))
    return path


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_series(ax, rows: list[dict], key: str, scale: float = 1.0, **style) -> bool:
    points = [(r["epoch"], r[key] * scale) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    if not points:
        return False
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", markersize=3.5, **style)
    return True


def _epoch_axis(ax, epochs: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    if epochs <= 10:  # MaxNLocator falls back to fractional ticks (0.6, 0.8, ...) on a short range
        ax.set_xticks(range(1, max(epochs, 1) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _log_y(ax, label: str) -> None:
    """Losses span decades (2.3 -> 0.02), which a linear axis flattens; ticks read 0.5, not 5x10^-1."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # LogFormatter decides which ticks get a label; this only spells them plainly
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain())
    ax.set_ylabel(f"{label} (log scale)")


def _last_epoch(runs: list[list[dict]]) -> int:
    return int(max((r["epoch"] for rows in runs for r in rows), default=1))


# ---------------------------------------------------------------- comparisons

def comparison_curves(series: list[tuple[str, list[list[dict]]]], path: str | Path, subtitle: str = "") -> Path:
    """Validation accuracy and loss per epoch, one colour per config; each seed's run is its own line."""
    fig = _figure(13, 5)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for (label, runs), color in zip(series, _colors(len(series))):
        alpha = 1.0 if len(runs) == 1 else 0.6
        for i, rows in enumerate(runs):
            name = label if i == 0 else None  # one legend entry per config, not per seed
            _plot_series(acc_ax, rows, "val_acc", 100.0, color=color, alpha=alpha, label=name)
            _plot_series(loss_ax, rows, "val_loss", color=color, alpha=alpha, label=name)
    acc_ax.set_title("Validation accuracy")
    acc_ax.set_ylabel("accuracy (%)")
    loss_ax.set_title("Validation loss")
    _log_y(loss_ax, "cross-entropy")
    last = _last_epoch([rows for _, runs in series for rows in runs])
    for ax in (acc_ax, loss_ax):
        _epoch_axis(ax, last)
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="config")
    fig.suptitle("Validation curves" + (f" ({subtitle})" if subtitle else ""))
    return _save(fig, path)


def accuracy_vs_params(points: list[dict], path: str | Path, subtitle: str = "") -> Path:
    """Test accuracy (mean, ± sd as error bars) against parameter count on a log axis.

    points: dicts with label, params, acc (fraction), sd (fraction or None).
    """
    fig = _figure(9, 5.5)
    ax = fig.subplots()
    for point, color in zip(points, _colors(len(points))):
        ax.errorbar(point["params"], point["acc"] * 100, yerr=(point["sd"] or 0) * 100, fmt="o", markersize=7,
                    capsize=4, color=color, label=point["label"])
    # Many configs have nearly the same size (iter3...7: 18-21k weights): their names go in a column
    # beside the group, in the points' order of accuracy and colour, each with a line to its point.
    ax.set_xscale("log")
    accs = [p["acc"] * 100 for p in points]
    span = (max(accs) - min(accs)) if points else 1.0
    gap = max(span, 0.5) * 0.055  # one label's height in accuracy units
    color_of = {id(p): c for p, c in zip(points, _colors(len(points)))}
    by_size = sorted(points, key=lambda p: p["params"])
    groups: list[list[dict]] = []
    for point in by_size:
        if groups and math.log10(point["params"]) - math.log10(groups[-1][0]["params"]) < 0.3:
            groups[-1].append(point)
        else:
            groups.append([point])
    for group in groups:
        group.sort(key=lambda p: -p["acc"])
        label_x = max(p["params"] for p in group) * 10 ** 0.3
        label_y = group[0]["acc"] * 100
        for point in group:
            label_y = min(label_y, point["acc"] * 100)
            ax.annotate(point["label"], (point["params"], point["acc"] * 100), xytext=(label_x, label_y),
                        fontsize=9, color=color_of[id(point)], va="center",
                        arrowprops=dict(arrowstyle="-", color=color_of[id(point)], lw=0.7, shrinkA=2, shrinkB=4))
            label_y -= gap
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if points:
        lo, hi = min(p["params"] for p in points), max(p["params"] for p in points)
        ax.set_xlim(lo / 2, hi * 4)  # room for the names right of the rightmost point
    ax.set_title("Test accuracy against model size" + (f" ({subtitle})" if subtitle else ""))
    return _save(fig, path)


# ---------------------------------------------------------------- one run

def run_curves(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Loss and accuracy per epoch of one run (train, val, test where monitored), best epoch marked."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir / METRICS} has no epochs to draw")  # a warning: write_run_curves_safely
    summary = read_summary(run_dir) or {}
    fig = _figure(15, 4.5)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    _plot_series(loss_ax, rows, "train_loss", color="tab:blue", label="train")
    _plot_series(loss_ax, rows, "val_loss", color="tab:orange", label="validation")
    _plot_series(acc_ax, rows, "train_acc", 100.0, color="tab:blue", label="train")
    _plot_series(acc_ax, rows, "val_acc", 100.0, color="tab:orange", label="validation")
    _plot_series(acc_ax, rows, "test_acc", 100.0, color="tab:green", label="test")
    best = summary.get("best_epoch")
    for ax in (loss_ax, acc_ax):
        if best:
            ax.axvline(best, color="gray", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        _epoch_axis(ax, _last_epoch([rows]))
        ax.legend(fontsize=9)
    loss_ax.set_title("Loss")
    _log_y(loss_ax, "cross-entropy")
    acc_ax.set_title("Accuracy")
    acc_ax.set_ylabel("accuracy (%)")
    if _plot_series(lr_ax, rows, "lr", color="tab:purple"):
        lr_ax.set_yscale("log")
    lr_ax.set_title("Learning rate (at each epoch's start)")
    _epoch_axis(lr_ax, _last_epoch([rows]))
    name, model = summary.get("name", run_dir.parent.name), summary.get("model", "")
    title = name if model in ("", name) else f"{name} ({model})"
    if "test_acc" in summary:
        title += f", test accuracy {summary['test_acc']:.2%} (best epoch, seed {summary.get('seed')})"
    fig.suptitle(title)
    return _save(fig, path or run_dir / CURVES)


def write_run_curves_safely(run_dir: str | Path, log=print) -> Path | None:
    """The finished run matters more than its picture: a plotting failure is a warning, never an error."""
    try:
        return run_curves(run_dir)
    except Exception as exc:  # noqa: BLE001
        log(f"warning: could not draw {Path(run_dir) / CURVES}: {type(exc).__name__}: {exc}")
        return None


# ---------------------------------------------------------------- evaluation

def confusion_matrix(matrix: list[list[int]], classes: list[str], path: str | Path, title: str) -> Path:
    """Counts on a log colour scale, so a handful of confusions stands out next to a thousand hits."""
    import numpy as np
    from matplotlib.colors import LogNorm

    counts = np.asarray(matrix)
    k = len(classes)
    side = min(max(6.0, 0.5 * k + 2), 24)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    shown = np.ma.masked_where(counts == 0, counts)  # zero stays white: "never confused"
    image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(counts.max()), 2)))
    fig.colorbar(image, ax=ax, label="images (log scale)", shrink=0.8)
    ticks = range(k)
    ax.set_xticks(ticks, classes, rotation=90 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        threshold = math.sqrt(max(int(counts.max()), 1))  # the middle of the log scale
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if counts[i, j] > threshold else "black")
    ax.set_title(title)
    return _save(fig, path)


def misclassified_grid(images, true: list[int], pred: list[int], confidence: list[float], classes: list[str],
                       path: str | Path, title: str, columns: int = 8, indices: list[int] | None = None) -> Path:
    """Digits as the network saw them (before normalization), dark ink on white, labelled true / predicted."""
    n = len(true)
    rows = max(1, math.ceil(n / columns))
    fig = _figure(columns * 1.45, rows * 1.65 + 0.6)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        where = f"#{indices[i]} " if indices is not None else ""
        ax.set_title(f"{where}true {classes[true[i]]}\npred {classes[pred[i]]} ({confidence[i]:.0%})", fontsize=8,
                     color="firebrick")
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------- sweeps

def sweep_history(points: list[tuple[int, float]], objective: str, direction: str, path: str | Path,
                  study: str) -> Path:
    """Each complete trial's objective by trial number, and the best so far as a step line."""
    fig = _figure(9, 5)
    ax = fig.subplots()
    numbers, values = zip(*sorted(points))
    scale = 100.0 if objective.endswith("acc") else 1.0
    best, running = [], None
    for v in values:
        running = v if running is None or (v > running if direction == "maximize" else v < running) else running
        best.append(running * scale)
    ax.plot(numbers, [v * scale for v in values], "o", color="tab:blue", alpha=0.7, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (validation{', %' if scale == 100 else ''})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"Optimization history: {study} ({len(points)} complete trials)")
    return _save(fig, path)


def lr_find_curve(lrs: list[float], losses: list[float], suggestion: float, method: str, title: str,
                  path: str | Path | None = None) -> Path:
    """The LR range test's smoothed loss against the learning rate (log x), the suggestion marked. Written
    as a new file, never over one: `path`, or lr_find.png in the current folder (lr_find_1.png if taken)."""
    from .files import create_file, write_new_file

    fig = _figure(8, 5)
    ax = fig.subplots()
    ax.plot(lrs, losses, color="tab:blue", label="smoothed training loss")
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2g} ({method})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"Learning-rate range test: {title}")
    data = _png(fig)
    return write_new_file(Path.cwd(), "lr_find", ".png", data) if path is None else \
        create_file(Path(path), data, "--output")


def sweep_importances(importances: dict[str, float], path: str | Path, study: str) -> Path:
    """How much of the objective's variance each parameter explains (Optuna's fANOVA), largest first."""
    fig = _figure(8, 1.2 + 0.5 * len(importances))
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_xlim(0, 1)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"Parameter importances: {study}")
    return _save(fig, path)


def sweep_parallel(trials: list[tuple[dict, float]], keys: list[str], objective: str, path: str | Path,
                   study: str) -> Path:
    """One line per complete trial across its parameters (each axis scaled to its own range), coloured
    by the objective; categorical parameters are placed by their sorted values."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    fig = _figure(max(7, 2.2 * (len(keys) + 1)), 5)
    ax = fig.subplots()
    columns = [[_axis_value(params.get(k)) for params, _ in trials] for k in keys]
    columns.append([value for _, value in trials])
    labels = [k.rsplit(".", 1)[-1] for k in keys] + [objective]
    scaled, ticks = [], []
    for column in columns:
        lo, hi = min(column), max(column)
        scaled.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in column])
        ticks.append((lo, hi))
    values = columns[-1]
    norm, cmap = Normalize(min(values), max(values)), colormaps["viridis"]
    for i, value in enumerate(values):
        ax.plot(range(len(columns)), [col[i] for col in scaled], color=cmap(norm(value)), alpha=0.8)
    ax.set_xticks(range(len(columns)), [f"{name}\n{lo:.3g} … {hi:.3g}" for name, (lo, hi) in zip(labels, ticks)])
    ax.set_yticks([])
    ax.grid(True, axis="x", alpha=0.5)
    ax.set_title(f"Parallel coordinates: {study} (colour: {objective})")
    return _save(fig, path)


def _axis_value(value) -> float:
    """A parameter's position on its axis: numbers as they are, other values by a stable code."""
    if isinstance(value, bool) or value is None:
        return float(bool(value))
    if isinstance(value, (int, float)):
        return float(value)
    return float(sum(ord(c) for c in str(value)) % 997)
