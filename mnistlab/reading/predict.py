"""`mnistlab predict`: read people's digit images with a checkpoint.

Each file goes through the same preparation as `mnistlab draw` (reading.preprocess: polarity,
ink box, 20x20 fit, centre of mass in 28x28); the model then sees the batch at once.
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
    model: object  # a torch module, or the onnxruntime session of an .onnx file (its graph normalizes)
    classes: list[str]
    mean: float
    std: float
    path: Path
    backend: str = "torch"  # or "onnxruntime"


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


def classify(classifier: Classifier, digits: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """digits: N x 28 x 28 in [0, 1], white ink on black. Returns N x classes probabilities (float32)."""
    images = np.ascontiguousarray(digits, dtype=np.float32)[:, None]
    if classifier.backend == "onnxruntime":
        from .onnxmodel import onnx_logits, softmax

        return softmax(onnx_logits(classifier.model, images, batch_size))
    import torch

    x = (torch.from_numpy(images) - classifier.mean) / classifier.std
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(torch.softmax(classifier.model(x[i:i + batch_size]).float(), dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, len(classifier.classes)), np.float32)


def describe(name: str, probs: np.ndarray, classes: list[str], top_k: int = 1) -> dict:
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


def _prepare(args: tuple[str, bool]):
    from .image import ImageError
    from .preprocess import preprocess

    path, frame = args
    try:
        return preprocess(path, frame=frame), None
    except ImageError as exc:
        return None, str(exc).removeprefix(f"{path}: ")  # the result line names the path already


def prepare_all(paths: list[Path], frame: bool) -> list[tuple[np.ndarray | None, str | None]]:
    jobs = [(str(p), frame) for p in paths]
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_FROM or workers < 2:
        return [_prepare(job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_prepare, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def predict_files(items: list[str], classifier: Classifier, top_k: int = 1, frame: bool = True,
                  save_dir: str | None = None) -> list[dict]:
    paths = expand_inputs(items)
    if not paths:
        raise UserError(f"no image files in {', '.join(items)}")
    prepared = prepare_all(paths, frame)
    good = [i for i, (digit, _) in enumerate(prepared) if digit is not None]
    probs = classify(classifier, np.stack([prepared[i][0] for i in good])) if good else None
    results: list[dict] = [{"path": str(p), "error": prepared[i][1]} for i, p in enumerate(paths)]
    for row, i in enumerate(good):
        results[i] = describe(str(paths[i]), probs[row], classifier.classes, top_k)
    if save_dir:
        save_prepared(paths, prepared, Path(save_dir))
    return results


def save_prepared(paths: list[Path], prepared, out: Path) -> None:
    """Each input's 28x28 as <stem>.png in `out`. A file already there is never written over (it may be
    the user's own image: `--save-preprocessed` into the input folder): the name gets _1, _2, ..."""
    import io

    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for path, (digit, _) in zip(paths, prepared):
        if digit is None:
            continue
        buffer = io.BytesIO()
        Image.fromarray((np.clip(digit, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
        write_new_file(out, path.stem, ".png", buffer.getvalue())


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """`data` under the first free name stem, stem_1, stem_2, ...; O_EXCL makes "free" exact."""
    for n in range(100_000):
        target = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}")
        try:
            f = open(target, "xb")  # noqa: SIM115
        except FileExistsError:
            continue
        try:
            with f:
                f.write(data)
        except BaseException:  # a full disk: no half-written file stays behind
            target.unlink(missing_ok=True)
            raise
        return target
    raise UserError(f"--save-preprocessed: no free name for {stem}{suffix} in {folder}")


def format_result(result: dict) -> str:
    if "error" in result:
        return f"{result['path']}: error: {result['error']}"
    ranked = ", ".join(f"{t['label']} ({t['probability']:.1%})" for t in result["top_k"])
    return f"{result['path']}: {ranked}"
