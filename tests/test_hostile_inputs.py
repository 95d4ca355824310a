"""Hostile input, by class: configs, data files, checkpoints and paths that once crashed, hung or misled.

The promise under test: a user mistake or a damaged file gets one line of at most 400 characters and a
non-zero exit, fast, with no traceback, and nothing of the user's changes. Each class has examples
that broke an earlier version and, where inputs vary, a property-based test over many more.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, write_config
from idx_files import write_dataset, write_idx
from mnistlab.data.datasets import DATASETS

SHIPPED = REPO / "mnistlab" / "reading" / "weights" / "default.pt"
MAX_LINE = 400


def one_line_error(code, out, err, command="train") -> str:
    assert code not in (0, None), (code, out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"mnistlab {command}: error: "), err[:2000]
    assert len(err.rstrip("\n")) <= MAX_LINE, len(err)
    return err


def cli_process(*args, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, with a time limit: a hang is a failure, not a stuck suite."""
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, **kwargs)


# ---------------------------------------------------------------- configs: bombs, duplicates, documents

ALIAS_BOMB = """model: iter5
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_in_a_second(cli, tmp_path):
    path = write_config(tmp_path / "bomb.yaml", ALIAS_BOMB)
    started = time.monotonic()
    err = one_line_error(*cli("train", path, "--print-config"))
    assert time.monotonic() - started < 5 and "expands to more than" in err


def test_a_self_referencing_yaml_is_refused(cli, tmp_path):
    path = write_config(tmp_path / "loop.yaml", "model: iter5\ntrain: &t {epochs: 1, more: *t}\n")
    err = one_line_error(*cli("train", path, "--print-config"))
    assert "expands to more than" in err or "unknown key" in err


def test_a_huge_config_is_refused_without_reading_it(cli, tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("model: iter5\n# " + "x" * 50_000_000 + "\n")
    started = time.monotonic()
    err = one_line_error(*cli("train", path, "--print-config"))
    assert time.monotonic() - started < 5 and "MB" in err


def test_a_fifo_as_config_does_not_hang(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result = cli_process("train", fifo, "--print-config", timeout=60)
    one_line_error(result.returncode, result.stdout, result.stderr)
    assert "not a regular file" in result.stderr


@pytest.mark.parametrize("text,expected", [
    ("model: iter5\ntrain: {epochs: 2}\ntrain: {epochs: 3}\n", "given twice"),
    ("model: iter5\nseed: 1\nseed: 2\n", "given twice"),
    ("model: iter5\n---\nmodel: mlp\n", "several YAML documents"),
    ("model: [iter5\n", "YAML syntax error"),
    ("modle: iter5\n", "did you mean 'model'"),
    ("model: iter5\ntrian: {epochs: 1}\n", "did you mean 'train'"),
    ("model: iter5\n" + "x" * 900 + ": 1\n", "unknown key"),
    ("model: iter5\nname: " + "x" * 500_000 + "\n", "name: got 'xxxx"),
], ids=["duplicate-section", "duplicate-scalar", "two-documents", "syntax", "modle", "trian", "long-key",
        "500k-value"])
def test_config_files_that_mislead(cli, tmp_path, text, expected):
    path = write_config(tmp_path / "c.yaml", text)
    err = one_line_error(*cli("train", path, "--print-config"))
    assert expected in err


# ---------------------------------------------------------------- values that validated and then crashed

BAD_VALUES = [
    ("data.val_split=.inf", "data.val_split"), ("data.val_split=.nan", "data.val_split"),
    ("data.val_split=-.inf", "data.val_split"), ("train.optimizer.betas=[0.9, 1.0]", "betas"),
    ("train.optimizer.betas=[-0.1, 0.9]", "betas"), ("train.optimizer.lr=.inf", "train.optimizer.lr"),
    ("train.optimizer.lr=1e400", "train.optimizer.lr"), ("train.optimizer.weight_decay=.nan", "weight_decay"),
    ("train.epochs=true", "train.epochs"), ("train.eval_batch_size=false", "eval_batch_size"),
    ("seed=true", "seed"), ("model.dropout_p=.nan", "model.dropout_p"), ("model.dropout_p=true", "dropout_p"),
    ("model.dropout_p='0.3'", "dropout_p"), ("data.augment.translate=.inf", "translate"),
    ("train.label_smoothing=.nan", "label_smoothing"), ("train.scheduler={name: step, step_size: true}", "step_size"),
    ("train.ema=0.5", "train.ema: got 0.5; must be true, false, null or a section"), ("train.ema.decay=1", "decay"),
    ("train.ema.decay=.nan", "decay"), ("data.augment.elastic=5", "data.augment.elastic: got 5; must be null or"),
    ("data.augment.elastic.sigma=7", "sigma"), ("data.augment.elastic.alpha=.inf", "alpha"),
    ("data.augment.elastic.p=1.5", "elastic.p"), ("data.augment.elastic.alpha=true", "alpha"),
]


@pytest.mark.parametrize("override,key", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_values_that_must_not_validate(cli, override, key):
    config = REPO / "configs" / ("iter6.yaml" if override.startswith("model.") else "iter5.yaml")
    err = one_line_error(*cli("train", config, "--set", override, "--print-config"))
    assert key in err


NUMERIC_KEYS = ["data.val_split", "train.epochs", "train.optimizer.lr", "train.optimizer.weight_decay",
                "train.label_smoothing", "train.optimizer.betas", "seed", "model.dropout_p", "train.batch_size",
                "data.augment.rotate", "data.augment.scale", "train.early_stopping.patience",
                "data.augment.elastic.alpha", "data.augment.elastic.sigma", "train.ema.decay"]
odd_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                        st.integers(-2**70, 2**70), st.sampled_from(["1e400", "-1e400", "nan", "inf", "0x10", ""]),
                        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMERIC_KEYS), value=odd_numbers)
def test_any_number_either_validates_finite_or_is_refused(key, value):
    """Whatever lands in a numeric key: a UserError, or a config whose numbers are all finite and not booleans."""
    from mnistlab.config import config_to_dict, validate_config
    from mnistlab.errors import UserError
    from mnistlab.models import check_model

    raw = yaml.safe_load((REPO / "configs" / "iter6.yaml").read_text())
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or node.get(part) is None else node
    node[last] = value
    try:
        cfg = validate_config(raw)
        check_model(cfg.model.name, cfg.model.kwargs)
    except UserError as exc:
        assert len(str(exc)) <= MAX_LINE
        return
    stack = [config_to_dict(cfg)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            assert math.isfinite(item), (key, value)
    if key in ("train.epochs", "seed", "train.batch_size", "train.early_stopping.patience"):
        assert not isinstance(value, bool)


def test_eval_refuses_an_unknown_device(cli, tmp_path):
    err = one_line_error(*cli("eval", SHIPPED, "--device", "tpu"), command="eval")
    assert "--device" in err and "tpu" in err


def test_summary_of_a_model_name_applies_or_refuses_its_overrides(cli):
    err = one_line_error(*cli("summary", "iter6", "--set", "anything=1"), command="summary")
    assert "anything" in err
    code, out, err = cli("summary", "iter6", "--set", "model.dropout_p=0.25")
    assert code == 0 and "'dropout_p': 0.25" in out


# ---------------------------------------------------------------- data files: damaged, foreign, FIFOs

def mnist_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_dataset(root, DATASETS["mnist"], n_train=40, n_test=20)
    return root


def test_labels_out_of_range_are_named(cli, tmp_path):
    root = mnist_folder(tmp_path)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.full(40, 12, dtype=np.uint8))  # right size, wrong content
    err = one_line_error(*cli("train", REPO / "configs" / "iter5.yaml", "--data-dir", root, "--quiet",
                              "--set", "train.epochs=1", "--out-dir", tmp_path / "out"))
    assert "labels run from 12 to 12" in err


def test_images_of_the_wrong_shape_are_named(cli, tmp_path):
    root = mnist_folder(tmp_path)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((40, 14, 56), dtype=np.uint8))  # 28*28 bytes each
    err = one_line_error(*cli("train", REPO / "configs" / "iter5.yaml", "--data-dir", root, "--quiet",
                              "--set", "train.epochs=1", "--out-dir", tmp_path / "out"))
    assert "40x14x56" in err


def test_a_fifo_where_a_dataset_file_should_be_does_not_hang(tmp_path):
    root = mnist_folder(tmp_path)
    image_file = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    image_file.unlink()
    os.mkfifo(image_file)
    result = cli_process("train", REPO / "configs" / "iter5.yaml", "--data-dir", root, "--quiet",
                         "--set", "train.epochs=1", "--out-dir", tmp_path / "out", timeout=60)
    one_line_error(result.returncode, result.stdout, result.stderr)
    assert "not a regular file" in result.stderr


# ---------------------------------------------------------------- checkpoints with the right tag, wrong insides

def damaged_copy(path: Path, **changes) -> Path:
    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is DELETE:
            del ckpt[key]
        else:
            ckpt[key] = value
    torch.save(ckpt, path)
    return path


DELETE = object()
DAMAGE = {
    "no-config": {"config": DELETE}, "std-0": {"normalize": {"mean": 0.1, "std": 0.0}},
    "std-nan": {"normalize": {"mean": 0.1, "std": float("nan")}}, "normalize-list": {"normalize": [0.1, 0.3]},
    "classes-int": {"classes": 10}, "classes-too-few": {"classes": ["0", "1"]}, "model-str": {"model": "iter5"},
    "model-kwargs-list": {"model": {"name": "cnn3_bn", "kwargs": [1], "num_classes": 10, "in_channels": 1}},
    "state-dict-list": {"state_dict": [1, 2]}, "input-size-str": {"input_size": "28x28"},
    "config-list": {"config": [1]}, "version-str": {"format_version": "1"}, "version-true": {"format_version": True},
    "version-future": {"format_version": 99}, "metrics-str": {"metrics": "good"},
}


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_checkpoints_with_wrong_typed_entries(cli, tmp_path, command, damage):
    if command == "predict" and damage == "no-config":
        pytest.skip("predict needs no stored config: the shipped model's copy without one still reads digits")
    ckpt = damaged_copy(tmp_path / "bad.pt", **DAMAGE[damage])
    if command == "eval":
        result = cli("eval", ckpt, "--data-dir", tmp_path / "nowhere", "--device", "cpu")
    else:
        from PIL import Image

        Image.new("L", (28, 28)).save(tmp_path / "x.png")
        result = cli("predict", tmp_path / "x.png", "--ckpt", ckpt)
    err = one_line_error(*result, command=command)
    assert str(ckpt) in err
    if damage.startswith("version-") and damage != "version-future":
        assert "not a whole number" in err and "newer" not in err


def test_a_pickle_payload_is_refused_with_the_words_users_must_see(cli, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "mnistlab-checkpoint", "x": Payload()}, tmp_path / "evil.pt")
    import pickle

    with open(tmp_path / "evil_plain.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f, protocol=4)
    for name in ("evil.pt", "evil_plain.pt"):
        err = one_line_error(*cli("eval", tmp_path / name), command="eval")
        assert "refused: the file holds pickled Python objects" in err
    assert not marker.exists()


def test_a_pretrained_file_holding_a_tensor_or_a_list(cli, tmp_path):
    for name, value in [("tensor.pt", torch.zeros(3)), ("list.pt", [torch.zeros(3)])]:
        torch.save(value, tmp_path / name)
        err = one_line_error(*cli("summary", "vgg16", "--set", f"model.pretrained={tmp_path / name}"),
                             command="summary")
        assert "model.pretrained" in err and "not VGG16 weights" in err


# ---------------------------------------------------------------- paths and images that misled

def test_a_dangling_symlink_as_out_dir_is_named(cli, tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "missing-target")
    err = one_line_error(*cli("compare", REPO / "configs" / "iter5.yaml", "--out-dir", tmp_path / "gone"),
                         command="compare")
    assert "broken symbolic link" in err


def test_eval_plots_pointing_at_a_file(cli, tmp_path):
    (tmp_path / "plots").write_text("mine")
    err = one_line_error(*cli("eval", SHIPPED, "--plots", tmp_path / "plots"), command="eval")
    assert "is a file, not a folder" in err and (tmp_path / "plots").read_text() == "mine"


def test_a_fifo_image_is_not_called_empty(cli, tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    code, out, err = cli("predict", tmp_path / "pipe.png", "--ckpt", SHIPPED)
    assert code == 1 and "not a regular file" in out and "empty" not in out


def test_a_nan_tiff_leaks_no_warning(tmp_path):
    from PIL import Image

    values = np.full((40, 40), np.nan, dtype=np.float32)
    values[10:30, 18:22] = 1.0
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    result = cli_process("predict", tmp_path / "nan.tif", "--ckpt", SHIPPED)
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr
    assert result.returncode in (0, 1) and result.stdout.startswith(str(tmp_path / "nan.tif"))


# ---------------------------------------------------------------- the user's files are never written over

def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_save_preprocessed_into_the_input_folder_changes_none_of_its_files(cli, tmp_path):
    from PIL import Image, ImageDraw

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("scan.png", "scan.jpg", "scan_1.png", "seven.gif"):
        image = Image.new("RGB", (120, 90), "white")
        ImageDraw.Draw(image).line([(40, 20), (80, 20), (55, 75)], fill="black", width=6)
        image.save(folder / name)
    before = digests(folder)
    code, out, err = cli("predict", folder, "--ckpt", SHIPPED, "--save-preprocessed", folder)
    assert code == 0, err
    after = digests(folder)
    assert {name: after[name] for name in before} == before  # every file of the user's, byte for byte
    assert len(after) == len(before) * 2  # and one new file per input


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.tuples(st.sampled_from(["a", "a_1", "a_2", "b", "scan"]),
                                st.sampled_from([".png", ".jpg", ".bmp", ".PNG"])), min_size=1, max_size=6,
                      unique=True))
def test_saving_never_overwrites_whatever_the_names(tmp_path_factory, names):
    from PIL import Image

    from mnistlab.reading.predict import save_prepared

    folder = tmp_path_factory.mktemp("names")
    paths = []
    for stem, suffix in names:
        Image.new("L", (10, 10), 255).save(folder / f"{stem}{suffix}", format="PNG" if suffix != ".jpg" else "JPEG")
        paths.append(folder / f"{stem}{suffix}")
    before = digests(folder)
    save_prepared(paths, [([np.zeros((28, 28), np.float32)], None)] * len(paths), folder)
    after = digests(folder)
    assert {name: after[name] for name in before} == before and len(after) == len(before) + len(paths)
