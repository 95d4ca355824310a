"""A "writer": one person's handwriting, in a style MNIST never taught, for the fine-tuning example.

    python bench/writer.py OUT_DIR [--per-class 100] [--seed 0] [--ckpt PATH]

Writes OUT_DIR/<digit>/<n>.png, --per-class digits of each class, all by one hand, in shapes MNIST's
writers seldom used: a slashed 0, a European 1 with a long flag and a foot, a 2 with a loop at its foot, a
flat-topped 3, a 4 open at the top, a 5 whose flag stands apart, a 6 with a long bent neck, a 7 with a
hook and a crossbar, an 8 whose top ring is small and to the right, a 9 whose loop stays open and whose
stem hooks back like a g. The hand leans backwards, writes narrow with a felt pen, shakes a little and
lifts the pen now and then (a stroke loses a short stretch). The strokes are polylines drawn with Pillow,
so no font is needed (it runs anywhere, CI included); each sample varies as a hand does: pen width,
slant, turn, proportions, size and place on the page, a smooth bend of the whole figure and a tremor
along the strokes, paper and ink grey, blur and paper noise, on a square canvas of 80 to 400 px a side.
Then reads them as `mnistlab predict OUT_DIR/*/` does (the shipped model unless --ckpt) and prints the
accuracy per class, what the misses were read as (`-1`: no digit found), and the total. The shipped
model, seed 0, 100 per class: see docs/reading-digits.md. Nothing is timed; OUT_DIR must be new or
empty (nothing is written over).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnistlab.errors import UserError  # noqa: E402
from mnistlab.files import make_dir, write_new_file  # noqa: E402
from mnistlab.reading.predict import SHIPPED, load_classifier, predict_files  # noqa: E402

# The hand: backhanded (leaning left), narrow, a felt pen, a little shaky, lifted now and then.
SLANT = (-0.4, -0.15)  # x shifts by SLANT * the height above the middle: backwards < 0
ASPECT = (0.3, 0.45)  # width / height
PEN = (0.09, 0.14)  # of the height
WOBBLE = 0.04  # of the height: a smooth bend of the figure, and a tremor a sixth of it
TURN = (-4.0, 4.0)  # degrees the whole digit is turned, anticlockwise > 0
LIFT = 0.8  # the chance that a stroke loses a short stretch (the pen lifted)

Stroke = list[tuple[float, float]]  # points in the digit's box: x 0 (left) to 1, y 0 (top) to 1


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24) -> Stroke:
    """Degrees, clockwise on the page from 3 o'clock (y grows downwards)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, n)]


def line(*points: tuple[float, float], n: int = 8) -> Stroke:
    """Straight segments through the points, each cut in `n` (the wobble then bends them a little)."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        out += [(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t) for t in np.linspace(0, 1, n + 1)[1:]]
    return out


def strokes(digit: int, rng) -> list[Stroke]:
    """The writer's digit, with this sample's small differences of shape."""
    def u(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    if digit == 0:  # slashed, the slash running out of the ring
        return [arc(0.5, 0.5, 0.34, 0.46, -90, 275), line((0.9, u(-0.04, 0.04)), (0.1, u(0.96, 1.04)))]
    if digit == 1:  # European: a flag reaching half way down, and a foot
        flag = (u(0.0, 0.1), u(0.42, 0.56))
        return [line(flag, (0.6, 0.0), (0.6, 1.0)), line((0.3, 1.0), (0.9, 1.0))]
    if digit == 2:  # a loop where the neck meets the foot
        return [arc(0.5, 0.26, 0.34, 0.24, 190, 350) + line((0.82, 0.34), (0.3, 0.76))
                + arc(0.3, 0.86, u(0.1, 0.16), 0.12, 250, 20, 12) + line((0.42, 0.9), (0.95, u(0.86, 0.98)))]
    if digit == 3:  # flat top, a sharp turn into one round belly
        return [line((0.12, 0.02), (0.86, 0.02), (0.4, u(0.38, 0.46))) + arc(0.48, 0.68, 0.38, 0.3, -100, 160)]
    if digit == 4:  # open at the top: an upright arm, then the bar, and a long stem apart
        return [line((0.12, 0.0), (0.12, u(0.5, 0.6)), (0.96, u(0.52, 0.6))), line((0.74, 0.0), (0.74, 1.0))]
    if digit == 5:  # the flag far apart, above and to the right; a belly that curls back in
        return [line((u(0.38, 0.5), u(-0.06, 0.0)), (1.0, -0.08)),
                line((0.22, 0.14), (0.18, 0.44)) + arc(0.48, 0.66, 0.34, 0.3, -150, 170)]
    if digit == 6:  # a long bent neck, a small loop low down
        return [arc(0.95, 0.6, 0.7, 0.6, 250, 180, 16) + arc(0.5, 0.78, 0.25, 0.2, 180, 540)]
    if digit == 7:  # a hook at the top, a crossbar, a curving stem
        return [line((0.06, u(0.18, 0.3)), (0.12, 0.04), (0.94, 0.04)) + arc(-0.3, 0.1, 1.24, 0.9, -5, 60, 12),
                line((0.3, 0.5), (0.9, 0.48))]
    if digit == 8:  # two rings, the top one small and to the right
        return [arc(0.56, 0.22, 0.3, 0.22, 0, 360), arc(0.46, 0.7, 0.4, 0.28, 0, 360)]
    # 9: the loop open at its foot, a stem that hooks back left like a g
    return [arc(0.46, 0.28, 0.32, 0.26, 70, 300) + line((0.78, 0.14), (0.78, 0.82))
            + arc(0.5, 0.82, 0.28, 0.18, 0, 150, 10)]


def warp(points: np.ndarray, rng, wobble: float) -> np.ndarray:
    """A smooth random bend of the whole figure (two sine waves each way) plus a small tremor per point."""
    out = points.copy()
    for axis in (0, 1):
        for _ in range(2):
            k, phase = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * math.pi)
            out[:, axis] += wobble * rng.uniform(0.3, 1.0) * np.sin(k * points[:, 1 - axis] + phase)
    return out + rng.normal(0, wobble / 6, out.shape)


def lift(stroke: Stroke, rng) -> list[Stroke]:
    """A quick hand lifts the pen now and then: with chance LIFT a stroke loses a short stretch."""
    n = len(stroke)
    if n < 16 or rng.random() >= LIFT:
        return [stroke]
    start = int(rng.integers(round(0.2 * n), round(0.7 * n)))  # never at an end: no stray dots
    stop = start + max(2, round(n * rng.uniform(0.06, 0.14)))
    return [stroke[:start], stroke[stop:]]


def shape(digit: int, rng) -> list[np.ndarray]:
    """The digit's strokes as this hand writes them, in units of its height, centred on (0, 0)."""
    aspect, slant, turn = rng.uniform(*ASPECT), rng.uniform(*SLANT), math.radians(rng.uniform(*TURN))
    out = []
    for stroke in (part for whole in strokes(digit, rng) for part in lift(whole, rng)):
        p = warp(np.array(stroke, dtype=np.float64), rng, wobble=WOBBLE)
        x, y = (p[:, 0] - 0.5) * aspect + slant * (0.5 - p[:, 1]), p[:, 1] - 0.5
        out.append(np.stack([x * math.cos(turn) + y * math.sin(turn), -x * math.sin(turn) + y * math.cos(turn)], 1))
    return out


def sample(digit: int, rng) -> Image.Image:
    """One sample on its own canvas: the hand's variation, then the paper's."""
    side = int(rng.integers(80, 401))
    figure = shape(digit, rng)
    points = np.concatenate(figure)
    extent = points.max(0) - points.min(0)
    height = side * rng.uniform(0.45, 0.85) / max(1.0, extent.max())  # the whole figure fits on the canvas
    pen = max(1, round(height * rng.uniform(*PEN)))
    margin = pen / 2 + 0.03 * side
    corner = [rng.uniform(margin, max(margin, side - margin - e * height)) for e in extent]
    paper, ink = int(rng.integers(175, 256)), int(rng.integers(0, 90))
    image = Image.new("L", (side, side), paper)
    draw = ImageDraw.Draw(image)
    r = (pen - 1) / 2
    for stroke in figure:
        xy = [tuple(v) for v in ((stroke - points.min(0)) * height + corner).tolist()]
        draw.line(xy, fill=ink, width=pen, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noisy = np.asarray(image, dtype=np.float32) + rng.uniform(0, 10) * rng.standard_normal((side, side), np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def write(out: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for digit in range(10):
        folder = make_dir(out / str(digit), "OUT_DIR")
        for n in range(per_class):
            buffer = io.BytesIO()
            sample(digit, rng).save(buffer, "PNG", compress_level=1)  # noise compresses poorly: spend no time on it
            write_new_file(folder, str(n), ".png", buffer.getvalue())


def report(results: list[dict]) -> None:
    """Accuracy per class with what its misses were read as (`-1`: no digit found), then the total."""
    right = 0
    for digit in range(10):
        mine = [r for r in results if Path(r["path"]).parent.name == str(digit)]
        read = Counter(r.get("prediction", "-1") for r in mine)
        hits = read.pop(str(digit), 0)
        right += hits
        misses = " ".join(f"{digit}->{label} x{count}" for label, count in read.most_common())
        print(f"  {digit}: {hits:4d}/{len(mine)} = {hits / max(1, len(mine)):6.1%}  {misses}")
    print(f"total: {right}/{len(results)} = {right / max(1, len(results)):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="a new or empty folder")
    parser.add_argument("--per-class", type=int, default=100, help="samples of each digit (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the samples (default: 0)")
    parser.add_argument("--ckpt", type=Path, default=SHIPPED, help="checkpoint that reads them (default: the shipped "
                        "model)")
    args = parser.parse_args()
    if args.per_class < 1:
        parser.error("--per-class must be at least 1")
    if args.out_dir.is_dir() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir} is not empty: give a new folder (nothing is written over)")
    try:
        write(args.out_dir, args.per_class, args.seed)
    except UserError as exc:  # OUT_DIR cannot be made or written
        parser.error(str(exc))
    print(f"wrote {10 * args.per_class} digits into {args.out_dir / '<digit>'} (seed {args.seed})")
    results = predict_files([str(args.out_dir / str(d)) for d in range(10)], load_classifier(args.ckpt))
    print(f"read by {args.ckpt}:")
    report(results)


if __name__ == "__main__":
    main()
