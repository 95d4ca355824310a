"""Where a sweep's study lives: a journal file in the sweep folder, or a database named by a URL.

What holds:
- A study outlives its processes and is shared by its workers: a storage that cannot (SQLite in
  memory) is refused before any trial.
- A URL's password is never shown: every line that names the storage shows it masked
  (postgresql://user:***@host/db), errors from the database driver included. Workers that `--jobs`
  starts get the URL through the environment (MNISTLAB_STORAGE), never on their command line, where
  any user of the machine could read it (ps, /proc/PID/cmdline).
- A damaged journal (a record cut short by a crash or a full disk, stray bytes) is refused in one line
  that says where the damage starts and how to continue from the records before it. Optuna would
  skip a last record cut short and then write the next one onto its end, damaging the journal for
  good; a damaged record in the middle would stop it with a traceback. mnistlab never writes to it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import zlib
from pathlib import Path

from ..errors import UserError, masked, one_line, scrub

STORAGE_ENV = "MNISTLAB_STORAGE"  # the URL, for workers (and for users who keep it off their command line)
JOURNAL = "study.journal"
IN_MEMORY = re.compile(r"^sqlite[^:]*:///?(\?.*)?$|^sqlite.*(:memory:|[?&]mode=memory)")  # no file, or none kept


def storage_url(given: str | None) -> str | None:
    """--storage, else MNISTLAB_STORAGE, else None (the journal file)."""
    return given if given else os.environ.get(STORAGE_ENV) or None


def describe(url: str | None, sweep_dir: Path) -> str:
    return masked(url) if url else str(sweep_dir / JOURNAL)


def make_storage(url: str | None, sweep_dir: Path):
    """The study's storage: the journal file in the sweep folder (checked first), or the database."""
    import optuna

    if url is None:
        from optuna.storages.journal import JournalFileBackend

        check_journal(sweep_dir / JOURNAL)
        return optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    if not url.startswith(("postgresql", "sqlite", "mysql")):
        raise UserError(f"--storage: got {masked(url)!r}; give postgresql://user@host/db (or leave it out: a journal "
                        f"file in the sweep folder)")
    if IN_MEMORY.match(url):
        raise UserError(f"--storage: {masked(url)} keeps the study in this process's memory: lost when it ends, and "
                        f"no other worker can join it; give a file (sqlite:///path/study.db), a server, or no --storage")
    try:
        return rdb_storage(url)
    except ImportError as exc:
        raise UserError(f"--storage: {one_line(scrub(str(exc) or type(exc).__name__, url), 80)}; for PostgreSQL: "
                        f"pip install 'mnistlab[postgres]'") from None
    except Exception as exc:  # noqa: BLE001  (SQLAlchemy's errors: a server that cannot be reached is the user's)
        raise UserError(f"--storage: cannot open {masked(url)}: {one_line(scrub(str(exc) or type(exc).__name__, url), 160)}") from None


def rdb_storage(url: str):
    """Optuna's storage on a database. The first to open a fresh PostgreSQL database creates Optuna's
    tables; workers that start together (an array job) would collide there, so they open it one at a time."""
    import optuna
    from sqlalchemy import create_engine

    if not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    engine = create_engine(url)
    try:
        with advisory_lock(engine, "mnistlab:schema"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    finally:
        engine.dispose()


@contextlib.contextmanager
def advisory_lock(engine, name: str):
    """PostgreSQL's advisory lock `name`, held by one connection for every client of the database."""
    from sqlalchemy import text

    key = zlib.crc32(name.encode())
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def study_lock(storage, sweep_dir: Path, study_name: str):
    """One worker at a time counts and asks: PostgreSQL's advisory lock across machines, a file lock
    among the workers of this machine otherwise."""
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        with advisory_lock(engine, f"mnistlab:{study_name}"):
            yield
        return
    import filelock

    with filelock.FileLock(sweep_dir / ".study.lock", thread_local=False):  # waits its turn
        yield


# ---------------------------------------------------------------- the journal's damage rule

def journal_damage(data: bytes) -> tuple[int, int, str] | None:
    """(line, byte offset, what) of the first damaged record, or None: every record is a whole line of
    JSON (an object), ended by a newline."""
    offset = 0
    for number, line in enumerate(io.BytesIO(data), start=1):  # lines end at b"\n" only, as Optuna reads them
        if not line.endswith(b"\n"):
            return number, offset, "its last record is cut short (no end of line)"
        try:
            record = json.loads(line)
        except ValueError:
            return number, offset, "not a record (not JSON text)"
        if not isinstance(record, dict) or "op_code" not in record:
            return number, offset, "not a record of Optuna's journal"
        offset += len(line)
    return None


def check_journal(path: Path) -> None:
    """Refuse a damaged journal in one line, leaving it as it is (see the module's docstring)."""
    if not path.is_file():
        return
    damage = journal_damage(path.read_bytes())
    if damage is not None and damage[2].startswith("its last record is cut short"):
        time.sleep(0.5)  # or another worker is writing it this moment: its records are one write each
        damage = journal_damage(path.read_bytes())
    if damage is not None:
        number, offset, what = damage
        raise UserError(f"{path}: damaged at line {number} (byte {offset:,}): {what}; mnistlab leaves it as it is. "
                        f"To continue from the {number - 1} records before it: keep a copy, then "
                        f"`truncate -s {offset} {path}`")
