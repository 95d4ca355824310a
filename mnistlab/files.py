"""Writing files so that a kill at any moment leaves either the old file or the new one, never half.

Every file mnistlab writes into a run directory, a comparison folder or a sweep folder goes
through here: a temporary file in the same folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _write_then(path, data, os.replace)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_new_bytes(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, atomically: the complete file appears under its name, or
    nothing does, and a file that appeared there meanwhile is never replaced (FileExistsError)."""
    _write_then(path, data, os.link)  # a link fails if the name is taken, where os.replace would take it over


def _write_then(path: Path, data: bytes, publish) -> None:
    """`data` in a temporary file beside `path`, flushed to disk, then published under `path` by `publish`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared machine
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # after os.replace, gone already; after os.link, the second name


MAX_RUN_FILE = 16 << 20  # bytes; summary.json, trial.json and a config are kilobytes, metrics.csv a row an epoch


def read_small_text(path: Path, limit: int = MAX_RUN_FILE, name: str | None = None) -> str:
    """A run's file (summary.json, metrics.csv, config.yaml, ...) as UTF-8 text. A FIFO, a device or a file over
    `limit` bytes is one UserError at once: it is opened without blocking and looked at before it is read, so
    a pipe nobody writes to cannot keep a command waiting. OSError and UnicodeDecodeError pass to the caller.
    `name` is how the messages call the file (default: its path)."""
    path = Path(path)
    name = name or str(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{name} is not a regular file (a pipe or a device?)")
        if info.st_size > limit:
            raise UserError(f"{name} is {info.st_size / 1e6:.1f} MB, over the {limit / 1e6:g} MB such a file "
                            f"can be")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while we looked
        raise UserError(f"{name} is over the {limit / 1e6:g} MB such a file can be")
    return data.decode("utf-8")


def csv_value(value) -> str:
    """How every CSV mnistlab writes spells a value: empty for None, 6 significant digits for floats."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def make_dir(path: Path, option: str) -> Path:
    """Create a folder for results (parents too) or take an existing writable one; every way that can
    fail is one UserError naming `option` (e.g. --out-dir) and the reason."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"{option}: {path} is a broken symbolic link (to {os.readlink(path)})")
    if path.exists() and not path.is_dir():
        raise UserError(f"{option}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option}: cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option}: {path} is not writable")
    return path


def environment_error(exc: OSError) -> str:
    """An OSError from the file system as one line: what failed, on which file, and why."""
    where = f" {exc.filename}" if exc.filename else ""
    hint = " (was the folder deleted?)" if isinstance(exc, FileNotFoundError) else ""
    return f"cannot read or write{where}: {exc.strerror or exc}{hint}"
