"""mnistlab from Python (a notebook): the commands as functions, returning what the CLI prints.

    import mnistlab
    summary = mnistlab.train("iter5", ["train.epochs=3"])            # a path, a packaged name or a dict
    report = mnistlab.evaluate(summary["run_dir"] + "/best.pt")      # {"accuracy": ..., "confusion_matrix": ...}
    model = mnistlab.load_model(summary["run_dir"] + "/best.pt")     # torch.nn.Module, eval mode
    mnistlab.predict(["digit.png", pil_image, array])                # [{"prediction": "7", ...}, ...]
    rows = mnistlab.compare(["iter5", "mlp"], seeds=[1, 2])          # the table's rows: [{"config": ...}, ...]
    best = mnistlab.sweep("sweeps/iter5_lr.yaml", n_trials=4)        # the best trial: {"trial": 2, ...}

Each function raises mnistlab.errors.UserError with the CLI's one-line message for a mistake, its
arguments' types and values included (checked here, before anything runs). `import mnistlab` stays
cheap: this module (and torch) loads on the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .errors import UserError


def train(config: str | Path | dict, overrides: Iterable[str] = (), *, data_dir: str | None = None,
          out_dir: str | Path = "checkpoints", quiet: bool = True, resume: str | Path | None = None,
          log=print) -> dict:
    """Train a config (a file, a packaged name such as "iter5", or a dict of the YAML's keys) with
    `overrides` ("train.epochs=3", as --set); return the run's summary (run_dir, test_acc, ...)."""
    from .config import config_to_dict, load_config, validate_config
    from .models import check_model
    from .training.finetune import resolved_config
    from .training.trainer import run_training

    _check("config", config, (str, Path, dict), "a config file, a packaged config's name or a dict")
    overrides = _strings("overrides", overrides, "['train.epochs=3']")
    for name, value in (("data_dir", data_dir), ("resume", resume)):
        _check(name, value, (str, Path, type(None)), "a path or None")
    _check("out_dir", out_dir, (str, Path), "a path")
    _check("quiet", quiet, bool, "True or False")
    if not callable(log):
        raise UserError(f"log: got {_shown(log)}; give a function that takes the lines it prints, such as print")
    if isinstance(config, dict):
        cfg = resolved_config(load_config(None, overrides, raw=config))  # model.init may name the model
        if cfg.name is None:  # a file's name is its stem; a dict's, without `name`, is its model's
            cfg = validate_config({**config_to_dict(cfg), "name": cfg.model.name})
    else:
        cfg = resolved_config(load_config(config, overrides))
    check_model(cfg.model.name, cfg.model.kwargs)
    return run_training(cfg, data_dir=data_dir, out_dir=out_dir, quiet=quiet, log=log, resume=resume)


def evaluate(ckpt: str | Path, split: str = "test", *, data_dir: str | None = None, device: str = "auto",
             tta: bool | None = None, plots_dir: str | None = None, data: str | Path | None = None) -> dict:
    """What `mnistlab eval --json` prints: accuracy, loss, per-class accuracy, confusion matrix; `data`: your own
    folder, CSV or npz file instead of the run's split (`eval --data`)."""
    from .experiments.evaluate import evaluate_checkpoint
    from .training.choice import find_checkpoint

    _check("ckpt", ckpt, (str, Path), "a checkpoint's path")
    for name, value in (("data_dir", data_dir), ("plots_dir", plots_dir), ("data", data)):
        _check(name, value, (str, Path, type(None)), "a path or None")
    _check("device", device, str, "'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'")
    _check("tta", tta, (bool, type(None)), "True, False or None")
    if not isinstance(split, str) or split not in ("test", "val", "train"):
        raise UserError(f"split: got {split!r}; allowed: test, val, train")
    path, _ = find_checkpoint(str(ckpt), said_as="")  # default, latest and best as `mnistlab eval` reads them
    return evaluate_checkpoint(str(path), split=split, data_dir=None if data_dir is None else str(data_dir),
                               device=device, plots_dir=None if plots_dir is None else str(plots_dir), tta=tta,
                               data=None if data is None else str(data))


def load_model(ckpt: str | Path):
    """The checkpoint's model in eval mode, on the CPU, with `.classes` and `.normalize` (mean, std)
    attached: it takes N x 1 x 28 x 28 normalized images and returns logits."""
    from .reading.predict import load_classifier

    _check("ckpt", ckpt, (str, Path), "a checkpoint's path")
    if Path(ckpt).suffix.lower() == ".onnx":
        raise UserError(f"{ckpt}: an ONNX model is not a torch module; predict() runs it")
    classifier = load_classifier(Path(ckpt))
    model = classifier.model
    model.classes, model.normalize = list(classifier.classes), (classifier.mean, classifier.std)
    return model


def predict(images: Any, ckpt: str | Path | None = None, *, top_k: int = 1, frame: bool = True) -> list[dict]:
    """Read digits: image paths, PIL images or arrays (H x W grey, or H x W x 3/4), one or a list. Each is
    prepared as `mnistlab predict` prepares files (frame=False: already MNIST-style 28x28). One dict per
    image, as `predict --json` gives, without "path" for images that were not files."""
    from .reading.predict import load_classifier, predict_images
    from .training.choice import find_checkpoint

    _check("ckpt", ckpt, (str, Path, type(None)), "a path, 'default', 'latest', 'best' or None")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k: got {top_k!r}; give a whole number from 1 (how many classes to list)")
    _check("frame", frame, bool, "True or False")
    items = images if isinstance(images, (list, tuple)) else [images]
    path, _ = find_checkpoint(None if ckpt is None else str(ckpt))
    return predict_images(items, load_classifier(path), top_k=top_k, frame=frame)


def compare(configs: Iterable[str | Path], overrides: Iterable[str] = (), seeds: Iterable[int] | None = None, *,
            out_dir: str | Path = "checkpoints", reuse: bool = True, sort: str | None = None,
            data_dir: str | Path | None = None, jobs: int = 1, folds: int | None = None, log=print) -> list[dict]:
    """`mnistlab compare`: train (or reuse) each config, once per seed; write comparison.md/.csv and the plots
    into out_dir; return the table's rows as comparison.csv has them (fractions, seconds; a failed row has
    status "failed" and its error). Ctrl-C raises KeyboardInterrupt after the rows so far are written."""
    from .experiments.compare import compare_and_report
    from .experiments.table import row_values

    configs = _paths("configs", configs, "['iter5', 'configs/mlp.yaml']")
    overrides = _strings("overrides", overrides, "['train.epochs=3']")
    if seeds is not None:
        seeds = _whole_numbers("seeds", seeds, "[1, 2, 3]")
    _common(out_dir=out_dir, data_dir=data_dir, jobs=jobs, log=log)
    _check("reuse", reuse, bool, "True or False")
    _check("sort", sort, (str, type(None)), "a column's name, such as 'test_acc', or None")
    _check("folds", folds, (int, type(None)), "a whole number from 2 or None")
    comparison = compare_and_report(configs, overrides=overrides,
                                    seeds=None if seeds is None else ",".join(map(str, seeds)), out_dir=out_dir,
                                    reuse=reuse, sort=sort, data_dir=_text(data_dir), log=log, jobs=jobs, folds=folds)
    if comparison.interrupted:
        raise KeyboardInterrupt
    return [row_values(row) for row in comparison.rows]


def sweep(sweep_file: str | Path, n_trials: int | None = None, *, overrides: Iterable[str] = (),
          study: str | None = None, out_dir: str | Path | None = None, storage: str | None = None, jobs: int = 1,
          data_dir: str | Path | None = None, log=print) -> dict | None:
    """`mnistlab sweep`: run the study's trials (n_trials overrides the file's), write its report; return the
    best trial's row as trials.csv has it, with `study`, `sweep_dir`, `best_yaml` and `test_acc` (the best
    trial scored once on the test set, after the choice); None when no trial completed. Ctrl-C raises
    KeyboardInterrupt (the study keeps every finished trial; the same call continues it)."""
    from .experiments.sweep import sweep_study

    _check("sweep_file", sweep_file, (str, Path), "a sweep file's path")
    _check("n_trials", n_trials, (int, type(None)), "a whole number from 1 or None")
    if n_trials is not None and n_trials < 1:
        raise UserError(f"n_trials: got {n_trials}; give a whole number from 1 or None")
    overrides = _strings("overrides", overrides, "['train.epochs=3']")
    for name, value in (("study", study), ("storage", storage)):
        _check(name, value, (str, type(None)), "text or None")
    _check("out_dir", out_dir, (str, Path, type(None)), "a path or None")
    _common(data_dir=data_dir, jobs=jobs, log=log)
    code, best = sweep_study(str(sweep_file), n_trials=n_trials, jobs=jobs, storage=storage, study=study,
                             out_dir=_text(out_dir), overrides=overrides, data_dir=_text(data_dir), log=log)
    if code >= 128:  # stopped by Ctrl-C or a signal (run_study's codes)
        raise KeyboardInterrupt
    return best


def _common(*, data_dir, jobs, log, out_dir: str | Path = "checkpoints") -> None:
    """The arguments compare and sweep share."""
    _check("out_dir", out_dir, (str, Path, type(None)), "a path")
    _check("data_dir", data_dir, (str, Path, type(None)), "a path or None")
    _check("jobs", jobs, int, "a whole number from 1 (processes training at once)")
    if jobs < 1:
        raise UserError(f"jobs: got {jobs}; give a whole number from 1 (processes training at once)")
    if not callable(log):
        raise UserError(f"log: got {_shown(log)}; give a function that takes the lines it prints, such as print")


def _text(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _paths(name: str, values, example: str) -> list[str]:
    if isinstance(values, (str, bytes, Path)) or not isinstance(values, Iterable):
        raise UserError(f"{name}: got {_shown(values)}; give a list of config files or names, e.g. {example}")
    values = list(values)
    if not values:
        raise UserError(f"{name}: got an empty list; give a list of config files or names, e.g. {example}")
    for value in values:
        _check(name, value, (str, Path), f"config files or names, e.g. {example}")
    return [str(v) for v in values]


def _whole_numbers(name: str, values, example: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise UserError(f"{name}: got {_shown(values)}; give a list of whole numbers, e.g. {example}")
    values = list(values)
    for value in values:
        _check(name, value, int, f"whole numbers, e.g. {example}")
    return values


def _check(name: str, value, types, wanted: str) -> None:
    """A UserError naming the argument unless `value` is one of `types` (True is not a number here)."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                  else (types,))):
        raise UserError(f"{name}: got {_shown(value)}; give {wanted}")


def _strings(name: str, values, example: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise UserError(f"{name}: got {_shown(values)}; give a list of KEY=VALUE strings, e.g. {example}")
    values = list(values)
    for value in values:
        if not isinstance(value, str):
            raise UserError(f"{name}: got {_shown(value)} among them; each is a KEY=VALUE string, e.g. {example}")
    return values


def _shown(value) -> str:
    text = repr(value)
    return f"a value of type {type(value).__name__}" if len(text) > 40 else f"{text} (type {type(value).__name__})"
