"""Find the sheet of paper in a photo of one lying on a table, and keep only the sheet.

A phone photo of a whole sheet shows the sheet as the largest bright region,
with a darker, often textured surface (a table, a desk, the floor) and perhaps
a pen around it. Left in, that surface would be taken for the paper and the
bright sheet for the ink. So the sheet is looked for first: on a thumbnail, the
brighter class of Otsu's split, its largest region, filled out to its convex
hull. It counts as a sheet only when it is mostly bright inside, clearly
brighter than what surrounds it, and bounded by a sharp edge (a shadow's edge
is soft), with some of the surroundings in the picture. On a light or textured
surface (a pale desk, grey carpet, light wood) brightness alone does not split
sheet from surface; the sheet is then the large smooth region with four corners
inside the picture and a sharp edge, told apart by the surface's texture or its
lesser brightness. A sheet with four clear corners is then warped flat
(perspective and a tilted sheet undone); otherwise the picture is cut to the
sheet and the rest painted as the paper's shading would continue. Either way
a margin along the sheet's edge is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIDE = 160  # about the thumbnail's longer side: the sheet's outline needs no more; smaller pictures are
# never photos of a sheet
MIN_SURROUNDINGS = 0.03  # of the picture outside the sheet: less is a crop of the paper, not a sheet on a table
MIN_STEP = 40  # grey levels between the sheet and its surroundings
MAX_BRIGHT_AROUND = 0.35  # of the surroundings in the sheet's brightness class (see _find_sheet)
MARGIN = 0.03  # of the sheet's size, left out along its edge
SMOOTH_LEVELS = 6  # grey levels a 3x3 neighbourhood of the thumbnail may span and still count as smooth paper
MIN_SMOOTH_STEP = 8  # grey levels a smooth sheet must be brighter than its surroundings (see _find_smooth_sheet)
_OPENING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # see _find_sheet
_SQUARE = np.ones((5, 5), np.uint8)  # see _sharp_edge
_SQUARE3 = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class Sheet:
    """Where a sheet lies in a picture: its corners (top-left, top-right, bottom-right, bottom-left, in picture
    pixels) when it has four clear ones, else the thumbnail's mask of it, one pixel for step x step of the
    picture."""

    corners: np.ndarray | None
    mask: np.ndarray
    step: int

    def scaled(self, factor: int) -> Sheet:
        """The same sheet in the picture `factor` times as large (found at half size, cut at full size)."""
        corners = None if self.corners is None else self.corners * factor
        return Sheet(corners, self.mask, self.step * factor)


def inside_page(gray: np.ndarray) -> np.ndarray:
    """The sheet of paper in a photo of one lying on a surface (uint8 grey), or the picture as it is."""
    sheet = find_sheet(gray)
    return gray if sheet is None else cut_to_sheet(gray, sheet)


def find_sheet(gray: np.ndarray) -> Sheet | None:
    """The sheet of paper in a photo of one lying on a surface (uint8 grey), or None when there is none."""
    step = max(gray.shape) // THUMB_SIDE
    if step < 1:
        return None
    # Every step-th pixel, then a median: cheaper than averaging the whole picture down, and as good for an
    # outline this coarse.
    thumb = cv2.medianBlur(np.ascontiguousarray(gray[::step, ::step]), 5)
    found = _find_sheet(thumb)
    if found is None or found[0] is None:  # no sheet, or none with four clear corners (a pen lying against it)
        found = _find_smooth_sheet(thumb) or found
    if found is None:
        return None
    corners, mask = found
    return Sheet(None if corners is None else corners * step, mask, step)


def cut_to_sheet(gray: np.ndarray, sheet: Sheet) -> np.ndarray:
    """The sheet warped flat when it has four corners, else the picture cut to it; less a margin either way."""
    if sheet.corners is not None:
        return _flatten(gray, sheet.corners)
    return _cut_out(gray, sheet.mask, sheet.step)


def _find_sheet(thumb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray] | None:
    """The sheet's four corners (4 x 2, x/y in thumbnail pixels; None when it has no four clear ones) and the
    sheet itself (a filled mask of the thumbnail: the ink on it included, a pen or a strip of table that its
    convex hull spans left out), or None when the picture shows no sheet on a darker surface."""
    _, bright = cv2.threshold(thumb, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    height, width = thumb.shape
    edge = cv2.countNonZero(bright[[0, -1]]) + cv2.countNonZero(bright[:, [0, -1]])
    if edge >= 0.95 * 2 * (height + width):  # bright all round the frame: no table in the picture
        return None
    # Opening cuts the sheet loose from a light pen or a bright patch of table touching it: a pen is about a
    # twentieth of a sheet's width, so at most a few thumbnail pixels wide when the whole sheet is in the photo.
    # Its sides stay where they are; only the corners come out rounded, by less than the margin left out.
    # Labels alone, their areas by bincount: OpenCV's connectedComponentsWithStats costs many times more.
    count, labels = cv2.connectedComponents(cv2.morphologyEx(bright, cv2.MORPH_OPEN, _OPENING), connectivity=4)
    if count < 2:
        return None
    largest = (labels == 1 + int(np.argmax(np.bincount(labels.ravel(), minlength=count)[1:]))).view(np.uint8)
    contours, _ = cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(outline)
    within = np.zeros_like(thumb)
    cv2.fillConvexPoly(within, hull, 255)
    inside = cv2.countNonZero(within)
    outside = within.size - inside
    if (outside < MIN_SURROUNDINGS * within.size or inside < 0.1 * within.size
            or cv2.countNonZero(cv2.bitwise_and(bright, within)) < 0.75 * inside):
        return None
    # Around a sheet lies the table, mostly of the darker class; around a piece of a tightly cropped digit's
    # paper (parted from the rest by a stroke) lie the other pieces, as bright. Seen: at most 34% bright
    # around sheets on pale tables, 17-55% (mostly over 40%) around such pieces of upscaled MNIST digits.
    if cv2.countNonZero(cv2.bitwise_and(bright, cv2.bitwise_not(within))) > MAX_BRIGHT_AROUND * outside:
        return None
    levels = cv2.calcHist([thumb], [0], None, [256], [0, 256]).ravel()
    inner = cv2.calcHist([thumb], [0], within, [256], [0, 256]).ravel()
    paper, surroundings = _median_level(inner), _median_level(levels - inner)
    if paper - surroundings < max(MIN_STEP, 0.25 * paper) or not _sharp_edge(thumb, hull, paper - surroundings):
        return None
    sheet = np.zeros_like(thumb)
    cv2.drawContours(sheet, [outline], 0, 255, thickness=cv2.FILLED)
    return _four_corners(hull), sheet


def _find_smooth_sheet(thumb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """As _find_sheet, for a sheet on a light or textured surface (a pale desk, a grey carpet, light wood),
    where brightness alone does not split the two: the sheet is then a large smooth region (within a 3x3
    neighbourhood the grey levels span at most SMOOTH_LEVELS) with four corners, all of them inside the
    picture, bounded by a sharp edge, and told from what surrounds it by its texture (the surroundings mostly
    not smooth) or else by its brightness (MIN_SMOOTH_STEP brighter).

    Stricter in shape than _find_sheet (four corners, the whole sheet in the picture) because it asks less of
    the brightness: a plain desk is smooth too, but runs off the picture, and a box drawn round a digit holds
    smooth paper no brighter than the smooth paper outside it.
    """
    height, width = thumb.shape
    spread = cv2.morphologyEx(thumb, cv2.MORPH_GRADIENT, _SQUARE3)
    smooth = cv2.compare(spread, SMOOTH_LEVELS, cv2.CMP_LE)
    # Opening by 5x5 parts the sheet from smooth patches of the surface that touch it along a thin neck.
    count, labels = cv2.connectedComponents(cv2.morphologyEx(smooth, cv2.MORPH_OPEN, _SQUARE), connectivity=4)
    areas = np.bincount(labels.ravel(), minlength=count)
    areas[0] = 0
    levels = cv2.calcHist([thumb], [0], None, [256], [0, 256]).ravel()
    for label in np.argsort(-areas)[:3]:  # the largest few: the surface around the sheet may be one of them
        if areas[label] < 0.1 * thumb.size:
            break
        contours, _ = cv2.findContours((labels == label).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        hull = cv2.convexHull(max(contours, key=cv2.contourArea))
        # The smooth region's corners come out rounded (the 3x3 spread, the opening, the thumbnail's median):
        # a few pixels more of the hull are left out at each; the sheet must lie whole in the picture instead.
        corners = _four_corners(hull, slack=3.0)
        if corners is None or not (np.all(corners >= 2) and np.all(corners < [width - 2, height - 2])):
            continue
        within = np.zeros_like(thumb)
        cv2.fillConvexPoly(within, hull, 255)
        inside = cv2.countNonZero(within)
        outside = within.size - inside
        if areas[label] < 0.6 * inside or outside < MIN_SURROUNDINGS * within.size:
            continue  # mostly not smooth inside (a patch of surface that a digit's strokes enclose), or no room
        inner = cv2.calcHist([thumb], [0], within, [256], [0, 256]).ravel()
        step = _median_level(inner) - _median_level(levels - inner)
        textured = cv2.countNonZero(cv2.bitwise_and(smooth, cv2.bitwise_not(within))) < 0.5 * outside
        # The outline lies a pixel or two inside the sheet's edge (the 3x3 spread, the opening), where the edge
        # test's 5x5 window sees part of the step only: it is asked for 60 % of it. (A soft shadow parts no
        # smooth regions: a sheet half in shadow is one region, its shadow no outline.)
        contrast = 0.6 * max(abs(step), 2 * MIN_SMOOTH_STEP)
        if (textured or step >= MIN_SMOOTH_STEP) and _sharp_edge(thumb, hull, contrast):
            return corners, within
    return None


def _median_level(histogram: np.ndarray) -> float:
    """The median grey level of the pixels a histogram of 8-bit levels counts (as np.median of them); not empty."""
    count = np.cumsum(histogram)
    n = int(count[-1])
    lower, upper = np.searchsorted(count, [(n - 1) // 2 + 1, n // 2 + 1])
    return (int(lower) + int(upper)) / 2


def _sharp_edge(thumb: np.ndarray, hull: np.ndarray, step: float) -> bool:
    """Is the outline, where it runs inside the picture, a sharp edge (a sheet's) rather than a soft one (a
    shadow's)? Nearly all along it, the grey levels must change by much of the step within a pixel or two.
    (A sheet half in shadow would otherwise pass for a sheet on a table: its lit half bounded by the sharp
    edge of the table on one side, by the soft edge of the shadow on the other.)"""
    height, width = thumb.shape
    outline = np.zeros_like(thumb)
    cv2.polylines(outline, [hull], isClosed=True, color=255, thickness=1)
    outline[:3], outline[-3:], outline[:, :3], outline[:, -3:] = 0, 0, 0, 0
    on_edge = outline > 0
    if np.count_nonzero(on_edge) < 0.1 * (height + width):  # the sheet runs off the picture nearly all round
        return False
    gradient = cv2.morphologyEx(thumb, cv2.MORPH_GRADIENT, _SQUARE)
    return float(np.mean(gradient[on_edge] >= 0.4 * step)) >= 0.8


def _four_corners(hull: np.ndarray, slack: float = 1.5) -> np.ndarray | None:
    """The sheet's corners (top-left, top-right, bottom-right, bottom-left) when the hull is a quadrilateral:
    one that leaves out of the hull no more than `slack` pixels along its outline."""
    perimeter = cv2.arcLength(hull, closed=True)
    for tolerance in (0.01, 0.02, 0.03, 0.05):  # the finest outline that has four corners
        quad = cv2.approxPolyDP(hull, tolerance * perimeter, closed=True).reshape(-1, 2).astype(np.float32)
        if len(quad) <= 4:
            break
    # Four corners of the sheet, not of a sheet running off the picture: by default the quadrilateral leaves
    # out of the hull no more than a pixel and a half along its outline (rounding).
    missed = cv2.contourArea(hull) - cv2.contourArea(quad)
    if len(quad) != 4 or not cv2.isContourConvex(quad) or missed > slack * perimeter:
        return None
    # Photos are taken roughly upright: the corner nearest the picture's top left is the sheet's.
    start = int(np.argmin(quad.sum(axis=1)))
    quad = quad[(np.arange(4) + start) % 4]
    (ax, ay), (bx, by) = quad[1] - quad[0], quad[3] - quad[0]
    if ax * by - ay * bx < 0:  # anticlockwise on screen (y points down): turn it round
        quad = quad[[0, 3, 2, 1]]
    return quad


def _flatten(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The sheet warped to a rectangle (its sides' mean lengths), less a margin along the edge."""
    top, right, bottom, left = np.linalg.norm(corners[[1, 2, 3, 0]] - corners, axis=1)
    width, height = max(2, round((top + bottom) / 2)), max(2, round((left + right) / 2))
    inset_x, inset_y = MARGIN * width, MARGIN * height
    target = np.float32([[-inset_x, -inset_y], [width + inset_x, -inset_y], [width + inset_x, height + inset_y],
                         [-inset_x, height + inset_y]])
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(gray, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _cut_out(gray: np.ndarray, sheet: np.ndarray, step: int) -> np.ndarray:
    """The picture cut to the sheet's box, everything beyond the sheet (less a margin) painted as the paper
    would continue there.

    `sheet` is the thumbnail's mask, one pixel for step x step of the picture. The
    paint is the paper's own shading carried on (inpainted on the thumbnail), not
    one flat grey: a flat grey beside a sheet shaded by the light is a step in
    brightness that the ink finder would take for ink, or for the paper's noise.
    """
    left, top, width, height = cv2.boundingRect(sheet)
    margin = max(1, round(MARGIN * max(width, height)))
    sheet = cv2.erode(sheet, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
    if not sheet.any():
        return gray
    sample = np.ascontiguousarray(gray[::step, ::step][: sheet.shape[0], : sheet.shape[1]])
    sheet = np.ascontiguousarray(sheet[: sample.shape[0], : sample.shape[1]])
    # The median keeps strokes up to two thumbnail pixels wide out of what is carried on.
    paper = cv2.inpaint(cv2.medianBlur(sample, 5), cv2.bitwise_not(sheet), 3, cv2.INPAINT_TELEA)
    left, top, width, height = cv2.boundingRect(sheet)
    box = (slice(top * step, (top + height) * step), slice(left * step, (left + width) * step))
    crop = gray[box]
    size = crop.shape[::-1]
    within = cv2.resize(sheet[top: top + height, left: left + width], size, interpolation=cv2.INTER_NEAREST)
    result = cv2.resize(paper[top: top + height, left: left + width], size, interpolation=cv2.INTER_LINEAR)
    return cv2.copyTo(crop, within, result)
