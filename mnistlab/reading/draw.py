"""`mnistlab draw`: draw a digit with the mouse and watch the model read it as you go.

Every stroke goes twice: onto the Tk canvas (what you see) and, with Pillow's
ImageDraw, into a greyscale image of the same size (what the model reads), so
nothing is ever grabbed from the screen. That image goes through
`mnistlab.preprocess.preprocess`, the very function `mnistlab predict` gives an
image file to (grey conversion, then `mnist_frame`), and the checkpoint is
chosen as predict chooses it (`find_checkpoint`).

Tk is imported in `run_draw` and torch in `predict.classify`, so importing this
module (and `mnistlab --help`) stays quick. For tests and scripts:
MNISTLAB_DRAW_EVENTS=FILE makes the window append one JSON line to FILE per
event: `ready` (with the canvas's place on the screen), `prediction`, `blank`
(ink, but too little to be a digit yet) and `clear`; with --collect `saved` and
`not_saved` (with why).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from ..files import class_folder, environment_error, folder_name, make_dir, write_new_file

CANVAS = 392  # pixels a side: 14 x 28
# Pen width in pixels: MNIST strokes are ~12 % of the digit's height, and a digit drawn here fills about 2/3
# of the canvas (a thinner pen would do too: mnist_frame widens thin strokes, but it never thins thick ones).
PEN = 28
PAPER, INK = 255, 0  # grey levels in the drawing (dark ink on white paper, as on screen)
PREDICT_EVERY_MS = 100  # while drawing; on release the prediction is immediate
TOP_K = 3
ASK_BELOW = 0.5  # below this top probability the window asks whether the drawing is a digit
PREVIEW_SCALE = 4  # the 28x28 model input is shown at 112x112
BARS_WIDTH, BAR_LEFT, BAR_LENGTH = 250, 26, 150  # the top-3 bars: the label, the bar, then the percentage
TITLE = "mnistlab draw"
EVENTS_ENV = "MNISTLAB_DRAW_EVENTS"

# Colours and fonts of the window.
BG, CARD, BORDER = "#f3f4f6", "#ffffff", "#d1d5db"
TEXT, MUTED, FAINT = "#111827", "#6b7280", "#d1d5db"
ACCENT, ACCENT_LIGHT, TRACK = "#2563eb", "#93c5fd", "#e5e7eb"
SURE, UNSURE, DOUBTFUL = "#059669", "#d97706", "#dc2626"
FONT = "Helvetica"


# ---------------------------------------------------------------- the drawing, without Tk

def blank_drawing(side: int = CANVAS) -> Image.Image:
    return Image.new("L", (side, side), PAPER)


def draw_stroke(image: Image.Image, points: list[tuple[float, float]], width: int = PEN) -> None:
    """A polyline with round caps and joins, as the Tk canvas draws it (one point: a dot)."""
    draw = ImageDraw.Draw(image)
    if len(points) > 1:
        draw.line(points, fill=INK, width=width)
    r = (width - 1) / 2
    for x, y in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=INK)


def model_input(image: Image.Image) -> np.ndarray:
    """The 28x28 the model sees: the drawing prepared exactly as `mnistlab predict` prepares an image file.

    Raises preprocess.ImageError when there is no digit-sized ink yet.
    """
    from ..imaging.preprocess import preprocess

    return preprocess(image)


def top_classes(probs, classes: list[str], k: int = TOP_K) -> list[tuple[str, float]]:
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")[:k]
    return [(classes[i], float(probs[i])) for i in order]


def preview_ppm(frame: np.ndarray, scale: int = PREVIEW_SCALE) -> bytes:
    """A 28x28 frame in [0, 1] as a binary PGM, enlarged with square pixels, for Tk's PhotoImage."""
    pixels = np.clip(np.asarray(frame, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    height, width = pixels.shape
    return f"P5 {width} {height} 255\n".encode("ascii") + pixels.tobytes()


def short_path(path: Path) -> str:
    """The checkpoint as a person reads it: relative to here when inside, else its last three parts."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    parts = path.resolve().parts
    return str(path) if len(parts) <= 4 else os.path.join("…", *parts[-3:])


def percent(p: float) -> str:
    """A probability for people: never a flat 100.0 % or 0.0 %, which it never is."""
    if p >= 0.9995:
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"


def confidence_colour(p: float) -> str:
    return SURE if p >= 0.9 else UNSURE if p >= 0.6 else DOUBTFUL


@dataclass
class Collection:
    """`draw --collect DIR`: each drawing saved as a PNG into DIR/<class>/, labelled by a key press, in the
    folder layout training reads (`DIR/<class>/<image>`). `counts`: the images in each class's folder."""

    root: Path
    keys: list[str]  # the class names a key press can name: those one character long
    counts: dict[str, int]

    @classmethod
    def open(cls, root: str | Path, classes: list[str]) -> Collection:
        root = make_dir(root, "--collect")
        keys = [c for c in classes if len(c) == 1]
        if not keys:
            raise UserError(f"--collect: no class of this checkpoint is a single character ({', '.join(classes[:3])}"
                            f"...): a key press cannot name one")
        return cls(root, keys, {k: count_images(root / folder_name(k)) for k in keys})

    def save(self, image: Image.Image, key: str) -> Path:
        """The drawing as drawn (the canvas picture, before any preparation: training prepares it as predict
        does) under a new name; never over a file. OSError when it cannot be written."""
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        stem = time.strftime("drawn-%Y%m%d-%H%M%S")
        path = write_new_file(class_folder(self.root, key), stem, ".png", buffer.getvalue(), sep="-")
        self.counts[key] += 1
        return path

    def keys_text(self) -> str:
        return "0-9" if self.keys == [str(d) for d in range(10)] else " ".join(self.keys)

    def counts_text(self) -> str:
        """`0: 3  1: 0 ...`, every class when there are few, else those with images and the total."""
        shown = self.keys if len(self.keys) <= 12 else [k for k in self.keys if self.counts[k]]
        text = "  ".join(f"{k}: {self.counts[k]}" for k in shown)
        return text if len(self.keys) <= 12 else f"{text}  (total {sum(self.counts.values())})"


def count_images(folder: Path) -> int:
    """Files in a class folder, as a folder reader sees them (hidden ones left out)."""
    try:
        return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:  # not made yet (or not readable: saving will say so)
        return 0


class EventLog:
    """One JSON line per event, appended to $MNISTLAB_DRAW_EVENTS; nothing when it is unset."""

    def __init__(self, path: str | None):
        self.path = path

    def __call__(self, event: str, **fields) -> None:
        if not self.path:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")


# ---------------------------------------------------------------- the window

def run_draw(ckpt: str | None, collect: str | None = None) -> int:
    from ..training.choice import find_checkpoint
    from .predict import load_classifier

    if collect:
        make_dir(collect, "--collect")  # a mistake in the folder is said before the window opens
    path, source = find_checkpoint(ckpt)
    try:
        import tkinter as tk
    except ImportError:
        raise UserError("this Python has no Tk: install its Tk support (e.g. apt-get install python3-tk)") from None
    try:
        root = tk.Tk(className="mnistlab")
    except tk.TclError as exc:
        raise UserError(f"no display: mnistlab draw needs a desktop or DISPLAY set to an X server "
                        f"(Tk says: {' '.join(str(exc).split())})") from None
    try:
        classifier = load_classifier(path)
        collection = Collection.open(collect, classifier.classes) if collect else None
    except BaseException:
        root.destroy()
        raise
    app = DrawApp(root, classifier, f"{short_path(path)}  ({source})", EventLog(os.environ.get(EVENTS_ENV)),
                  collection)
    return app.run()


class DrawApp:
    """The drawing canvas on the left; the prediction, top-3 bars and the model's input on the right."""

    def __init__(self, root, classifier, checkpoint_label: str, log: EventLog, collection: Collection | None = None):
        import tkinter as tk

        self.tk, self.root, self.classifier, self.log = tk, root, classifier, log
        self.collection = collection
        self.image = blank_drawing()
        self.last: tuple[int, int] | None = None
        self.strokes = 0
        self.paths: list[list[tuple[int, int]]] = []  # every stroke's points, for Ctrl+Z
        self.pending = None  # the scheduled prediction while drawing
        self.interrupted = False

        root.title(f"{TITLE} · {checkpoint_label.split()[0]}")
        root.configure(bg=BG)
        root.resizable(False, False)
        body = tk.Frame(root, bg=BG, padx=20, pady=18)
        body.pack(fill="both", expand=True)
        self._build_canvas(body)
        self._build_panel(body)
        status = tk.Frame(root, bg=CARD, highlightthickness=1, highlightbackground=BORDER)
        status.pack(fill="x", side="bottom")
        tk.Label(status, text="model", font=(FONT, 9, "bold"), fg=MUTED, bg=CARD).pack(side="left", padx=(12, 4),
                                                                                      pady=5)
        tk.Label(status, text=checkpoint_label, font=(FONT, 9), fg=MUTED, bg=CARD).pack(side="left", pady=5)

        for key in ("<Escape>", "<Delete>", "<BackSpace>") + (() if "c" in self.class_keys() else ("<KeyPress-c>",)):
            root.bind(key, lambda _e: self.clear())
        if collection:
            root.bind("<KeyPress>", self.on_key)  # the keys bound above and Ctrl+... are more specific: not here
        root.bind("<Control-z>", lambda _e: self.undo())
        for key in ("<Control-q>", "<Control-w>"):
            root.bind(key, lambda _e: root.destroy())
        self.show_empty()

    # -------------------------------------------------------- layout

    def _build_canvas(self, parent) -> None:
        tk = self.tk
        left = tk.Frame(parent, bg=BG)
        left.grid(row=0, column=0, sticky="n")
        border = tk.Frame(left, bg=BORDER, padx=1, pady=1)
        border.pack()
        self.canvas = tk.Canvas(border, width=CANVAS, height=CANVAS, bg=CARD, bd=0, highlightthickness=0,
                                cursor="pencil")
        self.canvas.pack()
        self.canvas.bind("<ButtonPress-1>", self.on_press)
        self.canvas.bind("<B1-Motion>", self.on_motion)
        self.canvas.bind("<ButtonRelease-1>", self.on_release)

        row = tk.Frame(left, bg=BG)
        row.pack(fill="x", pady=(12, 0))
        tk.Button(row, text="Clear", command=self.clear, font=(FONT, 11, "bold"), fg="white", bg=TEXT,
                  activeforeground="white", activebackground="#374151", relief="flat", bd=0, highlightthickness=0,
                  padx=18, pady=6, cursor="hand2").pack(side="left")
        clears = "Esc or Delete clears" if "c" in self.class_keys() else "Esc, Delete or C clears"
        tk.Label(row, text=f"{clears} · Ctrl+Z undoes a stroke", font=(FONT, 10), fg=MUTED,
                 bg=BG).pack(side="left", padx=12)
        if self.collection:
            self.collect_status = tk.Label(left, text="", font=(FONT, 10), fg=MUTED, bg=BG, justify="left",
                                           anchor="nw", wraplength=CANVAS, height=2)
            self.collect_status.pack(fill="x", pady=(8, 0))
            self.say(f"collecting into {short_path(self.collection.root)}: press {self.collection.keys_text()} "
                     f"to save the drawing as that class · {self.collection.counts_text()}")

    def _build_panel(self, parent) -> None:
        tk = self.tk
        panel = tk.Frame(parent, bg=CARD, highlightthickness=1, highlightbackground=BORDER, padx=20, pady=14)
        panel.grid(row=0, column=1, sticky="ns", padx=(20, 0))

        tk.Label(panel, text="PREDICTION", font=(FONT, 9, "bold"), fg=MUTED, bg=CARD).pack(anchor="w")
        self.digit = tk.Label(panel, text="", font=(FONT, 64, "bold"), fg=TEXT, bg=CARD, width=2, height=1)
        self.digit.pack(anchor="center", pady=(0, 0))
        self.confidence = tk.Label(panel, text="", font=(FONT, 12, "bold"), fg=MUTED, bg=CARD)
        self.confidence.pack(anchor="center", pady=(0, 12))

        tk.Label(panel, text=f"TOP {TOP_K}", font=(FONT, 9, "bold"), fg=MUTED, bg=CARD).pack(anchor="w")
        self.bars = tk.Canvas(panel, width=BARS_WIDTH, height=TOP_K * 28, bg=CARD, bd=0, highlightthickness=0)
        self.bars.pack(anchor="w", pady=(6, 12))
        self.bar_items = []
        for i in range(TOP_K):
            y = i * 28 + 12
            label = self.bars.create_text(8, y, text="", font=(FONT, 13, "bold"), fill=TEXT)
            self.bars.create_rectangle(BAR_LEFT, y - 8, BAR_LEFT + BAR_LENGTH, y + 8, fill=TRACK, width=0)
            fill = self.bars.create_rectangle(BAR_LEFT, y - 8, BAR_LEFT, y + 8, fill=ACCENT if i == 0 else ACCENT_LIGHT,
                                              width=0)
            pct = self.bars.create_text(BARS_WIDTH, y, text="", font=(FONT, 11), fill=MUTED, anchor="e")
            self.bar_items.append((label, fill, pct))

        tk.Label(panel, text="MODEL INPUT  28 × 28", font=(FONT, 9, "bold"), fg=MUTED, bg=CARD).pack(anchor="w")
        side = 28 * PREVIEW_SCALE
        self.preview_image = tk.PhotoImage(width=side, height=side)
        row = tk.Frame(panel, bg=CARD)
        row.pack(anchor="w", pady=(6, 0))
        tk.Label(row, image=self.preview_image, bd=0, bg=CARD).pack(side="left")
        tk.Label(row, text="your drawing,\ncropped, scaled\nand centred as\nMNIST's digits", font=(FONT, 9),
                 fg=MUTED, bg=CARD, justify="left").pack(side="left", anchor="s", padx=(12, 0))

    # -------------------------------------------------------- drawing

    def on_press(self, event) -> None:
        self.canvas.delete("hint")
        self.last = (event.x, event.y)
        self.strokes += 1
        self.paths.append([self.last])
        r = (PEN - 1) / 2
        self.canvas.create_oval(event.x - r, event.y - r, event.x + r, event.y + r, fill=TEXT, outline="",
                                tags=("ink", f"stroke{len(self.paths)}"))
        draw_stroke(self.image, [self.last])
        self.schedule()

    def on_motion(self, event) -> None:
        if self.last is None:
            return
        here = (event.x, event.y)
        if here == self.last:
            return
        self.canvas.create_line(*self.last, *here, width=PEN, fill=TEXT, capstyle="round", joinstyle="round",
                                tags=("ink", f"stroke{len(self.paths)}"))
        draw_stroke(self.image, [self.last, here])
        self.paths[-1].append(here)
        self.last = here
        self.schedule()

    def on_release(self, _event) -> None:
        self.last = None
        self.predict()

    def schedule(self) -> None:
        if self.pending is None:
            self.pending = self.root.after(PREDICT_EVERY_MS, self.predict, True)

    def clear(self) -> None:
        self.canvas.delete("ink")
        self.image = blank_drawing()
        self.last, self.strokes, self.paths = None, 0, []
        self.show_empty()
        self.log("clear", ink_pixels=int((np.asarray(self.image) != PAPER).sum()),
                 canvas_strokes=len(self.canvas.find_withtag("ink")), shown=self.digit.cget("text"))

    def undo(self) -> None:
        """Ctrl+Z: the last stroke goes, from the canvas and from the image the model reads."""
        if not self.paths or self.last is not None:
            return
        self.canvas.delete(f"stroke{len(self.paths)}")
        self.paths.pop()
        self.image = blank_drawing()
        for path in self.paths:
            draw_stroke(self.image, path)
        self.strokes = len(self.paths)
        if self.strokes:
            self.predict()
        else:
            self.show_empty()
        self.log("undo", strokes=self.strokes, ink_pixels=int((np.asarray(self.image) != PAPER).sum()))

    # -------------------------------------------------------- collecting (--collect)

    def class_keys(self) -> list[str]:
        return self.collection.keys if self.collection else []

    def say(self, text: str, colour: str = MUTED) -> None:
        self.collect_status.configure(text=text, fg=colour)

    def on_key(self, event) -> None:
        """A class's key saves the drawing as that class; another printable key gets a hint; Ctrl/Alt chords,
        arrows and modifiers alone are not for us."""
        char = event.char
        if event.state & 0x0C or not char or not char.isprintable():  # 0x04 Control, 0x08 Alt
            return
        if char in self.collection.keys:
            self.save_drawing(char)
            return
        self.say(f"{char!r} is not a class: press {self.collection.keys_text()} to save the drawing", UNSURE)
        self.log("not_saved", key=char, reason="not a class")

    def save_drawing(self, key: str) -> None:
        from ..imaging.image import ImageError

        try:
            model_input(self.image)  # what training could not read is not saved
        except ImageError:
            why = "nothing drawn yet" if self.strokes == 0 else "too little ink for a digit"
            self.say(f"{why}: not saved", UNSURE)
            self.log("not_saved", key=key, reason=why)
            return
        try:
            path = self.collection.save(self.image, key)
        except (OSError, UserError) as exc:
            line = f"not saved: {environment_error(exc) if isinstance(exc, OSError) else exc}"
            print(f"mnistlab draw: {line}", file=sys.stderr)
            self.say(line, DOUBTFUL)
            self.log("not_saved", key=key, reason=line)
            return
        self.clear()
        self.say(f"saved {path.relative_to(self.collection.root)} · {self.collection.counts_text()}", SURE)
        self.log("saved", key=key, path=str(path), counts=dict(self.collection.counts))

    # -------------------------------------------------------- prediction

    def predict(self, drawing: bool = False) -> None:
        """Read the drawing; `drawing` says a stroke is still going on (a live update, not the last word)."""
        from .predict import classify
        from ..imaging.image import ImageError

        if self.pending is not None:
            self.root.after_cancel(self.pending)
            self.pending = None
        if self.strokes == 0:
            return
        try:
            frame = model_input(self.image)
        except ImageError:
            self.show_empty("keep drawing…")
            self.log("blank", strokes=self.strokes, drawing=drawing)
            return
        probs = classify(self.classifier, frame[None])[0].tolist()
        top = top_classes(probs, self.classifier.classes)
        self.show(top, frame)
        self.log("prediction", digit=top[0][0], confidence=top[0][1], top=top, strokes=self.strokes, drawing=drawing)

    def show(self, top: list[tuple[str, float]], frame: np.ndarray) -> None:
        label, p = top[0]
        self.digit.configure(text=label, fg=TEXT)
        # a flat answer usually means the drawing is no digit the model knows: say so, gently
        hint = "" if p >= ASK_BELOW else " · a digit?"
        self.confidence.configure(text=f"{percent(p)} sure{hint}", fg=confidence_colour(p))
        for (text, fill, pct), (name, q) in zip(self.bar_items, top):
            y = self.bars.coords(fill)[1]
            self.bars.itemconfigure(text, text=name)
            self.bars.coords(fill, BAR_LEFT, y, BAR_LEFT + max(2.0, BAR_LENGTH * q), y + 16)
            self.bars.itemconfigure(fill, state="normal")
            self.bars.itemconfigure(pct, text=percent(q))
        self.preview_image.configure(data=preview_ppm(frame), format="PPM")

    def show_empty(self, message: str = "draw a digit") -> None:
        self.digit.configure(text="?", fg=FAINT)
        self.confidence.configure(text=message, fg=MUTED)
        for text, fill, pct in self.bar_items:
            self.bars.itemconfigure(text, text="")
            self.bars.itemconfigure(fill, state="hidden")
            self.bars.itemconfigure(pct, text="")
        self.preview_image.configure(data=preview_ppm(np.zeros((28, 28), dtype=np.float32)), format="PPM")
        if self.strokes == 0 and not self.canvas.find_withtag("hint"):
            self.canvas.create_text(CANVAS / 2, CANVAS / 2, text="draw a digit here", font=(FONT, 16), fill=FAINT,
                                    tags="hint")

    # -------------------------------------------------------- running

    def run(self) -> int:
        def interrupt(_signum, _frame):
            self.interrupted = True
            self.root.destroy()

        previous = signal.signal(signal.SIGINT, interrupt)
        self.root.after(200, self._tick)
        self.root.after_idle(self._ready)
        self.root.focus_force()
        try:
            self.root.mainloop()
        finally:
            signal.signal(signal.SIGINT, previous)
        return 130 if self.interrupted else 0

    def _tick(self) -> None:
        """Returns to Python now and then, so Ctrl+C in the terminal is noticed while the window idles."""
        self.root.after(200, self._tick)

    def _ready(self) -> None:
        self.root.update_idletasks()
        if not self.canvas.winfo_ismapped():
            self.root.after(50, self._ready)
            return
        c, r = self.canvas, self.root
        self.log("ready", canvas=[c.winfo_rootx(), c.winfo_rooty(), c.winfo_width(), c.winfo_height()],
                 window=[r.winfo_rootx(), r.winfo_rooty(), r.winfo_width(), r.winfo_height()],
                 classes=list(self.classifier.classes))
