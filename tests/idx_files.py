"""Small IDX files written by the tests, in torchvision's raw layout."""

from pathlib import Path

import numpy as np

TYPE_CODES = {np.uint8: 0x08, np.int32: 0x0C}


def write_idx(path: Path, array: np.ndarray) -> Path:
    code = TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = array.astype(array.dtype.newbyteorder(">")).tobytes() if array.itemsize > 1 else array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)
    return path


def write_dataset(root: Path, spec, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """Random digits-shaped images and labels for `spec` under root/<folder>/raw."""
    rng = np.random.default_rng(seed)
    raw = root / spec.folder / "raw"
    out = {}
    for (image_name, label_name), n in ((spec.files[:2], n_train), (spec.files[2:], n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, len(spec.classes), size=n).astype(np.uint8)
        write_idx(raw / image_name, images)
        if label_name.endswith("idx2-int"):  # QMNIST: n x 8 int32, the class first
            extended = np.zeros((n, 8), dtype=np.int32)
            extended[:, 0] = labels
            write_idx(raw / label_name, extended)
        else:
            write_idx(raw / label_name, labels)
        out[image_name], out[label_name] = images, labels
    return out
