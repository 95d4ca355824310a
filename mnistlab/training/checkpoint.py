"""Checkpoint files and run directories.

A checkpoint describes itself (model name and options, classes, normalization,
input size, the resolved config, metrics, versions) and holds only tensors and
plain Python values, so it always loads with `torch.load(weights_only=True)`:
a file carrying pickled objects is refused and its payload never runs.
Every file is written atomically: a kill at any moment leaves the old one intact.
"""

from __future__ import annotations

import io
import math
import pickle
import platform
import re
import warnings
import zipfile
from datetime import datetime
from pathlib import Path

import torch

from .._version import __version__
from ..errors import UserError, one_line
from ..files import atomic_write_bytes, make_dir
from ..runfolder import BEST

FORMAT = "mnistlab-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """What a run's figures depend on besides its config: the same seed and thread count repeat a run
    exactly only on the same CPU kind and library versions (another CPU or torch build rounds differently)."""
    # the installed distribution's version: importing torchvision would slow every command's start
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return {"mnistlab": __version__, "torch": str(torch.__version__), "torchvision": _installed_version("torchvision"),
            "python": platform.python_version(), "cpu_capability": str(capability),
            "threads": str(torch.get_num_threads())}


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
    parent = make_dir(Path(out_root) / name, "--out-dir")
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
        raise UserError(f"{path} is a directory; give a checkpoint file such as {path / BEST}")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a pipe or a device?); give a checkpoint file")
    if path.suffix.lower() == ".onnx":  # not "corrupt": a model in another format, which only some commands run
        raise UserError(f"{path} is an ONNX model (mnistlab export writes them), not a checkpoint: give the .pt it "
                        f"was exported from; predict, draw and serve run an .onnx file (--ckpt {path.name})")
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an mnistlab checkpoint (a bare state_dict or another tool's file?)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: damaged checkpoint: its format version is {one_line(repr(version), 40)}, "
                        f"not a whole number from 1")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {version} is newer than this mnistlab understands "
                        f"({FORMAT_VERSION}); upgrade mnistlab")
    problem = entry_problem(ckpt)
    if problem:
        raise UserError(f"{path}: damaged checkpoint: {problem}")
    return ckpt


def _torch_load(path: Path):
    """torch.load with weights_only=True; a refused pickle, an unreadable file and a damaged one are
    told apart (torch's wording of a refusal varies between versions: any weights-only failure is one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal below says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except pickle.UnpicklingError as exc:
        if holds_python_objects(path, str(exc)):
            raise UserError(f"{path}: refused: the file holds pickled Python objects, which could run code on "
                            f"load; mnistlab checkpoints hold only tensors and plain values") from None
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?)") from None
    except OSError as exc:
        if exc.errno is not None and exc.filename is not None:  # the file system's answer, not the content's
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): {one_line(exc, 160)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError,
            AttributeError, MemoryError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): {one_line(exc, 160)}") from None


def holds_python_objects(path: Path, message: str) -> bool:
    """Did the weights-only unpickler refuse objects (rather than choke on a damaged file)? torch words
    the refusal differently from version to version: its words about globals decide for a torch.save
    zip, and a bare pickle stream (never an mnistlab checkpoint) is refused whatever it says."""
    if re.search(r"unsupported global|can still be loaded|blocked", message, flags=re.IGNORECASE):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head[:1] == b"\x80"  # pickle's PROTO opcode


def entry_problem(ckpt: dict) -> str | None:
    """What is wrong with the entries mnistlab writes (their types and ranges), or None."""
    model, normalize, size = ckpt.get("model"), ckpt.get("normalize"), ckpt.get("input_size")
    for key in ("model", "state_dict", "classes", "normalize", "input_size"):
        if key not in ckpt:
            return f"the {key!r} entry is missing"
    checks = [
        (isinstance(model, dict) and isinstance(model.get("name"), str) and _count(model.get("num_classes"))
         and _count(model.get("in_channels")) and isinstance(model.get("kwargs", {}), dict)
         and all(isinstance(k, str) for k in model.get("kwargs", {})), "model"),
        (isinstance(ckpt["state_dict"], dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in ckpt["state_dict"].items()), "state_dict"),
        (isinstance(ckpt["classes"], (list, tuple)) and all(isinstance(c, str) for c in ckpt["classes"])
         and isinstance(model, dict) and len(ckpt["classes"]) == model.get("num_classes"), "classes"),
        (isinstance(normalize, dict) and _finite(normalize.get("mean")) and _finite(normalize.get("std"))
         and normalize["std"] > 0, "normalize"),
        (isinstance(size, (list, tuple)) and len(size) == 3 and all(_count(n) for n in size), "input_size"),
        (isinstance(ckpt.get("config", {}), dict), "config"),
        (isinstance(ckpt.get("metrics", {}), dict), "metrics"),
    ]
    bad = [key for ok, key in checks if not ok]
    return f"its {bad[0]!r} entry is not what mnistlab writes" if bad else None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
