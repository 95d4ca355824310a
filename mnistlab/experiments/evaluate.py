"""`mnistlab eval`: evaluate a checkpoint on a split (test, or the run's own val/train), from the checkpoint alone,
or on a user's own folder, CSV or npz file (--data)."""

from __future__ import annotations

from pathlib import Path

from ..config import device_problem, validate_config
from ..data.augment import tta_for
from ..data.datasets import DATASETS, dataset_classes, load_data, load_split, resolve_root
from ..data.pipeline import eval_batches
from ..data.userdata import scoring_set
from ..errors import UserError
from ..files import make_dir
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from ..training.engine import amp_dtype, keep_freed_host_memory, resolve_device, score


def evaluate_checkpoint(path: str, split: str = "test", data_dir: str | None = None, device: str = "auto",
                        plots_dir: str | None = None, tta: bool | None = None, data: str | None = None,
                        prepare: str = "reading", skip_bad: bool = False) -> dict:
    """`tta` None: as the run was scored (its train.tta). `data`: a user's folder, CSV or npz file to score
    instead of the run's own split (eval_set)."""
    import torch

    problem = device_problem(device)
    if problem:
        raise UserError(f"--device: got {device!r}; {problem}")
    if plots_dir is not None:
        make_dir(plots_dir, "--plots")  # before the work: a file in the way is a mistake to say now
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    if data is not None and data in DATASETS and not Path(data).exists():  # `--data mnist`: a built-in's test set
        x, y, dataset, split, notes, cfg = builtin_test_set(ckpt, data, data_dir)
    elif data is not None:
        x, y, dataset, split, notes, cfg = eval_set(ckpt, data, prepare, skip_bad)
    else:
        x, y, dataset, cfg = run_split(ckpt, path, split, data_dir)
        notes = []
    dev = resolve_device(device)
    keep_freed_host_memory()
    model.to(dev)
    mean, std = ckpt["normalize"]["mean"], ckpt["normalize"]["std"]
    tta = bool(cfg and cfg.train.tta) if tta is None else tta
    views = tta_for(mean, std) if tta else None
    batch = cfg.train.eval_batch_size if cfg else 1024
    result = score(model, eval_batches(x.to(dev), y.to(dev), batch, mean, std), dev,
                   amp_dtype(cfg.train.amp if cfg else "off", dev), views)
    k = len(ckpt["classes"])
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((result.labels, result.predictions), torch.ones_like(result.labels), accumulate=True)
    counts = confusion.sum(1)
    per_class = [acc if n else None  # a class with no images here (a user's set may lack some) has no accuracy
                 for acc, n in zip((confusion.diag().double() / counts.clamp(min=1).double()).tolist(), counts)]
    report = {
        "checkpoint": str(path), "model": ckpt["model"]["name"], "dataset": dataset, "split": split,
        "accuracy": result.acc, "loss": result.loss, "tta": tta, "n": result.n, "epoch": ckpt.get("epoch"),
        "classes": list(ckpt["classes"]), "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(), **({"notes": notes} if data is not None else {}),
    }
    if plots_dir is not None:
        report["plots"] = [str(p) for p in write_eval_plots(report, model, x, result, mean, std, dev, plots_dir)]
    return report


def run_split(ckpt: dict, path: str, split: str, data_dir: str | None):
    """The run's own test, val or train images (its stored config's data and seed): x, y, dataset name, config."""
    if "config" not in ckpt:
        raise UserError(f"{path}: damaged checkpoint: it holds no stored config, which eval needs for its data")
    cfg = validate_config(ckpt["config"], f"{path} (its stored config)")
    classes = dataset_classes(cfg.data)
    if len(ckpt["classes"]) != len(classes):
        raise UserError(f"{path}: has {len(ckpt['classes'])} classes but {cfg.data.dataset} has {len(classes)}")
    data = load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root))  # the run's own split
    x, y = {"test": (data.test_x, data.test_y), "val": (data.val_x, data.val_y),
            "train": (data.train_x, data.train_y)}[split]
    if len(y) == 0:
        raise UserError(f"{path}: this run had no validation split (data.val_split: 0)")
    return x, y, data.source, cfg


def builtin_test_set(ckpt: dict, name: str, data_dir: str | None):
    """`eval --data mnist`: a built-in dataset's whole test set, for a model trained on something else (a user's
    set, mixed or not): how much of MNIST a fine-tuned model still reads. Its classes must be the checkpoint's,
    by name (a head for other classes cannot be scored on it)."""
    spec = DATASETS[name]
    if list(spec.classes) != list(ckpt["classes"]):
        raise UserError(f"--data {name}: the checkpoint's classes ({', '.join(ckpt['classes'][:12])}) are not "
                        f"{name}'s ({', '.join(spec.classes[:12])})")
    cfg = validate_config(ckpt["config"], "the checkpoint's stored config") if "config" in ckpt else None
    root = resolve_root(data_dir, cfg.data.root if cfg else None)
    x, y = load_split(spec, root, train=False, download=cfg.data.download if cfg else True)
    return x, y, name, "test", [], cfg


def eval_set(ckpt: dict, data: str, prepare: str, skip_bad: bool):
    """`eval --data`: a user's folder, CSV or npz file, its classes matched by name to the checkpoint's:
    x, y, the data's name, which part, notes (skipped files) and the run's config (None if it has none)."""
    import torch

    x, y, which, notes = scoring_set(Path(data).expanduser(), list(ckpt["classes"]), prepare, skip_bad)
    cfg = validate_config(ckpt["config"], "the checkpoint's stored config") if "config" in ckpt else None
    return torch.from_numpy(x), torch.from_numpy(y), str(data), which, notes, cfg


def write_eval_plots(report: dict, model, images, result, mean: float, std: float, dev, plots_dir: str,
                     shown: int = 48) -> list:
    """Confusion matrix, and the misclassified digits the model was surest about (label noise shows up there)."""
    from pathlib import Path

    import torch

    from .. import report as plots

    split, n = report["split"], report["n"]
    head = f"{report['model']} on {report['dataset']} {split}"
    wrong = (result.predictions != result.labels).nonzero().flatten()
    errors = len(wrong)
    confidence = torch.zeros(0)
    if len(wrong):
        with torch.inference_mode():
            probs = [model(x).float().softmax(1).amax(1).cpu()
                     for x, _ in eval_batches(images[wrong].to(dev), result.labels[wrong].to(dev), 1024, mean, std)]
        confidence = torch.cat(probs)
        order = confidence.argsort(descending=True)[:shown]
        wrong, confidence = wrong[order], confidence[order]
    out = Path(plots_dir)
    title = f"{head}: accuracy {report['accuracy']:.2%} ({n:,} images)"
    matrix = plots.confusion_matrix(report["confusion_matrix"], report["classes"], out / f"confusion_{split}.png",
                                    title)
    grid = plots.misclassified_grid(images[wrong].cpu().numpy(), result.labels[wrong].tolist(),
                                    result.predictions[wrong].tolist(), confidence.tolist(), report["classes"],
                                    out / f"misclassified_{split}.png",
                                    f"{head}: {len(wrong)} of {errors:,} misclassified images, most confident first "
                                    f"(#: the image's index in the {split} split)", indices=wrong.tolist())
    return [matrix, grid]


def format_report(report: dict) -> str:
    lines = [f"{report['model']} on {report['dataset']} {report['split']} ({report['n']:,} images): "
             f"accuracy {report['accuracy']:.2%}, loss {report['loss']:.4f}"
             + (" (test-time augmentation: 7 views)" if report.get("tta") else ""), "", "per-class accuracy:"]
    classes = report["classes"]
    width = max(len(c) for c in classes)
    for name, acc, row in zip(classes, report["per_class_accuracy"], report["confusion_matrix"]):
        lines.append(f"  {name:>{width}}  {'-' if acc is None else format(acc, '.2%'):>7}  ({sum(row):,} images)")
    if len(classes) <= 20:
        cell = max(5, len(str(max(max(r) for r in report["confusion_matrix"]))) + 1)
        lines += ["", "confusion matrix (rows: true, columns: predicted):",
                  " " * (width + 2) + "".join(f"{c:>{cell}}" for c in classes)]
        for name, row in zip(classes, report["confusion_matrix"]):
            lines.append(f"  {name:>{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
