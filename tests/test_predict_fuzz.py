"""Fuzzing `mnistlab predict`: one result per input, never a crash.

The tests feed `predict` random bytes (with and without image magic), valid
images cut short or with bytes flipped, random modes and sizes, animated GIFs
and PNGs, and headers declaring zero or huge dimensions (Pillow writes no
zero-size image, so those are crafted by hand), one file at a time and in
folders through the CLI. Property: every input gives exactly one result, a
prediction or a one-line error; never an exception. The inputs run, per kind,
and how many were read as digits are counted and printed at the end with
`pytest -s`.

Reads with the shipped model; runs anywhere (no MNIST needed).
"""

from __future__ import annotations

import collections
import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digit_styles import png_chunk, png_header_only
from mnistlab.reading import predict as predict_module
from mnistlab.reading.predict import load_classifier, predict_files

SHIPPED = predict_module.SHIPPED  # mnistlab/weights/default.pt of the mnistlab under test
# Damaged files make Pillow warn (corrupt EXIF, TIFF tags past the end...) before it raises or reads on: expected.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL")]
CASES: collections.Counter = collections.Counter()  # fuzz cases run, per kind of input
PREDICTED: collections.Counter = collections.Counter()  # of those, the ones read as a digit (not an error)


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(1)  # tiny batches: OpenMP threads only wait on each other on a busy 2-core box
    return load_classifier(SHIPPED)


@pytest.fixture(scope="module", autouse=True)
def report_fuzz_cases():
    yield
    if CASES:
        detail = ", ".join(f"{name} {count} ({PREDICTED[name]} read as digits)" for name, count in CASES.items())
        print(f"\nfuzz: {sum(CASES.values())} inputs ran, each giving one result: {detail}; the others gave "
              f"a per-file error")


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"BM", b"II*\x00",
         b"MM\x00*", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"P5\n", b"P6\n", b"\x00\x00\x01\x00", b"8BPS", b"\n\x05\x01\x08"]
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I", "F", "I;16", "CMYK", "YCbCr"]
FORMATS = ["PNG", "GIF", "JPEG", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO"]
EXTENSIONS = [".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", ".pgm", ".ico", ".dat", ""]


@st.composite
def pictures(draw, min_side=1, max_side=300) -> Image.Image:
    """A Pillow image of a random mode and size: noise, a flat colour, or a few strokes on paper."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side)))
    kind = draw(st.sampled_from(["noise", "flat", "strokes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    elif kind == "flat":
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    else:
        img = Image.new("RGB", size, (250, 250, 245))
        pen = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            pen.line([tuple(rng.uniform(0, 1, 2) * size) for _ in range(3)], fill=(20, 20, 20),
                     width=int(rng.integers(1, 1 + max(1, min(size) // 8))))
    if mode in ("I", "F", "I;16"):
        return Image.fromarray((np.asarray(img.convert("L")).astype(np.float32)
                                * rng.uniform(0.001, 300)).astype({"I": np.int32, "F": np.float32,
                                                                   "I;16": np.uint16}[mode]))
    return img.convert(mode)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    """The image in `fmt`, in its own mode where Pillow writes that mode there, else as RGB, else as a PNG."""
    for image, form in ((img, fmt), (img.convert("RGB"), fmt), (img.convert("RGB"), "PNG")):
        buffer = io.BytesIO()
        try:
            image.save(buffer, form, **options)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError):  # e.g. mode I as PNG, an ICO smaller than its smallest size
            continue
    raise AssertionError("unreachable: Pillow writes any RGB image as a PNG")


@st.composite
def encoded_images(draw, max_side=300) -> bytes:
    return encode(draw(pictures(max_side=max_side)), draw(st.sampled_from(FORMATS)))


random_bytes = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=4096))


@st.composite
def truncated_images(draw) -> bytes:
    data = draw(encoded_images())
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def corrupted_images(draw) -> bytes:
    """A valid image with a few bytes overwritten anywhere, header included."""
    data = bytearray(draw(encoded_images()))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def animations(draw) -> bytes:
    """An animated GIF or PNG: random frames, durations, disposal, loop and transparency."""
    first = draw(pictures(max_side=200))
    frames = [first] + [draw(pictures(min_side=1, max_side=200)).resize(first.size)
                        for _ in range(draw(st.integers(1, 6)))]
    fmt = draw(st.sampled_from(["GIF", "PNG"]))
    frames = [f.convert("P" if fmt == "GIF" else "RGBA") for f in frames]
    options = {"save_all": True, "append_images": frames[1:], "loop": draw(st.integers(0, 3)),
               "duration": draw(st.lists(st.integers(0, 500), min_size=len(frames), max_size=len(frames))),
               "disposal": draw(st.integers(0, 3))}
    if fmt == "GIF" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, **options)
    return buffer.getvalue()


@st.composite
def declared_sizes(draw) -> tuple[bytes, int, int]:
    """A header declaring width x height (zero, ordinary or a bomb's), then little or no data."""
    fmt = draw(st.sampled_from(["PNG", "GIF", "BMP", "PGM", "JPEG", "TIFF"]))
    limit = {"PNG": 2**31 - 1, "GIF": 2**16 - 1, "BMP": 2**31 - 1, "PGM": 2**31, "JPEG": 2**16 - 1,
             "TIFF": 2**32 - 1}[fmt]
    side = st.one_of(st.just(0), st.integers(1, 64), st.integers(1, limit), st.just(limit))
    width, height = draw(side), draw(side)
    tail = draw(st.binary(max_size=256))
    if fmt == "PNG":
        data = png_header_only(width, height) if draw(st.booleans()) else (
            b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + tail)
    elif fmt == "GIF":
        data = (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b","
                + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08" + tail + b"\x00;")
    elif fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
        data = b"BM" + struct.pack("<IHHI", 54 + len(tail), 0, 0, 54) + info + tail
    elif fmt == "PGM":
        data = f"P5\n{width} {height}\n255\n".encode() + tail
    elif fmt == "JPEG":
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
        data = b"\xff\xd8" + sof + tail + b"\xff\xd9"
    else:
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                   (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (279, 4, 1, len(tail))]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
        data = b"II*\x00" + struct.pack("<I", 8) + ifd + tail
    return data, width, height


any_file = st.one_of(random_bytes, truncated_images(), corrupted_images(), encoded_images(), animations(),
                     declared_sizes().map(lambda t: t[0]))


def check_result(result: dict, path: Path) -> None:
    assert result["path"] == str(path)
    if "error" in result:
        assert set(result) == {"path", "error"}
        message = result["error"]
        assert isinstance(message, str) and message.strip() and "\n" not in message
    else:
        assert set(result) == {"path", "prediction", "confidence", "top_k"}
        assert result["prediction"] in list("0123456789")
        assert 0.0 <= result["confidence"] <= 1.0 and np.isfinite(result["confidence"])
        assert result["top_k"][0] == {"label": result["prediction"], "probability": result["confidence"]}


def predict_one(kind: str, classifier, data: bytes, suffix: str, frame: bool = True) -> dict:
    CASES[kind] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        results = predict_files([str(path)], classifier, top_k=2, frame=frame)
        assert len(results) == 1
        check_result(results[0], path)
        PREDICTED[kind] += "error" not in results[0]
        return results[0]


@settings(max_examples=500, deadline=None)
@given(data=random_bytes, suffix=st.sampled_from(EXTENSIONS))
def test_fuzz_random_bytes(classifier, data, suffix):
    predict_one("random bytes", classifier, data, suffix)  # some are pictures after all (TGA and PGM need no more than a few bytes)


@settings(max_examples=300, deadline=None)
@given(data=truncated_images(), suffix=st.sampled_from(EXTENSIONS), frame=st.booleans())
def test_fuzz_truncated_images(classifier, data, suffix, frame):
    predict_one("truncated images", classifier, data, suffix, frame)


@settings(max_examples=300, deadline=None)
@given(data=corrupted_images(), frame=st.booleans())
def test_fuzz_corrupted_images(classifier, data, frame):
    predict_one("corrupted images", classifier, data, ".png", frame)


@settings(max_examples=300, deadline=None)
@given(data=encoded_images(), frame=st.booleans())
def test_fuzz_random_modes_and_sizes(classifier, data, frame):
    result = predict_one("modes and sizes", classifier, data, ".img", frame)
    if not frame:
        assert "error" not in result, "an image Pillow wrote is read as-is when not framed"


@settings(max_examples=150, deadline=None)
@given(data=animations())
def test_fuzz_animations(classifier, data):
    predict_one("animations", classifier, data, ".gif")


@settings(max_examples=300, deadline=None)
@given(header=declared_sizes())
def test_fuzz_declared_sizes(classifier, header):
    data, width, height = header
    result = predict_one("declared sizes", classifier, data, ".img")
    if width * height > 50_000_000:  # refused before decoding
        assert "error" in result, result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(any_file, st.sampled_from(EXTENSIONS)), min_size=1, max_size=6))
def test_fuzz_a_folder_through_the_cli(cli, files):
    CASES["files in folders through the CLI"] += len(files)
    with tempfile.TemporaryDirectory() as folder:
        for n, (data, suffix) in enumerate(files):
            Path(folder, f"f{n}{suffix}").write_bytes(data)
        code, out, err = cli("predict", folder, "--json", "--ckpt", SHIPPED)
        assert code in (0, 1), err
        results = json.loads(out)
        assert len(results) == len(files)
        for result, path in zip(results, sorted(Path(folder).iterdir())):
            check_result(result, path)
        assert code == (1 if any("error" in r for r in results) else 0)
        PREDICTED["files in folders through the CLI"] += sum("error" not in r for r in results)
        assert err == f"checkpoint: {SHIPPED} (given with --ckpt)\n"
