"""The prepared 28x28s of a user's image folder, cached so that a second run starts at once.

An entry per file, keyed by the sha256 of the file's bytes: a changed file is prepared again, an
unchanged one (renamed or moved between classes too) is read back. A cache file holds one preparation
setting of one folder, and its name carries imaging.prepare.PREPARE_VERSION (bumped whenever imaging/
prepares a picture differently), so no old 28x28 is ever read back. Stored as a plain .npz (numpy arrays, no
pickle); a damaged or foreign cache file is prepared again, never an error. The cache sits in the
folder itself (DIR/.mnistlab-cache/, hidden, so the folder reader skips it), else under
$XDG_CACHE_HOME/mnistlab (~/.cache/mnistlab) when the folder is read-only.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from ..imaging.prepare import PREPARE_VERSION, prepare_all

CACHE_FOLDER = ".mnistlab-cache"


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepared_images(root: Path, files: list[Path], digests: list[str], prepare: str,
                    progress: bool = True) -> tuple[np.ndarray, list[str | None]]:
    """Each file's 28x28 (uint8, white ink on black, round(x * 255)) and its error (None when it has a digit),
    from the cache where its bytes are known, else prepared (`prepare`: reading frames the digit as predict
    does, resize only resizes an MNIST-like image) and cached."""
    name = f"prepared-{prepare}-v{PREPARE_VERSION}.npz"
    places = cache_places(root, name)
    known = _read_cache(places)
    todo = [i for i, digest in enumerate(digests) if digest not in known]
    if todo:
        results = prepare_all([files[i] for i in todo], frame=prepare == "reading", progress=progress)
        for i, (found, error) in zip(todo, results):
            image = np.zeros((28, 28), np.uint8) if found is None else \
                (np.clip(found[0], 0, 1) * 255).round().astype(np.uint8)
            known[digests[i]] = (image, error or "")
        _write_cache(places, {d: known[d] for d in dict.fromkeys(digests)})
    images = np.stack([known[d][0] for d in digests]) if digests else np.zeros((0, 28, 28), np.uint8)
    return images, [known[d][1] or None for d in digests]


def cache_places(root: Path, name: str) -> list[Path]:
    """Where the cache file may be: in the folder, then in the user's cache folder (named by the folder's path)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnistlab"
    folder = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE_FOLDER / name, base / folder / name]


def _read_cache(places: list[Path]) -> dict[str, tuple[np.ndarray, str]]:
    for place in places:
        try:
            with np.load(place, allow_pickle=False) as f:
                digests, images, errors = f["digests"], f["images"], f["errors"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # none there, or damaged: prepared again
        if images.dtype == np.uint8 and images.shape[1:] == (28, 28) and len(digests) == len(images) == len(errors):
            return {str(d): (img, str(e)) for d, img, e in zip(digests, images, errors)}
    return {}


def _write_cache(places: list[Path], entries: dict[str, tuple[np.ndarray, str]]) -> None:
    """The first place that takes it; none taking it only costs the next run the preparation again."""
    buffer = io.BytesIO()
    images = np.stack([img for img, _ in entries.values()]) if entries else np.zeros((0, 28, 28), np.uint8)
    np.savez(buffer, digests=np.array(list(entries), dtype="U64"), images=images,
             errors=np.array([e for _, e in entries.values()], dtype=str))
    for place in places:
        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(place, buffer.getvalue())
            return
        except OSError:
            continue
