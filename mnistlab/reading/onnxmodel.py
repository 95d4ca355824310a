"""mnistlab's ONNX files: what their metadata holds, and running them with onnxruntime.

An exported model takes float32 N x 1 x 28 x 28 digits in [0, 1], white ink on black and framed as
MNIST's (what imaging.preprocess makes), and returns N x classes logits. The normalization
(x - mean) / std is the first step of its graph, so a program using the file needs nothing from
mnistlab; the metadata (the model's metadata_props) names the classes and restates the normalization
for people, with the source checkpoint and what the export was checked on.

Running one (predict, draw, serve) needs only onnxruntime; writing one (reading.export) also needs onnx.
Both are imported when used: they are an optional extra, `mnistlab[onnx]`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from ..errors import UserError, one_line

FORMAT = "mnistlab-onnx"
FORMAT_VERSION = 1
INPUT, OUTPUT = "image", "logits"
INSTALL = "pip install 'mnistlab[onnx]'"


def require(module: str, purpose: str):
    """Import an optional library, or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the {module} package: {INSTALL}") from None


def open_session(model: str | bytes, name: str):
    """An onnxruntime session on the CPU for a file or serialized model; a broken one is a UserError."""
    ort = require("onnxruntime", f"running {name} (an ONNX model)")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings would be noise on every start
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for every kind of bad file)
        raise UserError(f"{name}: not a readable ONNX model ({one_line(exc, 200)})") from None


def read_onnx(path: Path) -> tuple[object, list[str], float, float]:
    """The session, classes and (informational) normalization of a file written by `mnistlab export`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}" if not path.exists() else f"{path} is not a file")
    session = open_session(str(path), str(path))
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an ONNX model written by `mnistlab export` (its metadata names no "
                        f"classes); export one with: mnistlab export CHECKPOINT")
    if meta.get("format_version", "").isdigit() and int(meta["format_version"]) > FORMAT_VERSION:
        raise UserError(f"{path}: ONNX format version {meta['format_version']} is newer than this mnistlab "
                        f"understands ({FORMAT_VERSION}); upgrade mnistlab")
    try:
        classes = json.loads(meta["classes"])
        normalize = json.loads(meta["normalize"])
        mean, std = float(normalize["mean"]), float(normalize["std"])
    except (KeyError, TypeError, ValueError, RecursionError):
        raise UserError(f"{path}: damaged mnistlab ONNX model: its metadata is not what mnistlab export "
                        f"writes") from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes)):
        raise UserError(f"{path}: damaged mnistlab ONNX model: its classes are not a list of distinct names")
    problem = graph_problem(session, len(classes))
    if problem:
        raise UserError(f"{path}: does not match its own metadata: {problem}; export it again with "
                        f"mnistlab export CHECKPOINT")
    return session, classes, mean, std


def graph_problem(session, classes: int) -> str | None:
    """What makes the graph unlike what its metadata promises, or None: one input INPUT of float32 N x 1 x 28 x 28
    with a free batch N, and one output OUTPUT of float32 N x classes."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        return f"{len(inputs)} inputs and {len(outputs)} outputs, not one of each"
    (given,), (answer,) = inputs, outputs
    if given.name != INPUT or given.type != "tensor(float)":
        return f"its input is {given.name!r} of {given.type}, not {INPUT!r} of tensor(float)"
    if len(given.shape) != 4 or isinstance(given.shape[0], int) or list(given.shape[1:]) != [1, 28, 28]:
        return f"its input has shape {given.shape}, not N x 1 x 28 x 28 with any N"
    if answer.name != OUTPUT or answer.type != "tensor(float)":
        return f"its output is {answer.name!r} of {answer.type}, not {OUTPUT!r} of tensor(float)"
    if len(answer.shape) != 2 or answer.shape[1] != classes:
        return f"its output has shape {answer.shape}, not N x {classes} (the {classes} classes it names)"
    return None


def onnx_logits(session, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """images: float32 N x 1 x 28 x 28 in [0, 1]. Returns N x classes logits."""
    parts = [session.run([OUTPUT], {INPUT: images[i:i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, session.get_outputs()[0].shape[1]), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
