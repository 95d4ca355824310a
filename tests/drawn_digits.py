"""Digits as strokes a person draws, in the drawing window's canvas pixels (for the draw and serve tests)."""

from __future__ import annotations

import math

from PIL import Image

from mnistlab.reading.draw import CANVAS, blank_drawing, draw_stroke

def one() -> list[list[tuple[float, float]]]:
    return [[(0.52 * CANVAS, (0.18 + 0.64 * i / 12) * CANVAS) for i in range(13)]]


def zero() -> list[list[tuple[float, float]]]:
    turn = [2 * math.pi * i / 24 for i in range(25)]
    return [[(CANVAS * (0.5 + 0.2 * math.sin(t)), CANVAS * (0.5 - 0.3 * math.cos(t))) for t in turn]]


def seven() -> list[list[tuple[float, float]]]:
    bar = [(CANVAS * (0.3 + 0.4 * i / 8), 0.22 * CANVAS) for i in range(9)]
    leg = [(CANVAS * (0.7 - 0.22 * i / 10), CANVAS * (0.22 + 0.58 * i / 10)) for i in range(1, 11)]
    return [bar + leg]


DIGITS = {"1": one, "0": zero, "7": seven}


def render(strokes) -> Image.Image:
    image = blank_drawing()
    for stroke in strokes:
        draw_stroke(image, stroke)
    return image
