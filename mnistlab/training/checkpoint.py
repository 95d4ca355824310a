"""Checkpoint files and run directories.

A checkpoint describes itself (model name and options, classes, normalization,
input size, the resolved config, metrics, versions) and holds only tensors and
plain Python values, so it always loads with `torch.load(weights_only=True)`:
a file carrying pickled objects is refused and its payload never runs.
Every file is written atomically: a kill at any moment leaves the old one intact.
"""

from __future__ import annotations

import io
import os
import pickle
import platform
import zipfile
from datetime import datetime
from pathlib import Path

import torch

from .._version import __version__
from ..errors import UserError
from ..files import atomic_write_bytes

FORMAT = "mnistlab-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    # the installed distribution's version: importing torchvision would slow every command's start
    return {"mnistlab": __version__, "torch": str(torch.__version__), "torchvision": _installed_version("torchvision"),
            "python": platform.python_version()}


def _installed_version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def save_checkpoint(payload: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def make_run_dir(out_root: Path, name: str) -> Path:
    """checkpoints/<name>/<timestamp>/; mkdir is atomic, so two runs started at once never share one."""
    parent = Path(out_root) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out-dir: cannot create {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out-dir: {parent} is not writable")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        run_dir = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"--out-dir: cannot create {run_dir}: {exc.strerror}") from None
    raise UserError(f"--out-dir: could not find a free run directory under {parent}")


def model_payload(model, *, model_name: str, model_kwargs: dict, classes, mean: float, std: float,
                  input_size, config: dict, metrics: dict, epoch: int) -> dict:
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "kwargs": dict(model_kwargs), "num_classes": len(classes),
                  "in_channels": int(input_size[0])},
        "state_dict": state,
        "classes": list(classes),
        "normalize": {"mean": float(mean), "std": float(std)},
        "input_size": list(input_size),
        "config": config,
        "metrics": metrics,
        "epoch": int(epoch),
        "versions": versions(),
    }


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def load_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint; every way it can be wrong is one clear UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a checkpoint file such as {path / 'best.pt'}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise UserError(f"{path}: refused: the file holds pickled Python objects, which could run code on "
                            f"load; mnistlab checkpoints hold only tensors and plain values") from None
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason[:160]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an mnistlab checkpoint (a bare state_dict or another tool's file?)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {version} is newer than this mnistlab understands "
                        f"({FORMAT_VERSION}); upgrade mnistlab")
    for key in ("model", "state_dict", "classes", "normalize", "input_size"):
        if key not in ckpt:
            raise UserError(f"{path}: damaged checkpoint: the {key!r} entry is missing")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint"):
    """Rebuild the model the checkpoint describes and load its weights, in eval mode."""
    from ..models import create_model

    spec = ckpt["model"]
    try:
        model = create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                             **spec.get("kwargs", {}))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        hint = detail[1].strip() if len(detail) > 1 else detail[0] if detail else ""
        raise UserError(f"{path}: its weights do not fit model {spec['name']!r} with {spec['num_classes']} "
                        f"classes ({hint[:160]})") from None
    return model.eval()
