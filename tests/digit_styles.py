"""Digits drawn as people hand them in, and hand-made PNG bytes, for the tests that read pictures.

`draw` writes an MNIST digit with a pen along its traced path on a canvas of any
size: pen width, digit height, tilt and place, paper and ink colours. Each style
function (`pen_on_canvas` ... `drawing_window`, all of them in `STYLES`) draws one
digit the way one kind of picture comes in (a thin pen on a big canvas, a
transparent PNG, a JPEG photo, chalk on a board, shaded paper, palette and 16-bit
PNGs, a bilevel scan, a marker crop, the drawing window's canvas) and returns the
file it saved, or for the drawing window the image. `png_chunk` and
`png_header_only` write PNG bytes by hand, e.g. a header declaring a size no file
holds.

Used by tests/test_preprocess.py and the predict tests.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mnistlab.imaging.image import to_grayscale


# ---------------------------------------------------------------- drawing a digit as a person would

def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: the pen's path through a filled MNIST stroke."""
    mask = mask.copy()
    while True:
        changed = False
        for step in (0, 1):
            p = np.pad(mask, 1)
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            neighbours = sum(a.astype(np.int8) for a in n)
            crossings = sum((~n[i] & n[(i + 1) % 8]).astype(np.int8) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8) if step == 0 else ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            drop = mask & (neighbours >= 2) & (neighbours <= 6) & (crossings == 1) & side
            if drop.any():
                mask &= ~drop
                changed = True
        if not changed:
            return mask


_PEN_PATHS: dict[bytes, np.ndarray] = {}


def _pen_path(digit: np.ndarray) -> np.ndarray:
    """Segments (N x 2 x 2, y/x in units of the 28x28 digit) a pen would follow to write `digit`."""
    key = digit.tobytes()
    if key not in _PEN_PATHS:
        _PEN_PATHS[key] = _trace(digit)
    return _PEN_PATHS[key]


def _trace(digit: np.ndarray) -> np.ndarray:
    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BILINEAR)) > 60
    skeleton = _thin(big)
    segments = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = skeleton[: 112 - dy, max(0, -dx): 112 - max(0, dx)]
        b = skeleton[dy:, max(0, dx): 112 - max(0, -dx) or None]
        ys, xs = np.nonzero(a & b)
        xs = xs + max(0, -dx)
        segments.append(np.stack([np.stack([ys, xs], 1), np.stack([ys + dy, xs + dx], 1)], 1))
    return np.concatenate(segments).astype(np.float64) / 4.0


def draw(digit, rng, size, *, pen, height, tilt=8.0, mode="L", paper=255, ink=0, image=None, margin=0):
    """Write `digit` on a canvas of `size` (w, h): pen width in px, digit height in px, off-centre, tilted."""
    segments = _pen_path(digit) - 14.0
    angle = math.radians(rng.uniform(-tilt, tilt))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = segments @ rotation.T * (height / 20.0)
    low, high = points.reshape(-1, 2).min(0), points.reshape(-1, 2).max(0)
    margin = max(margin, pen + 4)
    offset = [rng.uniform(margin - low[i], size[1 - i] - margin - high[i]) for i in (0, 1)]
    points = points + offset
    canvas = image if image is not None else Image.new(mode, size, paper)
    painter = ImageDraw.Draw(canvas)
    for (y0, x0), (y1, x1) in points:
        painter.line([(x0, y0), (x1, y1)], fill=ink, width=pen)
    if pen >= 3:
        r = pen / 2
        for y, x in points[:, 0]:
            painter.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return canvas


def save(img: Image.Image, path: Path, **options) -> Path:
    img.save(path, **options)
    return path


def pen_on_canvas(digit, rng, path):
    """A 2-4 px pen on a 1000x800 drawing canvas: the digit is a thin line 30x bigger than MNIST's."""
    return save(draw(digit, rng, (1000, 800), pen=int(rng.integers(2, 5)), height=rng.uniform(250, 550)),
                 path.with_suffix(".png"), compress_level=1)


def transparent_rgba(digit, rng, path):
    """Coloured ink on a transparent background whose pixels are (0, 0, 0, 0), as drawing apps export."""
    colour = [(20, 40, 200), (200, 20, 20), (0, 120, 0), (250, 220, 0), (0, 0, 0)][int(rng.integers(5))]
    alpha = draw(digit, rng, (500, 500), pen=int(rng.integers(4, 10)), height=rng.uniform(150, 400),
                  paper=0, ink=255)
    img = Image.new("RGB", alpha.size, colour)
    img.putalpha(alpha)
    img = Image.fromarray(np.asarray(img) * (np.asarray(alpha) > 0)[..., None].astype(np.uint8))  # clear = (0,0,0,0)
    return save(img, path.with_suffix(".png"), compress_level=1)


def jpeg_photo(digit, rng, path):
    """Ballpoint on tinted paper in the soft shadow of the phone, with sensor noise, as a phone JPEG."""
    paper = (np.array([235, 228, 210]) + rng.normal(0, 6, 3)).astype(np.float32)
    ink = (np.array([35, 40, 110]) + rng.normal(0, 10, 3)).astype(np.float32)
    mask = np.asarray(draw(digit, rng, (640, 480), pen=int(rng.integers(3, 7)), height=rng.uniform(120, 400),
                            paper=0, ink=255), dtype=np.float32)[..., None] / 255
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    cy, cx, radius = rng.uniform(0, 480), rng.uniform(0, 640), rng.uniform(120, 260)
    light = 1 - rng.uniform(0.2, 0.45) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    rgb = (paper + (ink - paper) * mask) * light[..., None] + 5 * rng.standard_normal((480, 640, 1), dtype=np.float32)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return save(img, path.with_suffix(".jpg"), quality=int(rng.integers(50, 85)))


def chalkboard(digit, rng, path):
    """Light, patchy chalk on a dark, uneven board: the opposite polarity of paper."""
    mask = np.asarray(draw(digit, rng, (640, 480), pen=int(rng.integers(6, 14)), height=rng.uniform(150, 380),
                            paper=0, ink=255), dtype=np.float32) / 255
    chalk = mask * rng.uniform(0.55, 1.0, mask.shape)
    ramp = np.linspace(0, 1, 640)[None, :] * rng.uniform(-25, 25)
    board = 45 + ramp + rng.normal(0, 8, mask.shape)
    img = Image.fromarray(np.clip(board * (1 - chalk) + 215 * chalk, 0, 255).astype(np.uint8))
    return save(img, path.with_suffix(".jpg"), quality=80)


def shaded_paper(digit, rng, path):
    """Pencil on grainy paper half in shadow, with specks, and a frame round the sheet or the table beside it.

    The shadow darkens paper and pencil alike (light times reflectance): in the
    dark corner the pencil is darker than the lit paper by less than the shadow.
    """
    w, h = 640, 480
    mask = np.asarray(draw(digit, rng, (w, h), pen=int(rng.integers(3, 6)), height=rng.uniform(120, 300),
                            paper=0, ink=255, margin=30), dtype=np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(w, h)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.4) * math.sin(angle), 0, 1)
    light = 1 - rng.uniform(0.3, 0.55) * ramp
    paper = 235 + 7 * rng.standard_normal((h, w), dtype=np.float32)
    pencil = rng.uniform(60, 110)
    img = Image.fromarray(np.clip(light * (paper + (pencil - paper) * mask), 0, 255).astype(np.uint8))
    painter = ImageDraw.Draw(img)
    for _ in range(25):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.5, 2.5)
        painter.ellipse([x - r, y - r, x + r, y + r], fill=int(pencil * 0.8))
    style = rng.random()
    if style < 0.4:
        painter.rectangle([6, 6, w - 7, h - 7], outline=40, width=3)
    elif style < 0.7:  # the photo caught the dark table beside the sheet, on the side with most room
        ys, xs = np.nonzero(mask)
        room = {"left": xs.min(), "right": w - 1 - xs.max(), "top": ys.min(), "bottom": h - 1 - ys.max()}
        side = max(room, key=room.get)
        size = rng.uniform(15, min(room[side] - 15, 0.2 * (w if side in ("left", "right") else h)))
        box = {"left": [0, 0, size, h], "right": [w - size, 0, w, h], "top": [0, 0, w, size],
               "bottom": [0, h - size, w, h]}[side]
        painter.rectangle(box, fill=int(rng.uniform(30, 70)))
    return save(img, path.with_suffix(".jpg"), quality=85)


def palette_png(digit, rng, path):
    """A palette PNG whose transparent background index is black, with dark red ink."""
    img = Image.new("P", (500, 400), 0)
    img.putpalette([0, 0, 0, 140, 10, 10, 255, 255, 255])
    draw(digit, rng, img.size, pen=int(rng.integers(3, 8)), height=rng.uniform(120, 330), ink=1, image=img)
    return save(img, path.with_suffix(".png"), transparency=0, compress_level=1)


def sixteen_bit_png(digit, rng, path):
    """A 16-bit grey scan (mode I;16): dark ink on light paper at 0..65535."""
    mask = np.asarray(draw(digit, rng, (560, 420), pen=int(rng.integers(3, 7)), height=rng.uniform(120, 340),
                            paper=0, ink=255), dtype=np.float32) / 255
    gray = 52000 - 43000 * mask + 400 * rng.standard_normal(mask.shape, dtype=np.float32)
    img = Image.fromarray(np.clip(gray, 0, 65535).astype(np.uint16))
    assert img.mode == "I;16"
    return save(img, path.with_suffix(".png"), compress_level=0)  # noise does not compress; saves time


def bilevel_scan(digit, rng, path):
    """A 1-bit fax-like scan (mode 1) with a few flecks of dirt."""
    img = draw(digit, rng, (600, 450), pen=int(rng.integers(3, 6)), height=rng.uniform(120, 320))
    painter = ImageDraw.Draw(img)
    for _ in range(15):
        x, y = rng.uniform(0, 600), rng.uniform(0, 450)
        painter.rectangle([x, y, x + 1, y + 1], fill=0)
    return save(img.convert("1", dither=Image.Dither.NONE), path.with_suffix(".png"), compress_level=1)


def marker_crop(digit, rng, path):
    """A bold marker digit cut out with a small margin: ink covers much of the picture, even of its border."""
    side = round(28 * rng.uniform(8, 12))
    bold = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)) > 90
    ys, xs = np.nonzero(bold)
    margin = round(rng.uniform(0.03, 0.1) * max(np.ptp(ys), np.ptp(xs)))
    crop = bold[max(0, ys.min() - margin): ys.max() + 1 + margin, max(0, xs.min() - margin): xs.max() + 1 + margin]
    gray = np.where(crop, 30, 240) + 6 * rng.standard_normal(crop.shape)
    return save(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)), path.with_suffix(".jpg"), quality=80)


def drawing_window(digit, rng, path):
    """What the drawing window hands over: a 400x400 RGB canvas, a round 12-24 px brush, no file."""
    return draw(digit, rng, (400, 400), pen=int(rng.integers(12, 25)), height=rng.uniform(180, 330), mode="RGB",
                 paper=(255, 255, 255), ink=(0, 0, 0))


STYLES = [pen_on_canvas, transparent_rgba, jpeg_photo, chalkboard, shaded_paper, palette_png, sixteen_bit_png,
          bilevel_scan, marker_crop, drawing_window]


# ---------------------------------------------------------------- PNG bytes by hand

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + png_chunk(b"IEND", b"")


# ---------------------------------------------------------------- toy digits, and digits on a big canvas

TOY_STROKES = {  # polylines on a 112x112 grid, drawn with a broad pen and shrunk to 28x28 like MNIST
    "0": [[(56, 16), (78, 30), (80, 74), (56, 96), (34, 74), (34, 30), (56, 16)]],
    "2": [[(36, 36), (48, 18), (70, 18), (78, 36), (40, 92), (80, 92)]],
    "3": [[(36, 20), (76, 20), (54, 52), (78, 70), (62, 94), (34, 90)]],
    "4": [[(64, 16), (30, 70), (82, 70)], [(64, 16), (64, 96)]],
    "7": [[(32, 18), (80, 18), (50, 96)]],
}


def toy_digit(name: str) -> np.ndarray:
    img = Image.new("L", (112, 112), 0)
    painter = ImageDraw.Draw(img)
    for line in TOY_STROKES[name]:
        painter.line(line, fill=255, width=10, joint="curve")
    return np.asarray(img.resize((28, 28), Image.Resampling.BOX))


def canvas_digit(digit, *, seed=0, size=(900, 700), pen=3, height=400):
    return to_grayscale(draw(digit, np.random.default_rng(seed), size, pen=pen, height=height, tilt=0))
