"""A user's own digits: an image folder, a Kaggle digit-recognizer CSV or a Keras mnist.npz.

Each reader checks everything before any training and turns every problem into one line naming the
file (and, for a CSV, the line as a text editor numbers it). The user's files are only ever read.

  folder  DIR/<class>/<image>, or DIR/train/<class>/..., DIR/val/<class>/..., DIR/test/<class>/...
          (train required); names starting with a dot are ignored; the images are prepared as
          `mnistlab predict` prepares them (imaging.prepare), and cached (datacache).
  csv     a header `label,pixel0,...,pixel783` (or without `label`: Kaggle's unlabelled test.csv),
          then one image a row, values 0-255; read in chunks.
  npz     x_train, y_train (and x_test, y_test): uint8 N x 28 x 28 images, labels 0-9; no pickles.
"""

from __future__ import annotations

import csv
import itertools
import os
import stat
import string
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .datacache import file_digest, prepared_images

PARTS = ("train", "val", "test")
DIGITS = tuple(string.digits)  # the classes of a CSV or npz file: labels 0-9
PIXELS = 28 * 28
MAX_IMAGE_BYTES = 64 * 2**20  # one picture file; a phone photo is ~5-15 MB
MAX_TABLE_BYTES = 2 * 2**30  # a CSV or npz file (Kaggle's train.csv is 73 MB, mnist.npz 11 MB; 2 GB holds ~2.7M)
CSV_CHUNK = 4096  # rows converted at once
SHOWN = 5  # skipped files or rows named in the note
SKIP_HINT = "data.skip_bad: true in a config, --skip-bad for eval --data"  # the two ways to ask for it


@dataclass
class Part:
    """One part (train, val or test) of a user's set: images uint8 N x 28 x 28, labels into the set's classes,
    and per image its name (for messages) and its file's sha256 (for the leakage check; "" for a table row)."""

    x: np.ndarray
    y: np.ndarray
    names: list[str]
    digests: list[str]

    def take(self, idx) -> Part:
        idx = np.asarray(idx, dtype=np.int64)
        return Part(self.x[idx], self.y[idx], [self.names[i] for i in idx], [self.digests[i] for i in idx])


@dataclass
class UserSet:
    classes: tuple[str, ...]
    parts: dict[str, Part]
    notes: list[str] = field(default_factory=list)  # warnings and skipped files, printed at training start


def kind_of(path: Path) -> str:
    """folder, csv or npz, as `eval --data` and `predict` tell a user's set by its path."""
    if path.is_dir():
        return "folder"
    return {".csv": "csv", ".npz": "npz"}.get(path.suffix.lower(), "")


def read_user_set(kind: str, path: Path, prepare: str = "reading", skip_bad: bool = False,
                  progress: bool = True) -> UserSet:
    if kind == "folder":
        return read_folder(path, prepare, skip_bad, progress)
    if kind == "csv":
        x, y, lines, notes = read_csv(path, skip_bad, labelled=True)
        return UserSet(DIGITS, {"train": Part(x, y, [f"{path} line {n}" for n in lines], [""] * len(y))}, notes)
    return read_npz(path)


# ---------------------------------------------------------------- folders

def class_order(name: str):
    """Digits as numbers first (0, 1, ..., 9, 10), then every other name in sorted order."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def folder_layout(root: Path) -> dict[str, Path]:
    """{part: folder}: root itself as the training part, or its train/, val/, test/ subfolders."""
    try:
        info = root.stat()
    except OSError as exc:
        raise UserError(f"data.path: cannot read {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"data.path: {root} is not a folder (data.dataset folder reads DIR/<class>/<image>)")
    entries = {p.name: p for p in visible(root)}
    split = [name for name in PARTS if name in entries]
    if not split:
        return {"train": root}
    if "train" not in split:
        raise UserError(f"{root}: has {'/, '.join(split)}/ but no train/ folder: training needs DIR/train/<class>/")
    others = [name for name, p in entries.items() if name not in PARTS and p.is_dir()]
    if others:
        raise UserError(f"{root}: holds train/ and also {others[0]}/: either class folders or train/, val/, test/")
    return {name: entries[name] for name in split}


def list_classes(folder: Path) -> dict[str, list[Path]]:
    """{class name: its files (every visible file under the class folder, sorted)}; loose files are left out."""
    classes = {}
    for sub in visible(folder):
        if sub.is_dir():
            classes[sub.name] = sorted(p for p in _files_under(sub))
    return dict(sorted(classes.items(), key=lambda item: class_order(item[0])))


def _files_under(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield from (Path(dirpath) / f for f in filenames if not f.startswith("."))


def read_folder(root: Path, prepare: str, skip_bad: bool, progress: bool = True, part: str | None = None) -> UserSet:
    """The folder's parts, or (scoring) only `part` of them, as its training part, one class allowed."""
    layout = folder_layout(root)
    if part is not None:
        layout = {"train": layout[part]}
    listed = {name: list_classes(folder) for name, folder in layout.items()}
    classes = check_classes(layout, listed, 1 if part else 2)
    files, labels, parts = [], [], []
    for part_name, by_class in listed.items():
        for name, paths in by_class.items():
            files += paths
            labels += [classes.index(name)] * len(paths)
            parts += [part_name] * len(paths)
    digests, problems = _digests(files)
    readable = [i for i, d in enumerate(digests) if d]
    images = np.zeros((len(files), 28, 28), np.uint8)
    prepared, errors = prepared_images(root, [files[i] for i in readable], [digests[i] for i in readable], prepare,
                                       progress)
    images[readable] = prepared
    for i, error in zip(readable, errors):
        if error:
            problems[i] = error
    notes = _bad_files(files, problems, skip_bad, root)
    keep = [i for i in range(len(files)) if i not in problems]
    out = {}
    for name in layout:
        idx = np.array([i for i in keep if parts[i] == name], dtype=np.int64)
        out[name] = Part(images[idx], np.array(labels, np.int64)[idx] if len(idx) else np.zeros(0, np.int64),
                         [str(files[i].relative_to(root)) for i in idx], [digests[i] for i in idx])
    _check_left(out["train"], classes, root)
    return UserSet(tuple(classes), out, notes)


def check_classes(layout: dict[str, Path], listed: dict[str, dict[str, list[Path]]],
                  least: int = 2) -> list[str]:
    """The training part's class names: an empty class folder, fewer than `least` classes (a classifier needs
    two) or a val/test class that training lacks is an error. (A class a val or test part lacks is a warning,
    datasets.lacking_classes.)"""
    train = listed["train"]
    for name, paths in train.items():
        if not paths:
            raise UserError(f"{layout['train'] / name}: empty class folder (put its images in, or remove it)")
    if len(train) < least:
        found = f"only the class {next(iter(train))!r}" if train else "no class folders"
        raise UserError(f"{layout['train']}: {found}; a classifier needs at least two class folders, "
                        f"DIR/<class>/<image> (e.g. DIR/3/a.png)")
    for part in ("val", "test"):
        unknown = [name for name, paths in listed.get(part, {}).items() if paths and name not in train]
        if unknown:
            raise UserError(f"{layout[part] / unknown[0]}: class {unknown[0]!r} is not among the training classes "
                            f"({', '.join(train)}): the model could never predict it")
    empty = [part for part in ("val", "test") if part in listed and not any(listed[part].values())]
    if empty:
        raise UserError(f"{layout[empty[0]]}: holds no images; fill its class folders, or remove it to have its "
                        f"images split off train/ (data.{empty[0]}_split)")
    return list(train)


def _digests(files: list[Path]) -> tuple[list[str], dict[int, str]]:
    """Each file's sha256, or "" and its problem: not a regular file (a FIFO is never opened), too large, unreadable."""
    digests, problems = [], {}
    for i, path in enumerate(files):
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                problems[i] = "not a regular file (a pipe or a device?)"
            elif info.st_size > MAX_IMAGE_BYTES:
                problems[i] = f"{info.st_size / 2**20:.0f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB an image may have"
            elif info.st_size == 0:
                problems[i] = "file is empty"
            else:
                digests.append(file_digest(path))
                continue
        except OSError as exc:
            problems[i] = f"cannot read it: {exc.strerror}"
        digests.append("")
    return digests, problems


def _bad_files(files: list[Path], problems: dict[int, str], skip_bad: bool, root: Path) -> list[str]:
    """The first bad file as an error, or with skip_bad a note counting and naming them."""
    if not problems:
        return []
    first = min(problems)
    if not skip_bad:
        more = f" ({len(problems) - 1} more bad files)" if len(problems) > 1 else ""
        raise UserError(f"{files[first]}: {problems[first]}{more}; fix or remove it, or skip such files "
                        f"({SKIP_HINT})")
    named = ", ".join(f"{files[i].relative_to(root)} ({problems[i]})" for i in sorted(problems)[:SHOWN])
    return [f"skipped {len(problems)} of {len(files)} files in {root} (data.skip_bad): {named}"
            + (", ..." if len(problems) > SHOWN else "")]


def _check_left(train: Part, classes: list[str], root: Path) -> None:
    """After skipping, every class still has training images."""
    counts = np.bincount(train.y, minlength=len(classes))
    empty = [name for name, n in zip(classes, counts) if n == 0]
    if empty:
        raise UserError(f"{root}: no readable training image of class {empty[0]!r} is left (data.skip_bad skipped "
                        f"them all)")


def scoring_set(path: Path, classes: list[str], prepare: str = "reading",
                skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """`eval --data`: a folder (all its images, or its test/ part when it has train/), a labelled CSV file or an
    npz file (its test part, else its training part), labels mapped BY NAME onto a checkpoint's `classes`.
    Returns images, labels, which part was read ("all" or "test") and notes (skipped files)."""
    kind = kind_of(path)
    if not path.exists():
        raise UserError(f"--data: {path} not found")
    if kind == "folder":
        layout = folder_layout(path)
        if len(layout) > 1 and "test" not in layout:
            raise UserError(f"--data: {path} has {', '.join(layout)}/ but no test/ part to score; give one of its "
                            f"folders, e.g. {path / 'val'}")
        own = read_folder(path, prepare, skip_bad, part="test" if "test" in layout else "train")
        which = "test" if "test" in layout else "all"
    elif kind == "csv":
        x, y, _, notes = read_csv(path, skip_bad, labelled=True)
        own, which = UserSet(DIGITS, {"train": Part(x, y, [], [])}, notes), "all"
    elif kind == "npz":
        own = read_npz(path)
        which = "test" if "test" in own.parts else "all"
        own.parts["train"] = own.parts.get("test", own.parts["train"])
    else:
        raise UserError(f"--data: {path} is neither a folder nor a .csv or .npz file")
    unknown = [name for name in own.classes if name not in classes]
    if unknown:
        raise UserError(f"--data: class {unknown[0]!r} of {path} is not among the checkpoint's classes "
                        f"({', '.join(classes)}); classes are matched by name")
    if len(own.parts["train"].y) == 0:
        raise UserError(f"--data: {path} holds no images to score")
    to = np.array([classes.index(name) for name in own.classes], dtype=np.int64)
    return own.parts["train"].x, to[own.parts["train"].y], which, own.notes


# ---------------------------------------------------------------- tables (CSV, npz)

def _check_table_file(path: Path) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise UserError(f"data.path: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
        raise UserError(f"{path}: not a regular file (a folder, a pipe or a device?)")
    if info.st_size > MAX_TABLE_BYTES:
        raise UserError(f"{path}: {info.st_size / 2**30:.1f} GB, over the {MAX_TABLE_BYTES // 2**30} GB "
                        "mnistlab reads from one file")


def read_csv(path: Path, skip_bad: bool = False, labelled: bool = True):
    """(images uint8 N x 28 x 28, labels int64 or None for an unlabelled file, each row's line number, notes).
    `labelled`: the file must have a label column (training and scoring need one). Read CSV_CHUNK lines at a
    time by numpy's C parser; a chunk it refuses is gone through row by row to name the bad rows."""
    _check_table_file(path)
    bad, chunks = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no header
            header = next(csv.reader([f.readline(100_000)]), None)
            has_label = _csv_header(path, header, labelled)
            first = 2
            while lines := list(itertools.islice(f, CSV_CHUNK)):
                chunks.append(_csv_chunk(lines, first, bad, has_label))
                first += len(lines)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file (it is not UTF-8 text)") from None
    values = np.concatenate([c for c, _ in chunks]) if chunks else np.zeros((0, PIXELS + has_label), np.int64)
    lines = np.concatenate([n for _, n in chunks]) if chunks else np.zeros(0, np.int64)
    notes = _bad_rows(path, sorted(bad), len(values) + len(bad), skip_bad)
    if len(values) == 0:
        raise UserError(f"{path}: no image rows after its header")
    x = values[:, has_label:].astype(np.uint8).reshape(-1, 28, 28)
    return x, values[:, 0].copy() if has_label else None, lines, notes


def _csv_chunk(lines: list[str], first: int, bad: list, has_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Lines `first`, `first` + 1, ... as int64 rows and their line numbers (blank lines are no rows); the rows
    with a wrong count, a non-number, a pixel outside 0-255 or a label outside 0-9 go to `bad` as (line, why)."""
    width = PIXELS + has_label
    numbered = [(first + i, line) for i, line in enumerate(lines) if line.strip()]
    numbers = np.array([n for n, _ in numbered], dtype=np.int64)
    if not numbered:
        return np.zeros((0, width), np.int64), numbers
    try:
        values = np.loadtxt([line for _, line in numbered], delimiter=",", dtype=np.int64, ndmin=2)
        if values.shape[1] != width:
            raise ValueError("columns")
        ok = np.ones(len(numbered), bool)
    except (ValueError, OverflowError):  # some row is bad: find which, one row at a time
        values, ok = _rows_one_by_one(numbered, bad, width, has_label)
    pixels = values[:, has_label:]
    outside = ok & ((pixels < 0) | (pixels > 255)).any(axis=1)
    label_bad = ok & ((values[:, 0] < 0) | (values[:, 0] > 9)) if has_label else np.zeros(len(ok), bool)
    for i in np.flatnonzero(outside | label_bad):
        if label_bad[i]:
            bad.append((int(numbers[i]), f"label {values[i, 0]} is not a digit 0-9"))
        else:
            col = int(np.flatnonzero((pixels[i] < 0) | (pixels[i] > 255))[0])
            bad.append((int(numbers[i]), f"pixel{col} is {pixels[i, col]}, outside 0-255"))
    keep = ok & ~outside & ~label_bad
    return values[keep], numbers[keep]


def _csv_header(path: Path, header: list[str] | None, labelled: bool) -> int:
    """1 when the file has a label column, 0 when not (a labelled one is required when `labelled`)."""
    pixels = [f"pixel{i}" for i in range(PIXELS)]
    names = [h.strip().lower() for h in header or []]
    if names == ["label", *pixels]:
        return 1
    if names == pixels:
        if labelled:
            raise UserError(f"{path}: has no label column (header pixel0..pixel783, as Kaggle's test.csv): "
                            "training and scoring need labels, `label,pixel0,...,pixel783`")
        return 0
    got = repr(",".join(header)[:60]) if header else "an empty line"
    raise UserError(f"{path} line 1: expected the header label,pixel0,...,pixel783 (Kaggle's digit-recognizer "
                    f"layout; pixel0..pixel783 for an unlabelled file), got {got}")


def _rows_one_by_one(numbered: list[tuple[int, str]], bad: list, width: int, has_label: int):
    values = np.zeros((len(numbered), width), np.int64)
    ok = np.zeros(len(numbered), bool)
    for i, (number, line) in enumerate(numbered):
        try:
            row = next(csv.reader([line]))
        except csv.Error as exc:
            bad.append((number, f"not a CSV row ({exc})"))
            continue
        if len(row) != width:
            bad.append((number, f"{len(row)} values, not {width}"))
            continue
        col = next((j for j, v in enumerate(row) if not _is_small_int(v)), None)
        if col is None:
            values[i] = [int(v) for v in row]
            ok[i] = True
        else:
            name = "label" if has_label and col == 0 else f"pixel{col - has_label}"
            bad.append((number, f"{name} is {row[col][:20]!r}, not a whole number 0-255"))
    return values, ok


def _is_small_int(text: str) -> bool:
    try:
        return abs(int(text)) < 2**62
    except ValueError:
        return False


def _bad_rows(path: Path, bad: list[tuple[int, str]], total: int, skip_bad: bool) -> list[str]:
    if not bad:
        return []
    if not skip_bad:
        more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise UserError(f"{path} line {bad[0][0]}: {bad[0][1]}{more}; fix the file, or skip such rows "
                        f"({SKIP_HINT})")
    named = ", ".join(f"line {n} ({why})" for n, why in bad[:SHOWN])
    return [f"skipped {len(bad)} of {total} rows of {path} (data.skip_bad): {named}"
            + (", ..." if len(bad) > SHOWN else "")]


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> UserSet:
    """Keras' mnist.npz: x_train, y_train and (both or neither) x_test, y_test. Never unpickles anything."""
    _check_table_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one array, no names
            raise UserError(f"{path}: a single .npy array, not an .npz file with x_train, y_train, x_test, y_test")
        with loaded as f:
            arrays = _npz_arrays(f, path)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({str(exc)[:80] or type(exc).__name__})") from None
    parts = {}
    for part in ("train", "test"):
        if f"x_{part}" in arrays:
            x, y = _npz_part(path, part, arrays[f"x_{part}"], arrays[f"y_{part}"])
            parts[part] = Part(x, y, [f"{path} x_{part}[{i}]" for i in range(len(y))], [""] * len(y))
    return UserSet(DIGITS, parts)


def _npz_arrays(f, path: Path) -> dict[str, np.ndarray]:
    unpacked = sum(info.file_size for info in f.zip.infolist())
    if unpacked > MAX_TABLE_BYTES:  # checked before any array is read: a small zip can unpack to anything
        raise UserError(f"{path}: unpacks to {unpacked / 2**30:.1f} GB, over the {MAX_TABLE_BYTES // 2**30} GB "
                        "mnistlab reads")
    missing = [k for k in ("x_train", "y_train") if k not in f.files]
    if missing or (("x_test" in f.files) != ("y_test" in f.files)):
        raise UserError(f"{path}: holds {', '.join(f.files) or 'no arrays'}; expected x_train, y_train "
                        "(and x_test, y_test), as Keras' mnist.npz")
    return {k: _npz_array(f, k, path) for k in NPZ_KEYS if k in f.files}


def _npz_array(f, key: str, path: Path) -> np.ndarray:
    try:
        return f[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UserError(f"{path}: {key} holds Python objects, which mnistlab never unpickles; save it as a "
                            "uint8 array") from None
        raise


def _npz_part(path: Path, part: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{path}: x_{part} is {'x'.join(map(str, x.shape))} and y_{part} "
                        f"{'x'.join(map(str, y.shape))}; expected N x 28 x 28 images and N labels")
    if x.dtype != np.uint8:
        raise UserError(f"{path}: x_{part} holds {x.dtype} values; expected uint8 (0-255), as Keras' mnist.npz")
    if y.dtype.kind not in "iu":
        raise UserError(f"{path}: y_{part} holds {y.dtype} values; expected whole-number labels 0-9")
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        i = int(np.flatnonzero((y < 0) | (y > 9))[0])
        raise UserError(f"{path}: y_{part}[{i}] is {int(y[i])}; labels are digits 0-9")
    if len(y) == 0:
        raise UserError(f"{path}: x_{part} holds no images")
    return np.ascontiguousarray(x), y.astype(np.int64)
