"""Preprocessing of people's digit images into MNIST form (mnistlab.preprocess).

The accuracy tests redraw real MNIST test digits the way people hand them in
(a thin pen on a big canvas, a transparent PNG, a JPEG photo, chalk on a board,
shaded paper, palette and 16-bit PNGs, a bilevel scan; drawn by
tests/digit_styles.py), run them through `preprocess`, and let a small CNN
trained here on MNIST read the result. If the preprocessing did not reproduce
MNIST's preparation, that classifier, which knows nothing else, could not read
them.

Needs the MNIST IDX files under $MNISTLAB_DATA_DIR/MNIST/raw/ (a relative
directory is taken from the repository root); skipped without them.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digit_styles import STYLES, canvas_digit, draw, pen_on_canvas, png_header_only, save, toy_digit
from mnist_cnn import REPO
from mnistlab.imaging import image as pp
from mnistlab.imaging.image import ImageError, open_image, to_grayscale
from mnistlab.imaging.preprocess import mnist_frame, preprocess

# ---------------------------------------------------------------- people's images (drawn by tests/digit_styles.py)

@pytest.fixture(scope="module")
def rendered(sample, tmp_path_factory):
    """style -> its files (or, for the drawing window, images) for the sample digits, drawn once per run."""
    cache: dict = {}

    def files(style) -> list[Path]:
        if style not in cache:
            folder = tmp_path_factory.mktemp(style.__name__)
            rng = np.random.default_rng(zlib.crc32(style.__name__.encode()))
            cache[style] = [style(digit, rng, folder / str(i)) for i, digit in enumerate(sample[0])]
        return cache[style]

    return files


@pytest.fixture(scope="module")
def framed(rendered):
    """style -> `preprocess` of each of its files, as an N x 28 x 28 array."""
    cache: dict = {}

    def outputs(style) -> np.ndarray:
        if style not in cache:
            cache[style] = np.stack([preprocess(path) for path in rendered(style)])
        return cache[style]

    return outputs


# ---------------------------------------------------------------- accuracy on people's images

@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.__name__)
def test_peoples_images_read_like_mnist(style, sample, classify, plain_accuracy, framed):
    accuracy = float((classify(framed(style)) == sample[1]).mean())
    print(f"{style.__name__}: {accuracy:.3f} (plain MNIST digits: {plain_accuracy:.3f})")
    assert accuracy >= 0.90
    assert accuracy >= plain_accuracy - 0.05


def test_naive_resizing_cannot_read_a_big_canvas(sample, classify, rendered, framed):
    """The accuracy tests have teeth: squashing the canvas to 28x28, even inverted, reads almost nothing."""
    paths = rendered(pen_on_canvas)
    squashed = np.stack([np.asarray(Image.open(p).convert("L").resize((28, 28)), dtype=np.float32) for p in paths]) / 255
    for polarity, naive in (("as drawn", squashed), ("inverted", 1 - squashed)):
        accuracy = float((classify(naive) == sample[1]).mean())
        print(f"pen_on_canvas squashed to 28x28, {polarity}: {accuracy:.3f}")
        assert accuracy < 0.5
    assert (classify(framed(pen_on_canvas)) == sample[1]).mean() >= 0.9


def test_reframing_mnist_digits_keeps_them_readable(sample, classify, plain_accuracy):
    digits, labels = sample
    framed = np.stack([mnist_frame(d / 255.0) for d in digits])
    assert (classify(framed) == labels).mean() >= plain_accuracy - 0.01


def test_thin_pen_strokes_keep_mnist_weight(mnist, framed):
    """A 2-4 px pen shrunk 30-fold would leave a faint thread; strokes must come out as heavy as MNIST's."""
    ours = np.median(framed(pen_on_canvas).sum(axis=(1, 2)))
    theirs = np.median(mnist["test_x"][:1000].sum(axis=(1, 2)) / 255)
    assert 0.7 * theirs <= ours <= 1.4 * theirs


# ---------------------------------------------------------------- geometry and polarity (no MNIST needed)

def test_output_is_mnist_shaped():
    out = mnist_frame(canvas_digit(toy_digit("2")))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1 and out.max() > 0.9
    ys, xs = np.nonzero(out > 0)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20
    assert out[[0, -1]].max() < 0.5 and out[:, [0, -1]].max() < 0.5  # room around the digit, as in MNIST
    cy, cx = (np.indices(out.shape) * out).sum(axis=(1, 2)) / out.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_polarity_placement_and_scale_do_not_matter():
    digit = toy_digit("4")
    reference = mnist_frame(canvas_digit(digit, seed=1))
    for other in (1 - canvas_digit(digit, seed=1), canvas_digit(digit, seed=2),
                  canvas_digit(digit, seed=3, size=(3000, 2200), pen=9, height=1200)):
        assert np.abs(mnist_frame(other) - reference).mean() < 0.05


def test_uint8_input_is_taken_as_0_to_255():
    gray = canvas_digit(toy_digit("3"))
    np.testing.assert_allclose(mnist_frame((gray * 255).round().astype(np.uint8)), mnist_frame(gray), atol=0.02)


def test_frame_false_only_converts_and_resizes(tmp_path):
    digit = toy_digit("7")
    Image.fromarray(digit).save(tmp_path / "d.png")
    np.testing.assert_array_equal(preprocess(tmp_path / "d.png", frame=False), digit / np.float32(255))
    Image.fromarray(255 - digit).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    out = preprocess(tmp_path / "big.png", frame=False)
    assert out.shape == (28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1 - digit / 255.0, atol=1e-5)  # dark on light stays so


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(30, 1200), height=st.integers(30, 1200), paper=st.floats(0, 1),
    strokes=st.lists(st.tuples(*[st.floats(0.05, 0.95)] * 4), min_size=1, max_size=4),
    pen=st.integers(1, 12), seed=st.integers(0, 2**16),
)
def test_any_drawing_gives_a_valid_frame_or_a_clear_error(width, height, paper, strokes, pen, seed):
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), round(paper * 255))
    ink = 0 if paper > 0.5 else 255
    painter = ImageDraw.Draw(img)
    for y0, x0, y1, x1 in strokes:
        painter.line([(x0 * width, y0 * height), (x1 * width, y1 * height)], fill=ink, width=pen)
    gray = to_grayscale(img) + rng.normal(0, 0.02, (height, width)).astype(np.float32)
    try:
        out = mnist_frame(np.clip(gray, 0, 1))
    except ImageError as exc:
        assert "no ink" in str(exc)
        return
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 and out.max() > 0.5


# ---------------------------------------------------------------- image modes

def _dark_digit() -> Image.Image:
    """An 'L' drawing, dark ink on white paper, to convert into every mode."""
    return Image.fromarray(255 - toy_digit("0")).resize((112, 112), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK", "YCbCr", "HSV", "P", "1", "I", "F", "I;16", "LA", "RGBa"])
def test_every_mode_gives_the_same_grey(mode):
    base = _dark_digit()
    expected = np.asarray(base, dtype=np.float32) / 255
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base).astype(np.uint16) * 257))
    elif mode == "F":
        img = Image.fromarray(expected)
    elif mode == "RGBa":
        img = base.convert("RGBA").convert("RGBa")
    else:
        img = base.convert(mode, dither=Image.Dither.NONE)
    if mode == "1":
        expected = (expected >= 0.5).astype(np.float32)  # Pillow's threshold, undithered
    gray = to_grayscale(img)
    assert gray.shape == expected.shape and gray.dtype == np.float32
    assert 0 <= gray.min() and gray.max() <= 1
    # The colour modes round through 8-bit RGB (YCbCr, HSV, CMYK lose a little more).
    assert np.abs(gray - expected).max() <= 0.03


@pytest.mark.parametrize("ink", [(0, 0, 0), (30, 30, 220), (255, 230, 0), (255, 255, 255)])
def test_transparent_background_becomes_paper_contrasting_with_the_ink(ink):
    alpha = Image.fromarray(toy_digit("2")).resize((112, 112), Image.Resampling.BILINEAR)
    img = Image.new("RGB", alpha.size, ink)
    img.putalpha(alpha)
    img = Image.fromarray(np.asarray(img) * (np.asarray(alpha) > 0)[..., None].astype(np.uint8))
    gray = to_grayscale(img)
    transparent = np.asarray(alpha) == 0
    lum = (0.299 * ink[0] + 0.587 * ink[1] + 0.114 * ink[2]) / 255
    paper = 1.0 if lum < 0.5 else 0.0
    assert np.allclose(gray[transparent], paper)
    assert np.allclose(gray[np.asarray(alpha) == 255], lum, atol=1e-3)
    assert np.abs(mnist_frame(gray) - mnist_frame(np.asarray(alpha, dtype=np.float32) / 255)).mean() < 0.02


def test_palette_transparency_and_la():
    alpha = np.asarray(Image.fromarray(toy_digit("3")).resize((112, 112)))
    palette = Image.fromarray((alpha > 127).astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 0, 0, 0])  # black ink, black transparent background
    palette.info["transparency"] = 0
    assert to_grayscale(palette)[alpha <= 127].min() == 1.0
    la = Image.merge("LA", [Image.new("L", (112, 112), 0), Image.fromarray(alpha)])
    assert np.allclose(to_grayscale(la), 1 - alpha / 255.0, atol=1e-3)


def test_fully_transparent_image_has_no_ink(tmp_path):
    path = save(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), tmp_path / "clear.png")
    with pytest.raises(ImageError, match="no ink"):
        preprocess(path)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("L", (300, 100), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert open_image(tmp_path / "phone.jpg").size == (100, 300)


def test_animated_gif_uses_its_first_frame(tmp_path):
    first = draw(toy_digit("7"), np.random.default_rng(0), (400, 300), pen=4, height=200)
    second = draw(toy_digit("0"), np.random.default_rng(1), (400, 300), pen=4, height=200)
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second], duration=100, loop=0)
    first.save(tmp_path / "still.png")
    assert getattr(Image.open(tmp_path / "anim.gif"), "n_frames", 1) == 2
    np.testing.assert_allclose(preprocess(tmp_path / "anim.gif"), preprocess(tmp_path / "still.png"), atol=1e-6)


# ---------------------------------------------------------------- bad input: one clear ImageError naming the file

def _assert_image_error(path, fragment):
    with pytest.raises(ImageError) as caught:
        preprocess(path)
    message = str(caught.value)
    assert str(path) in message and fragment in message and "\n" not in message
    assert caught.value.exit_code == 2


def _noise_image(size=(200, 150)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8))


def test_missing_file(tmp_path):
    _assert_image_error(tmp_path / "nope.png", "no such file")


def test_directory(tmp_path):
    _assert_image_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_image_error(tmp_path / "empty.png", "empty")


def test_random_bytes(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_image_error(tmp_path / "noise.jpg", "not an image")


def test_text_file(tmp_path):
    (tmp_path / "digit.png").write_text("7\n")
    _assert_image_error(tmp_path / "digit.png", "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_image(tmp_path, fmt):
    buffer = io.BytesIO()
    _noise_image().save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError) as caught:
        preprocess(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_corrupt_png_data(tmp_path):
    buffer = io.BytesIO()
    _noise_image().save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    (tmp_path / "bad.png").write_bytes(bytes(data))
    _assert_image_error(tmp_path / "bad.png", "corrupt")


def test_zero_size_image(tmp_path):
    (tmp_path / "zero.pgm").write_bytes(b"P5\n0 10\n255\n")
    with pytest.raises(ImageError) as caught:
        preprocess(tmp_path / "zero.pgm")
    assert str(tmp_path / "zero.pgm") in str(caught.value)


def test_zero_size_pillow_image():
    with pytest.raises(ImageError, match="zero size"):
        preprocess(Image.new("L", (0, 5)))


def test_decompression_bomb_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    _assert_image_error(tmp_path / "bomb.png", "too large")


def test_image_over_our_pixel_limit(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header_only(8000, 7000))  # 56 MP: under Pillow's limit, over ours
    _assert_image_error(tmp_path / "huge.png", "too large")


def test_pixel_limit_is_applied_to_real_images(tmp_path, monkeypatch):
    _noise_image((400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(pp, "MAX_PIXELS", 100_000)
    _assert_image_error(tmp_path / "big.png", "too large")


def test_pillow_bomb_warning_is_an_error(tmp_path, monkeypatch):
    _noise_image((400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 120,000 px: Pillow warns, does not raise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_image_error(tmp_path / "big.png", "too large")


@pytest.mark.parametrize("maker", [
    lambda: Image.new("L", (640, 480), 250),
    lambda: Image.fromarray(np.clip(np.random.default_rng(0).normal(200, 6, (480, 640))
                                    * np.linspace(1, 0.6, 640)[None], 0, 255).astype(np.uint8)),
    lambda: Image.new("RGB", (640, 480), (20, 30, 40)),
    # light falling off across the page: no grey level holds much of it (a cropped digit's paper would)
    lambda: Image.fromarray(np.tile(np.linspace(120, 250, 640), (480, 1)).astype(np.uint8)),
    lambda: Image.fromarray(np.tile(np.linspace(60, 250, 480), (640, 1)).T.astype(np.uint8)),
], ids=["white", "shaded-grainy-paper", "dark-board", "light-falling-off", "deep-falling-off"])
def test_blank_image_has_no_ink(tmp_path, maker):
    path = save(maker(), tmp_path / "blank.jpg", quality=80)
    _assert_image_error(path, "no ink found")


def test_errors_are_user_errors():
    assert issubclass(ImageError, pp.UserError)


def test_importing_preprocess_does_not_import_torch():
    code = "import sys, mnistlab.imaging.preprocess; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.3, 0.98), st.integers(0, 2**32 - 1))
def test_blob_boxes_are_opencvs(height, width, empty, seed):
    """The blobs' boxes from labels and bincount are what connectedComponentsWithStats gives."""
    import cv2

    from mnistlab.imaging.preprocess import _label_boxes

    mask = (np.random.default_rng(seed).random((height, width)) > empty).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    left, top, w, h = (stats[1:, i] for i in range(4))
    assert np.array_equal(_label_boxes(labels, count), np.stack([top, left, top + h - 1, left + w - 1], axis=1))


@pytest.mark.parametrize("size, decoded", [((4032, 3024), (2016, 1512)), ((6000, 4000), (3000, 2000)),
                                           ((2048, 1536), (2048, 1536))])
def test_a_large_jpeg_is_decoded_at_the_size_the_work_needs(tmp_path, size, decoded):
    """The decoder's own 1/2, 1/4, 1/8 scaling, never below the whole-factor shrink preprocess would make: a
    12-megapixel photo decodes at half size, and reads as its full decode does."""
    width, height = size
    img = Image.new("RGB", size, (225, 222, 215))
    ImageDraw.Draw(img).line([(width * 0.45, height * 0.3), (width * 0.55, height * 0.3), (width * 0.47, height * 0.7)],
                             fill=(20, 20, 40), width=width // 60)  # a 7
    path = tmp_path / "IMG.jpg"
    img.save(path, quality=90)
    assert open_image(path, grey=True).size == decoded
    with Image.open(path) as full:
        whole = preprocess(full.convert("L"))  # decoded at full size, shrunk by preprocess
    assert np.abs(preprocess(path) - whole).mean() < 0.03


def test_a_postscript_file_is_never_handed_to_ghostscript(tmp_path):
    """Pillow opens EPS by running Ghostscript on it (an outside program executing the file): only raster
    formats are ever identified, so an EPS file, whatever its name, is one line."""
    for name in ("digit.eps", "digit.png"):
        path = tmp_path / name
        path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n0 0 moveto 28 28 lineto stroke\n")
        with pytest.raises(ImageError, match="not a raster format mnistlab reads"):
            open_image(path)
