"""mnistlab from Python (a notebook): the commands as functions, returning what the CLI prints.

    import mnistlab
    summary = mnistlab.train("iter5", ["train.epochs=3"])            # a path, a packaged name or a dict
    report = mnistlab.evaluate(summary["run_dir"] + "/best.pt")      # {"accuracy": ..., "confusion_matrix": ...}
    model = mnistlab.load_model(summary["run_dir"] + "/best.pt")     # torch.nn.Module, eval mode
    mnistlab.predict(["digit.png", pil_image, array])                # [{"prediction": "7", ...}, ...]

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
