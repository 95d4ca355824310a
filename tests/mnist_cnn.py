"""Real MNIST for the preparation tests, and a small CNN trained on it (module-scoped fixtures): the reader
that judges whether people's pictures, once prepared, read like MNIST's own digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
N_DIGITS = 200  # per image style: 1 % of accuracy is 2 digits


# ---------------------------------------------------------------- MNIST and a reader for it

def _raw_dir() -> Path:
    root = Path(os.environ.get("MNISTLAB_DATA_DIR", "data")).expanduser()
    return (root if root.is_absolute() else REPO / root) / "MNIST" / "raw"


def _read_idx(name: str, header: int) -> np.ndarray:
    return np.fromfile(_raw_dir() / name, dtype=np.uint8, offset=header)


@pytest.fixture(scope="module")
def mnist() -> dict[str, np.ndarray]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    missing = [n for n in names if not (_raw_dir() / n).is_file()]
    if missing:
        pytest.skip(f"MNIST not found: {', '.join(missing)} missing in {_raw_dir()} (set MNISTLAB_DATA_DIR)")
    return {
        "train_x": _read_idx(names[0], 16).reshape(-1, 28, 28),
        "train_y": _read_idx(names[1], 8),
        "test_x": _read_idx(names[2], 16).reshape(-1, 28, 28),
        "test_y": _read_idx(names[3], 8),
    }


@pytest.fixture(scope="module")
def classify(mnist):
    """A LeNet-sized CNN trained for a few seconds on plain MNIST: it can only read MNIST-like input."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core CI box, OpenMP threads waiting on each other cost 3-10x
    model = nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    x = torch.from_numpy(mnist["train_x"][:20000]).float().div(255).unsqueeze(1)
    y = torch.from_numpy(mnist["train_y"][:20000]).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    try:
        for _ in range(2):
            order = torch.randperm(len(x))
            for start in range(0, len(x), 128):
                batch = order[start: start + 128]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model((x[batch] - 0.13) / 0.31), y[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batch = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)
            return model((batch - 0.13) / 0.31).argmax(1).numpy()

    return predict


@pytest.fixture(scope="module")
def sample(mnist):
    """The same N_DIGITS test digits for every style, so the styles compare."""
    index = np.random.default_rng(7).choice(len(mnist["test_x"]), N_DIGITS, replace=False)
    return mnist["test_x"][index], mnist["test_y"][index]


@pytest.fixture(scope="module")
def plain_accuracy(classify, sample):
    digits, labels = sample
    return float((classify(digits / 255.0) == labels).mean())


