"""Writing files so that a kill at any moment leaves either the old file or the new one, never half.

Every file mnistlab writes into a run directory, a comparison folder or a sweep folder goes
through here: a temporary file in the same folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
