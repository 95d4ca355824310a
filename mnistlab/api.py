"""mnistlab from Python (a notebook): the commands as functions, returning what the CLI prints.

    import mnistlab
    summary = mnistlab.train("iter5", ["train.epochs=3"])            # a path, a packaged name or a dict
    report = mnistlab.evaluate(summary["run_dir"] + "/best.pt")      # {"accuracy": ..., "confusion_matrix": ...}
    model = mnistlab.load_model(summary["run_dir"] + "/best.pt")     # torch.nn.Module, eval mode
    mnistlab.predict(["digit.png", pil_image, array])                # [{"prediction": "7", ...}, ...]

Each function raises mnistlab.errors.UserError with the CLI's one-line message for a mistake.
`import mnistlab` stays cheap: this module (and torch) loads on the first call.
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
    from .config import load_config
    from .models import check_model
    from .training.finetune import resolved_config
    from .training.trainer import run_training

    if isinstance(config, dict):
        cfg = load_config(None, list(overrides), raw=config)
    else:
        cfg = load_config(config, list(overrides))
    cfg = resolved_config(cfg)
    check_model(cfg.model.name, cfg.model.kwargs)
    return run_training(cfg, data_dir=data_dir, out_dir=out_dir, quiet=quiet, log=log, resume=resume)


def evaluate(ckpt: str | Path, split: str = "test", *, data_dir: str | None = None, device: str = "auto",
             tta: bool | None = None, plots_dir: str | None = None, data: str | Path | None = None) -> dict:
    """What `mnistlab eval --json` prints: accuracy, loss, per-class accuracy, confusion matrix; `data`: your own
    folder, CSV or npz file instead of the run's split (`eval --data`)."""
    from .experiments.evaluate import evaluate_checkpoint
    from .training.choice import find_checkpoint

    if split not in ("test", "val", "train"):
        raise UserError(f"split: got {split!r}; allowed: test, val, train")
    path, _ = find_checkpoint(str(ckpt), said_as="")  # default, latest and best as `mnistlab eval` reads them
    return evaluate_checkpoint(str(path), split=split, data_dir=data_dir, device=device, plots_dir=plots_dir,
                               tta=tta, data=None if data is None else str(data))


def load_model(ckpt: str | Path):
    """The checkpoint's model in eval mode, on the CPU, with `.classes` and `.normalize` (mean, std)
    attached: it takes N x 1 x 28 x 28 normalized images and returns logits."""
    from .reading.predict import load_classifier

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

    items = images if isinstance(images, (list, tuple)) else [images]
    path, _ = find_checkpoint(None if ckpt is None else str(ckpt))
    return predict_images(items, load_classifier(path), top_k=top_k, frame=frame)
