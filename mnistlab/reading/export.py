"""`mnistlab export`: a checkpoint as an ONNX model, which runs without mnistlab or PyTorch.

The graph takes float32 N x 1 x 28 x 28 digits in [0, 1] (any N) and begins with the checkpoint's
normalization, so its users cannot forget it; the metadata names the classes (reading.onnxmodel).

The exporter is torch's TorchScript one (`dynamo=False`). Since torch 2.9 the default is the
torch.export-based exporter, which needs the onnxscript package as well as onnx; the TorchScript one
needs only torch, works offline, and suits mnistlab's models (feed-forward conv nets without
data-dependent control flow), with `dynamic_axes` for the free batch size. Torch calls it deprecated;
should a future torch drop it, the export fails with a line saying so.

Nothing is written until onnxruntime has run the model on test digits and agreed with PyTorch:
the checkpoint's own dataset's test images when they are on disk, else random images, and the
report says which.

Nothing is written over: an existing output is refused unless `overwrite` (--overwrite) is given, and
even then only an ONNX model is replaced, never the checkpoint being exported nor any other checkpoint.
The file names its source by file name only: no path of the exporting machine goes into it.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import UserError, one_line
from .onnxmodel import FORMAT, FORMAT_VERSION, INPUT, OUTPUT, onnx_logits, open_session, require

OPSET = 17  # onnxruntime has run opset 17 since 1.13 (2022); newer opsets add nothing these models use
# Logits may differ by float32 rounding (another convolution algorithm, BatchNorm folded): far below this.
TOLERANCE = 1e-4  # relative to the largest logit, at least 1
MAX_CHECK = 10_000  # --check: MNIST's whole test set; random images beyond it would only cost memory and time


def export_onnx(ckpt_path: str, out: str | None = None, data_dir: str | None = None, check: int = 1000,
                overwrite: bool = False) -> dict:
    if isinstance(check, bool) or not isinstance(check, int) or not 1 <= check <= MAX_CHECK:
        raise UserError(f"--check: give 1 to {MAX_CHECK:,} test images, got {check!r}")
    require("onnx", "mnistlab export")
    require("onnxruntime", "mnistlab export")
    from ..training.checkpoint import load_checkpoint
    from .predict import load_classifier

    started = time.perf_counter()
    source = Path(ckpt_path)
    if source.suffix.lower() == ".onnx":
        raise UserError(f"{source} is an ONNX model already; export takes a checkpoint (.pt)")
    target = output_path(source, out, overwrite)
    # Read twice, a second or two at most: load_classifier checks the entries and builds the model as predict
    # does; the dict gives the model's name, config and metrics for the metadata.
    classifier = load_classifier(source)
    ckpt = load_checkpoint(source)
    images, checked_on = check_images(ckpt, data_dir, check)
    graph = _to_onnx(classifier)
    session = open_session(graph, f"the export of {source}")
    diff, agree, limit = compare(classifier, session, images)
    summary = (f"checked with onnxruntime against PyTorch on {checked_on}: max |logit difference| {diff:.1e}, "
               f"same prediction for {agree:,} of {len(images):,}")
    if not diff <= limit:
        raise UserError(f"{source}: the ONNX model disagrees with PyTorch (max |logit difference| {diff:.2e}, "
                        f"allowed {limit:.1e}; same prediction for {agree:,} of {len(images):,}); nothing written",
                        exit_code=1)
    data = _with_metadata(graph, ckpt, classifier, source, summary)
    write_output(target, data, overwrite)
    return {"checkpoint": str(source), "output": str(target), "bytes": len(data), "opset": OPSET,
            "classes": classifier.classes, "checked_on": checked_on, "n": len(images), "max_abs_logit_diff": diff,
            "same_prediction": agree, "summary": summary, "seconds": time.perf_counter() - started}


def output_path(source: Path, out: str | None, overwrite: bool = False) -> Path:
    """-o, else the checkpoint's name with .onnx beside it; its folder must exist and be writable, and an existing
    file there is refused (with `overwrite`, replaced only when it is an ONNX model and not the source)."""
    target = Path(out) if out else source.with_suffix(".onnx")
    if target.is_dir():
        raise UserError(f"-o: {target} is a directory; give a file name such as {target / 'model.onnx'}")
    folder = target.parent
    if not folder.is_dir():
        raise UserError(f"-o: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"-o: {folder} is not writable")
    if target.exists() or target.is_symlink():
        refuse_existing(source, target, overwrite)
    return target


def refuse_existing(source: Path, target: Path, overwrite: bool) -> None:
    if target.exists() and source.exists() and os.path.samefile(source, target):
        raise UserError(f"-o: {target} is the checkpoint being exported; give another file name")
    if not looks_like_onnx(target):
        raise UserError(f"-o: {target} exists and is not an ONNX model (a checkpoint?); mnistlab export never "
                        f"writes over it: give another file name")
    if not overwrite:
        raise UserError(f"-o: {target} exists; give another file name, or --overwrite to replace it")


def looks_like_onnx(path: Path) -> bool:
    """An ONNX model (a protobuf ModelProto opens with its ir_version: field 1, a varint: byte 0x08), not a
    checkpoint (a zip archive, or a pickle) nor anything else."""
    if not path.is_file():  # a FIFO would keep open() waiting
        return False
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x08"
    except OSError:
        return False


def write_output(target: Path, data: bytes, overwrite: bool) -> None:
    from ..files import atomic_write_bytes, write_new_bytes

    try:
        if overwrite and target.exists():
            atomic_write_bytes(target, data)  # checked to be an ONNX model, not the source (output_path)
        else:
            write_new_bytes(target, data)
    except FileExistsError:
        raise UserError(f"-o: {target} appeared while the model was exported; nothing written over it") from None
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None


def check_images(ckpt: dict, data_dir: str | None, count: int) -> tuple[np.ndarray, str]:
    """N x 1 x 28 x 28 float32 in [0, 1] to compare the two runtimes on, and what they are, in words."""
    from ..data.datasets import DATASETS, load_split, resolve_root

    data = (ckpt.get("config") or {}).get("data") or {}
    spec = DATASETS.get(data.get("dataset", "mnist"))
    if spec is not None:
        try:
            x, _ = load_split(spec, resolve_root(data_dir, data.get("root")), train=False, download=False)
            total, x = len(x), x[:count].numpy().astype(np.float32)[:, None] / 255
            which = f"all {total:,}" if len(x) == total else f"the first {len(x):,} of the {total:,}"
            return x, f"{which} {spec.name} test images"
        except UserError:
            pass
    where = f"{spec.name} test images not found" if spec else "the checkpoint names no known dataset"
    x = np.random.default_rng(0).random((count, 1, 28, 28), dtype=np.float32)
    return x, (f"{count:,} random 28x28 images, not digits ({where}; --data-dir or $MNISTLAB_DATA_DIR "
               f"pointing at them checks on real ones)")


def _to_onnx(classifier) -> bytes:
    import torch

    class Normalized(torch.nn.Module):  # (x - mean) / std as the graph's first step
        def __init__(self, model, mean: float, std: float):
            super().__init__()
            self.model, self.mean, self.std = model, mean, std

        def forward(self, x):
            return self.model((x - self.mean) / self.std)

    module = Normalized(classifier.model, classifier.mean, classifier.std).eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice; the module docstring says why
            torch.onnx.export(module, (torch.zeros(1, 1, 28, 28),), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    except Exception as exc:  # noqa: BLE001  (an operator ONNX lacks, or an exporter this torch no longer has)
        raise UserError(f"{classifier.path}: torch could not export this model to ONNX "
                        f"(torch {torch.__version__}: {one_line(exc, 200)})") from None
    return buffer.getvalue()


def _torch_logits(classifier, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        x = (torch.from_numpy(images) - classifier.mean) / classifier.std
        return torch.cat([classifier.model(x[i:i + 1024]).float() for i in range(0, len(x), 1024)]).numpy()


def compare(classifier, session, images: np.ndarray) -> tuple[float, int, float]:
    """Max |logit difference|, the number of equal predictions, and the difference allowed.

    A batch of one is run too: the batch dimension must be free, not fixed at the export's size.
    """
    expected, got = _torch_logits(classifier, images), onnx_logits(session, images)
    single = onnx_logits(session, images[:1])
    diff = float(max(np.abs(expected - got).max(), np.abs(expected[:1] - single).max()))
    limit = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    return diff, int((expected.argmax(1) == got.argmax(1)).sum()), limit


def _with_metadata(graph: bytes, ckpt: dict, classifier, source: Path, checked: str) -> bytes:
    import onnx

    model = onnx.load_from_string(graph)
    model.producer_name, model.producer_version = "mnistlab", __version__
    model.doc_string = (f"{ckpt['model']['name']} from {source.name}: input {INPUT} float32 N x 1 x 28 x 28 in "
                        f"[0, 1], white ink on black, framed as MNIST's; output {OUTPUT} N x {len(classifier.classes)}"
                        f" (softmax gives probabilities); the normalization is inside the graph")
    # numbers only: a text could carry a path of this machine
    metrics = {k: v for k, v in (ckpt.get("metrics") or {}).items() if isinstance(v, (int, float))}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "classes": json.dumps(classifier.classes),
            "normalize": json.dumps({"mean": classifier.mean, "std": classifier.std, "inside_graph": True}),
            "input": f"{INPUT}: float32 N x 1 x 28 x 28, values in [0, 1], white ink on black",
            "output": f"{OUTPUT}: float32 N x {len(classifier.classes)}, in the order of classes",
            "model": json.dumps({"name": ckpt["model"]["name"], "kwargs": ckpt["model"].get("kwargs", {})}),
            "source": source.name,  # the file name only: no path of the exporting machine
            "metrics": json.dumps(metrics), "checked": checked,
            "mnistlab_version": __version__}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()
