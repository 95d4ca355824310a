"""Turn a person's picture of a digit into an MNIST-style 28x28 input.

MNIST digits were prepared in a particular way: bilevel scans, cropped to the
ink, size-normalised so the longer side fits a 20x20 box (antialiased, aspect
kept), then placed in a 28x28 frame with their centre of mass at the centre,
white ink on black. A model trained on MNIST only understands images made that
way, so `predict` and the drawing window both send their images through
`mnist_frame`, which repeats those steps on photos, scans and drawings; a photo
of a whole sheet lying on a table is first cut down to the sheet (sheet.py).
`mnist_frames` does the same for each digit of a row written on one picture.

OpenCV does the image work; torch is not imported here, and the command line
imports this module only when it reads images.
"""

from __future__ import annotations

import functools
import math
import os

import cv2
import numpy as np
from PIL import Image

from .image import ImageError, open_image, to_grayscale
from .sheet import cut_to_sheet, find_sheet

FRAME = 28
BOX = 20  # MNIST fits the longer side of the digit into 20x20
CENTRE = 14.0  # measured: MNIST's mean centre of mass is (13.99, 14.01) in pixel indices
# Median stroke width of MNIST digits in pixels of the 28x28 frame (measured on
# the test set as 2*area/perimeter of the ink). Thinner strokes are widened to
# it, so a 2-px pen on a big canvas does not vanish when shrunk 30-fold.
STROKE_WIDTH = 2.4
SHAPE_SIDE = 4 * BOX  # the digit is binarised at 4x the final size, then shrunk with area averaging
WORK_SIDE = 2048  # longer inputs are first shrunk to this; finer detail cannot survive 20 px anyway
HALF_FROM = 640  # pictures this long (the longer side) that show a sheet are read at half size first (_locate)
MIN_HALF_DIGIT = 2 * BOX  # a digit read at half size must span this many pixels, twice what it is shrunk to
STATS_SIDE = 128  # polarity, noise and stroke width are measured on a sample this size: they are statistics
MIN_CONTRAST = 0.06 * 255  # ink must differ from the paper by more than ~15 grey levels
MIN_DIGIT_FRACTION = 0.02  # a "digit" spanning less of the image than this is a speck
_TRIALS = np.random.default_rng(0).random((64, 3))  # the border points the paper fit tries, as fractions; fixed:
# the same picture always gives the same answer
NO_INK = "no ink found (the image is blank, or the digit has too little contrast)"


def preprocess(img_or_path, *, frame: bool = True) -> np.ndarray:
    """An image or image file as a float32 28x28 array in [0, 1], white ink on black.

    frame=False is for images already in MNIST form: only grey conversion and, if
    the size differs, a resize to 28x28; polarity and placement are left alone.
    """
    return _read(img_or_path, mnist_frame if frame else _as_mnist_size)


def preprocess_digits(img_or_path) -> list[np.ndarray]:
    """Every digit of a picture (a row written on a sheet), each as `preprocess` gives it, in reading order."""
    return _read(img_or_path, mnist_frames)


def _read(img_or_path, prepare):
    if isinstance(img_or_path, Image.Image):
        img, name = img_or_path, None
    else:
        img, name = open_image(img_or_path, grey=True), os.fspath(img_or_path)
    try:
        return prepare(grey_pixels(img))
    except ImageError as exc:
        if name is None:
            raise
        raise ImageError(f"{name}: {exc}", exc.exit_code) from None


def grey_pixels(img: Image.Image) -> np.ndarray:
    """Grey levels as cheaply as they come: 8-bit grey and RGB as uint8 (Pillow's ITU-R 601 grey, as
    to_grayscale's to within rounding), every other mode as to_grayscale's floats."""
    if img.width and img.height and "transparency" not in img.info and img.mode in ("L", "RGB"):
        return _grey_array(img if img.mode == "L" else img.convert("L"))
    return to_grayscale(img)


def _grey_array(img: Image.Image) -> np.ndarray:
    """An 8-bit grey image's pixels, pasted straight into numpy's memory (np.asarray would go through Pillow's
    row-by-row encoder and a bytes object: most of the cost of reading a photo after decoding it)."""
    img.load()  # an Image.open()ed picture decodes here; Pillow 13's img.im no longer decodes it for us
    out = np.empty((img.height, img.width), dtype=np.uint8)
    try:
        target = Image.frombuffer("L", img.size, out, "raw", "L", 0, 1)
        if target.readonly:  # it maps `out` rather than holding a copy of it
            target.im.paste(img.im, (0, 0, *img.size))
            return out
    except (AttributeError, TypeError, ValueError):  # a Pillow without these internals
        pass
    return np.asarray(img)


def _as_mnist_size(gray: np.ndarray) -> np.ndarray:
    gray = gray / np.float32(255) if gray.dtype == np.uint8 else gray.astype(np.float32, copy=False)
    return _resize(gray, (FRAME, FRAME))


def mnist_frame(gray: np.ndarray) -> np.ndarray:
    """A grey picture of one digit (any size, either polarity, uint8 or floats in [0, 1]) as MNIST would have
    prepared it.

    Returns float32 28x28 in [0, 1], white ink on black. Raises ImageError when
    there is no ink to be found.
    """
    ink, threshold, found = _locate_or_pad(gray, lambda mask: [where] if (where := _digit_region(mask)) else [])
    return _frame(ink, threshold, *found[0])


def mnist_frames(gray: np.ndarray) -> list[np.ndarray]:
    """Each digit of a picture holding one or more, in reading order (rows top to bottom, left to right)."""
    ink, threshold, found = _locate_or_pad(gray, _digit_groups)
    return [_frame(ink, threshold, *where) for where in found]


def _locate_or_pad(gray: np.ndarray, find) -> tuple[np.ndarray, float, list]:
    """_locate, and where it finds no ink, _locate again in a margin of the picture's commonest grey level.

    The paper is looked for along the picture's border; a bold digit cropped to
    its ink (no margin at all) covers most of the border, and the paper is then
    nowhere to be found there. Its commonest level is the paper's still (the
    strokes cover less than half of a digit's box). Raises ImageError when the
    margin finds no ink either.
    """
    ink, threshold, found = _locate(gray, find)
    if found:
        return ink, threshold, found
    gray = _work_grey(gray)
    paper = int(np.argmax(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()))
    if not _cropped_to_its_ink(gray, paper):
        raise ImageError(NO_INK)
    pad = max(2, round(0.15 * max(gray.shape)))
    ink, threshold, found = _locate(cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=paper),
                                    find)
    if not found:
        raise ImageError(NO_INK)
    return ink, threshold, found


def _locate(gray: np.ndarray, find) -> tuple[np.ndarray, float, list]:
    """The ink, the level that counts as ink, and where `find` (a function of the ink mask) puts the digits.

    A large photo of a sheet is read at half size first: finding the sheet, its
    paper and its ink needs no more, and flattening the sheet and every pass over
    it then cost a quarter of the pixels. That is the answer only when each digit
    found there still spans MIN_HALF_DIGIT pixels, enough for the box it is fitted to;
    otherwise (a small or faint digit) the same sheet is read at full size. A large
    picture with no sheet found at half size is read at full size, as every other
    picture is.
    """
    gray = _work_grey(gray)
    if max(gray.shape) >= HALF_FROM:
        half = _shrink_by(gray, 2)
        sheet = find_sheet(half)
        if sheet is not None:
            ink, threshold = _ink_strength(cut_to_sheet(half, sheet))
            found = find(_ink_mask(ink, threshold))
            if found and min(max(keep.shape) for _, keep in found) >= MIN_HALF_DIGIT:
                return ink, threshold, found
            sheet = sheet.scaled(2)  # where it lies at full size: found once, the same sheet either way
    else:
        sheet = find_sheet(gray)
    ink, threshold = _ink_strength(gray if sheet is None else cut_to_sheet(gray, sheet))
    return ink, threshold, find(_ink_mask(ink, threshold))


def _cropped_to_its_ink(gray: np.ndarray, paper: int) -> bool:
    """Does the picture look like a digit cropped to its ink: a fifth of its border or more unlike the paper
    (its commonest level), much of it near that level, and strokes far from it? (Not a blank page, a faint
    digit or a shaded blank page: their border is paper, nothing stands far from it, or no one level holds
    much of the picture. A blank page in a sharp-edged deep shadow might pass: a doubt.)"""
    distance = np.abs(gray.astype(np.int16) - paper)
    border_paper = float(np.mean(distance[_border_band(gray.shape)] <= MIN_CONTRAST))
    paper_share, far_share = float(np.mean(distance <= MIN_CONTRAST)), float(np.mean(distance > 4 * MIN_CONTRAST))
    return border_paper < 0.8 and paper_share >= 0.35 and far_share >= 0.05


def _ink_mask(ink: np.ndarray, threshold: float) -> np.ndarray:
    """255 where there is ink, else 0 (uint8, as OpenCV's masks)."""
    return cv2.threshold(ink, threshold, 255, cv2.THRESH_BINARY)[1]


def _work_grey(gray: np.ndarray) -> np.ndarray:
    """8-bit grey, at most WORK_SIDE a side."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"mnist_frame wants a non-empty 2-D grey image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        gray = np.nan_to_num(gray.astype(np.float32, copy=False), nan=0.0)
        gray = (np.clip(gray, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return _shrink_to(gray, WORK_SIDE)


def _frame(ink: np.ndarray, threshold: float, region: tuple[slice, slice], keep: np.ndarray) -> np.ndarray:
    left, top, width, height = cv2.boundingRect(keep.view(np.uint8))  # of the ink that is kept
    crop = (slice(top, top + height), slice(left, left + width))
    shape = _binary_shape(ink[region][crop], keep[crop], threshold)
    shape = _widen_strokes(shape, STROKE_WIDTH * max(shape.shape) / BOX)
    return _centre_by_mass(_fit(shape, BOX))


def _shrink_to(gray: np.ndarray, side: int) -> np.ndarray:
    """At most `side` pixels a side, shrunk by a whole factor (a remainder under it cropped off): area
    averaging by a whole factor is exact block means, and OpenCV's fast path."""
    factor = math.ceil(max(gray.shape) / side)
    return gray if factor <= 1 else _shrink_by(gray, factor)


def _shrink_by(gray: np.ndarray, factor: int) -> np.ndarray:
    height, width = max(1, gray.shape[0] // factor), max(1, gray.shape[1] // factor)
    return cv2.resize(gray[: height * factor, : width * factor], (width, height), interpolation=cv2.INTER_AREA)


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (antialiased, as MNIST's normalisation), bilinear when growing."""
    height, width = size
    if gray.shape == (height, width):
        return gray
    shrinking = height <= gray.shape[0] and width <= gray.shape[1]
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# ---------------------------------------------------------------- how much ink each pixel holds

def _ink_strength(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """How far each pixel (uint8) is from the paper's own brightness there, on the ink's side, and the level
    that counts as ink.

    Measured against the paper's brightness at each pixel, so shading, a shadow
    or a tinted sheet are not ink. Two passes. The first (_ink_statistics)
    settles the polarity, the noise and the stroke width. The second takes the
    paper level at each pixel from its neighbourhood with the strokes wiped out,
    which follows shadows the border cannot see.
    """
    found = _ink_statistics(gray)
    if found is None:
        return np.zeros_like(gray), 255.0
    dark_ink, floor, stroke, step = found
    paper = _paper_level(gray, dark_ink, stroke)
    ink = cv2.subtract(paper, gray) if dark_ink else cv2.subtract(gray, paper)
    full = _typical_ink(ink, floor, step)
    if full is None:
        return np.zeros_like(gray), 255.0
    return ink, max(floor, 0.35 * full)


def _ink_statistics(gray: np.ndarray) -> tuple[bool, float, float, int] | None:
    """Dark ink or light, the noise floor, the stroke width and the sampling step; None when there is no ink.

    Against the paper fitted along the picture's border (there is paper there even
    when a tightly cropped, bold digit covers most of the middle). Statistics need
    no more than every few pixels, STATS_SIDE a side; a finer sample is tried
    when that one misses the strokes (a fine pen on a large canvas).
    """
    coarse_step = max(1, max(gray.shape) // STATS_SIDE)
    for step in dict.fromkeys((coarse_step, max(1, coarse_step // 4))):
        coarse = gray[::step, ::step].astype(np.float32)
        residual = coarse - _paper_through_border(coarse)
        floor = max(4.0 * _border_noise(residual), MIN_CONTRAST)
        # The ink is on the side whose outliers carry more contrast beyond the floor: dark when the excess beyond
        # it, counted negative below the paper, sums to no more than nothing.
        dark_ink = float(np.sum(residual - np.clip(residual, -floor, floor))) <= 0
        if dark_ink:
            residual = -residual
        full = _typical_ink(residual, floor)
        if full is not None:
            stroke = _stroke_width(residual > 0.5 * full, max(gray.shape) / 24 / step) * step
            return bool(dark_ink), floor, stroke, step
    return None


def _typical_ink(ink: np.ndarray, floor: float, step: int = 1) -> float | None:
    """The contrast of a well-inked stroke, or None when nothing stands out from the paper.

    Of the pixels beyond the floor, the stronger of two classes (Otsu): the other
    holds what the paper estimate missed (a shadow's core, JPEG ringing) or the
    lighter half of a pencil's strokes, which still count as ink. Every step-th
    pixel will do, unless they hold too few strokes to tell.
    """
    strong = ink[::step, ::step]
    strong = strong[strong > floor]
    if strong.size < 50 and step > 1:
        strong = ink[ink > floor]
    if strong.size == 0:
        return None
    levels = (strong if strong.dtype == np.uint8 else np.clip(strong, 0, 255).astype(np.uint8)).reshape(-1, 1)
    split, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    upper = strong[levels[:, 0] > split]
    full = float(_median(upper if upper.size else strong))
    return full if full >= 2 * MIN_CONTRAST else None


@functools.lru_cache(maxsize=64)
def _border_band(shape: tuple[int, int]) -> np.ndarray:
    """True along the picture's border (read-only: one array serves every picture of this shape)."""
    height, width = shape
    band = max(1, round(0.04 * max(height, width)))
    inner = np.zeros(shape, dtype=bool)
    inner[band: height - band, band: width - band] = True
    border = ~inner
    border.flags.writeable = False
    return border


def _paper_through_border(gray: np.ndarray) -> np.ndarray:
    """A smooth quadratic surface through the paper along the picture's border, over the whole picture.

    A quadratic follows a linear light gradient and a lens's vignetting. The fit
    is robust: it starts from the plane through three border points that most of
    the border agrees with (so strokes crossing the border and a strip of table
    along one side do not count), then refits to the points near that surface.
    """
    thumb = _shrink_to(gray, 32)
    terms, ring, design, solvers = _border_fit(thumb.shape)
    target = thumb[ring]
    planes = solvers @ target[(_TRIALS * len(target)).astype(np.intp)][..., None]
    errors = np.abs(target - (design[:, :3] @ planes).squeeze(-1))
    best = int(np.argmin(_median(errors)))
    coef, error = np.zeros(terms.shape[-1], dtype=np.float32), errors[best]
    coef[:3] = planes[best, :, 0]
    for _ in range(2):
        use = error <= max(3.0 * 1.4826 * float(_median(error)), 5.0)
        if np.count_nonzero(use) < 2 * len(coef):
            break
        coef = _least_squares(design[use], target[use])
        error = np.abs(target - design @ coef)
    surface = (terms @ coef).astype(np.float32)
    return cv2.resize(surface, gray.shape[::-1], interpolation=cv2.INTER_LINEAR)


def _least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares coefficients by the normal equations in float64: six terms in [-0.5, 0.5] keep them
    well conditioned, and a 6x6 solve costs a fraction of np.linalg.lstsq's SVD. lstsq when singular."""
    design64 = design.astype(np.float64)
    try:
        coef = np.linalg.solve(design64.T @ design64, design64.T @ target)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(design64, target, rcond=None)[0]
    return coef.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _border_fit(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the paper fit needs of a picture of `shape` and not of its pixels: per pixel 1, x, y, x*x, y*y, x*y
    (x, y in [-0.5, 0.5]), the border band, those terms along it, and for each trial the matrix that takes its
    three points' grey levels to the plane through them (least squares, with a small ridge that settles three
    points in a line, one side of the border)."""
    ys, xs = np.indices(shape, dtype=np.float32)
    ys, xs = ys / max(1, shape[0] - 1) - 0.5, xs / max(1, shape[1] - 1) - 0.5
    terms = np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=-1)
    ring = _border_band(shape)
    design = terms[ring]
    points = design[(_TRIALS * len(design)).astype(np.intp)][..., :3].astype(np.float64)
    normal = np.swapaxes(points, 1, 2)
    solvers = (np.linalg.inv(normal @ points + 1e-4 * np.eye(3)) @ normal).astype(np.float32)
    for array in (terms, ring, design, solvers):
        array.flags.writeable = False  # shared by every call for this shape
    return terms, ring, design, solvers


def _median(values: np.ndarray):
    """np.median along the last axis, by a partial sort (np.median's own checks cost more than the sort on
    arrays this small). Not empty."""
    half = values.shape[-1] // 2
    if values.shape[-1] % 2:
        return np.partition(values, half, axis=-1)[..., half]
    middle = np.partition(values, (half - 1, half), axis=-1)
    return middle[..., half - 1] / 2 + middle[..., half] / 2


def _border_noise(residual: np.ndarray) -> float:
    """Pixel noise of the paper (grain, sensor, JPEG), from the picture's border where paper dominates."""
    sample = residual[_border_band(residual.shape)]
    return 1.4826 * float(_median(np.abs(sample - _median(sample))))


def _stroke_width(mask: np.ndarray, wide: float) -> float:
    """Typical stroke width in pixels: runs of ink across a stroke are short, runs along it long.

    The lower third of all row and column run lengths; a shadow's core, one long
    run per row, cannot outnumber the strokes' runs. (Measured on the statistics
    sample, at most STATS_SIDE a side.) Only a width over `wide` matters to the
    caller; when no disc that wide fits in the ink, the widest that fits is
    answer enough, and cheaper.
    """
    ink = cv2.copyMakeBorder(mask.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    widest = 2 * cv2.minMaxLoc(cv2.distanceTransform(ink, cv2.DIST_L2, 3))[1]
    if widest <= wide:
        return widest
    # Rows and columns end to end, each closed by a 0 so that no run carries over into the next line.
    height, width = mask.shape
    lines = np.zeros(height * (width + 1) + width * (height + 1) + 1, np.int8)
    lines[1: 1 + height * (width + 1)].reshape(height, width + 1)[:, :width] = mask
    lines[1 + height * (width + 1):].reshape(width, height + 1)[:, :height] = mask.T
    edges = np.diff(lines)
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    if not runs.size:
        return 1.0
    runs.sort()
    at = 0.33 * (runs.size - 1)  # np.percentile's linear interpolation, on a sort of a few hundred runs
    low = int(at)
    return float(runs[low] + (at - low) * (runs[min(low + 1, runs.size - 1)] - runs[low]))


def _paper_level(gray: np.ndarray, dark_ink: bool, stroke: float) -> np.ndarray:
    """The paper's brightness at each pixel: a grey-level closing (opening for light ink) that wipes out the
    strokes.

    Strokes narrower than the window vanish, shading and shadows wider than it
    stay. The window is three strokes wide and at least an eighth of the picture.
    It runs on a thumbnail where it spans 9 pixels: the paper level is smooth,
    and the thumbnail's averaging keeps paper grain from biasing the maximum.
    """
    height, width = gray.shape
    window = max(max(gray.shape) / 8, 3 * stroke, 3.0)
    scale = max(1, round(window / 9))
    small = _shrink_by(gray, scale)
    cells = max(3, round(window / scale) | 1)
    operation = cv2.MORPH_CLOSE if dark_ink else cv2.MORPH_OPEN
    level = cv2.morphologyEx(small, operation, np.ones((cells, cells), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(level, (width, height), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- where the digit is

class _Blobs:
    """The ink's 8-connected blobs, found on a grid of cells of a few pixels (so a stroke broken by JPEG or a
    dry pen is still one blob): per blob its box (top, left, bottom, right in cells, inclusive) and ink mass."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask  # uint8, 255 = ink
        self.cell = max(1, math.ceil(max(mask.shape) / 200))
        self.counts = _pool_sum(mask, self.cell)
        count, labels = cv2.connectedComponents((self.counts > 0).astype(np.uint8), connectivity=8)
        self.labels, self.count = labels, count - 1
        self.boxes = _label_boxes(labels, count)
        # One blob (the usual case) holds all the ink; only several need the count per label.
        self.mass = (np.bincount(labels.ravel(), weights=self.counts.ravel(), minlength=count)[1:] if count > 2
                     else np.array([self.counts.sum()] if count == 2 else [], dtype=np.float64))
        self.smallest = max(3, MIN_DIGIT_FRACTION * max(mask.shape)) / self.cell

    def ink(self, chosen: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
        """The pixel region holding the chosen blobs, and their ink there."""
        top, left = self.boxes[chosen, :2].min(axis=0)
        bottom, right = self.boxes[chosen, 2:].max(axis=0)
        cells = self.table(chosen)[self.labels[top: bottom + 1, left: right + 1]]
        cell = self.cell
        region = (slice(top * cell, (bottom + 1) * cell), slice(left * cell, (right + 1) * cell))
        inside = self.mask[region] > 0
        if chosen.all():  # every cell with ink is a chosen blob's
            return region, inside
        keep = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[: inside.shape[0], : inside.shape[1]]
        return region, inside & keep

    def table(self, chosen: np.ndarray) -> np.ndarray:
        """Per label (0 is no blob), whether it is a chosen blob: indexed by labels, the chosen blobs' cells."""
        table = np.zeros(self.count + 1, dtype=bool)
        table[1:] = chosen
        return table


def _label_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """Each label's box (top, left, bottom, right, inclusive) for labels 1 .. count - 1, from the rows and the
    columns each label occurs in (OpenCV's connectedComponentsWithStats costs many times more)."""
    height, width = labels.shape
    boxes = []
    for along, lines in ((0, height), (1, width)):
        offsets = (np.arange(lines) * count)[:, None] if along == 0 else np.arange(lines) * count
        present = np.bincount((labels + offsets).ravel(), minlength=lines * count).reshape(lines, count)[:, 1:] > 0
        boxes.append((np.argmax(present, axis=0), lines - 1 - np.argmax(present[::-1], axis=0)))
    (top, bottom), (left, right) = boxes
    return np.stack([top, left, bottom, right], axis=1)


def _digit_region(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Where the digit is, and its ink there: the largest blob and what lies close to it.

    Dropped: specks, smudges far away, a frame or sheet edge along the border, and
    a box drawn around the digit.
    """
    blobs = _Blobs(mask)
    if blobs.count <= 1:  # the rules below would keep a lone blob of a digit's size, and only that
        big = blobs.count == 1 and max(np.ptp(blobs.boxes[0].reshape(2, 2), axis=0)) + 1 >= blobs.smallest
        return blobs.ink(np.ones(1, dtype=bool)) if big else None
    frames = _frames_and_edges(blobs)
    chosen = _cluster(blobs, ~frames)
    if chosen is None and frames.any():
        # Nothing but "frames": a tightly cropped digit touching the edges is likelier than a blank sheet.
        chosen = _cluster(blobs, np.ones(blobs.count, dtype=bool))
    return None if chosen is None else blobs.ink(chosen)


def _cluster(blobs: _Blobs, alive: np.ndarray) -> np.ndarray | None:
    """The largest live blob and the live blobs near it; None if that is smaller than a digit can be.

    A stroke of the digit drawn apart (a 5's flag, a 4 in two strokes) may lie
    half the digit's size from the rest. A dot or crumb must nearly touch a
    stroke itself, not merely lie inside the digit's box, or it would be widened
    with the strokes into a blob.
    """
    if not alive.any():
        return None
    boxes, mass = blobs.boxes, blobs.mass
    alive = alive & (mass >= 0.01 * mass[alive].max())  # specks
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    chosen = np.zeros(len(mass), dtype=bool)
    chosen[np.argmax(np.where(alive, mass, -1))] = True
    while True:
        top, left = boxes[chosen, :2].min(axis=0)
        bottom, right = boxes[chosen, 2:].max(axis=0)
        size = max(bottom - top, right - left) + 1
        gap = np.maximum.reduce([top - boxes[:, 2], boxes[:, 0] - bottom, left - boxes[:, 3], boxes[:, 1] - right,
                                 np.zeros(len(mass), dtype=int)])
        strokes = alive & ~chosen & (extent >= 0.2 * size) & (gap <= 0.5 * size + 1)
        joining = strokes | (alive & ~chosen & _touching(blobs, chosen, max(1, round(0.04 * size))))
        if not joining.any():
            return chosen if size >= blobs.smallest else None
        chosen |= joining


def _touching(blobs: _Blobs, chosen: np.ndarray, radius: int) -> np.ndarray:
    """The blobs within `radius` cells of the chosen ones."""
    near = cv2.dilate(blobs.table(chosen)[blobs.labels].view(np.uint8), _disc(radius)) > 0
    touching = np.zeros(blobs.count + 1, dtype=bool)
    touching[blobs.labels[near]] = True
    return touching[1:]


def _digit_groups(mask: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Each digit of a row (or rows) of them: blobs that share columns are one digit (a 5's flag, a 4 in two
    strokes); specks, frames and edges are dropped, and so are marks far smaller than the tallest digit (a
    dash, a full stop).

    Blobs join groups heaviest first, each the first group it belongs with (_home), so a picture of
    thousands of marks costs thousands of vectorized steps, not a pass over the picture per pair."""
    blobs = _Blobs(mask)
    if blobs.count == 0:
        return []
    alive = ~_frames_and_edges(blobs)
    if not alive.any():
        alive = np.ones(blobs.count, dtype=bool)
    alive &= blobs.mass >= 0.01 * blobs.mass[alive].max()
    order = np.argsort(-np.where(alive, blobs.mass, -1))[: int(alive.sum())]
    group_of = np.full(blobs.count, -1)
    boxes = np.zeros((len(order), 4), dtype=np.int64)  # each group's box: top, left, bottom, right (cells)
    groups = 0
    for blob in order:
        box = blobs.boxes[blob]
        home = _home(boxes[:groups], box)
        if home < 0:
            home, groups = groups, groups + 1
            boxes[home] = box
        else:
            boxes[home, :2] = np.minimum(boxes[home, :2], box[:2])
            boxes[home, 2:] = np.maximum(boxes[home, 2:], box[2:])
        group_of[blob] = home
    boxes = boxes[:groups]
    tallest = int((boxes[:, 2] - boxes[:, 0]).max()) + 1
    tall = boxes[:, 2] - boxes[:, 0] + 1 >= max(0.4 * tallest, blobs.smallest)
    digits = [(group_of == g, ((top, left), (bottom, right)))
              for g, (top, left, bottom, right) in enumerate(boxes.tolist()) if tall[g]]
    return [blobs.ink(g) for g, _ in _reading_order(digits)]


def _home(groups: np.ndarray, box: np.ndarray) -> int:
    """The first of the groups (their boxes, in cells) that a blob of this box belongs to, or -1: most of its
    width within the group's columns, and not a whole digit height above or below it. (A blob touching a
    group's strokes would belong too, but blobs are 8-connected on the cell grid: none touches another.)"""
    if not len(groups):
        return -1
    top, left, bottom, right = groups.T
    b_top, b_left, b_bottom, b_right = box
    overlap = np.minimum(right, b_right) - np.maximum(left, b_left) + 1
    gap = np.maximum(np.maximum(top - b_bottom, b_top - bottom), 0)
    fits = (overlap >= 0.5 * np.minimum(b_right - b_left + 1, right - left + 1)) & (gap <= 0.5 * (bottom - top + 1))
    return int(np.argmax(fits)) if fits.any() else -1


def _reading_order(digits: list) -> list:
    """Lines top to bottom, left to right within a line. A line is a band of the page that the digits' heights
    cover without a gap (so a row may rise or fall across the page and stay one line)."""
    lines: list[list] = []
    bottom = -1
    for digit in sorted(digits, key=lambda d: d[1][0][0]):
        if not lines or digit[1][0][0] > bottom:
            lines.append([])
        lines[-1].append(digit)
        bottom = max(bottom, digit[1][1][0])
    return [digit for line in lines for digit in sorted(line, key=lambda d: d[1][0][1])]


def _pool_sum(mask: np.ndarray, cell: int) -> np.ndarray:
    """Ink pixels (mask > 0) per cell x cell block (the last row and column of blocks may be partial)."""
    mask = mask.view(np.uint8) * np.uint8(255) if mask.dtype == bool else mask
    if cell == 1:
        return (mask > 0).astype(np.int32)
    height, width = mask.shape
    rows, cols = -(-height // cell), -(-width // cell)
    padded = mask if (rows * cell, cols * cell) == mask.shape else cv2.copyMakeBorder(
        mask, 0, rows * cell - height, 0, cols * cell - width, cv2.BORDER_CONSTANT, value=0)
    # Whole blocks: exact block means, rounded to 8 bits, which still tell up to 15x15 blocks' counts apart.
    mean = cv2.resize(padded, (cols, rows), interpolation=cv2.INTER_AREA)
    return np.rint(mean * np.float32(cell * cell / 255)).astype(np.int32)


def _frames_and_edges(blobs: _Blobs) -> np.ndarray:
    """Blobs that are a frame, the edge of the sheet or the table beside it, not a digit.

    That is: blobs lying along a long stretch of the image edge, or within a thin
    strip by it, thin lines across the whole picture, and blobs whose box holds
    a digit-sized blob with room on all sides (a box drawn round the digit). A 0 with a speck in its hole is no
    frame, hence "digit-sized" and, unless the box spans the whole picture, heavy.
    """
    labels, boxes, mass = blobs.labels, blobs.boxes, blobs.mass
    height, width = labels.shape
    count = len(mass)
    result = np.zeros(count, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touching = np.bincount(edge, minlength=count + 1)[1:]
        result |= touching >= max(3, 0.3 * edge.size)

    top, left, bottom, right = boxes.T
    band_y, band_x = max(1, 0.05 * height), max(1, 0.05 * width)
    long_x, long_y = right - left + 1 >= 0.3 * width, bottom - top + 1 >= 0.3 * height
    result |= long_x & ((bottom < band_y) | (top >= height - band_y))
    result |= long_y & ((right < band_x) | (left >= width - band_x))
    # A thin line across (nearly) the whole picture from an edge: the edge of the
    # sheet or of a shadow, a ruled line. A 1 that fills a photo's height is such
    # a line too, but then nothing else is left, and the fallback keeps it.
    across_y = (bottom - top + 1 >= 0.85 * height) & ((top == 0) | (bottom == height - 1))
    across_x = (right - left + 1 >= 0.85 * width) & ((left == 0) | (right == width - 1))
    result |= across_y & (right - left + 1 <= max(1, 0.1 * width))
    result |= across_x & (bottom - top + 1 <= max(1, 0.1 * height))
    return result | _slivers(blobs) | _enclosing_boxes(blobs)


def _slivers(blobs: _Blobs) -> np.ndarray:
    """Blobs that are a strip of table where the sheet runs off the picture, or the sheet's edge running in
    from the picture's edge: thin (a tenth of the picture across at most) and either lying along an edge (in
    touch with it for half their length and at least a tenth of the edge) or a line from the edge reaching a
    third of the way across. A digit cut by the picture's edge touches it with a stroke's width, and a
    tightly cropped 1 that is the only thing in the picture is kept by the fallback of the callers."""
    labels, (top, left, bottom, right) = blobs.labels, blobs.boxes.T
    height, width = labels.shape
    tall, wide = bottom - top + 1, right - left + 1
    result = np.zeros(len(tall), dtype=bool)
    for edge, length, across, span in ((labels[:, 0], tall, wide, width), (labels[:, -1], tall, wide, width),
                                       (labels[0], wide, tall, height), (labels[-1], wide, tall, height)):
        touching = np.bincount(edge, minlength=len(tall) + 1)[1:]
        thin = across <= 0.1 * span
        result |= thin & (touching >= 0.5 * length) & (touching >= edge.size / 10)
    line_y = (tall >= 0.35 * height) & ((top == 0) | (bottom == height - 1)) & (wide <= 0.12 * tall)
    line_x = (wide >= 0.35 * width) & ((left == 0) | (right == width - 1)) & (tall <= 0.12 * wide)
    return result | line_y | line_x


def _enclosing_boxes(blobs: _Blobs) -> np.ndarray:
    """Blobs whose box holds a digit-sized, heavy blob with room on all sides: a box drawn round the digit."""
    (top, left, bottom, right), mass = blobs.boxes.T, blobs.mass
    height, width = blobs.labels.shape
    digit_sized = np.maximum(bottom - top, right - left) + 1 >= blobs.smallest
    whole_picture = (bottom - top + 1 >= 0.8 * height) & (right - left + 1 >= 0.8 * width)
    heavy = mass[None, :] >= np.where(whole_picture, 0.02, 0.2)[:, None] * mass[:, None]
    inside = ((top[:, None] < top) & (left[:, None] < left) & (bottom[:, None] > bottom) & (right[:, None] > right)
              & digit_sized[None, :] & heavy)
    return inside.any(axis=1)


# ---------------------------------------------------------------- MNIST's shape, size and place

def _binary_shape(ink: np.ndarray, keep: np.ndarray, threshold: float) -> np.ndarray:
    """The cropped digit as a bilevel image (uint8 0/1) whose longer side is at most SHAPE_SIDE, like NIST's
    scans.

    Large crops are shrunk by OR-ing cells, so a stroke thinner than a cell stays
    one cell wide instead of fading to grey; small crops are grown smoothly
    before thresholding.
    """
    side = max(ink.shape)
    if side > SHAPE_SIDE:
        return (_pool_sum(keep, math.ceil(side / SHAPE_SIDE)) > 0).astype(np.uint8)
    scale = SHAPE_SIDE / side
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    grown = cv2.resize(np.where(keep, ink, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    shape = (grown > threshold).astype(np.uint8)
    return shape if shape.any() else keep.astype(np.uint8)  # a lone faint pixel can fall between the samples


def _widen_strokes(shape: np.ndarray, width: float) -> np.ndarray:
    """Dilate a bilevel digit whose strokes are thinner than `width` pixels up to about that width."""
    ink = int(shape.sum())
    edges = int((shape[:, 1:] != shape[:, :-1]).sum() + (shape[1:] != shape[:-1]).sum()
                + shape[:, [0, -1]].sum() + shape[[0, -1]].sum())
    if ink == 0 or edges == 0:
        return shape
    # A stroke of length L and width w has area L*w and about 2L of outline;
    # counting outline along the pixel grid overstates slanted edges by 4/pi on average.
    current = 2 * ink / edges * 4 / math.pi
    radius = round((width - current) / 2)
    if radius <= 0:
        return shape
    return cv2.dilate(np.pad(shape, radius), _disc(radius))


@functools.lru_cache(maxsize=32)
def _disc(radius: int) -> np.ndarray:
    """A round structuring element (OpenCV's own ellipse of this size is a cross at radius 1, and thinner
    than a disc at 2): the pixels within radius + 1/2 of the centre."""
    dy, dx = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    return (dy * dy + dx * dx <= radius * radius + radius).astype(np.uint8)


def _fit(shape: np.ndarray, side: int) -> np.ndarray:
    """Scale so the longer side is `side`, keeping the aspect ratio."""
    scale = side / max(shape.shape)
    size = (max(1, round(shape.shape[0] * scale)), max(1, round(shape.shape[1] * scale)))
    return np.clip(_resize(shape.astype(np.float32), size), 0.0, 1.0)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place the digit in the 28x28 frame with its centre of mass at the centre (whole-pixel shifts, as MNIST)."""
    height, width = digit.shape
    # Not cv2.moments: it takes an array two pixels wide (a thin 1) for a list of points.
    total = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(height)) / total
    cx = float(digit.sum(axis=0) @ np.arange(width)) / total
    top = min(max(round(CENTRE - cy), 0), FRAME - height)
    left = min(max(round(CENTRE - cx), 0), FRAME - width)
    framed = np.zeros((FRAME, FRAME), dtype=np.float32)
    framed[top: top + height, left: left + width] = digit
    return framed
