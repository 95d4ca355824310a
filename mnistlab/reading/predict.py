"""`mnistlab predict`: read people's digit images with a checkpoint.

Each file goes through the same preparation as `mnistlab draw` (reading.preprocess: the sheet in a
photo of one, polarity, ink box, 20x20 fit, centre of mass in 28x28), or with `multi` each digit of a
row written on it; the model then sees all the digits at once.
A file that cannot be read becomes an error line of its own; the others are still predicted.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

SHIPPED = Path(__file__).resolve().parent / "weights" / "default.pt"
PARALLEL_FROM = 256  # below this many files a process pool costs more than it saves


@dataclass
class Classifier:
    model: object
    classes: list[str]
    mean: float
    std: float
    path: Path


def find_checkpoint(ckpt: str | None, search_root: Path = Path("checkpoints")) -> tuple[Path, str]:
    """--ckpt > the newest best.pt under ./checkpoints/ > the model shipped inside the package."""
    if ckpt:
        return Path(ckpt), "given with --ckpt"
    local = [p for p in search_root.glob("**/best.pt") if p.is_file()] if search_root.is_dir() else []
    if local:
        return max(local, key=lambda p: p.stat().st_mtime), "the newest best.pt under ./checkpoints"
    if SHIPPED.is_file():
        return SHIPPED, "the default model shipped with mnistlab"
    raise UserError("no checkpoint: give --ckpt PATH, or train one (mnistlab train configs/default.yaml)")


def load_classifier(path: Path) -> Classifier:
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    try:
        input_size, classes = list(ckpt["input_size"]), [str(c) for c in ckpt["classes"]]
        mean, std = float(ckpt["normalize"]["mean"]), float(ckpt["normalize"]["std"])
        spec = ckpt["model"]
        spec = {**spec, "num_classes": int(spec["num_classes"]), "in_channels": int(spec["in_channels"]),
                "kwargs": dict(spec.get("kwargs", {})), "name": str(spec["name"])}
        if len(classes) != spec["num_classes"] or not std > 0:
            raise ValueError
    except (KeyError, TypeError, ValueError):  # a weights-only file with the right tag but nonsense entries
        raise UserError(f"{path}: damaged checkpoint: its model, classes, normalize or input_size entry "
                        f"is not what mnistlab writes") from None
    if input_size != [1, 28, 28]:
        raise UserError(f"{path}: expects {input_size} inputs; predict prepares 1x28x28 digits")
    return Classifier(model_from_checkpoint({**ckpt, "model": spec}, path), classes, mean, std, Path(path))


def classify(classifier: Classifier, digits: np.ndarray, batch_size: int = 128):
    """digits: N x 28 x 28 in [0, 1], white ink on black. Returns N x classes probabilities.

    Small batches in channels-last layout: a batch's activations then stay in the CPU's caches, and
    oneDNN's convolutions run fastest on that layout (bench/predict_speed.py prices the model's share).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(digits, dtype=np.float32)).unsqueeze(1)
    x = (x - classifier.mean) / classifier.std
    model = classifier.model.to(memory_format=torch.channels_last)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(model(batch).float(), dim=1))
    return torch.cat(out) if out else torch.zeros(0, len(classifier.classes))


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; a directory's files (not hidden, not recursive) in sorted order."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            paths.append(path)
    return paths


def _prepare(args: tuple[str, bool, bool]):
    """One file's 28x28 digits (one, or each of a row with `multi`), or the reason it has none."""
    from .image import ImageError
    from .preprocess import preprocess, preprocess_digits

    path, frame, multi = args
    try:
        return (preprocess_digits(path) if multi else [preprocess(path, frame=frame)]), None
    except ImageError as exc:
        return None, str(exc).removeprefix(f"{path}: ")  # the result line names the path already


def prepare_all(paths: list[Path], frame: bool, multi: bool = False) -> list[tuple[list | None, str | None]]:
    jobs = [(str(p), frame, multi) for p in paths]
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_FROM or workers < 2:
        return [_prepare(job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_prepare, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def predict_files(items: list[str], classifier: Classifier, top_k: int = 1, frame: bool = True,
                  save_dir: str | None = None, multi: bool = False) -> list[dict]:
    """One result per file: its prediction, or (multi) the list of its digits' predictions, or its error."""
    paths = expand_inputs(items)
    if not paths:
        raise UserError(f"no image files in {', '.join(items)}")
    prepared = prepare_all(paths, frame, multi)
    digits = [digit for found, _ in prepared for digit in found or []]
    probs = classify(classifier, np.stack(digits)) if digits else None
    k = min(top_k, len(classifier.classes))
    results: list[dict] = []
    row = 0
    for path, (found, error) in zip(paths, prepared):
        if found is None:
            results.append({"path": str(path), "error": error})
            continue
        read = [_ranked(classifier, probs[row + n], k) for n in range(len(found))]
        row += len(found)
        results.append({"path": str(path), "digits": read} if multi else {"path": str(path), **read[0]})
    if save_dir:
        save_prepared(paths, prepared, Path(save_dir))
    return results


def _ranked(classifier: Classifier, probs, k: int) -> dict:
    values, indices = probs.topk(k)
    top = [{"label": classifier.classes[j], "probability": float(v)} for v, j in zip(values, indices)]
    return {"prediction": top[0]["label"], "confidence": top[0]["probability"], "top_k": top}


def save_prepared(paths: list[Path], prepared, out: Path) -> None:
    """Each 28x28 the model saw as `<stem>.png`, or `<stem>_1.png`, `<stem>_2.png`, ... for a row's digits."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for path, (found, _) in zip(paths, prepared):
        for n, digit in enumerate(found or []):
            stem = path.stem if len(found) == 1 else f"{path.stem}_{n + 1}"
            name, clash = f"{stem}.png", 1
            while name in used:
                name, clash = f"{stem}_{clash}.png", clash + 1
            used.add(name)
            Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8), mode="L").save(out / name)


def format_result(result: dict) -> str:
    """`path: 7 (98.4%)`, with --top-k `path: 7 (98.4%), 1 (0.9%)`; a row `path: 4 1 7 (98.1%, 99.0%, 97.5%)`,
    with --top-k its digits' rankings apart: `path: 4 (98.1%), 9 (1.2%) | 1 (99.0%), 7 (0.6%)`."""
    if "error" in result:
        return f"{result['path']}: error: {result['error']}"
    if "digits" not in result:
        return f"{result['path']}: {_ranking(result)}"
    digits = result["digits"]
    if all(len(d["top_k"]) == 1 for d in digits):
        labels = " ".join(d["prediction"] for d in digits)
        confidences = ", ".join(f"{d['confidence']:.1%}" for d in digits)
        return f"{result['path']}: {labels} ({confidences})"
    return f"{result['path']}: {' | '.join(_ranking(d) for d in digits)}"


def _ranking(read: dict) -> str:
    return ", ".join(f"{t['label']} ({t['probability']:.1%})" for t in read["top_k"])
