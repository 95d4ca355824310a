"""Preparing many picture files at once, the one way predict and a user's image folders both use.

Each file becomes its 28x28 digits (imaging.preprocess) or the reason it has none, in order, on the
cores: threads for short lists, worker processes for long ones; a bar on stderr for long lists.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

# The version of the 28x28s this package makes from a picture: bump it whenever preprocess.py, sheet.py or
# image.py would prepare any picture differently, so that no cached 28x28 (data/datacache.py) is read back.
PREPARE_VERSION = 1
PARALLEL_FROM = 256  # below this many files a process pool costs more than it saves (threads serve)
MAX_JOBS = 64  # --jobs beyond this is a typo, not a machine: each worker process holds ~100 MB of imports
PROGRESS_FROM = 300  # files; fewer are prepared in a few seconds, without a bar


def _prepare(args: tuple[str, bool, bool]):
    """One file's 28x28 digits (one, or each of a row with `multi`), or the reason it has none."""
    from .image import ImageError
    from .preprocess import preprocess, preprocess_digits

    path, frame, multi = args
    try:
        return (preprocess_digits(path) if multi else [preprocess(path, frame=frame)]), None
    except ImageError as exc:
        return None, str(exc).removeprefix(f"{path}: ")  # the result line names the path already


def prepare_all(paths: list[Path], frame: bool, multi: bool = False, jobs: int | None = None,
                progress: bool = True) -> list[tuple[list | None, str | None]]:
    """Each file's digits or error, in order, `jobs` files at once (default: the CPU cores, at most 8; never
    more than MAX_JOBS): on threads, in worker processes from PARALLEL_FROM files on. Threads start at once and
    share the imports; OpenCV, numpy and Pillow's decoder let go of the GIL for their work, which is most of a
    photo's cost, but not all of it, hence processes for long lists. `progress`: a bar on stderr from
    PROGRESS_FROM files on (when stderr is a terminal)."""
    tasks = [(str(p), frame, multi) for p in paths]
    workers = min(jobs, MAX_JOBS) if jobs else min(os.cpu_count() or 1, 8)
    if len(tasks) < 2 or workers < 2:
        return list(_shown(map(_prepare, tasks), len(tasks), progress))
    if len(tasks) < PARALLEL_FROM:
        with ThreadPoolExecutor(workers) as pool:
            return list(_shown(pool.map(_prepare, tasks), len(tasks), progress))
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        chunks = max(1, min(64, len(tasks) // (workers * 8)))
        return list(_shown(pool.map(_prepare, tasks, chunksize=chunks), len(tasks), progress))


def _shown(results, total: int, progress: bool):
    """The results as they come, counted on a tqdm bar on stderr (as training shows its batches)."""
    if not progress or total < PROGRESS_FROM:
        return results
    from tqdm.auto import tqdm

    return tqdm(results, desc="preparing images", total=total, leave=False, dynamic_ncols=True, unit="file",
                file=sys.stderr, disable=not sys.stderr.isatty())
