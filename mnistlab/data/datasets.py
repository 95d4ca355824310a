"""Datasets of the MNIST family, as uint8 tensors, with a seeded validation split.

This module reads the IDX files itself (importing torchvision's datasets would slow
every command's start-up), checks each header against its file's size (so a
truncated download is named as one), and leaves only downloading to torchvision,
turning "no network" into a message saying which files to put where.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import USER_DATASETS
from ..errors import UserError
from .userdata import DIGITS, Part, folder_layout, list_classes, read_user_set

DATA_DIR_ENV = "MNISTLAB_DATA_DIR"

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EMNIST_BALANCED_CLASSES = sorted(set(string.digits + string.ascii_letters) - set("cijklmopsuvwxyz"))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # torchvision's folder under the root: <root>/<folder>/raw/
    files: tuple[str, str, str, str]  # train images, train labels, test images, test labels
    mean: float
    std: float
    classes: tuple[str, ...]
    transposed: bool = False  # EMNIST stores images transposed


DATASETS = {
    "mnist": DatasetSpec("mnist", "MNIST", MNIST_FILES, 0.1307, 0.3081, tuple(string.digits)),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", "FashionMNIST", MNIST_FILES, 0.2860, 0.3530,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "kmnist": DatasetSpec("kmnist", "KMNIST", MNIST_FILES, 0.1918, 0.3483,
                          ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    "qmnist": DatasetSpec("qmnist", "QMNIST", ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int",
                                               "qmnist-test-images-idx3-ubyte", "qmnist-test-labels-idx2-int"),
                          0.1307, 0.3081, tuple(string.digits)),
    "emnist-balanced": DatasetSpec(
        "emnist-balanced", "EMNIST",
        ("emnist-balanced-train-images-idx3-ubyte", "emnist-balanced-train-labels-idx1-ubyte",
         "emnist-balanced-test-images-idx3-ubyte", "emnist-balanced-test-labels-idx1-ubyte"),
        0.1751, 0.3332, tuple(EMNIST_BALANCED_CLASSES), transposed=True,
    ),
}


@dataclass
class DataBundle:
    """Everything the trainer needs from the data, as CPU tensors (images uint8 N x H x W)."""

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: float
    std: float
    path: str | None = None  # a user's set (data.path): the folder or file it was read from
    notes: list[str] = field(default_factory=list)  # warnings the trainer prints at the start (leakage, skipped files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source(self) -> str:
        """The data as the trainer's header names it: `mnist`, `folder my_digits`."""
        return f"{self.dataset} {self.path}" if self.path else self.dataset


def resolve_root(cli_dir: str | None, config_root: str | None) -> Path:
    """--data-dir > data.root > $MNISTLAB_DATA_DIR > ./data"""
    for candidate in (cli_dir, config_root, os.environ.get(DATA_DIR_ENV)):
        if candidate:
            return Path(candidate).expanduser()
    return Path("data")


def normalization(spec: DatasetSpec, setting) -> tuple[float, float]:
    if setting == "dataset":
        return spec.mean, spec.std
    if setting == "minus1to1":
        return 0.5, 0.5
    if setting == "none":
        return 0.0, 1.0
    return float(setting.mean), float(setting.std)


def split_indices(n: int, val_split: float, seed: int,
                  key: str = "data.val_split") -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation: the same seed always holds out the same images."""
    n_val = int(val_split) if val_split >= 1 else int(round(val_split * n))
    if n_val >= n:
        raise UserError(f"{key}: got {val_split}; that leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def fold_indices(n: int, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold `fold` of a seeded k-way split: the same seed gives the same folds, and together the k
    validation sets cover every training image exactly once."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = perm.tensor_split(folds)
    val = parts[fold]
    train = torch.cat([p for i, p in enumerate(parts) if i != fold])
    return train.sort().values, val.sort().values


def load_data(data_cfg, seed: int, root: Path, progress: bool = True) -> DataBundle:
    """`progress`: a bar while a user's folder is prepared (on a terminal, from a few hundred files on)."""
    if data_cfg.dataset in USER_DATASETS:
        return load_user_data(data_cfg, seed, root, progress)
    spec = DATASETS[data_cfg.dataset]
    train_x, train_y = load_split(spec, root, train=True, download=data_cfg.download)
    test_x, test_y = load_split(spec, root, train=False, download=data_cfg.download)
    if getattr(data_cfg, "folds", None):
        train_idx, val_idx = fold_indices(len(train_x), data_cfg.folds, data_cfg.fold, seed)
    else:
        train_idx, val_idx = split_indices(len(train_x), data_cfg.val_split, seed)
    mean, std = normalization(spec, data_cfg.normalize)
    return DataBundle(
        dataset=spec.name,
        train_x=train_x[train_idx], train_y=train_y[train_idx],
        val_x=train_x[val_idx], val_y=train_y[val_idx],
        test_x=test_x, test_y=test_y,
        classes=spec.classes, mean=mean, std=std,
    )


def dataset_classes(data_cfg) -> tuple[str, ...]:
    """The model's classes for a data config, without loading its images (a folder's class folders are listed)."""
    if data_cfg.dataset not in USER_DATASETS:
        return DATASETS[data_cfg.dataset].classes
    if data_cfg.mix is not None:
        return DATASETS[data_cfg.mix.dataset].classes
    if data_cfg.dataset == "folder":
        layout = folder_layout(Path(data_cfg.path).expanduser())
        return tuple(list_classes(layout["train"]))
    return DIGITS


# The test images split off a user's set that has no test part are drawn with this fixed seed, never with the
# run's `seed`: every seed of a `compare --seeds` (and every fold) is then scored on the same test images.
TEST_SPLIT_SEED = 27


def load_user_data(data_cfg, seed: int, root: Path, progress: bool = True) -> DataBundle:
    """A user's folder, CSV or npz file (data.path) as a DataBundle: its own train/val/test parts, what it lacks
    split off its training part (test first, with TEST_SPLIT_SEED, then validation with `seed` or the fold), and
    with data.mix a built-in dataset's training images added (`root` is where that one is read from)."""
    path = Path(data_cfg.path).expanduser()
    own = read_user_set(data_cfg.dataset, path, data_cfg.prepare, data_cfg.skip_bad, progress)
    parts = dict(own.parts)
    if "test" not in parts:
        keep, held = split_indices(len(parts["train"].y), data_cfg.test_split, TEST_SPLIT_SEED, "data.test_split")
        parts["train"], parts["test"] = parts["train"].take(keep), parts["train"].take(held)
    if len(parts["test"].y) == 0:  # (an empty test/ folder is an error of the reader's)
        raise UserError(f"data.test_split: 0 leaves {path} no test images; give a test part or a test_split above 0")
    if "val" not in parts:
        n = len(parts["train"].y)
        keep, held = (fold_indices(n, data_cfg.folds, data_cfg.fold, seed) if data_cfg.folds
                      else split_indices(n, data_cfg.val_split, seed))
        parts["train"], parts["val"] = parts["train"].take(keep), parts["train"].take(held)
    notes = own.notes + lacking_classes(parts, own.classes) + leakage(parts)
    classes, train_x, train_y = own.classes, parts["train"].x, parts["train"].y
    if data_cfg.mix is not None:
        classes, train_x, train_y, parts, repeat = mix_builtin(data_cfg, own.classes, parts, root)
        mine = len(parts["train"].y)
        notes.insert(0, f"training images: {len(train_y) - mine * repeat:,} of {data_cfg.mix.dataset} "
                        f"and your {mine:,} x {repeat} (data.mix); validation and test: yours")
    x = torch.from_numpy(train_x)
    mean, std = ((x.float().mean() / 255).item(), (x.float().std() / 255).item()) \
        if data_cfg.normalize == "dataset" else normalization(None, data_cfg.normalize)
    tensors = {f"{part}_{k}": torch.from_numpy(getattr(parts[part], k)) for part in ("val", "test") for k in "xy"}
    return DataBundle(dataset=data_cfg.dataset, train_x=x, train_y=torch.from_numpy(train_y), **tensors,
                      classes=tuple(classes), mean=mean, std=std, path=str(path), notes=notes)


def lacking_classes(parts: dict[str, Part], classes) -> list[str]:
    """A warning for each of val and test that lacks a class of training (a small part may; it is scored without),
    and for a class the split left without training images."""
    notes = []
    counts = np.bincount(parts["train"].y, minlength=len(classes))
    untrained = [name for name, n in zip(classes, counts) if n == 0]
    if untrained:  # a class of a few images can land wholly in the split-off val/test images
        notes.append(f"warning: no training image of class {', '.join(untrained)} is left after the validation and "
                     "test images were split off: the model cannot learn it (add images, or lower the splits)")
    for part in ("val", "test"):
        counts = np.bincount(parts[part].y, minlength=len(classes))
        lacking = [name for name, n in zip(classes, counts) if n == 0]
        if lacking and len(parts[part].y):
            notes.append(f"warning: the {len(parts[part].y):,} {part} images hold no image of class "
                         f"{', '.join(lacking)}")
    return notes


def leakage(parts: dict[str, Part]) -> list[str]:
    """A warning counting the validation and test images that are also training images: the same file, or the
    same prepared 28x28."""
    train = parts["train"]
    seen = {img.tobytes() for img in train.x} | {d for d in train.digests if d}
    notes = []
    for part in ("val", "test"):
        p = parts[part]
        n = sum(1 for img, digest in zip(p.x, p.digests) if img.tobytes() in seen or (digest and digest in seen))
        if n:
            notes.append(f"warning: leakage: {n:,} of {len(p.y):,} {part} images are also training images (the same "
                         f"file or the same 28x28): the {part} accuracy is optimistic")
    return notes


def mix_builtin(data_cfg, classes, parts: dict[str, Part], root: Path):
    """data.mix: the built-in's training images plus the user's repeated `repeat` times; every part's labels
    mapped by class name onto the built-in's classes, which become the model's."""
    spec = DATASETS[data_cfg.mix.dataset]
    missing = [c for c in classes if c not in spec.classes]
    if missing:
        raise UserError(f"data.mix: class {missing[0]!r} of {data_cfg.path} is not among {spec.name}'s classes "
                        f"({', '.join(spec.classes)}); mixing maps your classes onto them by name")
    to = np.array([spec.classes.index(c) for c in classes], dtype=np.int64)
    parts = {name: Part(p.x, to[p.y], p.names, p.digests) for name, p in parts.items()}
    bx, by = load_split(spec, root, train=True, download=data_cfg.download)
    repeat = mix_repeat(data_cfg.mix.repeat, len(by), len(parts["train"].y))
    train_x = np.concatenate([bx.numpy(), *[parts["train"].x] * repeat])
    train_y = np.concatenate([by.numpy(), *[parts["train"].y] * repeat])
    return spec.classes, train_x, train_y, parts, repeat


# data.mix.repeat: auto repeats your training images until they are about this share of the mixed set.
# Measured in docs/own-data.md's worked example (the shipped model, one writer, 2 epochs): repeated 20 times
# (100-200 images among MNIST's 60,000: 3-6%) the writer was read within 0.2-1.6 points of training on it
# alone and MNIST within ten images of the shipped model; once (0.2%) the writer barely moved (80.4% -> 82.0%).
MIX_SHARE = 0.05


def mix_repeat(setting, builtin: int, mine: int) -> int:
    """How many times the user's `mine` training images go among the built-in's `builtin`."""
    if setting != "auto":
        return int(setting)
    return max(1, min(1000, round(MIX_SHARE * builtin / ((1 - MIX_SHARE) * max(mine, 1)))))


def load_split(spec: DatasetSpec, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 N x 28 x 28 and labels as int64, from <root>/<folder>/raw."""
    raw = root / spec.folder / "raw"
    image_file, label_file = spec.files[:2] if train else spec.files[2:]
    if not ((raw / image_file).exists() and (raw / label_file).exists()):
        if not download:
            raise UserError(_missing_message(spec, raw, "and data.download is false"))
        _download(spec, root, train, raw)
    image_shape = check_idx(raw / image_file)
    label_shape = check_idx(raw / label_file)
    if image_shape[0] != label_shape[0]:
        raise UserError(f"{raw / image_file} holds {image_shape[0]:,} images but {raw / label_file} "
                        f"holds {label_shape[0]:,} labels: the files do not belong together")
    if len(image_shape) != 3 or image_shape[1:] != (28, 28) or len(label_shape) not in (1, 2):
        raise UserError(f"{raw / image_file} and {raw / label_file} hold {'x'.join(map(str, image_shape))} images "
                        f"and {'x'.join(map(str, label_shape))} labels; {spec.name} has N x 28 x 28 images, N labels")
    x, y = read_idx(raw / image_file, image_shape), read_idx(raw / label_file, label_shape)
    if x.dtype != torch.uint8 or y.is_floating_point():
        raise UserError(f"{raw / image_file}, {raw / label_file}: images must be bytes and labels whole numbers "
                        f"(got {str(x.dtype).removeprefix('torch.')} and {str(y.dtype).removeprefix('torch.')})")
    if y.ndim == 2:  # QMNIST's extended labels: the class is the first column
        y = y[:, 0]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(spec.classes)):
        raise UserError(f"{raw / label_file}: labels run from {int(y.min())} to {int(y.max())}, but {spec.name} "
                        f"has {len(spec.classes)} classes (0 to {len(spec.classes) - 1}): a damaged or foreign file")
    if spec.transposed:
        x = x.transpose(1, 2)
    return x.contiguous(), y.long()


def _torchvision_dataset(spec: DatasetSpec, root: Path, train: bool, download: bool):
    from torchvision import datasets

    if spec.name == "emnist-balanced":
        return datasets.EMNIST(str(root), split="balanced", train=train, download=download)
    if spec.name == "qmnist":
        return datasets.QMNIST(str(root), what="train" if train else "test", download=download)
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}[spec.name]
    return cls(str(root), train=train, download=download)


def _download(spec: DatasetSpec, root: Path, train: bool, raw: Path) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an offline machine should fail in seconds, not hang
    chatter = io.StringIO()
    new_folders = [folder for folder in (raw, *raw.parents) if not folder.exists()]  # deepest first
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            _torchvision_dataset(spec, root, train, download=True)
    except PermissionError as exc:
        _remove_if_empty(new_folders)
        raise UserError(f"cannot write the {spec.name} download into {raw}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001  (every failed download means the same thing to the user)
        _remove_if_empty(new_folders)
        raise UserError(_missing_message(spec, raw, f"and downloading failed ({_download_error(exc)})")) from None
    finally:
        socket.setdefaulttimeout(previous)


def _remove_if_empty(folders: list[Path]) -> None:
    """A failed download leaves no empty data/MNIST/raw behind where there was none (deepest folder first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a partial file is kept for the user to see) or not ours to remove
            return


def _download_error(exc: Exception) -> str:
    """The cause in a few words: torchvision's message opens with "Error downloading X:" and
    ends with what the last mirror answered, e.g. "<urlopen error [Errno -2] Name or service not known>"."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = lines[-1].removeprefix("<urlopen error ").removesuffix(">")
    return reason[:120]


def _missing_message(spec: DatasetSpec, raw: Path, why: str) -> str:
    return (f"{spec.name} not found in {raw} {why}: put {', '.join(spec.files)} (uncompressed IDX, or the .gz "
            f"files with data.download: true) into {raw}, or point --data-dir / ${DATA_DIR_ENV} at a folder "
            f"holding {spec.folder}/raw/")


_IDX_TYPES = {code: np.dtype(name) for code, name in
              {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.items()}


def read_idx(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The values of an IDX file that check_idx has passed, in native byte order."""
    with open(path, "rb") as f:
        code = f.read(4)[2]
        values = np.fromfile(f, dtype=_IDX_TYPES[code], offset=4 * len(shape))
    return torch.from_numpy(values.astype(values.dtype.newbyteorder("="), copy=False).reshape(shape))


def check_idx(path: Path) -> tuple[int, ...]:
    """Validate an IDX file's header against its size; return its shape."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read below forever
            raise UserError(f"{path} is not a regular file (a pipe or a device?); put the IDX file there")
        size = info.st_size
        with open(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_TYPES:
                raise UserError(f"{path}: not an IDX file (bad magic number {header.hex() or 'empty'})")
            ndim = header[3]
            dims_raw = f.read(4 * ndim)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if ndim == 0 or len(dims_raw) < 4 * ndim:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims_raw[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    expected = 4 + 4 * ndim + _IDX_TYPES[header[2]].itemsize * _prod(shape)
    if size != expected:
        what = "truncated (partly downloaded?)" if size < expected else "longer than its header says"
        raise UserError(f"{path}: {what}: header says {'x'.join(map(str, shape))} "
                        f"({expected:,} bytes) but the file has {size:,} bytes")
    return shape


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result
