"""Phone photos of whole sheets of paper, drawn from real MNIST digits (used by test_pages.py).

A sheet (A4's proportions, slightly tinted) with one digit or a row of digits
written on it by a pen following the MNIST digit's path, lying on a darker,
textured table (wood grain, cloth, a carpet), turned and seen in perspective,
a pen on the table beside it, light falling off across the picture, sensor noise,
saved as a phone JPEG of 600x800 or 800x600. The table may be light instead
(table_levels), the sheet lined paper (ruled).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from digit_styles import draw

A4 = 297 / 210


def table(rng, width: int, height: int, levels=(25, 125)) -> np.ndarray:
    """A darker surface than paper, RGB float: wood grain, woven cloth or speckled carpet."""
    base = rng.uniform(*levels) * np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.5, 1.0)])[rng.permutation(3)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # wood: wavy stripes along a direction
        angle = rng.uniform(0, math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        across = -xx * math.sin(angle) + yy * math.cos(angle)
        texture = np.sin(across / rng.uniform(3, 9) + 2.0 * np.sin(along / rng.uniform(40, 120)))
    elif kind == 1:  # cloth: a fine weave
        period = rng.uniform(3, 7)
        texture = np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)
    else:  # carpet: blotchy noise at two scales
        coarse = cv2.resize(rng.standard_normal((height // 16, width // 16)).astype(np.float32), (width, height))
        texture = 0.6 * coarse + 0.6 * rng.standard_normal((height, width)).astype(np.float32)
    amplitude = rng.uniform(0.08, 0.3) * base.mean()
    return np.clip(base[None, None, :] + amplitude * texture[..., None], 0, 255).astype(np.float32)


def sheet_with_ink(digits, rng, sheet_w: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A flat sheet (HxW ink strength in [0, 1]) with the digits written left to right across it."""
    sheet_h = round(sheet_w * A4)
    canvas = Image.new("L", (sheet_w, sheet_h), 0)
    count = len(digits)
    slot = sheet_w * 0.84 / count
    height = rng.uniform(0.12, 0.3) * sheet_w if count == 1 else rng.uniform(0.45, 0.65) * slot
    pen = max(2, round(height * rng.uniform(0.04, 0.09)))
    top = rng.uniform(0.15, 0.7) * sheet_h
    spans = []
    for n, digit in enumerate(digits):
        left = 0.08 * sheet_w + n * slot
        size = (round(slot), round(height * 1.35))
        stamp = _stamp(digit, rng, size, pen, height * rng.uniform(0.9, 1.1))
        y = round(top + rng.uniform(-0.08, 0.08) * height)
        canvas.paste(stamp, (round(left), y), stamp)
        spans.append((left, left + slot))
    return np.asarray(canvas, dtype=np.float32) / 255, spans


def _stamp(digit, rng, size, pen, height) -> Image.Image:
    """The digit written into a box of `size`, smaller where a wide digit would not fit."""
    while True:
        try:
            return draw(digit, rng, size, pen=pen, height=height, tilt=8.0, paper=0, ink=255)
        except ValueError:  # no room for it at this height
            height *= 0.9


def pen_on_table(photo: np.ndarray, rng, avoid: np.ndarray) -> None:
    """A ballpoint lying on the table beside the sheet: a long rounded bar with a clip, never on the sheet."""
    height, width = photo.shape[:2]
    colour = [(20, 30, 140), (15, 15, 15), (160, 20, 20), (190, 190, 195), (230, 230, 230)][int(rng.integers(5))]
    for _ in range(50):
        length, thick = rng.uniform(0.35, 0.6) * max(width, height), rng.uniform(10, 22)
        centre = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(0, 180)
        body = np.zeros((height, width), dtype=np.uint8)
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (length, thick), angle)).astype(np.int32)
        cv2.fillPoly(body, [box], 255)
        tip = centre + 0.5 * length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        cv2.circle(body, (int(tip[0]), int(tip[1])), int(thick / 2), 255, -1)
        if not (body > 0).any() or (avoid[body > 0]).any():
            continue
        mask = cv2.GaussianBlur(body.astype(np.float32) / 255, (5, 5), 0)[..., None]
        shade = 0.75 + 0.25 * rng.random()
        photo[:] = photo * (1 - mask) + np.array(colour, dtype=np.float32) * shade * mask
        return


def sheet_photo(digits, rng, path, *, width=600, height=800, table_levels=(25, 125), ruled=False, overhang=False):
    """The digits on a sheet on a table, photographed: returns the JPEG's path. `ruled`: a sheet of lined
    paper (pale blue lines across it, 8 mm apart on A4). `overhang`: the phone held closer, the sheet as large
    as the picture or larger, running off it with strips of table left here and there, the writing in it."""
    if rng.random() < 0.25:
        width, height = height, width
    sheet_w = int(rng.integers(360, 520))
    ink, _ = sheet_with_ink(digits, rng, sheet_w)
    sheet_h = ink.shape[0]
    # Where the sheet's corners land: fills 45-85 % of the picture's height, turned, in perspective.
    fill = rng.uniform(*((1.0, 1.25) if overhang else (0.45, 0.85))) * min(height / sheet_h, width / sheet_w)
    corners = np.array([[0, 0], [sheet_w, 0], [sheet_w, sheet_h], [0, sheet_h]], dtype=np.float32) - [sheet_w / 2,
                                                                                                       sheet_h / 2]
    turn = math.radians(rng.uniform(-12, 12))
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]], dtype=np.float32)
    placed = corners @ rotation.T * fill
    placed += rng.uniform(-0.07, 0.07, placed.shape) * fill * sheet_w  # perspective
    flat = (corners + [sheet_w / 2, sheet_h / 2]).astype(np.float32)
    if overhang:
        placed += np.array([width, height]) * rng.uniform([0.4, 0.4], [0.6, 0.6])
        placed += _writing_inside(ink, flat, placed, width, height)
    else:
        placed *= min(1.0, *((np.array([width, height]) - 20) / np.ptp(placed, axis=0)))  # all of it in the picture
        low, high = placed.min(0), placed.max(0)
        placed += [rng.uniform(-low[0] + 8, width - high[0] - 8), rng.uniform(-low[1] + 8, height - high[1] - 8)]
    warp = cv2.getPerspectiveTransform(flat, placed.astype(np.float32))
    inside = cv2.warpPerspective(np.ones_like(ink), warp, (width, height), flags=cv2.INTER_AREA)
    written = cv2.warpPerspective(ink, warp, (width, height), flags=cv2.INTER_AREA)
    lines = np.zeros_like(written)
    if ruled:
        rules = np.zeros_like(ink)
        for y in np.arange(sheet_h * 0.1, sheet_h, sheet_w * 8 / 210):
            rules[round(y): round(y) + max(1, round(sheet_w / 300))] = rng.uniform(0.6, 1.0)
        lines = cv2.warpPerspective(rules, warp, (width, height), flags=cv2.INTER_AREA)

    photo = table(rng, width, height, table_levels)
    pen_on_table(photo, rng, inside > 0)
    paper = rng.uniform(215, 250) * np.array([1.0, rng.uniform(0.96, 1.0), rng.uniform(0.9, 1.0)])
    pen_ink = np.array([[25, 35, 110], [20, 20, 25], [30, 60, 150]][int(rng.integers(3))]) + rng.normal(0, 8, 3)
    sheet = paper + (np.array([150.0, 185.0, 225.0]) - paper) * lines[..., None]
    sheet = sheet + (pen_ink - sheet) * written[..., None]
    photo = photo * (1 - inside[..., None]) + sheet * inside[..., None]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 - rng.uniform(0.05, 0.3) * np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle),
                                                 0, 1)
    photo = photo * light[..., None] + rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    out = path.with_suffix(".jpg")
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(out, quality=int(rng.integers(70, 92)))
    return out


def _writing_inside(ink, flat, placed, width, height, margin=12) -> np.ndarray:
    """How far to move the sheet so that the writing on it lands at least `margin` pixels inside the picture."""
    ys, xs = np.nonzero(ink > 0.1)
    box = np.float32([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]])
    landed = cv2.perspectiveTransform(box[None], cv2.getPerspectiveTransform(flat, placed.astype(np.float32)))[0]
    return np.maximum(0, margin - landed.min(0)) - np.maximum(0, landed.max(0) - [width - margin, height - margin])


def sheet_on_table(digit, rng, path):
    """One digit written on a sheet, the whole sheet photographed on a table with a pen beside it."""
    return sheet_photo([digit], rng, path)


def row_on_sheet(digits, rng, path):
    """Several digits written in a row across a sheet, photographed the same way."""
    return sheet_photo(list(digits), rng, path)
