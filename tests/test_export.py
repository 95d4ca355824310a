"""`mnistlab export`: the shipped model as ONNX, run by onnxruntime, against PyTorch.

The round trip: the first 1,000 MNIST test digits through PyTorch (the checkpoint) and through
onnxruntime (the exported file, fed raw [0, 1] pixels: its graph normalizes): the logits agree to
float32 rounding and every prediction is the same. Then `predict --ckpt model.onnx`, the service's app
and `draw --ckpt model.onnx` (the real Tk window under Xvfb, as tests/test_draw.py drives it) give the
answers the checkpoint gives; the file's metadata names the classes and the normalization; a model that disagrees
with PyTorch is never written; every mistake is one line and exit 2, and a missing optional package
is named with the pip command.

Needs onnx and onnxruntime (the `mnistlab[onnx]` extra, in the test extra); real MNIST for the
round trip (skipped without it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test_draw
from conftest import REPO, run_subprocess
from mnistlab.reading import export as export_module
from mnistlab.reading.predict import SHIPPED, classify, load_classifier, predict_files

pytest.importorskip("onnxruntime", reason="the mnistlab[onnx] extra is not installed")
pytest.importorskip("onnx", reason="the mnistlab[onnx] extra is not installed")

N_ROUND_TRIP = 1000
SUMMARY = re.compile(r"checked with onnxruntime against PyTorch on (.+): max \|logit difference\| (\S+), "
                     r"same prediction for ([\d,]+) of ([\d,]+)")


@pytest.fixture(scope="module")
def mnist_test(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    from mnistlab.data.datasets import DATASETS, load_split

    images, labels = load_split(DATASETS["mnist"], mnist_root, train=False, download=False)
    return images.numpy(), labels.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """The shipped model exported once for the module, as a user runs it: the file and what export printed."""
    out = tmp_path_factory.mktemp("export") / "default.onnx"
    result = run_subprocess("export", SHIPPED, "-o", out)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def torch_logits(classifier, digits: np.ndarray) -> np.ndarray:
    x = (torch.from_numpy(digits.astype(np.float32))[:, None] - classifier.mean) / classifier.std
    with torch.inference_mode():
        return classifier.model(x).numpy()


def test_round_trip_on_1000_test_digits(exported, mnist_test):
    from mnistlab.reading.onnxmodel import onnx_logits

    path, printed = exported
    images, labels = mnist_test
    digits = images[:N_ROUND_TRIP] / np.float32(255)
    pt, ox = load_classifier(SHIPPED), load_classifier(path)
    assert (pt.backend, ox.backend) == ("torch", "onnxruntime") and ox.classes == pt.classes
    expected = torch_logits(pt, digits)
    got = onnx_logits(ox.model, digits[:, None])  # raw [0, 1] pixels: the graph normalizes
    diff = float(np.abs(expected - got).max())
    agree = int((expected.argmax(1) == got.argmax(1)).sum())
    print(f"\nPyTorch vs onnxruntime on {N_ROUND_TRIP:,} MNIST test digits: max |logit difference| {diff:.2e}, "
          f"same prediction for {agree:,}; accuracy {(got.argmax(1) == labels[:N_ROUND_TRIP]).mean():.1%}")
    assert diff < 1e-4 and agree == N_ROUND_TRIP
    assert (got.argmax(1) == labels[:N_ROUND_TRIP]).mean() > 0.97  # it is the model, not just its shape
    assert np.abs(classify(pt, digits) - classify(ox, digits)).max() < 1e-5  # the probabilities predict shows

    # What export printed: the same check, on the same digits, with its numbers.
    match = SUMMARY.search(printed)
    assert match and match[1] == "the first 1,000 of the 10,000 mnist test images", printed
    assert float(match[2]) < 1e-4 and match[3] == match[4] == "1,000"

    # The batch dimension is free: any batch size gives the rows of the big batch.
    for size in (1, 7, 300):
        assert np.abs(onnx_logits(ox.model, digits[:size, None]) - got[:size]).max() < 1e-5


def test_the_metadata_names_classes_and_normalization(exported):
    import onnx

    path, printed = exported
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "mnistlab-onnx" and meta["format_version"] == "1"
    assert json.loads(meta["classes"]) == list("0123456789")
    assert json.loads(meta["normalize"]) == {"mean": 0.1307, "std": 0.3081, "inside_graph": True}
    assert meta["checked"] == printed.splitlines()[0]
    assert json.loads(meta["model"])["name"] == torch.load(SHIPPED, weights_only=True)["model"]["name"]
    (given,), (answer,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in given.type.tensor_type.shape.dim]
    assert given.name == "image" and dims == ["batch", 1, 28, 28]
    assert answer.name == "logits" and [d.dim_param or d.dim_value for d in answer.type.tensor_type.shape.dim] \
        == ["batch", 10]
    first = [node.op_type for node in model.graph.node if "image" in node.input]
    assert first == ["Sub"]  # the image goes into (x - mean) / std, nothing else
    assert printed.splitlines()[1].startswith(f"wrote {path} (")
    assert meta["source"] == "default.pt"  # no path of the exporting machine in the file
    assert str(SHIPPED.parent).encode() not in path.read_bytes() and str(REPO).encode() not in path.read_bytes()


def mnist_pages(folder: Path, mnist_test, count: int) -> Path:
    """Test digits as people hand them in: dark ink on a white 280x280 page."""
    images, _ = mnist_test
    folder.mkdir()
    for i in range(count):
        Image.fromarray(255 - images[i]).resize((280, 280), Image.Resampling.BILINEAR).save(folder / f"{i:03d}.png")
    return folder


def test_predict_gives_the_same_answers(cli, exported, mnist_test, tmp_path):
    folder = mnist_pages(tmp_path / "pages", mnist_test, 60)
    code, out, err = cli("predict", folder, "--json", "--top-k", "3", "--ckpt", SHIPPED)
    assert code == 0, err
    code, onnx_out, err = cli("predict", folder, "--json", "--top-k", "3", "--ckpt", exported[0])
    assert code == 0 and err == f"checkpoint: {exported[0]} (given with --ckpt)\n"
    want, got = json.loads(out), json.loads(onnx_out)
    assert [r["path"] for r in got] == [r["path"] for r in want] and len(got) == 60
    for a, b in zip(want, got):
        assert [t["label"] for t in b["top_k"]] == [t["label"] for t in a["top_k"]]
        assert [t["probability"] for t in b["top_k"]] == pytest.approx([t["probability"] for t in a["top_k"]],
                                                                      abs=1e-5)
    labels = mnist_test[1][:60]
    assert np.mean([r["prediction"] == str(y) for r, y in zip(got, labels)]) > 0.95
    # the plain output, line for line
    assert cli("predict", folder, "--ckpt", exported[0])[1] == cli("predict", folder, "--ckpt", SHIPPED)[1]


def test_serve_gives_the_same_answers(exported, mnist_test, tmp_path):
    """The service's app (the one `serve --ckpt model.onnx` runs; tests/test_serve.py runs the real server)."""
    pytest.importorskip("fastapi", reason="the mnistlab[serve] extra is not installed")
    httpx = pytest.importorskip("httpx", reason="httpx is not installed (it is in the test extra)")
    import asyncio

    from mnistlab.reading.serve import create_app

    files = sorted(mnist_pages(tmp_path / "pages", mnist_test, 5).iterdir())

    async def ask() -> tuple[dict, list[dict]]:
        app = httpx.ASGITransport(app=create_app(load_classifier(exported[0])))
        async with httpx.AsyncClient(transport=app, base_url="http://mnistlab") as client:
            health = (await client.get("/health")).json()
            return health, [(await client.post("/predict?top_k=3", files={"file": (f.name, f.read_bytes())})).json()
                            for f in files]

    health, answers = asyncio.run(ask())
    assert health["backend"] == "onnxruntime"
    for got, want in zip(answers, predict_files([str(f) for f in files], load_classifier(SHIPPED), top_k=3)):
        assert got["path"] == Path(want["path"]).name and got["prediction"] == want["prediction"]
        assert [t["probability"] for t in got["top_k"]] == pytest.approx([t["probability"] for t in want["top_k"]],
                                                                        abs=1e-5)


def test_draw_reads_with_the_onnx_model(exported, display, tmp_path):
    """`mnistlab draw --ckpt model.onnx`: the real window, driven as tests/test_draw.py drives it."""
    from mnistlab.reading.draw import model_input

    window = test_draw.Window(display, exported[0], tmp_path)
    try:
        pt = load_classifier(SHIPPED)
        for digit, strokes in test_draw.DIGITS.items():
            window.press("Escape")
            shown = window.draw(strokes())
            same = classify(pt, model_input(test_draw.render(strokes()))[None])[0]
            assert shown["event"] == "prediction" and shown["digit"] == digit, shown
            assert shown["digit"] == str(int(same.argmax()))  # the checkpoint reads the same drawing alike
    finally:
        window.close()
    assert window.process.returncode == 0, window.output()


def test_random_images_when_no_test_digits(cli, tmp_path):
    """Without the dataset on disk the export is still checked, and says on what."""
    (tmp_path / "empty").mkdir()
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(SHIPPED.read_bytes())
    code, out, err = cli("export", ckpt, "--data-dir", tmp_path / "empty", "--check", "50")
    assert code == 0, err
    match = SUMMARY.search(out)
    assert match and match[1].startswith("50 random 28x28 images, not digits (mnist test images not found")
    assert match[3] == match[4] == "50"
    assert (tmp_path / "best.onnx").is_file()  # default: beside the checkpoint


def test_named_checkpoints_as_predict_reads_them(cli, tmp_path, monkeypatch):
    """`export default` writes default.onnx here (not into the installed package); latest/best without runs is one
    line that names the argument as given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    code, out, err = cli("export", "default", "--data-dir", tmp_path / "empty", "--check", "20")
    assert code == 0, err
    assert f"checkpoint: {SHIPPED} (the default model shipped with mnistlab)" in err
    assert (tmp_path / "default.onnx").is_file() and not SHIPPED.with_suffix(".onnx").exists()
    for name, why in (("latest", "no finished run under ./checkpoints"), ("best", "no finished full run")):
        code, out, err = cli("export", name)
        assert code == 2 and err.startswith(f"mnistlab export: error: {name}: {why}") and err.count("\n") == 1, err


def test_a_model_that_disagrees_is_not_written(cli, tmp_path, monkeypatch):
    real = export_module.onnx_logits
    monkeypatch.setattr(export_module, "onnx_logits", lambda session, x: real(session, x) + 0.01)
    target = tmp_path / "model.onnx"
    code, out, err = cli("export", SHIPPED, "-o", target, "--check", "20")
    assert code == 1 and not target.exists()
    assert re.fullmatch(r"mnistlab export: error: .*disagrees with PyTorch \(max \|logit difference\| 1\.00e-02, "
                        r"allowed .*\); nothing written\n", err), err


def usage_cases(tmp: Path, onnx_file: Path) -> list[tuple[list, str]]:
    (tmp / "dir").mkdir(exist_ok=True)
    return [
        (["export", tmp / "missing.pt"], "checkpoint not found"),
        (["export", tmp / "dir"], "is a directory"),
        (["export", onnx_file], "is an ONNX model already"),
        (["export", REPO / "README.md", "-o", tmp / "x.onnx"], "not a readable checkpoint"),
        (["export", SHIPPED, "-o", tmp / "no" / "such" / "x.onnx"], "does not exist"),
        (["export", SHIPPED, "-o", tmp / "dir"], "is a directory; give a file name"),
        (["export", SHIPPED, "--format", "tflite"], "invalid choice: 'tflite'"),
        (["export", SHIPPED, "--check", "0"], "must be at least 1"),
        (["export", SHIPPED, "--check", "1000000000"], "--check: give 1 to 10,000 test images"),
    ]


def test_mistakes_are_one_line_and_exit_2(cli, exported, tmp_path):
    for args, message in usage_cases(tmp_path, exported[0]):
        code, out, err = cli(*args)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (args, err)
        assert "Traceback" not in err


def test_export_never_writes_over_a_checkpoint_or_an_unasked_file(cli, exported, tmp_path):
    """-o onto its own source once replaced the checkpoint by the ONNX model; onto any file, replaced it."""
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(SHIPPED.read_bytes())
    other_run = tmp_path / "other_best.pt"
    other_run.write_bytes(SHIPPED.read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    old_onnx = tmp_path / "best.onnx"
    old_onnx.write_bytes(exported[0].read_bytes())
    (tmp_path / "link.onnx").symlink_to(ckpt)
    os.mkfifo(tmp_path / "pipe.onnx")  # opening it to look would wait for ever
    before = {p: p.read_bytes() for p in (ckpt, other_run, notes, old_onnx)}
    check = ["--check", "5", "--data-dir", tmp_path]
    for args, message in [
        ([ckpt, "-o", ckpt], "is the checkpoint being exported"),
        ([ckpt, "-o", ckpt, "--overwrite"], "is the checkpoint being exported"),
        ([ckpt, "-o", tmp_path / "link.onnx", "--overwrite"], "is the checkpoint being exported"),
        ([ckpt, "-o", other_run, "--overwrite"], "exists and is not an ONNX model (a checkpoint?)"),
        ([ckpt, "-o", notes, "--overwrite"], "exists and is not an ONNX model"),
        ([ckpt, "-o", tmp_path / "pipe.onnx", "--overwrite"], "exists and is not an ONNX model"),
        ([ckpt], f"-o: {old_onnx} exists; give another file name, or --overwrite to replace it"),
        ([ckpt, "-o", old_onnx], "--overwrite to replace it"),
    ]:
        code, out, err = cli("export", *args, *check)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (args, err)
    assert {p: p.read_bytes() for p in before} == before
    code, out, err = cli("export", ckpt, "--overwrite", *check)  # an ONNX model, asked for: replaced
    assert code == 0 and f"wrote {old_onnx}" in out, err
    assert ckpt.read_bytes() == before[ckpt] and not list(tmp_path.glob(".*.tmp"))


def onnx_variant(source: Path, target: Path, change) -> Path:
    import onnx

    model = onnx.load(str(source))
    change(model)
    onnx.save(model, str(target))
    return target


def test_an_onnx_file_unlike_its_metadata_is_refused(cli, exported, tmp_path):
    """The graph is checked against what its metadata promises before any image is read with it."""
    from onnx import helper

    def fixed_batch(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1

    def three_classes(model):
        (entry,) = [p for p in model.metadata_props if p.key == "classes"]
        entry.value = json.dumps(["a", "b", "c"])

    def renamed_input(model):
        model.graph.input[0].name = "pixels"
        for node in model.graph.node:
            node.input[:] = ["pixels" if name == "image" else name for name in node.input]

    def two_outputs(model):
        model.graph.output.append(helper.make_tensor_value_info("image_copy", 1, ["batch", 1, 28, 28]))
        model.graph.node.append(helper.make_node("Identity", ["image"], ["image_copy"]))

    def no_classes(model):
        (entry,) = [p for p in model.metadata_props if p.key == "classes"]
        entry.value = "[]"

    image = tmp_path / "d.png"
    Image.new("L", (28, 28)).save(image)
    for change, message in [(fixed_batch, "its input has shape [1, 1, 28, 28], not N x 1 x 28 x 28 with any N"),
                            (three_classes, "not N x 3 (the 3 classes it names)"),
                            (renamed_input, "its input is 'pixels'"),
                            (two_outputs, "1 inputs and 2 outputs"),
                            (no_classes, "its classes are not a list of distinct names")]:
        bad = onnx_variant(exported[0], tmp_path / f"{change.__name__}.onnx", change)
        code, out, err = cli("predict", image, "--ckpt", bad)
        assert code == 2 and err.count("\n") == 1 and message in err, (change.__name__, err)
        assert "Traceback" not in err


def test_eval_of_an_onnx_file_says_what_to_do(cli, exported):
    code, out, err = cli("eval", exported[0])
    assert code == 2 and err.count("\n") == 1 and "corrupt" not in err
    assert "is an ONNX model (mnistlab export writes them), not a checkpoint: give the .pt it was exported from" in err


def test_onnx_files_predict_cannot_use(cli, exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported[0].read_bytes()[:5000])
    foreign = tmp_path / "foreign.onnx"  # a valid model from elsewhere: no class names
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 28, 28])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    image = tmp_path / "d.png"
    Image.new("L", (28, 28)).save(image)
    for path, message in [(junk, "not a readable ONNX model"), (cut, "not a readable ONNX model"),
                          (foreign, "not an ONNX model written by `mnistlab export`"),
                          (tmp_path / "gone.onnx", "checkpoint not found")]:
        code, out, err = cli("predict", image, "--ckpt", path)
        lines = err.splitlines()
        assert code == 2 and lines[-1].startswith("mnistlab predict: error: ") and message in lines[-1], err
        assert "Traceback" not in err


@pytest.mark.parametrize("blocked, args, message", [
    ("onnx", ["export", SHIPPED, "-o", "{tmp}/m.onnx"], "mnistlab export needs the onnx package: "
     "pip install 'mnistlab[onnx]'"),
    ("onnxruntime", ["export", SHIPPED, "-o", "{tmp}/m.onnx"], "mnistlab export needs the onnxruntime package: "
     "pip install 'mnistlab[onnx]'"),
    ("onnxruntime", ["predict", "{tmp}/d.png", "--ckpt", "{onnx}"], "needs the onnxruntime package: "
     "pip install 'mnistlab[onnx]'"),
], ids=["export-without-onnx", "export-without-onnxruntime", "predict-without-onnxruntime"])
def test_a_missing_extra_is_named(exported, tmp_path, blocked, args, message):
    """In a fresh interpreter where the package cannot be imported (sys.modules[name] = None)."""
    args = [str(a).format(tmp=tmp_path, onnx=exported[0]) for a in args]
    Image.new("L", (28, 28)).save(tmp_path / "d.png")
    code = (f"import sys; sys.modules[{blocked!r}] = None\nfrom mnistlab.cli import main\n"
            f"sys.exit(main({args!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and message in result.stderr and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "m.onnx").exists()
