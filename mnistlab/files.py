"""Writing files so that a kill at any moment leaves either the old file or the new one, never half.

Every file mnistlab writes into a run directory, a comparison folder or a sweep folder goes
through here: a temporary file in the same folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared machine
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


def create_file(path: Path, data: bytes, option: str = "") -> Path:
    """`data` as a NEW file at `path`, whole or not at all, never over an existing file: written beside it,
    then hard-linked into place (a link refuses an existing name, so no check can race with another writer)."""
    path = Path(path)
    taken = UserError(f"{option + ': ' if option else ''}{path} exists; mnistlab never writes over it "
                      "(give another name)")
    if path.exists() or path.is_symlink():
        raise taken
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise taken from None
        except OSError:  # a file system without hard links: the check above stands
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path
