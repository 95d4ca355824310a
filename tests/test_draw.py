"""`mnistlab draw`: the drawing window, driven for real under a virtual X server.

The GUI tests start their own Xvfb (it picks a free display itself: -displayfd),
run `python -m mnistlab draw` on it, draw digits with xdotool (button down, a
series of pointer moves, button up), and read the window's predictions from the
JSON lines it appends to $MNISTLAB_DRAW_EVENTS. The screen is read back with
Pillow's ImageGrab (X11 support is built into Pillow's wheels), so the packages
needed are only `xvfb` and `xdotool`; without them the GUI tests are skipped and say so.

The model is a 1-epoch iter5 trained here on real MNIST (~98 %), or, without
MNIST, the shipped default model when it is present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.reading.draw import (PEN, blank_drawing, model_input, percent, preview_ppm, short_path,
                           top_classes)
from mnistlab.imaging.image import ImageError
from mnistlab.imaging.preprocess import preprocess

from conftest import REPO, data_dir
from drawn_digits import DIGITS, one, render, seven, zero

SHOT_FOR_HUMANS = Path("/tmp/draw_screenshot.png")
STARTUP_S = 90  # torch import and model load on a busy CI machine
EVENT_S = 30


# ---------------------------------------------------------------- without a display

def test_the_drawing_takes_predicts_code_path(tmp_path):
    """The canvas image gives the same 28x28 as `predict` gives for that image saved as a PNG file."""
    for name, strokes in DIGITS.items():
        image = render(strokes())
        image.save(tmp_path / f"{name}.png")
        framed = model_input(image)
        assert framed.shape == (28, 28) and framed.dtype == np.float32
        assert 0.0 <= framed.min() and framed.max() <= 1.0 and framed.max() > 0.9
        assert np.array_equal(framed, preprocess(tmp_path / f"{name}.png")), name


def test_strokes_are_drawn_with_round_ends():
    image = np.asarray(render([[(100, 100), (200, 100)]]))
    assert image[100, 100 - PEN // 2 + 2] == 0 and image[100, 200 + PEN // 2 - 2] == 0  # caps past the ends
    assert image[100 - PEN // 2 + 2, 150] == 0 and image[100 - PEN // 2 - 2, 150] == 255  # the pen's width
    dot = np.asarray(render([[(50, 60)]]))
    assert dot[60, 50] == 0 and dot[60 - PEN // 2 - 2, 50] == 255


def test_a_blank_drawing_has_no_digit():
    with pytest.raises(ImageError):
        model_input(blank_drawing())


def test_small_helpers():
    assert top_classes([0.1, 0.7, 0.2], ["a", "b", "c"], k=2) == [("b", 0.7), ("c", 0.2)]
    assert [percent(p) for p in (1.0, 0.9996, 0.5, 0.0004, 0.0)] == [">99.9%", ">99.9%", "50.0%", "<0.1%", "<0.1%"]
    ppm = preview_ppm(np.eye(28, dtype=np.float32), scale=2)
    assert ppm.startswith(b"P5 56 56 255\n") and len(ppm) == len(b"P5 56 56 255\n") + 56 * 56
    assert short_path(REPO / "checkpoints" / "x" / "best.pt").endswith(os.path.join("x", "best.pt"))


def test_the_cli_stays_light():
    code = ("import sys, mnistlab.cli, mnistlab.reading.draw; "
            "assert not {'torch', 'tkinter'} & set(sys.modules), sorted({'torch', 'tkinter'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    help_text = subprocess.run([sys.executable, "-m", "mnistlab", "draw", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0 and "--ckpt" in help_text.stdout


def test_without_a_display_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "mnistlab", "draw", "--ckpt", "missing.pt"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mnistlab draw: error: no display: mnistlab draw needs a desktop or DISPLAY")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ---------------------------------------------------------------- the window under Xvfb

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = data_dir()
    if root is None:
        shipped = REPO / "mnistlab" / "reading" / "weights" / "default.pt"
        if shipped.is_file():
            return shipped
        pytest.skip("no model to draw for: neither real MNIST (MNISTLAB_DATA_DIR) nor mnistlab/weights/default.pt")
    out = tmp_path_factory.mktemp("draw_ckpt")
    subprocess.run([sys.executable, "-m", "mnistlab", "train", "configs/iter5.yaml", "--set", "train.epochs=1",
                    "--data-dir", str(root), "--out-dir", str(out), "--quiet"], cwd=REPO, check=True, timeout=1800,
                   capture_output=True)
    return next(out.glob("iter5/*/best.pt"))


class Window:
    """The running `mnistlab draw`, with the means to draw in it and read what it says."""

    def __init__(self, display: str, checkpoint: Path, workdir: Path, args: tuple = ()):
        self.env = {**os.environ, "DISPLAY": display, "MNISTLAB_DRAW_EVENTS": str(workdir / "events.jsonl"),
                    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.display, self.events_file = display, workdir / "events.jsonl"
        self.stderr = open(workdir / "stderr.txt", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "mnistlab", "draw", "--ckpt", str(checkpoint), *args],
                                        cwd=REPO, env=self.env, stdout=self.stderr, stderr=subprocess.STDOUT)
        self.xdotool("search", "--sync", "--onlyvisible", "--name", "^mnistlab draw", timeout=STARTUP_S)
        ready = self.wait_for(lambda e: e["event"] == "ready", 0, STARTUP_S)
        self.canvas = ready["canvas"]  # left, top, width, height on the screen
        self.window = ready["window"]

    def xdotool(self, *args, timeout: float = EVENT_S) -> str:
        try:
            result = subprocess.run(["xdotool", *map(str, args)], env=self.env, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"xdotool {' '.join(map(str, args[:3]))} timed out; the app said: {self.output()}")
        assert result.returncode == 0, f"xdotool {args[:3]}: {result.stderr}; the app said: {self.output()}"
        return result.stdout.strip()

    def output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:] or "(nothing)"

    def events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(self, wanted, start: int, timeout: float = EVENT_S, count: int = 1) -> dict:
        """The count-th event from index `start` on that is `wanted`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [event for event in self.events()[start:] if wanted(event)]
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                pytest.fail(f"mnistlab draw exited ({self.process.returncode}): {self.output()}")
            time.sleep(0.05)
        pytest.fail(f"no such event within {timeout} s; events: {self.events()[start:]}; app: {self.output()}")

    def draw(self, strokes, pause: float = 0.03) -> dict:
        """Draw like a hand: press, move point by point, release; returns the prediction made on release."""
        start = len(self.events())
        left, top = self.canvas[:2]
        for stroke in strokes:
            x, y = stroke[0]
            args = ["mousemove", round(left + x), round(top + y), "mousedown", 1]
            for x, y in stroke[1:]:
                args += ["sleep", pause, "mousemove", round(left + x), round(top + y)]
            self.xdotool(*args, "sleep", pause, "mouseup", 1)
        # Each release is read at once: the last stroke's release gives the answer.
        return self.wait_for(lambda e: e["event"] in ("prediction", "blank") and not e["drawing"], start,
                             count=len(strokes))

    def press(self, key: str) -> dict:
        start = len(self.events())
        self.xdotool("key", "--clearmodifiers", key)
        return self.wait_for(lambda e: e["event"] == "clear", start)

    def settles(self, condition, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def screenshot(self) -> Image.Image:
        from PIL import ImageGrab

        left, top, width, height = self.window
        return ImageGrab.grab(bbox=(left, top, left + width, top + height), xdisplay=self.display)

    def canvas_pixels(self) -> np.ndarray:
        left, top, width, height = self.canvas
        shot = np.asarray(self.screenshot().convert("L"))
        x, y = left - self.window[0], top - self.window[1]
        return shot[y: y + height, x: x + width]

    def close(self) -> None:
        if self.process.poll() is None:
            subprocess.run(["xdotool", "key", "--clearmodifiers", "ctrl+q"], env=self.env, timeout=EVENT_S)
            try:
                self.process.wait(timeout=EVENT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def window(display, checkpoint, tmp_path_factory):
    app = Window(display, checkpoint, tmp_path_factory.mktemp("draw_window"))
    yield app
    app.close()
    assert app.process.returncode == 0, f"Ctrl+Q should close the window cleanly: {app.output()}"


@pytest.mark.parametrize("digit", ["1", "0", "7"])
def test_drawn_digits_are_read(window, digit):
    window.press("Escape")
    prediction = window.draw(DIGITS[digit]())
    assert prediction["event"] == "prediction" and prediction["digit"] == digit, prediction
    assert [label for label, _ in prediction["top"]][0] == digit and len(prediction["top"]) == 3
    assert prediction["confidence"] > 0.5


def test_the_prediction_updates_while_drawing(window):
    window.press("Escape")
    start = len(window.events())
    window.draw(zero(), pause=0.06)  # 1.5 s of drawing: the window reads it every 0.1 s meanwhile
    live = [e for e in window.events()[start:] if e["event"] in ("prediction", "blank") and e["drawing"]]
    assert live, "no prediction while the stroke was being drawn"


@pytest.mark.parametrize("key", ["Escape", "c", "Delete"])
def test_clear_key_empties_the_canvas(window, key):
    window.press("Escape")
    window.draw(one())
    assert window.settles(lambda: window.canvas_pixels().min() < 60)  # the ink on the screen
    cleared = window.press(key)
    assert cleared == {"event": "clear", "ink_pixels": 0, "canvas_strokes": 0, "shown": "?"}
    # Only white paper and the pale "draw a digit here" (the window repaints when idle, just after the event).
    assert window.settles(lambda: window.canvas_pixels().min() > 150), window.canvas_pixels().min()


def test_screenshot(window, tmp_path):
    window.press("Escape")
    prediction = window.draw(seven())
    assert prediction["digit"] == "7"
    time.sleep(0.3)  # let the window repaint after the last prediction
    shot = window.screenshot()
    path = tmp_path / "draw.png"
    shot.save(path)
    try:
        shutil.copyfile(path, SHOT_FOR_HUMANS)
    except OSError:
        pass  # a convenience copy only
    assert path.stat().st_size > 0
    assert shot.size == tuple(window.window[2:])
    lo, hi = shot.convert("L").getextrema()
    assert lo < 50 and hi > 200  # ink, text and paper, not a blank grab


def test_ctrl_z_undoes_the_last_stroke(window):
    window.press("Escape")
    assert window.draw(seven())["digit"] == "7"
    start = len(window.events())
    window.draw(zero())  # a second stroke over the seven: some other answer
    window.xdotool("key", "--clearmodifiers", "ctrl+z")
    undone = window.wait_for(lambda e: e["event"] == "undo", start)
    assert undone["strokes"] == 1
    again = window.wait_for(lambda e: e["event"] == "prediction" and not e["drawing"], start, count=2)
    assert again["digit"] == "7"  # the model reads the seven alone again
