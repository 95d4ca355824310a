"""`mnistlab predict`: read people's digit images with a checkpoint.

Each file goes through the same preparation as `mnistlab draw` (imaging.preprocess: the sheet in a
photo of one, polarity, ink box, 20x20 fit, centre of mass in 28x28), or with `multi` each digit of a
row written on it; the model then sees all the digits at once.
A file that cannot be read becomes an error line of its own; the others are still predicted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import class_folder, create_file, folder_name, write_new_file
from ..imaging.prepare import prepare_all
from ..training.choice import SHIPPED  # noqa: F401  (the shipped model; training.choice says which one --ckpt names)


@dataclass
class Classifier:
    model: object  # a torch module, or the onnxruntime session of an .onnx file (its graph normalizes)
    classes: list[str]
    mean: float
    std: float
    path: Path
    backend: str = "torch"  # or "onnxruntime"


def load_classifier(path: Path) -> Classifier:
    """A checkpoint (.pt), or a model written by `mnistlab export` (.onnx, run with onnxruntime)."""
    if Path(path).suffix.lower() == ".onnx":
        from .onnxmodel import read_onnx

        return Classifier(*read_onnx(path), Path(path), backend="onnxruntime")
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)  # its entries' types and ranges are checked there
    input_size, classes = list(ckpt["input_size"]), list(ckpt["classes"])
    mean, std = float(ckpt["normalize"]["mean"]), float(ckpt["normalize"]["std"])
    if input_size != [1, 28, 28]:
        raise UserError(f"{path}: expects {input_size} inputs; predict prepares 1x28x28 digits")
    return Classifier(model_from_checkpoint(ckpt, path), classes, mean, std, Path(path))


def classify(classifier: Classifier, digits: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """digits: N x 28 x 28 in [0, 1], white ink on black. Returns N x classes probabilities (float32).

    Small batches in channels-last layout: a batch's activations then stay in the CPU's caches, and
    oneDNN's convolutions run fastest on that layout (bench/predict_speed.py prices the model's share).
    """
    images = np.ascontiguousarray(digits, dtype=np.float32)[:, None]
    if classifier.backend == "onnxruntime":
        from .onnxmodel import onnx_logits, softmax

        return softmax(onnx_logits(classifier.model, images, batch_size))
    import torch

    x = (torch.from_numpy(images) - classifier.mean) / classifier.std
    model = classifier.model.to(memory_format=torch.channels_last)
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(idle_threads(threads))
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                batch = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
                out.append(torch.softmax(model(batch).float(), dim=1))
    finally:
        torch.set_num_threads(threads)  # the caller's setting, as it was
    return torch.cat(out).numpy() if out else np.zeros((0, len(classifier.classes)), np.float32)


def idle_threads(threads: int) -> int:
    """At most `threads`, and no more than the cores that are idle now (by the last minute's load average).

    Every convolution ends in a barrier that waits for its slowest thread: on a
    busy machine a thread the scheduler has put aside holds up the others, and a
    small model then runs several times slower on all cores than on one
    (bench/predict_speed.py shows it on a loaded 2-core VM). On an idle machine
    all of them still serve.
    """
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        idle = cores - os.getloadavg()[0]
    except OSError:  # no load average on this system
        return threads
    return max(1, min(threads, math.floor(idle + 0.5)))


def describe(name: str | None, probs: np.ndarray, classes: list[str], top_k: int = 1) -> dict:
    """One image's result as `predict --json` prints it: the likeliest class first."""
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [{"label": classes[j], "probability": float(probs[j])} for j in order]
    return {"path": name, "prediction": top[0]["label"], "confidence": top[0]["probability"], "top_k": top}


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


def predict_files(items: list[str], classifier: Classifier, top_k: int = 1, frame: bool = True,
                  save_dir: str | None = None, multi: bool = False, jobs: int | None = None) -> list[dict]:
    """One result per file: its prediction, or (multi) the list of its digits' predictions, or its error.
    `jobs`: images prepared at once (prepare_all)."""
    paths = expand_inputs(items)
    if not paths:
        raise UserError(f"no image files in {', '.join(items)}")
    prepared = prepare_all(paths, frame, multi, jobs)
    digits = [digit for found, _ in prepared for digit in found or []]
    probs = classify(classifier, np.stack(digits)) if digits else None
    k = min(top_k, len(classifier.classes))
    results: list[dict] = []
    row = 0
    for path, (found, error) in zip(paths, prepared):
        if found is None:
            results.append({"path": str(path), "error": error})
            continue
        read = [describe(None, probs[row + n], classifier.classes, k) for n in range(len(found))]
        read = [{key: value for key, value in r.items() if key != "path"} for r in read]
        row += len(found)
        results.append({"path": str(path), "digits": read} if multi else {"path": str(path), **read[0]})
    if save_dir:
        save_prepared(paths, prepared, Path(save_dir))
    return results


def is_table(item) -> bool:
    """A Kaggle digit-recognizer CSV file (`predict test.csv`): its rows are the images."""
    return Path(item).suffix.lower() == ".csv" and not Path(item).is_dir()


def predict_table(path: Path, classifier: Classifier, top_k: int = 1) -> list[dict]:
    """Each row of a Kaggle-style CSV file (labelled or not) as an image; the rows are already MNIST-like
    28x28s, so they are never framed. Results are named `FILE row N`, N from 1 (Kaggle's ImageId)."""
    from ..data.userdata import read_csv

    x = read_csv(Path(path), labelled=False)[0]
    probs = classify(classifier, x.astype(np.float32) / 255)
    k = min(top_k, len(classifier.classes))
    return [describe(f"{path} row {n}", p, classifier.classes, k) for n, p in enumerate(probs, 1)]


def write_submission(path: Path, results: list[dict]) -> Path:
    """Kaggle's digit-recognizer submission: `ImageId,Label`, one row per image, ImageId from 1; never over an
    existing file."""
    rows = ["ImageId,Label", *(f"{n},{r['prediction']}" for n, r in enumerate(results, 1))]
    return create_file(path, ("\n".join(rows) + "\n").encode(), "--submission")


def predict_images(items: list, classifier: Classifier, top_k: int = 1, frame: bool = True) -> list[dict]:
    """predict_files for the Python API: each item a path, a PIL image or an array (grey H x W, or
    H x W x 3/4; uint8, or floats in [0, 1]). An item that is not an image becomes a UserError."""
    from PIL import Image

    from ..imaging.image import ImageError
    from ..imaging.preprocess import preprocess

    digits, names = [], []
    for n, item in enumerate(items):
        if isinstance(item, (str, Path)):
            digits.append(preprocess(item, frame=frame))
            names.append(str(item))
            continue
        if isinstance(item, np.ndarray):
            item = Image.fromarray(array_pixels(item, f"images[{n}]"))
        if not isinstance(item, Image.Image):
            raise UserError(f"images[{n}]: got a {type(item).__name__}; give a path, a PIL image or a numpy array")
        try:
            digits.append(preprocess(item, frame=frame))
        except ImageError as exc:
            raise ImageError(f"images[{n}]: {exc}") from None
        names.append(None)
    probs = classify(classifier, np.stack(digits)) if digits else []
    results = [describe(name, row, classifier.classes, top_k) for name, row in zip(names, probs)]
    return [{k: v for k, v in r.items() if not (k == "path" and v is None)} for r in results]


def array_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """An array as the uint8 pixels of a picture: H x W grey, or H x W x 1/3/4; uint8, other whole numbers in
    0-255, or finite floats in [0, 1]. Anything else is one UserError naming it, never a silent clip (a float
    picture in 0-255 clipped to [0, 1] was read as blank paper)."""
    from ..imaging.image import MAX_PIXELS

    shape = " x ".join(map(str, array.shape)) or "a scalar"
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        batch = "; several pictures: a list of arrays" if array.ndim in (3, 4) else ""
        raise UserError(f"{name}: an array of shape {shape}; give H x W (grey) or H x W x 3/4 (RGB, RGBA){batch}")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise UserError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels, over the {MAX_PIXELS:,} a picture may have")
    array = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"{name}: whole numbers from {array.min()} to {array.max()}; give pixels in 0-255")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise UserError(f"{name}: floats must be finite and in [0, 1] (pixels in 0-255 as floats: divide "
                            f"by 255, or give uint8)")
        return (array * 255).round().astype(np.uint8)
    raise UserError(f"{name}: an array of {array.dtype}; give uint8, whole numbers in 0-255 or floats in [0, 1]")


def save_prepared(paths: list[Path], prepared, out: Path) -> None:
    """Each 28x28 the model saw as `<stem>.png` (`<stem>_1.png`, `<stem>_2.png`, ... for a row's digits).
    A file already there is never written over (it may be the user's own image: `--save-preprocessed`
    into the input folder): the name then gets _1, _2, ..."""
    import io

    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for path, (found, _) in zip(paths, prepared):
        for n, digit in enumerate(found or []):
            stem = path.stem if len(found) == 1 else f"{path.stem}_{n + 1}"
            buffer = io.BytesIO()
            Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
            write_new_file(out, stem, ".png", buffer.getvalue())


def sort_into(results: list[dict], out: str | Path) -> dict[str, int]:
    """Each file that was read COPIED (the source untouched) to `out/<folder_name(prediction)>/<its name>`, or
    `<stem>-1<suffix>`, `<stem>-2<suffix>`, ... when that name is taken (never over a file): the user then moves
    the few wrong ones and fine-tunes on `out`. A file already in its class's folder (a sorted folder read
    again) stays as it is; files that could not be read are not copied. Each result copied gets `sorted_into`,
    the copy's path. Returns the counts; a copy that fails (permission, full disk) stops it with one line."""
    counts, out = {"copied": 0, "renamed": 0, "in_place": 0, "unread": 0}, Path(out)
    for result in results:
        if "error" in result:
            counts["unread"] += 1
            continue
        source = Path(result["path"])
        folder = out / folder_name(result["prediction"])
        if source.parent.resolve() == folder.resolve():
            counts["in_place"] += 1
            result["sorted_into"] = str(source)
            continue
        try:
            target = write_new_file(class_folder(out, result["prediction"]), source.stem, source.suffix,
                                    source.read_bytes(), sep="-")
        except OSError as exc:
            raise UserError(f"--sort-into: cannot copy {source} into {folder}: {exc.strerror or exc} "
                            f"({counts['copied']} file(s) copied before)", exit_code=1) from None
        result["sorted_into"] = str(target)
        counts["copied"] += 1
        counts["renamed"] += target.name != source.name
    return counts


def sorted_summary(counts: dict[str, int], out: str | Path) -> str:
    """The last line of `predict --sort-into`: how many files were copied where, and what was not."""
    line = f"copied {counts['copied']} file(s) into {out}{os.sep}<prediction>{os.sep}"
    if counts["renamed"]:
        line += f", {counts['renamed']} of them under a new name (-1, -2...: theirs was taken)"
    if counts["in_place"]:
        line += f"; {counts['in_place']} already in their class's folder"
    if counts["unread"]:
        line += f"; {counts['unread']} not copied (could not be read: listed above)"
    return line


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
