"""`mnistlab predict` end to end: real MNIST digits and people's pictures of them, read by the shipped model.

Covers the CLI as users run it: a directory of MNIST test digits (with and without
framing), pictures redrawn the way people hand them in (a thin pen on a big
canvas, a transparent PNG, light-on-dark JPEGs, small tilted digits off in a
corner, flat-colour drawing-app exports, a 12 MP photo), the checkpoint choice
(--ckpt > ./checkpoints/**/best.pt > shipped), --json / --top-k /
--save-preprocessed, folders mixing good and broken files, usage errors, and
checkpoints that must be refused (a real pickle payload that never runs,
truncated and foreign files). The fuzz tests of `predict` are in
tests/test_predict_fuzz.py.

Every test here reads MNIST test digits: it needs the MNIST IDX files under
$MNISTLAB_DATA_DIR/MNIST/raw/ (else ../shared/data beside the repository, see
tests/conftest.py) and is skipped without them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_subprocess
from digit_styles import chalkboard, draw, pen_on_canvas, png_header_only, transparent_rgba
from mnistlab.imaging import prepare as prepare_module
from mnistlab.reading import predict as predict_module

SHIPPED = predict_module.SHIPPED  # mnistlab/weights/default.pt of the mnistlab under test
# Damaged files make Pillow warn (corrupt EXIF, TIFF tags past the end...) before it raises or reads on: expected.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL")]
N_PLAIN = 500  # plain MNIST digits: over PARALLEL_FROM, so the process pool reads them
N_PEOPLE = 100  # per style of people's pictures: 1 % of accuracy is 1 digit


def invoke(*args) -> tuple[int, str, str]:
    """The CLI in-process, for module-scoped fixtures (the `cli` fixture is per test)."""
    from mnistlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def by_name(results: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in results}


def accuracy(results: list[dict], labels: dict[str, int]) -> float:
    found = by_name(results)
    assert sorted(found) == sorted(labels), "one result per file, no more, no less"
    errors = [r for r in results if "error" in r]
    assert not errors, errors[:3]
    return sum(found[name]["prediction"] == str(label) for name, label in labels.items()) / len(labels)


# ---------------------------------------------------------------- MNIST test digits

@pytest.fixture(scope="module")
def mnist_test(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    raw = mnist_root / "MNIST" / "raw"
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    return images, labels


@pytest.fixture(scope="module")
def plain_dir(mnist_test, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The first N_PLAIN test digits as 28x28 PNGs, white on black, named by index only."""
    folder = tmp_path_factory.mktemp("plain")
    images, labels = mnist_test
    for i in range(N_PLAIN):
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return folder, {f"{i:04d}.png": int(labels[i]) for i in range(N_PLAIN)}


def digit_png(folder: Path, name: str, mnist_test, index: int) -> tuple[Path, str]:
    """One MNIST test digit as dark ink on a white 280x280 page; returns the file and its label."""
    images, labels = mnist_test
    page = Image.fromarray(255 - images[index]).resize((280, 280), Image.Resampling.BILINEAR)
    path = folder / name
    page.save(path)
    return path, str(labels[index])


@pytest.mark.parametrize("extra", [[], ["--no-preprocess"]], ids=["framed", "no-preprocess"])
def test_mnist_test_digits_in_a_directory(cli, plain_dir, extra, monkeypatch, tmp_path):
    folder, labels = plain_dir
    monkeypatch.chdir(tmp_path)  # no ./checkpoints here: the shipped model reads them
    code, out, err = cli("predict", folder, "--json", *extra)
    assert code == 0, err
    assert f"checkpoint: {SHIPPED} (the default model shipped with mnistlab)" in err
    results = json.loads(out)
    assert [r["path"] for r in results] == [str(folder / name) for name in sorted(labels)]
    score = accuracy(results, labels)
    print(f"{' '.join(extra) or 'framed'}: {score:.3f} on {len(labels)} MNIST test digits")
    assert score >= 0.99


# ---------------------------------------------------------------- people's pictures of MNIST test digits

def light_on_dark_jpeg(digit, rng, path):
    """White pen on a dark screen or board, saved as a JPEG: the opposite polarity of paper."""
    back = tuple(int(v) for v in rng.integers(0, 70, 3))
    img = draw(digit, rng, (640, 480), pen=int(rng.integers(4, 11)), height=rng.uniform(150, 380), mode="RGB",
                paper=back, ink=(235, 235, 225))
    img.save(path.with_suffix(".jpg"), quality=int(rng.integers(60, 90)))
    return path.with_suffix(".jpg")


def small_tilted_off_centre(digit, rng, path):
    """A small digit tilted up to 15 degrees, anywhere on a big phone-sized photo of grey paper."""
    img = draw(digit, rng, (1200, 900), pen=int(rng.integers(4, 8)), height=rng.uniform(90, 220), tilt=15.0,
                mode="RGB", paper=(225, 222, 215), ink=(30, 30, 60), margin=20)
    img.save(path.with_suffix(".jpg"), quality=85)
    return path.with_suffix(".jpg")


def flat_colour_drawing(digit, rng, path):
    """A drawing app's export: one flat ink colour on one flat paper colour, no noise, as an RGB PNG.

    Regression: the luminance of such colours varies by a float32 rounding error over the
    picture, and the ink-level histogram could not be cut into bins: ValueError, the whole run lost.
    """
    paper, ink = (tuple(int(v) for v in rng.integers(low, low + 90, 3)) for low in rng.permutation([0, 166]))
    img = draw(digit, rng, (int(rng.integers(300, 900)), int(rng.integers(300, 700))), pen=int(rng.integers(3, 13)),
                height=rng.uniform(150, 280), mode="RGB", paper=paper, ink=ink)
    img.save(path.with_suffix(".png"), compress_level=1)
    return path.with_suffix(".png")


PEOPLE_STYLES = [pen_on_canvas, transparent_rgba, chalkboard, light_on_dark_jpeg, small_tilted_off_centre,
                 flat_colour_drawing]


@pytest.fixture(scope="module")
def peoples_results(mnist_test, tmp_path_factory) -> dict[str, tuple[list[dict], dict[str, int]]]:
    """All styles in one folder, read by one `mnistlab predict --json` (over PARALLEL_FROM: the pool's path)."""
    images, labels = mnist_test
    index = np.random.default_rng(11).choice(len(images), N_PEOPLE, replace=False)
    folder = tmp_path_factory.mktemp("people")
    truth: dict[str, dict[str, int]] = {}
    for style in PEOPLE_STYLES:
        rng = np.random.default_rng(zlib.crc32(style.__name__.encode()))
        truth[style.__name__] = {style(images[i], rng, folder / f"{style.__name__}_{n:03d}").name: int(labels[i])
                                 for n, i in enumerate(index)}
    code, out, err = invoke("predict", folder, "--json", "--ckpt", SHIPPED)
    assert code == 0, err
    results = json.loads(out)
    return {name: ([r for r in results if Path(r["path"]).name in names], names) for name, names in truth.items()}


@pytest.mark.parametrize("style", [s.__name__ for s in PEOPLE_STYLES])
def test_peoples_pictures_through_the_cli(peoples_results, style):
    results, labels = peoples_results[style]
    score = accuracy(results, labels)
    print(f"{style}: {score:.3f} on {len(labels)} pictures")
    assert score >= 0.90


def test_a_12_megapixel_phone_photo(cli, mnist_test, tmp_path):
    """Big files are shrunk before the work, not refused: a 4000x3000 JPEG of a page with one digit on it."""
    images, labels = mnist_test
    for n, index in enumerate((3, 4)):
        photo = draw(images[index], np.random.default_rng(n), (4000, 3000), pen=14, height=1200, mode="RGB",
                      paper=(230, 228, 220), ink=(20, 20, 40))
        photo.save(tmp_path / f"IMG_{n}.jpg", quality=90)
    code, out, err = cli("predict", tmp_path, "--json", "--ckpt", SHIPPED)
    assert code == 0, err
    assert [r["prediction"] for r in json.loads(out)] == [str(labels[3]), str(labels[4])]


def test_the_people_styles_have_teeth(peoples_results, tmp_path):
    """Squashed to 28x28 and inverted, without the framing, the big canvases read poorly: the test is not trivial."""
    results, labels = peoples_results["pen_on_canvas"]
    squashed_dir = tmp_path / "squashed"
    squashed_dir.mkdir()
    for r in results:
        img = Image.open(r["path"]).convert("L").resize((28, 28), Image.Resampling.BOX)
        Image.fromarray(255 - np.asarray(img)).save(squashed_dir / Path(r["path"]).name)
    code, out, _ = invoke("predict", squashed_dir, "--json", "--no-preprocess", "--ckpt", SHIPPED)
    assert code == 0
    assert accuracy(json.loads(out), labels) < 0.5


# ---------------------------------------------------------------- which checkpoint

def relabelled_copy(path: Path, classes: list[str]) -> Path:
    """The shipped model under other class names: its answers say which checkpoint gave them."""
    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    ckpt["classes"] = classes
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def finished_run(root: Path, name: str, test_acc: float, classes: list[str], smoke: bool = False,
                 finished: int | None = None) -> Path:
    """A run directory as `mnistlab train` leaves it, with a relabelled copy of the shipped model."""
    run_dir = root / "checkpoints" / name / "run"
    best = relabelled_copy(run_dir / "best.pt", classes)
    limits = "limit_train_batches: 3" if smoke else "limit_train_batches: null"
    (run_dir / "config.yaml").write_text(f"name: {name}\ntrain:\n  {limits}\n")
    (run_dir / "summary.json").write_text(json.dumps({"test_acc": test_acc, "dataset": "mnist",
                                                      "test_n": 10 if smoke else 10_000}))
    if finished is not None:
        os.utime(run_dir / "summary.json", (finished, finished))
    return best


def test_checkpoint_choice(cli, mnist_test, tmp_path, monkeypatch):
    """Without --ckpt: the best test accuracy among full finished runs and the shipped model (99.58%)."""
    monkeypatch.chdir(tmp_path)
    image, label = digit_png(tmp_path, "digit.png", mnist_test, 0)
    digit = int(label)

    code, out, err = cli("predict", image)
    assert code == 0 and out.startswith(f"{image}: {label} (")
    assert err == f"checkpoint: {SHIPPED} (the default model shipped with mnistlab)\n"  # no run to weigh

    finished_run(tmp_path, "weaker", 0.98, list("ABCDEFGHIJ"), finished=1_000_000_000)
    finished_run(tmp_path, "smoke", 1.0, list("abcdefghij"), smoke=True)  # newest, and "perfect" on 10 images
    code, out, err = cli("predict", image)
    assert code == 0 and out.startswith(f"{image}: {label} (") and str(SHIPPED) in err  # neither beats it

    finished_run(tmp_path, "better", 0.999, list("KLMNOPQRST"), finished=1_000_000_001)
    code, out, err = cli("predict", image)
    assert out.startswith(f"{image}: {'KLMNOPQRST'[digit]} (")
    assert err == ("checkpoint: checkpoints/better/run/best.pt (the best test accuracy, 99.90%, among 2 finished "
                   "full run(s) under ./checkpoints and the shipped model)\n")

    code, out, err = cli("predict", image, "--ckpt", "latest")
    assert out.startswith(f"{image}: {'abcdefghij'[digit]} (") and "the newest finished run" in err
    code, out, err = cli("predict", image, "--ckpt", "best")
    assert out.startswith(f"{image}: {'KLMNOPQRST'[digit]} (")
    code, out, err = cli("predict", image, "--ckpt", "default")
    assert out.startswith(f"{image}: {label} (") and err == f"checkpoint: {SHIPPED} (the default model shipped " \
                                                            f"with mnistlab)\n"

    mine = relabelled_copy(tmp_path / "elsewhere" / "mine.pt", list("UVWXYZabcd"))
    code, out, err = cli("predict", image, "--ckpt", mine)
    assert code == 0 and out.startswith(f"{image}: {'UVWXYZabcd'[digit]} (")
    assert err == f"checkpoint: {mine} (given with --ckpt)\n"


# ---------------------------------------------------------------- output: --json, --top-k, order, --save-preprocessed

def test_json_top_k_order_hidden_files_and_saved_inputs(cli, mnist_test, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    labels = {}
    for n, name in enumerate(["c.png", "a.png", "B.jpg", "b.png", "d.gif"]):  # written out of order
        path, label = digit_png(folder, name, mnist_test, n)
        labels[name] = label
    digit_png(folder, ".hidden.png", mnist_test, 9)
    (folder / "sub").mkdir()
    digit_png(folder / "sub", "e.png", mnist_test, 10)  # not recursive
    saved = tmp_path / "seen"

    code, out, err = cli("predict", folder, "--json", "--top-k", "3", "--ckpt", SHIPPED, "--save-preprocessed", saved)
    assert code == 0, err
    results = json.loads(out)
    assert [r["path"] for r in results] == [str(folder / n) for n in ["B.jpg", "a.png", "b.png", "c.png", "d.gif"]]
    for r in results:
        assert set(r) == {"path", "prediction", "confidence", "top_k"}
        assert r["prediction"] == labels[Path(r["path"]).name]
        top = r["top_k"]
        assert len(top) == 3 and all(set(t) == {"label", "probability"} for t in top)
        assert len({t["label"] for t in top}) == 3 and all(t["label"] in "0123456789" for t in top)
        probabilities = [t["probability"] for t in top]
        assert probabilities == sorted(probabilities, reverse=True) and 0 <= probabilities[-1]
        assert sum(probabilities) <= 1 + 1e-6
        assert top[0] == {"label": r["prediction"], "probability": r["confidence"]} and r["confidence"] > 0.5

    # --save-preprocessed: the 28x28 the model saw, one per input; read back as-is they give the same answers
    assert sorted(p.name for p in saved.iterdir()) == ["B.png", "a.png", "b.png", "c.png", "d.png"]
    for path in saved.iterdir():
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (28, 28) and img.format == "PNG"
    code, out, _ = cli("predict", saved, "--json", "--no-preprocess", "--ckpt", SHIPPED)
    again = {Path(r["path"]).stem: r for r in json.loads(out)}
    for r in results:
        assert again[Path(r["path"]).stem]["prediction"] == r["prediction"]
        assert again[Path(r["path"]).stem]["confidence"] == pytest.approx(r["confidence"], abs=0.02)

    # the plain output: one line per image, `path: 7 (98.4%), 1 (0.9%)`
    code, out, _ = cli("predict", folder, "--top-k", "2", "--ckpt", SHIPPED)
    lines = out.splitlines()
    assert len(lines) == 5
    for line, r in zip(lines, results):
        match = re.fullmatch(r"(.+): (\d) \((\d+\.\d)%\), (\d) \((\d+\.\d)%\)", line)
        assert match and match[1] == r["path"] and match[2] == r["prediction"]
        assert float(match[3]) == pytest.approx(100 * r["confidence"], abs=0.051)


def test_save_preprocessed_names_never_clash(cli, mnist_test, tmp_path):
    """Same stem in several folders or extensions: every input still gets its own file (and no endless loop)."""
    inputs = []
    for folder, name in [("d1", "a.png"), ("d1", "a_2.png"), ("d1", "a.jpg"), ("d2", "a.png"), ("d3", "a.png")]:
        (tmp_path / folder).mkdir(exist_ok=True)
        inputs.append(digit_png(tmp_path / folder, name, mnist_test, len(inputs))[0])
    code, _, err = cli("predict", *inputs, "--ckpt", SHIPPED, "--save-preprocessed", tmp_path / "seen")
    assert code == 0, err
    assert len(list((tmp_path / "seen").iterdir())) == len(inputs)


def test_save_preprocessed_into_a_file_is_a_usage_error(cli, mnist_test, tmp_path):
    image, _ = digit_png(tmp_path, "digit.png", mnist_test, 0)
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    code, out, err = cli("predict", image, "--ckpt", SHIPPED, "--save-preprocessed", blocker)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--save-preprocessed" in err
    assert blocker.read_text() == "a file, not a folder"


# ---------------------------------------------------------------- broken files and usage errors

def write_broken_files(folder: Path) -> dict[str, str]:
    """One of each way a file in a user's folder can be no digit; name -> a word its error must contain."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)).save(buffer, "PNG")
    png = buffer.getvalue()
    (folder / "noise.png").write_bytes(np.random.default_rng(1).bytes(3000))
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("these are my digits\n")
    (folder / "zero.pgm").write_bytes(b"P5\n0 10\n255\n")
    Image.new("RGB", (300, 200), (255, 255, 255)).save(folder / "white.png")
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    return {"noise.png": "not an image", "truncated.png": "truncated", "empty.png": "empty",
            "notes.txt": "not an image", "zero.pgm": "", "white.png": "no ink", "bomb.png": "too large"}


@pytest.mark.parametrize("mode", ["one-by-one", "threads", "process-pool"])
def test_a_folder_mixing_good_and_broken_files(cli, mnist_test, tmp_path, monkeypatch, mode):
    if mode == "process-pool":
        monkeypatch.setattr(prepare_module, "PARALLEL_FROM", 1)
    jobs = ["--jobs", "1"] if mode == "one-by-one" else ["--jobs", "100000"]  # a typo's worth: 64 at most
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = dict(digit_png(folder, f"good{n}.png", mnist_test, n) for n in range(6))
    good = {path.name: label for path, label in good.items()}
    broken = write_broken_files(folder)

    code, out, err = cli("predict", folder, "--ckpt", SHIPPED, *jobs)
    assert code == 1
    assert err.splitlines() == [f"checkpoint: {SHIPPED} (given with --ckpt)"]
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert len(lines) == len(out.splitlines()) == len(good) + len(broken)
    for name, label in good.items():
        assert lines[str(folder / name)].startswith(f"{label} (")
    for name, word in broken.items():
        reason = lines[str(folder / name)]
        assert reason.startswith("error: ") and word in reason, (name, reason)
        assert str(folder) not in reason, "the path is said once, at the start of the line"

    code, out, _ = cli("predict", folder, "--json", "--ckpt", SHIPPED, *jobs)
    results = by_name(json.loads(out))
    assert code == 1 and len(results) == len(good) + len(broken)
    assert all(set(results[name]) == {"path", "error"} for name in broken)
    assert all(results[name]["prediction"] == label for name, label in good.items())


def test_images_read_at_once_or_one_by_one_give_the_same_answers(cli, mnist_test, tmp_path):
    """Threads share the preparation's caches (the paper fit's matrices, one per picture shape): the answers
    must not depend on them."""
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(40):
        path, _ = digit_png(folder, f"{n:02d}.png", mnist_test, n)
        side = 120 + 40 * (n % 7)  # seven sizes, so the threads fill and share the caches together
        Image.open(path).resize((side, side + 20 * (n % 3))).save(path)
    outputs = [cli("predict", folder, "--json", "--top-k", "3", "--ckpt", SHIPPED, "--jobs", jobs)[1]
               for jobs in ("1", "4")]
    assert outputs[0] == outputs[1] and len(json.loads(outputs[0])) == 40


def test_jobs_must_be_a_whole_number_from_one(cli, tmp_path):
    code, out, err = cli("predict", tmp_path, "--jobs", "0")
    assert code == 2 and out == "" and "--jobs" in err and "at least 1" in err


def test_broken_files_in_a_real_process_give_no_traceback(mnist_test, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    image, label = digit_png(folder, "good.png", mnist_test, 0)
    broken = write_broken_files(folder)
    result = run_subprocess("predict", folder, tmp_path / "missing.png", "--ckpt", SHIPPED)
    assert result.returncode == 1
    assert result.stderr == f"checkpoint: {SHIPPED} (given with --ckpt)\n"
    lines = result.stdout.splitlines()
    assert len(lines) == len(broken) + 2
    assert f"{image}: {label} (" in result.stdout
    assert f"{tmp_path / 'missing.png'}: error: no such file" in lines


def test_missing_files(cli, mnist_test, tmp_path):
    """A missing path is that file's error, like a broken one; the others are still read."""
    image, label = digit_png(tmp_path, "digit.png", mnist_test, 0)
    code, out, err = cli("predict", tmp_path / "nope.png", image, "--ckpt", SHIPPED)
    assert code == 1 and "Traceback" not in err
    assert out.splitlines()[0] == f"{tmp_path / 'nope.png'}: error: no such file"
    assert out.splitlines()[1].startswith(f"{image}: {label} (")
    code, out, _ = cli("predict", tmp_path / "nope.png", tmp_path / "gone.jpg", "--ckpt", SHIPPED)
    assert code == 1 and len(out.splitlines()) == 2 and all("no such file" in line for line in out.splitlines())


@pytest.mark.parametrize("args,message", [
    (["{empty}"], "no image files in"),
    (["{hidden_only}"], "no image files in"),
    (["{digit}", "--top-k", "0"], "--top-k: must be at least 1"),
    (["{digit}", "--top-k", "-3"], "--top-k: must be at least 1"),
    (["{digit}", "--top-k", "three"], "--top-k: expected a whole number"),
    (["{digit}", "--ckpt", "{missing}"], "checkpoint not found"),
    (["{digit}", "--ckpt", "{empty}"], "is a directory"),
    ([], "the following arguments are required"),
], ids=["empty-dir", "only-hidden-files", "top-k-0", "top-k-negative", "top-k-word", "ckpt-missing", "ckpt-dir",
        "no-input"])
def test_usage_errors_are_one_line_and_exit_2(cli, mnist_test, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden_only").mkdir()
    digit_png(tmp_path / "hidden_only", ".secret.png", mnist_test, 0)
    digit, _ = digit_png(tmp_path, "digit.png", mnist_test, 0)
    names = {"empty": tmp_path / "empty", "hidden_only": tmp_path / "hidden_only", "digit": digit,
             "missing": tmp_path / "missing.pt"}
    code, out, err = cli("predict", *[a.format(**names) for a in args])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mnistlab predict: error: ") and message in err, err


# ---------------------------------------------------------------- checkpoints that must be refused

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(cli, mnist_test, tmp_path):
    image, _ = digit_png(tmp_path, "digit.png", mnist_test, 0)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    ckpt["metrics"] = Payload(marker)  # a working checkpoint otherwise
    torch.save(ckpt, evil)
    code, out, err = cli("predict", image, "--ckpt", evil)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "refused" in err and "pickled Python objects" in err and str(evil) in err
    assert not marker.exists()
    # the payload is real: an unguarded load runs it
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.exists()


def damaged(path: Path, **changes) -> Path:
    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d: d.joinpath("cut.pt").write_bytes(SHIPPED.read_bytes()[:400_000]) and d / "cut.pt",
     "not a readable checkpoint"),
    (lambda d: d.joinpath("tiny.pt").write_bytes(SHIPPED.read_bytes()[:10]) and d / "tiny.pt",
     "not a readable checkpoint"),
    (lambda d: Image.new("L", (28, 28)).save(d / "digit.pt", "PNG") or d / "digit.pt", "not a readable checkpoint"),
    (lambda d: torch.save({"conv.weight": torch.zeros(3)}, d / "bare.pt") or d / "bare.pt",
     "not an mnistlab checkpoint"),
    (lambda d: damaged(d / "rgb.pt", input_size=[3, 32, 32]), "expects [3, 32, 32] inputs"),
    (lambda d: damaged(d / "odd.pt", input_size=7, normalize=None, classes=3), "damaged checkpoint"),
    (lambda d: damaged(d / "wrong.pt", model={"name": "iter1", "kwargs": {}, "num_classes": 10, "in_channels": 1}),
     "do not fit model 'iter1'"),
], ids=["truncated", "ten-bytes", "png-named-pt", "bare-state-dict", "needs-3x32x32", "nonsense-fields",
        "other-model"])
def test_unusable_checkpoints_are_one_line_and_exit_2(cli, mnist_test, tmp_path, make, message):
    image, _ = digit_png(tmp_path, "digit.png", mnist_test, 0)
    ckpt = make(tmp_path)
    code, out, err = cli("predict", image, "--ckpt", ckpt)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err and str(ckpt) in err, err


def test_a_broken_local_best_pt_is_named(cli, mnist_test, tmp_path, monkeypatch):
    """The user did not name it, so the error must say which file was picked."""
    monkeypatch.chdir(tmp_path)
    image, _ = digit_png(tmp_path, "digit.png", mnist_test, 0)
    finished_run(tmp_path, "run", 0.9999, list("0123456789"))
    (tmp_path / "checkpoints" / "run" / "run" / "best.pt").write_bytes(b"interrupted")
    code, _, err = cli("predict", image)
    assert code == 2 and err.count("\n") == 1 and "checkpoints/run/run/best.pt" in err


def test_the_model_runs_on_the_idle_cores(monkeypatch):
    """No more threads than idle cores, never fewer than one, never more than the caller's setting."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    for load, threads, expected in ((0.2, 8, 4), (0.2, 2, 2), (1.4, 8, 3), (3.9, 8, 1), (12.0, 8, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert predict_module.idle_threads(threads) == expected
    monkeypatch.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError()))
    assert predict_module.idle_threads(5) == 5
