"""How well `mnistlab predict` reads digits typed in handwriting fonts on random canvases.

    python bench/read_fonts.py FONT [FONT ...] [--per-digit 3] [--seed 0] [--ckpt PATH]

A FONT is a .ttf/.otf file or a folder searched for them. For each font, each digit 0-9 is drawn --per-digit
times on its own canvas: 80 to 900 px a side, a random colour (light, or dark three times in ten) with ink
that contrasts with it, the glyph 30-90% of the canvas's shorter side, anywhere on it; saved as PNGs in one
folder and read as `mnistlab predict DIR` reads it (the shipped model unless --ckpt). Prints each font's
score with what its misses were read as (`8->0`; `-1` is no ink found), then the total. Nothing is timed.

Handwriting fonts come as Debian packages (fonts-comic-neue, fonts-dkg-handwriting, fonts-breip, fonts-bwht,
fonts-dancingscript, fonts-femkeklaver, fonts-humor-sans, fonts-kaushanscript, fonts-kristi, fonts-klee):
`apt-get download` them and `dpkg-deb -x PACKAGE.deb DIR` to use them without installing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnistlab.reading.predict import SHIPPED, load_classifier, predict_files  # noqa: E402


def font_files(items: list[str]) -> list[Path]:
    found: list[Path] = []
    for item in map(Path, items):
        found += sorted(p for p in item.rglob("*") if p.suffix.lower() in (".ttf", ".otf")) if item.is_dir() else [item]
    if not found:
        sys.exit("no .ttf or .otf font files in " + ", ".join(items))
    return found


def canvas(digit: int, font_path: Path, rng) -> Image.Image:
    """The digit in this font, somewhere on a canvas of random size and colour."""
    width, height = (int(v) for v in rng.integers(80, 900, 2))
    dark = rng.random() < 0.3
    paper = tuple(int(v) for v in (rng.integers(0, 90, 3) if dark else rng.integers(150, 256, 3)))
    ink = tuple(int(v) for v in (rng.integers(170, 256, 3) if dark else rng.integers(0, 110, 3)))
    font = ImageFont.truetype(str(font_path), int(min(width, height) * rng.uniform(0.3, 0.9)))
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    x = rng.uniform(0, max(1, width - (right - left))) - left
    y = rng.uniform(0, max(1, height - (bottom - top))) - top
    draw.text((x, y), str(digit), fill=ink, font=font)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fonts", nargs="+", help=".ttf/.otf files, or folders holding them")
    parser.add_argument("--per-digit", type=int, default=3, help="canvases per digit and font (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the canvases (default: 0)")
    parser.add_argument("--ckpt", type=Path, default=SHIPPED, help="checkpoint (default: the shipped model)")
    args = parser.parse_args()
    classifier = load_classifier(args.ckpt)
    rng = np.random.default_rng(args.seed)
    fonts = font_files(args.fonts)
    with tempfile.TemporaryDirectory(prefix="read_fonts_") as tmp:
        truth = {}
        for n, font in enumerate(fonts):
            for rep in range(args.per_digit):
                for digit in range(10):
                    path = Path(tmp) / f"{n:03d}_{rep}_{digit}.png"
                    canvas(digit, font, rng).save(path)
                    truth[str(path)] = (n, digit)
        # All of them at once, as `mnistlab predict DIR` reads a folder; `-1` where no digit was found.
        results = predict_files([tmp], classifier)
    misses: list[list[str]] = [[] for _ in fonts]
    for result in results:
        n, digit = truth[result["path"]]
        read = result.get("prediction", "-1")  # a class name: a digit checkpoint's are "0" to "9"
        if read != str(digit):
            misses[n].append(f"{digit}->{read}")
    total = 10 * args.per_digit
    for font, missed in zip(fonts, misses):
        print(f"{font.stem:<28} {total - len(missed):3d}/{total}  {' '.join(missed)}")
    right = len(results) - sum(map(len, misses))
    print(f"total: {right}/{len(results)} = {right / max(1, len(results)):.1%} "
          f"(checkpoint {args.ckpt}, seed {args.seed})")


if __name__ == "__main__":
    main()
