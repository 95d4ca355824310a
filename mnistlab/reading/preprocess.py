"""Turn a person's picture of a digit into an MNIST-style 28x28 input.

MNIST digits were prepared in a particular way: bilevel scans, cropped to the
ink, size-normalised so the longer side fits a 20x20 box (antialiased, aspect
kept), then placed in a 28x28 frame with their centre of mass at the centre,
white ink on black. A model trained on MNIST only understands images made that
way, so `predict` and the drawing window both send their images through
`mnist_frame`, which repeats those steps on photos, scans and drawings.

numpy and Pillow only: `mnistlab predict --help` and the GUI import this, and
must not wait for torch.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from .image import ImageError, open_image, to_grayscale

FRAME = 28
BOX = 20  # MNIST fits the longer side of the digit into 20x20
CENTRE = 14.0  # measured: MNIST's mean centre of mass is (13.99, 14.01) in pixel indices
# Median stroke width of MNIST digits in pixels of the 28x28 frame (measured on
# the test set as 2*area/perimeter of the ink). Thinner strokes are widened to
# it, so a 2-px pen on a big canvas does not vanish when shrunk 30-fold.
STROKE_WIDTH = 2.4
SHAPE_SIDE = 4 * BOX  # the digit is binarised at 4x the final size, then shrunk with area averaging
WORK_SIDE = 2048  # longer inputs are first shrunk to this; finer detail cannot survive 20 px anyway
MIN_CONTRAST = 0.06  # ink must differ from the paper by more than ~15 grey levels
MIN_DIGIT_FRACTION = 0.02  # a "digit" spanning less of the image than this is a speck


def preprocess(img_or_path, *, frame: bool = True) -> np.ndarray:
    """An image or image file as a float32 28x28 array in [0, 1], white ink on black.

    frame=False is for images already in MNIST form: only grey conversion and, if
    the size differs, a resize to 28x28; polarity and placement are left alone.
    """
    if isinstance(img_or_path, Image.Image):
        img, name = img_or_path, None
    else:
        img, name = open_image(img_or_path), os.fspath(img_or_path)
    try:
        gray = to_grayscale(img)
        if frame:
            return mnist_frame(gray)
        return _resize(gray, (FRAME, FRAME))
    except ImageError as exc:
        if name is None:
            raise
        raise ImageError(f"{name}: {exc}", exc.exit_code) from None


def mnist_frame(gray: np.ndarray) -> np.ndarray:
    """A grey picture of one digit (any size, either polarity) as MNIST would have prepared it.

    Returns float32 28x28 in [0, 1], white ink on black. Raises ImageError when
    there is no ink to be found.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"mnist_frame wants a non-empty 2-D grey image, got shape {gray.shape}")
    gray = gray / np.float32(255) if gray.dtype == np.uint8 else gray.astype(np.float32, copy=False)
    gray = _shrink_to(gray, WORK_SIDE)
    ink, threshold = _ink_strength(gray)
    mask = ink > threshold
    found = _digit_region(mask)
    if found is None:
        raise ImageError("no ink found (the image is blank, or the digit has too little contrast)")
    region, keep = found
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    shape = _binary_shape(ink[region][crop], keep[crop], threshold)
    shape = _widen_strokes(shape, STROKE_WIDTH * max(shape.shape) / BOX)
    return _centre_by_mass(_fit(shape.astype(np.float32), BOX))


def _shrink_to(gray: np.ndarray, side: int) -> np.ndarray:
    height, width = gray.shape
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    return _resize(gray, (max(1, round(height * scale)), max(1, round(width * scale))))


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (antialiased, as MNIST's normalisation), bilinear when growing."""
    height, width = size
    if gray.shape == (height, width):
        return gray.astype(np.float32)
    shrinking = height <= gray.shape[0] and width <= gray.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32)).resize((width, height), method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _ink_strength(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """How much ink each pixel holds (1 = a typical stroke), and the level that counts as ink.

    Measured against the paper's own brightness at each pixel, so shading, a
    shadow or a tinted sheet are not ink. Two passes. The first fits the paper
    along the picture's border (there is paper there even when a tightly cropped,
    bold digit covers most of the middle) and settles the polarity, the noise and
    the stroke width; it only gathers statistics, so it looks at every few pixels.
    The second takes the paper level at each pixel from its neighbourhood with
    the strokes wiped out, which follows shadows the border cannot see.
    """
    step = max(1, max(gray.shape) // 500)
    coarse = gray[::step, ::step]
    residual = coarse - _paper_through_border(coarse)
    floor = max(4.0 * _border_noise(residual), MIN_CONTRAST)
    # The ink is on the side whose outliers carry more contrast beyond the floor.
    darker, lighter = -residual[residual < -floor], residual[residual > floor]
    dark_ink = float(darker.sum()) - floor * darker.size >= float(lighter.sum()) - floor * lighter.size
    sign = np.float32(-1.0 if dark_ink else 1.0)
    residual *= sign
    full = _typical_ink(residual, floor)
    if full is None:
        return np.zeros_like(gray), 1.0
    stroke = _stroke_width(residual > 0.5 * full) * step
    ink = gray - _paper_level(gray, dark_ink, stroke)
    ink *= sign
    full = _typical_ink(ink, floor)
    if full is None:
        return np.zeros_like(gray), 1.0
    ink /= full
    return ink, max(floor / full, 0.35)


def _typical_ink(ink: np.ndarray, floor: float) -> float | None:
    """The contrast of a well-inked stroke, or None when nothing stands out from the paper.

    Of the pixels beyond the floor, the stronger of two classes (Otsu): the other
    holds what the paper estimate missed (a shadow's core, JPEG ringing) or the
    lighter half of a pencil's strokes, which still count as ink.
    """
    strong = ink[ink > floor]
    if strong.size == 0:
        return None
    full = float(np.median(strong[strong >= _otsu(strong)]))
    return full if full >= 2 * MIN_CONTRAST else None


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits `values` into two classes (Otsu's method, 64 bins)."""
    # float64: numpy cannot cut a float32 range only a few units of precision wide into 64 bins (ValueError)
    counts, edges = np.histogram(values.astype(np.float64), bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)[:-1]
    above = values.size - below
    sum_below = np.cumsum(counts * centres)[:-1]
    mean_below = sum_below / np.maximum(below, 1)
    mean_above = (float((counts * centres).sum()) - sum_below) / np.maximum(above, 1)
    spread = below * above * (mean_below - mean_above) ** 2
    return float(edges[1:-1][np.argmax(spread)]) if spread.max() > 0 else float(values.min())


def _border_band(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    band = max(1, round(0.04 * max(height, width)))
    inner = np.zeros(shape, dtype=bool)
    inner[band: height - band, band: width - band] = True
    return ~inner


def _paper_through_border(gray: np.ndarray) -> np.ndarray:
    """A smooth quadratic surface through the paper along the picture's border, over the whole picture.

    A quadratic follows a linear light gradient and a lens's vignetting. The fit
    is robust: it starts from the plane through three border points that most of
    the border agrees with (so strokes crossing the border and a strip of table
    along one side do not count), then refits to the points near that surface.
    """
    thumb = _shrink_to(gray, 64)
    ring = _border_band(thumb.shape)
    ys, xs = np.indices(thumb.shape, dtype=np.float32)
    ys, xs = ys / max(1, thumb.shape[0] - 1) - 0.5, xs / max(1, thumb.shape[1] - 1) - 0.5
    terms = np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=-1)
    design, target = terms[ring], thumb[ring]
    trials = np.random.default_rng(0).integers(0, len(target), size=(64, 3))  # seeded: same picture, same answer
    planes = np.linalg.pinv(design[trials][..., :3]) @ target[trials][..., None]
    errors = np.abs(target - (design[:, :3] @ planes).squeeze(-1))
    best = int(np.argmin(np.median(errors, axis=1)))
    coef, error = np.zeros(terms.shape[-1], dtype=np.float32), errors[best]
    coef[:3] = planes[best, :, 0]
    for _ in range(3):
        use = error <= max(3.0 * 1.4826 * float(np.median(error)), 0.02)
        if use.sum() < 2 * len(coef):
            break
        coef = np.linalg.lstsq(design[use], target[use], rcond=None)[0].astype(np.float32)
        error = np.abs(target - design @ coef)
    return _grow(terms @ coef, gray.shape)


def _border_noise(residual: np.ndarray) -> float:
    """Pixel noise of the paper (grain, sensor, JPEG), from the picture's border where paper dominates."""
    sample = residual[_border_band(residual.shape)]
    return 1.4826 * float(np.median(np.abs(sample - np.median(sample))))


def _stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in pixels: runs of ink across a stroke are short, runs along it long.

    The lower third of all row and column run lengths; a shadow's core, one long
    run per row, cannot outnumber the strokes' runs.
    """
    runs = []
    for lines in (mask, mask.T):
        edges = np.diff(np.pad(lines, ((0, 0), (1, 1))).astype(np.int8), axis=1)
        runs.append(np.nonzero(edges == -1)[1] - np.nonzero(edges == 1)[1])
    runs = np.concatenate(runs)
    return float(np.percentile(runs, 33)) if runs.size else 1.0


def _paper_level(gray: np.ndarray, dark_ink: bool, stroke: float) -> np.ndarray:
    """The paper's brightness at each pixel: a grey-level closing that wipes out the strokes.

    For dark ink, the brightest value nearby (then the darkest of those, to give
    back the shape of shadows); strokes narrower than the window vanish, shading
    and shadows wider than it stay. The window is three strokes wide and at least
    an eighth of the picture. It runs on a thumbnail where it spans 9 pixels: the
    paper level is smooth, and the thumbnail's averaging keeps paper grain from
    biasing the maximum.
    """
    window = max(max(gray.shape) / 8, 3 * stroke, 3.0)
    scale = max(1.0, window / 9)
    small = _shrink_to(gray, max(1, round(max(gray.shape) / scale)))
    cells = max(3, round(window / scale) | 1)
    first, second = (np.maximum, np.minimum) if dark_ink else (np.minimum, np.maximum)
    return _grow(_extreme_filter(_extreme_filter(small, cells, first), cells, second), gray.shape)


def _extreme_filter(values: np.ndarray, size: int, extreme: np.ufunc) -> np.ndarray:
    """Maximum (or minimum) over a size x size square around each pixel, edges repeated."""
    half = size // 2
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(values, pad, mode="edge"), size, axis=axis)
        values = extreme.reduce(windows, axis=-1)
    return values


def _grow(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a smooth surface (as Pillow's, without its copies of the full-size result)."""
    if small.shape == shape:
        return small.astype(np.float32)
    top, bottom, down = _bilinear_taps(shape[0], small.shape[0])
    left, right, across = _bilinear_taps(shape[1], small.shape[1])
    small = small.astype(np.float32)
    wide = small[:, left] * (1 - across) + small[:, right] * across
    grown = wide[top] * (1 - down)[:, None]
    grown += wide[bottom] * down[:, None]
    return grown


def _bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel: the two input pixels around its centre and the weight of the second."""
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(position).astype(int)
    return low, np.minimum(low + 1, n_in - 1), (position - low).astype(np.float32)


def _digit_region(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Where the digit is, and its ink there: the largest blob and what lies close to it.

    Dropped: specks, smudges far away, a frame or sheet edge along the border, and
    a box drawn around the digit. Blobs are found on a grid of cells of a few
    pixels, so a stroke broken by JPEG or a dry pen is still one blob.
    """
    cell = max(1, math.ceil(max(mask.shape) / 200))
    counts = _pool_sum(mask, cell)
    labels, count = _label(counts > 0)
    if count == 0:
        return None
    mass = np.bincount(labels.ravel(), weights=counts.ravel(), minlength=count + 1)[1:]
    boxes = _bounding_boxes(labels, count)
    smallest = max(3, MIN_DIGIT_FRACTION * max(mask.shape)) / cell
    frames = _frames_and_edges(labels, boxes, mass, smallest)
    chosen = _cluster(labels, boxes, mass, ~frames, smallest)
    if chosen is None and frames.any():
        # Nothing but "frames": a tightly cropped digit touching the edges is likelier than a blank sheet.
        chosen = _cluster(labels, boxes, mass, np.ones(count, dtype=bool), smallest)
    if chosen is None:
        return None
    top, left = boxes[chosen, :2].min(axis=0)
    bottom, right = boxes[chosen, 2:].max(axis=0)
    cells = np.isin(labels[top: bottom + 1, left: right + 1], np.flatnonzero(chosen) + 1)
    region = (slice(top * cell, (bottom + 1) * cell), slice(left * cell, (right + 1) * cell))
    inside = mask[region]
    keep = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[: inside.shape[0], : inside.shape[1]]
    return region, inside & keep


def _cluster(labels: np.ndarray, boxes: np.ndarray, mass: np.ndarray, alive: np.ndarray,
             smallest: float) -> np.ndarray | None:
    """The largest live blob and the live blobs near it; None if that is smaller than a digit can be.

    A stroke of the digit drawn apart (a 5's flag, a 4 in two strokes) may lie
    half the digit's size from the rest. A dot or crumb must nearly touch a
    stroke itself, not merely lie inside the digit's box, or it would be widened
    with the strokes into a blob.
    """
    if not alive.any():
        return None
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
        near = _dilate(np.isin(labels, np.flatnonzero(chosen) + 1), max(1, round(0.04 * size)))
        touching = np.zeros(len(mass) + 1, dtype=bool)
        touching[labels[near]] = True
        joining = strokes | (alive & ~chosen & touching[1:])
        if not joining.any():
            return chosen if size >= smallest else None
        chosen |= joining


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by `radius` pixels (a disc), keeping its shape."""
    padded = np.pad(mask, radius)
    grown = np.zeros_like(padded)
    height, width = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius + radius:
                grown[radius + dy: radius + dy + height, radius + dx: radius + dx + width] |= mask
    return grown[radius: radius + height, radius: radius + width]


def _pool_any(mask: np.ndarray, cell: int) -> np.ndarray:
    return _pool_sum(mask, cell) > 0


def _pool_sum(mask: np.ndarray, cell: int) -> np.ndarray:
    """Ink pixels per cell x cell block (the last row and column of blocks may be partial)."""
    if cell == 1:
        return mask.astype(np.int32)
    height, width = mask.shape
    rows, cols = -(-height // cell), -(-width // cell)
    padded = np.zeros((rows * cell, cols * cell), dtype=np.uint8)
    padded[:height, :width] = mask
    return padded.reshape(rows, cell, cols, cell).sum(axis=(1, 3), dtype=np.int32)


def _label(grid: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean grid, numbered from 1 (0 is background).

    Works on runs of set cells along each row, joining runs in neighbouring rows
    that touch (union-find): the Python loop sees a few runs per row, not every cell.
    """
    height, width = grid.shape
    edges = np.diff(np.pad(grid, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; row-major order pairs each end with its start
    if len(rows) == 0:
        return np.zeros(grid.shape, dtype=np.int32), 0
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(height + 1))
    starts_list, ends_list = starts.tolist(), ends.tolist()
    for row in range(1, height):
        above, above_end, here, here_end = first[row - 1], first[row], first[row], first[row + 1]
        while above < above_end and here < here_end:
            # Runs [a, b) and [c, d) in adjacent rows touch, diagonals included, when c <= b and a <= d.
            if starts_list[here] <= ends_list[above] and starts_list[above] <= ends_list[here]:
                parent[root(here)] = root(above)
            if ends_list[above] < ends_list[here]:
                above += 1
            else:
                here += 1
    _, run_labels = np.unique([root(i) for i in range(len(rows))], return_inverse=True)
    lengths = ends - starts
    cells = np.repeat(rows * width + starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    labels = np.zeros(height * width, dtype=np.int32)
    labels[cells] = np.repeat(run_labels.ravel() + 1, lengths)
    return labels.reshape(height, width), int(run_labels.max()) + 1


def _bounding_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """Per label 1..count: top, left, bottom, right (inclusive), in grid cells."""
    ys, xs = np.nonzero(labels)
    which = labels[ys, xs] - 1
    boxes = np.empty((count, 4), dtype=int)
    boxes[:, 0] = np.full(count, labels.shape[0])
    boxes[:, 1] = np.full(count, labels.shape[1])
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], which, ys)
    np.minimum.at(boxes[:, 1], which, xs)
    np.maximum.at(boxes[:, 2], which, ys)
    np.maximum.at(boxes[:, 3], which, xs)
    return boxes


def _frames_and_edges(labels: np.ndarray, boxes: np.ndarray, mass: np.ndarray, smallest: float) -> np.ndarray:
    """Blobs that are a frame, the edge of the sheet or the table beside it, not a digit.

    That is: blobs lying along a long stretch of the image edge, or within a thin
    strip by it, thin lines across the whole picture, and blobs whose box holds
    a digit-sized blob with room on all sides (a box drawn round the digit). A 0 with a speck in its hole is no
    frame, hence "digit-sized" and, unless the box spans the whole picture, heavy.
    """
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

    digit_sized = np.maximum(bottom - top, right - left) + 1 >= smallest
    whole_picture = (bottom - top + 1 >= 0.8 * height) & (right - left + 1 >= 0.8 * width)
    heavy = mass[None, :] >= np.where(whole_picture, 0.02, 0.2)[:, None] * mass[:, None]
    inside = ((top[:, None] < top) & (left[:, None] < left) & (bottom[:, None] > bottom) & (right[:, None] > right)
              & digit_sized[None, :] & heavy)
    return result | inside.any(axis=1)


def _binary_shape(ink: np.ndarray, keep: np.ndarray, threshold: float) -> np.ndarray:
    """The cropped digit as a bilevel image whose longer side is at most SHAPE_SIDE, like NIST's scans.

    Large crops are shrunk by OR-ing cells, so a stroke thinner than a cell stays
    one cell wide instead of fading to grey; small crops are grown smoothly
    before thresholding.
    """
    side = max(ink.shape)
    if side > SHAPE_SIDE:
        return _pool_any(keep, math.ceil(side / SHAPE_SIDE))
    scale = SHAPE_SIDE / side
    size = (max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    grown = Image.fromarray(np.where(keep, ink, 0).astype(np.float32)).resize(size[::-1], Image.Resampling.BILINEAR)
    shape = np.asarray(grown) > threshold
    return shape if shape.any() else keep  # a lone faint pixel can fall between the interpolated samples


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
    return _dilate(np.pad(shape, radius), radius)


def _fit(shape: np.ndarray, side: int) -> np.ndarray:
    """Scale so the longer side is `side`, keeping the aspect ratio."""
    scale = side / max(shape.shape)
    size = (max(1, round(shape.shape[0] * scale)), max(1, round(shape.shape[1] * scale)))
    return _resize(shape, size)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place the digit in the 28x28 frame with its centre of mass at the centre (whole-pixel shifts, as MNIST)."""
    height, width = digit.shape
    total = float(digit.sum())
    ys, xs = np.indices(digit.shape)
    cy, cx = float((digit * ys).sum()) / total, float((digit * xs).sum()) / total
    top = min(max(round(CENTRE - cy), 0), FRAME - height)
    left = min(max(round(CENTRE - cx), 0), FRAME - width)
    framed = np.zeros((FRAME, FRAME), dtype=np.float32)
    framed[top: top + height, left: left + width] = digit
    return framed
