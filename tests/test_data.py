import numpy as np
import pytest
import torch

from idx_files import write_dataset, write_idx
from mnistlab.config import load_config
from mnistlab.data import DATASETS, load_data, load_split, resolve_root, split_indices
from mnistlab.errors import UserError


def test_split_is_seeded_disjoint_and_complete():
    train_a, val_a = split_indices(60_000, 0.1, seed=1)
    train_b, val_b = split_indices(60_000, 0.1, seed=1)
    assert torch.equal(train_a, train_b) and torch.equal(val_a, val_b)
    assert len(val_a) == 6_000 and len(train_a) == 54_000
    assert len(set(train_a.tolist()) | set(val_a.tolist())) == 60_000
    _, val_other = split_indices(60_000, 0.1, seed=2)
    assert not torch.equal(val_a, val_other)


def test_split_as_a_count_and_zero():
    train, val = split_indices(1000, 250, seed=0)
    assert len(val) == 250 and len(train) == 750
    train, val = split_indices(1000, 0.0, seed=0)
    assert len(val) == 0 and len(train) == 1000
    with pytest.raises(UserError, match="leaves no training images"):
        split_indices(100, 100, seed=0)


def test_root_resolution_order(monkeypatch):
    monkeypatch.setenv("MNISTLAB_DATA_DIR", "/env")
    assert str(resolve_root("/cli", "/cfg")) == "/cli"
    assert str(resolve_root(None, "/cfg")) == "/cfg"
    assert str(resolve_root(None, None)) == "/env"
    monkeypatch.delenv("MNISTLAB_DATA_DIR")
    assert str(resolve_root(None, None)) == "data"


def test_real_mnist_loads_with_the_seeded_split(mnist_root):
    cfg = load_config(raw={"model": "iter5", "seed": 3, "data": {"val_split": 0.1}})
    data = load_data(cfg.data, cfg.seed, mnist_root)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (54_000, 28, 28)
    assert data.val_x.shape == (6_000, 28, 28) and data.test_x.shape == (10_000, 28, 28)
    assert data.num_classes == 10 and (data.mean, data.std) == (0.1307, 0.3081)
    again = load_data(cfg.data, cfg.seed, mnist_root)
    assert torch.equal(data.val_y, again.val_y) and torch.equal(data.val_x, again.val_x)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_reader_equals_torchvision_on_the_real_files(mnist_root, name):
    from torchvision import datasets  # mnistlab reads the files itself; torchvision is the reference

    spec = DATASETS[name]
    reference_cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    for train in (True, False):
        x, y = load_split(spec, mnist_root, train=train, download=False)
        reference = reference_cls(str(mnist_root), train=train, download=False)
        assert x.dtype == reference.data.dtype and torch.equal(x, reference.data)
        assert y.dtype == reference.targets.dtype and torch.equal(y, reference.targets)


def test_missing_dataset_offline_names_folder_and_files(tmp_path):
    with pytest.raises(UserError) as err:
        load_split(DATASETS["mnist"], tmp_path, train=True, download=False)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def test_failed_download_is_one_clear_error(tmp_path):
    # no network here (and none in CI): the download must fail fast with the same guidance
    with pytest.raises(UserError, match="put .*train-images-idx3-ubyte.* into"):
        load_split(DATASETS["kmnist"], tmp_path, train=True, download=True)


def test_failed_download_names_its_cause():
    from mnistlab.data.datasets import _download_error

    torchvision_message = ("Error downloading train-images-idx3-ubyte.gz:\n"
                           "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n"
                           "Tried http://yann.lecun.com/exdb/mnist/, got:\n"
                           "<urlopen error [Errno 101] Network is unreachable>\n")
    assert _download_error(RuntimeError(torchvision_message)) == "[Errno 101] Network is unreachable"
    assert _download_error(TimeoutError()) == "TimeoutError"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist", "qmnist", "emnist-balanced"])
def test_each_dataset_loads_from_small_idx_files(tmp_path, name):
    spec = DATASETS[name]
    written = write_dataset(tmp_path, spec)
    x, y = load_split(spec, tmp_path, train=True, download=False)
    images = written[spec.files[0]]
    expected = images.transpose(0, 2, 1) if spec.transposed else images  # EMNIST is stored transposed
    assert x.dtype == torch.uint8 and np.array_equal(x.numpy(), expected)
    assert np.array_equal(y.numpy(), written[spec.files[1]][..., 0] if y.ndim == 2 else written[spec.files[1]])
    assert y.dtype == torch.int64 and y.ndim == 1
    x_test, _ = load_split(spec, tmp_path, train=False, download=False)
    assert len(x_test) == 20


def test_emnist_balanced_has_47_classes(tmp_path):
    spec = DATASETS["emnist-balanced"]
    write_dataset(tmp_path, spec)
    cfg = load_config(raw={"model": "iter5", "data": {"dataset": "emnist-balanced", "val_split": 4}})
    data = load_data(cfg.data, cfg.seed, tmp_path)
    assert data.num_classes == 47 and len(data.val_y) == 4 and len(data.train_y) == 36


def test_truncated_idx_is_named(tmp_path):
    spec = DATASETS["mnist"]
    write_dataset(tmp_path, spec)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: truncated \(partly downloaded\?\)"):
        load_split(spec, tmp_path, train=True, download=False)


def test_bad_magic_and_count_mismatch(tmp_path):
    spec = DATASETS["mnist"]
    write_dataset(tmp_path, spec)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"<html>not found</html>" * 10)
    with pytest.raises(UserError, match="not an IDX file"):
        load_split(spec, tmp_path, train=False, download=False)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(39, dtype=np.uint8))
    with pytest.raises(UserError, match="40 images but .* 39 labels"):
        load_split(spec, tmp_path, train=True, download=False)
