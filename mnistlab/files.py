"""Writing files so that a kill at any moment leaves either the old file or the new one, never half.

Every file mnistlab writes into a run directory, a comparison folder or a sweep folder goes
through here: a temporary file in the same folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
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


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes, sep: str = "_") -> Path:
    """`data` under the first free name in `folder`: stem, stem_1, stem_2, ... (`sep` joins the number), never
    over a file that is there. Written whole to a hidden temporary file first, then linked to the name: the
    link fails when the name is taken (so "free" is exact, as with O_EXCL) and a kill leaves no half file
    under it. Where the file system has no hard links, the name is opened with O_EXCL and written. No fsync:
    these are many small files (a folder of images), and it cost 10 ms each."""
    folder = Path(folder)
    tmp = _written_beside(folder, data)
    try:
        for n in range(100_000):
            target = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}{sep}{n}{suffix}")
            try:
                _link_or_copy(tmp, target, data)
            except FileExistsError:
                continue
            return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    raise UserError(f"no free name for {stem}{suffix} in {folder}")


def create_file(path: Path, data: bytes, option: str = "") -> Path:
    """`data` as a NEW file at `path`, whole or not at all, never over an existing file (a result a user
    names, such as predict's --submission): linked into place as write_new_file does."""
    path = Path(path)
    taken = UserError(f"{option + ': ' if option else ''}{path} exists; mnistlab never writes over it "
                      "(give another name)")
    if path.exists() or path.is_symlink():
        raise taken
    tmp = _written_beside(path.parent, data)
    try:
        _link_or_copy(tmp, path, data)
    except FileExistsError:
        raise taken from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _written_beside(folder: Path, data: bytes) -> str:
    """`data` in a hidden temporary file in `folder` (removed by the caller)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mnistlab-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _link_or_copy(tmp: str, target: Path, data: bytes) -> None:
    """The finished temporary file under `target`, which must not exist (FileExistsError when it does)."""
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares): write the name itself, exclusively
        pass
    f = open(target, "xb")  # noqa: SIM115
    try:
        with f:
            f.write(data)
    except BaseException:  # a full disk: no half-written file stays behind
        target.unlink(missing_ok=True)
        raise


def folder_name(label: str) -> str:
    """A class name as a folder name that works on Linux, macOS and Windows: each character a folder name
    cannot hold (/ \\ : * ? " < > | and control characters) becomes _, and a name that would be hidden or
    special (empty, or starting with a dot: folder readers skip those) gets a leading _.
    `T-shirt/top` -> `T-shirt_top`; digits and letters stay as they are."""
    name = re.sub(r'[\x00-\x1f/\\:*?"<>|]', "_", label)
    return f"_{name}" if not name or name.startswith(".") else name


def class_folder(root: Path, label: str) -> Path:
    """root/<folder_name(label)>, made when missing: where a class's images go. A file in its place is an
    OSError that says so (mkdir's "File exists" would not)."""
    folder = Path(root) / folder_name(label)
    if folder.is_file():
        raise FileExistsError(errno.EEXIST, "a file of that name is in the way", str(folder))
    folder.mkdir(exist_ok=True)
    return folder
