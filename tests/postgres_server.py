"""A throwaway PostgreSQL server on a free localhost port, for the sweep tests and bench/sweep_scale.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Unavailable(Exception):
    """No server can start here; the message says why (the caller skips)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(database: str = "mnistlab"):
    """The URL of a fresh cluster's database, trusted on 127.0.0.1; the cluster is deleted afterwards."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        raise Unavailable("PostgreSQL's server is not installed here (Debian package postgresql; .ci/run installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg missing: pip install 'mnistlab[postgres]'") from None
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        init = run(bindir / "initdb", "-D", root / "data", "-A", "trust", "-U", "postgres", "--no-sync")
        if init.returncode != 0:
            raise Unavailable(f"initdb could not make a cluster here: {init.stderr.strip()[-300:]}")
        started = run(bindir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "start", "-o",
                      f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
        if started.returncode != 0:
            raise Unavailable(f"the PostgreSQL server did not start: {started.stderr.strip()[-300:]}")
        try:
            run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(bindir / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
