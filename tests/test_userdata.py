"""Your own digits as a dataset: folders, Kaggle CSV and Keras npz files; the cache; mixing; eval --data;
predict on a CSV with --submission; and a corpus of broken inputs, each one clear line with nothing modified."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab.config import load_config
from mnistlab.data import datacache
from mnistlab.data.datasets import load_data
from mnistlab.data.userdata import class_order
from mnistlab.reading.predict import SHIPPED

PIXELS = [f"pixel{i}" for i in range(784)]


@pytest.fixture(scope="module")
def mnist_test(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    return images, labels


def digit_pages(mnist_test, digit: int, count: int, start: int = 0) -> list[Image.Image]:
    """`count` real MNIST test digits of one class as black ink on a white 84x84 page, as a person's scan."""
    images, labels = mnist_test
    found = np.flatnonzero(labels == digit)[start:start + count]
    return [Image.fromarray(255 - images[i]).resize((84, 84), Image.Resampling.BILINEAR) for i in found]


def write_folder(root: Path, mnist_test, classes: dict[str, int], count: int = 6, start: int = 0) -> Path:
    """root/<name>/<n>.png for each class name, drawn as the MNIST digit it maps to."""
    for name, digit in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for n, page in enumerate(digit_pages(mnist_test, digit, count, start)):
            page.save(root / name / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def digits_dir(mnist_test, tmp_path_factory) -> Path:
    """A flat folder of three digit classes, 8 images each."""
    return write_folder(tmp_path_factory.mktemp("own") / "digits", mnist_test, {"1": 1, "3": 3, "7": 7}, count=8)


def write_csv(path: Path, images: np.ndarray, labels=None) -> Path:
    header = (["label"] if labels is not None else []) + PIXELS
    rows = [",".join(map(str, ([int(labels[i])] if labels is not None else []) + images[i].ravel().tolist()))
            for i in range(len(images))]
    path.write_text("\n".join([",".join(header), *rows]) + "\n")
    return path


def own_config(tmp_path: Path, dataset: str, path: Path, extra: str = "") -> Path:
    config = tmp_path / f"own_{dataset}.yaml"
    config.write_text(f"name: own_{dataset}\nseed: 3\ndevice: cpu\n"
                      f"data: {{dataset: {dataset}, path: '{path}', val_split: 0.2{extra}}}\n"
                      "model: {name: baseline_cnn_small}\n"
                      "train: {epochs: 1, batch_size: 8, limit_train_batches: 2}\n")
    return config


def tree_digest(root: Path) -> str:
    """Every user file's path and bytes under root (the hidden cache folder aside: mnistlab's own)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if datacache.CACHE_FOLDER in path.parts or not path.is_file():
            continue
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_class_names_sort_digits_as_numbers_then_the_rest():
    names = ["b", "10", "2", "A", "0", "+"]
    assert sorted(names, key=class_order) == ["0", "2", "10", "+", "A", "b"]


def test_folder_layouts_splits_and_the_fixed_test_seed(digits_dir, tmp_path):
    cfg = load_config(None, [f"data.path={digits_dir}"], raw={"model": {"name": "mlp"}, "data": {"dataset": "folder"}})
    a, b = load_data(cfg.data, 0, tmp_path), load_data(cfg.data, 1, tmp_path)
    assert a.classes == ("1", "3", "7") and a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (28, 28)
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 24 and len(a.test_y) == 5  # test_split 0.2 of 24
    assert torch.equal(a.test_x, b.test_x)  # the test images do not depend on the run's seed ...
    assert not torch.equal(a.val_x, b.val_x)  # ... the validation images do
    assert 0.05 < a.mean < 0.5 and a.std > 0.1  # normalize: dataset is the images' own
    split = tmp_path / "split"
    for part in ("train", "val", "test"):
        shutil.copytree(digits_dir, split / part, ignore=shutil.ignore_patterns(".*"))
    (split / "test" / "7" / "0.png").unlink()
    shutil.rmtree(split / "test" / "3")
    (split / ".hidden").mkdir()
    cfg = load_config(None, [f"data.path={split}"], raw={"model": {"name": "mlp"}, "data": {"dataset": "folder"}})
    data = load_data(cfg.data, 0, tmp_path)
    assert len(data.train_y) == len(data.val_y) == 24 and len(data.test_y) == 15
    assert set(data.test_y.tolist()) == {0, 2}
    assert any("no image of class 3" in note for note in data.notes)
    assert any(note.startswith("warning: leakage: 15 of 15 test images") for note in data.notes)


def test_the_cache_prepares_each_file_once(digits_dir, tmp_path, monkeypatch):
    folder = shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".*"))
    prepared = []
    real = datacache.prepare_all
    monkeypatch.setattr(datacache, "prepare_all", lambda paths, **kw: prepared.extend(paths) or real(paths, **kw))
    cfg = load_config(None, [f"data.path={folder}"], raw={"model": {"name": "mlp"}, "data": {"dataset": "folder"}})
    first = load_data(cfg.data, 0, tmp_path)
    assert len(prepared) == 24 and (folder / ".mnistlab-cache").is_dir()
    again = load_data(cfg.data, 0, tmp_path)
    assert len(prepared) == 24 and torch.equal(first.train_x, again.train_x)  # read back, none prepared
    Image.open(folder / "3" / "0.png").rotate(90).save(folder / "3" / "0.png")  # a changed file
    load_data(cfg.data, 0, tmp_path)
    assert prepared[24:] == [folder / "3" / "0.png"]
    cache_file = next((folder / ".mnistlab-cache").iterdir())
    cache_file.write_bytes(b"damaged")
    load_data(cfg.data, 0, tmp_path)
    assert len(prepared) == 25 + 24  # a damaged cache is prepared again, not an error
    resized = load_config(None, [f"data.path={folder}", "data.prepare=resize"],
                          raw={"model": {"name": "mlp"}, "data": {"dataset": "folder"}})
    load_data(resized.data, 0, tmp_path)
    assert len(prepared) == 25 + 48  # another preparation setting: all again


def test_train_on_a_folder_of_named_classes_then_predict_prints_them(cli, mnist_test, tmp_path):
    folder = write_folder(tmp_path / "letters", mnist_test, {"one": 1, "zero": 0}, count=6)
    code, out, err = cli("train", own_config(tmp_path, "folder", folder), "--out-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    run = next((tmp_path / "runs" / "own_folder").iterdir())
    assert torch.load(run / "best.pt", weights_only=True)["classes"] == ["one", "zero"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "folder" and summary["num_classes"] == 2
    code, out, err = cli("predict", folder / "one" / "0.png", "--ckpt", run / "best.pt", "--json")
    assert code == 0 and json.loads(out)[0]["prediction"] in ("one", "zero")
    from mnistlab.training.choice import find_checkpoint

    assert find_checkpoint("latest", tmp_path / "runs")[0] == run / "best.pt"  # a fine-tune on your own set
    assert find_checkpoint(None, tmp_path / "runs")[1] == "the default model shipped with mnistlab"  # not MNIST's


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_train_on_a_csv_and_an_npz_file(cli, mnist_test, tmp_path, kind):
    images, labels = mnist_test[0][:40], mnist_test[1][:40]
    if kind == "csv":
        path = write_csv(tmp_path / "train.csv", images, labels)
    else:
        path = tmp_path / "mnist.npz"
        np.savez(path, x_train=images[:30], y_train=labels[:30], x_test=images[30:], y_test=labels[30:])
    code, out, err = cli("train", own_config(tmp_path, kind, path), "--out-dir", tmp_path / "runs")
    assert code == 0, err
    assert f"on {kind} {path}, " in out
    assert "on all 10 test images" in out or "on all 8 test images" in out  # npz: its own 10; csv: 0.2 of 40


def test_mix_adds_mnist_training_images_and_maps_classes_by_name(digits_dir, mnist_root, tmp_path):
    raw = {"model": {"name": "mlp"}, "data": {"dataset": "folder", "path": str(digits_dir),
                                              "mix": {"dataset": "mnist", "repeat": 3}}}
    data = load_data(load_config(None, raw=raw).data, 0, mnist_root)
    own = load_data(load_config(None, raw={**raw, "data": {**raw["data"], "mix": None}}).data, 0, mnist_root)
    assert data.classes == tuple("0123456789") and len(data.train_y) == 60_000 + 3 * len(own.train_y)
    assert torch.equal(data.test_x, own.test_x) and set(data.test_y.tolist()) <= {1, 3, 7}
    assert (data.test_y == torch.tensor([1, 3, 7])[own.test_y]).all()


def test_eval_data_scores_a_folder_by_class_name(cli, digits_dir, tmp_path):
    code, out, err = cli("eval", SHIPPED, "--data", digits_dir, "--json", "--plots", tmp_path / "plots")
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 24 and report["split"] == "all" and report["accuracy"] > 0.8
    assert sum(map(sum, report["confusion_matrix"])) == 24
    assert report["per_class_accuracy"][0] is None and report["per_class_accuracy"][1] is not None  # no 0s here
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion_all.png", "misclassified_all.png"]
    letters = tmp_path / "letters"
    (letters / "x").mkdir(parents=True)
    shutil.copy(digits_dir / "1" / "0.png", letters / "x" / "a.png")
    code, out, err = cli("eval", SHIPPED, "--data", letters)
    assert code == 2 and "class 'x' of" in err and "not among the checkpoint's classes" in err
    code, out, err = cli("eval", SHIPPED, "--data", digits_dir, "--split", "val")
    assert code == 2 and "--split picks one of the run's own splits" in err


def test_predict_a_kaggle_csv_and_write_a_submission(cli, mnist_test, tmp_path):
    test_csv = write_csv(tmp_path / "test.csv", mnist_test[0][:20])
    code, out, err = cli("predict", test_csv, "--ckpt", SHIPPED, "--submission", tmp_path / "sub.csv")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"{test_csv} row 1: ")
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert rows[0] == "ImageId,Label" and len(rows) == 21 and rows[1].startswith("1,")
    right = sum(int(r.split(",")[1]) == label for r, label in zip(rows[1:], mnist_test[1][:20]))
    assert right >= 18
    code, out, err = cli("predict", test_csv, "--ckpt", SHIPPED, "--submission", tmp_path / "sub.csv")
    assert code == 2 and "exists" in err and (tmp_path / "sub.csv").read_text().splitlines() == rows


def test_skip_bad_skips_and_names_the_files(cli, digits_dir, tmp_path):
    folder = shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".*"))
    (folder / "3" / "notes.txt").write_text("not a digit")
    Image.new("L", (60, 60), 255).save(folder / "7" / "blank.png")
    code, out, err = cli("train", own_config(tmp_path, "folder", folder, ", skip_bad: true"), "--out-dir",
                         tmp_path / "runs")
    assert code == 0, err
    assert "skipped 2 of 26 files" in out and "3/notes.txt (not an image" in out and "7/blank.png (no ink" in out


def broken_folders(root: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name: (data.path, what its one line says), for data.dataset folder."""
    def copy(name):
        return shutil.copytree(good, root / name, ignore=shutil.ignore_patterns(".*"))

    cases = {}
    cases["not an image"] = (copy("junk"), "not an image")
    (root / "junk" / "3" / "x.png").write_bytes(b"no png here")
    cases["no ink"] = (copy("blank"), "no ink found")
    Image.new("L", (50, 50), 255).save(root / "blank" / "1" / "white.png")
    cases["empty class"] = (copy("empty"), "empty class folder")
    (root / "empty" / "9").mkdir()
    one = root / "one"
    shutil.copytree(good / "1", one / "1")
    cases["one class"] = (one, "only the class '1'")
    cases["unknown test class"] = (root / "split", "class '5' is not among the training classes")
    shutil.copytree(good, root / "split" / "train", ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(good / "1", root / "split" / "test" / "5")
    cases["empty test part"] = (root / "split_empty", "holds no images")
    shutil.copytree(good, root / "split_empty" / "train", ignore=shutil.ignore_patterns(".*"))
    (root / "split_empty" / "test").mkdir()
    cases["fifo"] = (copy("fifo"), "not a regular file")
    os.mkfifo(root / "fifo" / "7" / "pipe.png")
    cases["missing"] = (root / "nowhere", "cannot read")
    cases["a file"] = (good / "1" / "0.png", "is not a folder")
    return cases


def broken_tables(root: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, tuple[str, Path, str]]:
    """name: (dataset, data.path, what its one line says)."""
    cases = {}
    good = write_csv(root / "good.csv", images, labels).read_text().splitlines()

    def csv(name, lines):
        path = root / f"{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        return path

    cases["columns"] = ("csv", csv("columns", good[:3] + [good[3] + ",7"]), "line 4: 786 values, not 785")
    cases["not a number"] = ("csv", csv("nan", good[:2] + [good[2].replace(",0,", ",x,", 1)]), "line 3: pixel")
    cases["over 255"] = ("csv", csv("big", good[:5] + [good[5].replace(",0,", ",256,", 1)]), "outside 0-255")
    cases["label"] = ("csv", csv("label", good[:2] + ["12" + good[2][1:]]), "line 3: label 12 is not a digit")
    cases["unlabelled"] = ("csv", write_csv(root / "test.csv", images), "has no label column")
    cases["header"] = ("csv", csv("header", ["a,b,c", "1,2,3"]), "line 1: expected the header")
    (root / "binary.csv").write_bytes(b"\xff\xfe\x00garbage" * 100)
    cases["binary"] = ("csv", root / "binary.csv", "not a text CSV file")
    np.savez(root / "objects.npz", x_train=np.array([object()] * 3, dtype=object), y_train=np.zeros(3))
    cases["objects"] = ("npz", root / "objects.npz", "holds Python objects")
    np.savez(root / "keys.npz", images=images)
    cases["keys"] = ("npz", root / "keys.npz", "expected x_train, y_train")
    np.savez(root / "shape.npz", x_train=images.reshape(-1, 784), y_train=labels)
    cases["shape"] = ("npz", root / "shape.npz", "expected N x 28 x 28 images")
    np.savez(root / "floats.npz", x_train=images / 255, y_train=labels)
    cases["dtype"] = ("npz", root / "floats.npz", "float64 values; expected uint8")
    np.save(root / "one.npy", images)
    cases["npy"] = ("npz", (root / "one.npy").rename(root / "one.npz"), "a single .npy array")
    (root / "empty.csv").write_bytes(b"")
    cases["empty csv"] = ("csv", root / "empty.csv", "line 1: expected the header")
    cases["only a header"] = ("csv", csv("header_only", good[:1]), "no image rows after its header")
    (root / "zip.npz").write_bytes(b"PK\x03\x04 not really")
    cases["not a zip"] = ("npz", root / "zip.npz", "not a readable .npz file")
    return cases


def test_broken_inputs_are_one_clear_line_and_nothing_is_modified(cli, digits_dir, mnist_test, tmp_path):
    """Every broken folder, CSV and npz file: exit 2, one line naming the file, no traceback, files unchanged."""
    root = tmp_path / "broken"
    root.mkdir()
    cases = {name: ("folder", path, said) for name, (path, said) in broken_folders(root, digits_dir).items()}
    cases.update(broken_tables(root, mnist_test[0][:12], mnist_test[1][:12]))
    before = tree_digest(root)
    for name, (dataset, path, said) in cases.items():
        code, out, err = cli("train", own_config(tmp_path, dataset, path), "--out-dir", tmp_path / "runs")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and said in lines[0], (name, err)
        assert str(path) in lines[0] or path.name in lines[0], (name, err)
    assert tree_digest(root) == before
    assert not (tmp_path / "runs").exists()  # decided before any training


def test_a_folder_that_cannot_hold_the_cache_uses_the_user_cache(digits_dir, tmp_path, monkeypatch):
    folder = shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".*"))
    (folder / datacache.CACHE_FOLDER).write_text("a file in the way: the folder cannot take the cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    prepared = []
    real = datacache.prepare_all
    monkeypatch.setattr(datacache, "prepare_all", lambda paths, **kw: prepared.extend(paths) or real(paths, **kw))
    cfg = load_config(None, [f"data.path={folder}"], raw={"model": {"name": "mlp"}, "data": {"dataset": "folder"}})
    load_data(cfg.data, 0, tmp_path)
    load_data(cfg.data, 0, tmp_path)
    assert len(prepared) == 24 and len(list((tmp_path / "xdg" / "mnistlab").glob("*/prepared-reading-v*.npz"))) == 1


def test_eval_data_scores_the_test_part_and_a_csv_skipping_bad_rows(cli, digits_dir, mnist_test, tmp_path):
    for part in ("train", "test"):
        shutil.copytree(digits_dir, tmp_path / "split" / part, ignore=shutil.ignore_patterns(".*"))
    shutil.rmtree(tmp_path / "split" / "test" / "3")
    code, out, err = cli("eval", SHIPPED, "--data", tmp_path / "split", "--json")
    assert code == 0, err
    assert json.loads(out)["split"] == "test" and json.loads(out)["n"] == 16
    lines = write_csv(tmp_path / "train.csv", mnist_test[0][:10], mnist_test[1][:10]).read_text().splitlines()
    lines[4] = lines[4].replace(",0,", ",-3,", 1)
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    code, out, err = cli("eval", SHIPPED, "--data", tmp_path / "train.csv", "--json")
    assert code == 2 and f"{tmp_path / 'train.csv'} line 5: pixel" in err and "outside 0-255" in err
    code, out, err = cli("eval", SHIPPED, "--data", tmp_path / "train.csv", "--json", "--skip-bad")
    assert code == 0 and json.loads(out)["n"] == 9
    assert "skipped 1 of 10 rows" in err and "line 5 (pixel" in err


def test_a_huge_image_file_is_refused_unread(cli, digits_dir, tmp_path, monkeypatch):
    from mnistlab.data import userdata

    folder = shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setattr(userdata, "MAX_IMAGE_BYTES", 2**20)
    (folder / "7" / "huge.png").write_bytes(b"\0" * (3 * 2**20))
    code, out, err = cli("train", own_config(tmp_path, "folder", folder), "--out-dir", tmp_path / "runs")
    assert code == 2 and f"{folder / '7' / 'huge.png'}: 3 MB, over the 1 MB an image may have" in err


def test_eval_data_names_a_built_in_test_set_for_what_a_fine_tuned_model_still_reads(cli, mnist_root):
    from mnistlab.training.choice import shipped_accuracy

    code, out, err = cli("eval", "default", "--data", "mnist", "--data-dir", mnist_root, "--json")
    report = json.loads(out)
    assert code == 0 and report["n"] == 10_000 and report["dataset"] == "mnist", err
    assert report["accuracy"] == pytest.approx(shipped_accuracy(), abs=1e-9)
    code, _, err = cli("eval", "default", "--data", "fashion-mnist", "--data-dir", mnist_root)
    assert code == 2 and "classes" in err and "Traceback" not in err


def test_a_class_the_splits_leave_without_training_images_is_a_warning():
    from mnistlab.data.datasets import lacking_classes
    from mnistlab.data.userdata import Part

    def part(labels):
        return Part(np.zeros((len(labels), 28, 28), np.uint8), np.array(labels, np.int64), [""] * len(labels),
                    [""] * len(labels))

    notes = lacking_classes({"train": part([0, 0, 1]), "val": part([1]), "test": part([2, 0])}, ("a", "b", "c"))
    assert notes[0].startswith("warning: no training image of class c is left")
    assert notes[1] == "warning: the 1 val images hold no image of class a, c"
    assert notes[2:] == ["warning: the 2 test images hold no image of class b"]


def test_mix_repeat_auto_makes_your_images_about_a_twentieth_of_the_mixed_set():
    from mnistlab.data.datasets import MIX_SHARE, mix_repeat

    for builtin, mine in [(60_000, 100), (60_000, 37), (60_000, 2_000), (112_800, 300)]:
        repeat = mix_repeat("auto", builtin, mine)

        def off(r):
            return abs(r * mine / (builtin + r * mine) - MIX_SHARE)

        assert off(repeat) <= min(off(repeat - 1), off(repeat + 1)) + 0.002, (builtin, mine, repeat)  # the nearest
    assert mix_repeat("auto", 60_000, 10_000) == 1 and mix_repeat("auto", 10**9, 1) == 1000  # its bounds
    assert mix_repeat(3, 60_000, 100) == 3  # a number is taken as given
