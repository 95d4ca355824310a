"""Collecting a user's own digits: `mnistlab draw --collect DIR` (a key press saves the drawing into
DIR/<key>/) and `mnistlab predict IMAGES --sort-into DIR` (copies into DIR/<prediction>/).

The window runs under its own Xvfb, driven as tests/test_draw.py drives it (its `Window`), with the
shipped model. Digits are drawn as the drawing window draws them (tests/drawn_digits.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from drawn_digits import DIGITS, render, seven
from mnistlab.files import folder_name, write_new_file
from mnistlab.reading.draw import CANVAS, Collection
from mnistlab.reading.predict import SHIPPED
from test_draw import Window


def digits_folder(folder: Path) -> dict[str, str]:
    """d0.png, d1.png, d7.png (drawn digits) and broken.png (not an image); returns name -> sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, strokes in DIGITS.items():
        render(strokes()).save(folder / f"d{name}.png")
    (folder / "broken.png").write_text("not an image")
    return hashes(folder)


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_sort_into_copies_by_prediction_and_never_writes_over(cli, tmp_path):
    before = digits_folder(tmp_path / "in")
    out = tmp_path / "sorted"
    code, stdout, err = cli("predict", tmp_path / "in", "--ckpt", SHIPPED, "--sort-into", out)
    assert code == 1, err  # broken.png could not be read
    assert tree(out) == ["0/d0.png", "1/d1.png", "7/d7.png"]  # names kept; the unreadable file not copied
    assert stdout.splitlines()[-1] == f"copied 3 file(s) into {out}{os.sep}<prediction>{os.sep}; 1 not copied " \
                                      "(could not be read: listed above)"
    assert hashes(tmp_path / "in") == before  # the sources untouched
    assert hashes(out / "7")["d7.png"] == before["d7.png"]  # a copy, byte for byte

    (out / "7" / "d7.png").write_bytes(b"the user's own file")
    code, stdout, err = cli("predict", tmp_path / "in" / "d7.png", tmp_path / "in" / "d0.png", "--ckpt", SHIPPED,
                            "--sort-into", out, "--json")
    assert code == 0, err
    results = json.loads(stdout)  # stdout stays JSON: the summary goes to stderr
    assert [Path(r["sorted_into"]).relative_to(out).as_posix() for r in results] == ["7/d7-1.png", "0/d0-1.png"]
    assert (out / "7" / "d7.png").read_bytes() == b"the user's own file"
    assert "copied 2 file(s)" in err and "2 of them under a new name" in err
    assert hashes(tmp_path / "in") == before
    assert not list(out.rglob(".*"))  # no temporary file left behind


def test_a_sorted_folder_read_again_stays_as_it_is(cli, tmp_path):
    digits_folder(tmp_path / "in")
    out = tmp_path / "sorted"
    assert cli("predict", tmp_path / "in", "--ckpt", SHIPPED, "--sort-into", out)[0] == 1
    code, stdout, err = cli("predict", out / "0", out / "1", out / "7", "--ckpt", SHIPPED, "--sort-into", out)
    assert code == 0, err
    assert tree(out) == ["0/d0.png", "1/d1.png", "7/d7.png"]
    assert stdout.splitlines()[-1].endswith("copied 0 file(s) into " f"{out}{os.sep}<prediction>{os.sep}; "
                                            "3 already in their class's folder")


@pytest.mark.parametrize("args, message", [
    (["--multi"], "--sort-into files each image under its one digit; it cannot be used with --multi"),
    ([], "--sort-into: {blocker} is a file, not a folder"),
])
def test_usage_errors_are_one_line(cli, tmp_path, args, message):
    digits_folder(tmp_path / "in")
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    code, stdout, err = cli("predict", tmp_path / "in", "--ckpt", SHIPPED, "--sort-into", blocker, *args)
    assert code == 2 and stdout == "" and err == f"mnistlab predict: error: {message.format(blocker=blocker)}\n"
    assert blocker.read_text() == "a file"


def test_a_file_in_the_way_of_a_class_folder_stops_the_copies_with_one_line(cli, tmp_path):
    digits_folder(tmp_path / "in")
    out = tmp_path / "sorted"
    out.mkdir()
    (out / "7").write_text("the user's file")
    code, stdout, err = cli("predict", tmp_path / "in" / "d0.png", tmp_path / "in" / "d7.png", "--ckpt", SHIPPED,
                            "--sort-into", out)
    assert code == 1 and len(stdout.splitlines()) == 2  # the predictions are printed all the same
    assert err.splitlines()[-1] == (f"mnistlab predict: error: --sort-into: cannot copy {tmp_path / 'in' / 'd7.png'} "
                                    f"into {out / '7'}: a file of that name is in the way (1 file(s) copied before)")
    assert (out / "7").read_text() == "the user's file" and tree(out) == ["0/d0.png", "7"]


def full_disk(limit: int):
    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


def test_a_full_disk_is_one_line_and_leaves_no_part_of_a_file(tmp_path):
    digits_folder(tmp_path / "in")
    out = tmp_path / "sorted"
    size = (tmp_path / "in" / "d0.png").stat().st_size
    result = subprocess.run([sys.executable, "-m", "mnistlab", "predict", tmp_path / "in" / "d0.png", "--ckpt",
                             SHIPPED, "--sort-into", out], capture_output=True, text=True, cwd=REPO, timeout=300,
                            preexec_fn=full_disk(size // 2))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith("File too large (0 file(s) copied before)")
    assert not [p for p in out.rglob("*") if p.is_file()]  # neither a half copy nor a temporary file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_target_is_one_line(cli, tmp_path):
    digits_folder(tmp_path / "in")
    out = tmp_path / "sorted"
    out.mkdir(mode=0o555)
    code, stdout, err = cli("predict", tmp_path / "in", "--ckpt", SHIPPED, "--sort-into", out)
    assert code == 2 and stdout == "" and err == f"mnistlab predict: error: --sort-into: {out} is not writable\n"


def test_class_names_become_safe_folder_names():
    assert [folder_name(n) for n in ("7", "a", "T-shirt/top", "a\\b:c", ".hidden", "..", "")] == \
        ["7", "a", "T-shirt_top", "a_b_c", "_.hidden", "_..", "_"]


def test_write_new_file_takes_the_first_free_name(tmp_path):
    (tmp_path / "a.png").write_bytes(b"mine")
    assert write_new_file(tmp_path, "a", ".png", b"1", sep="-").name == "a-1.png"
    assert write_new_file(tmp_path, "a", ".png", b"2", sep="-").name == "a-2.png"
    assert write_new_file(tmp_path, "b", ".png", b"3").name == "b.png"
    assert write_new_file(tmp_path, "b", ".png", b"4").name == "b_1.png"
    assert hashes(tmp_path) == {name: hashlib.sha256(data).hexdigest() for name, data in
                                [("a.png", b"mine"), ("a-1.png", b"1"), ("a-2.png", b"2"), ("b.png", b"3"),
                                 ("b_1.png", b"4")]}


# ---------------------------------------------------------------- draw --collect

@pytest.fixture(scope="module")
def collecting(display, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("collect_window")
    (workdir / "mine" / "3").mkdir(parents=True)
    (workdir / "mine" / "3" / "old.png").write_bytes(b"the user's own file")  # counted, never touched
    (workdir / "mine" / "4").write_text("a file where class 4's folder goes")
    app = Window(display, SHIPPED, workdir, args=("--collect", workdir / "mine"))
    yield app, workdir / "mine"
    app.close()
    assert app.process.returncode == 0, app.output()


def key(window: Window, name: str, event: str) -> dict:
    start = len(window.events())
    window.xdotool("key", "--clearmodifiers", name)
    return window.wait_for(lambda e: e["event"] == event, start)


def test_a_key_press_saves_the_drawing_into_its_class_folder(collecting):
    window, root = collecting
    window.press("Escape")
    nothing = key(window, "7", "not_saved")
    assert nothing["reason"] == "nothing drawn yet" and not (root / "7").exists()
    saved = []
    for _ in range(2):
        window.draw(seven())
        saved.append(key(window, "7", "saved"))
        assert window.events()[-2]["event"] == "clear"  # the canvas is cleared for the next digit
    first, second = (Path(s["path"]) for s in saved)
    assert first.parent == second.parent == root / "7" and first.name != second.name
    assert saved[-1]["counts"] == {**{str(d): 0 for d in range(10)}, "3": 1, "7": 2}
    drawn = Image.open(first)
    assert drawn.size == (CANVAS, CANVAS) and drawn.mode == "L"  # the canvas picture, as drawn
    ink, meant = np.asarray(drawn) < 128, np.asarray(render(seven())) < 128
    assert (ink & meant).sum() / (ink | meant).sum() > 0.9  # xdotool's points land on whole pixels: near enough
    assert (root / "3" / "old.png").read_bytes() == b"the user's own file"


def test_other_keys_save_nothing_and_the_old_keys_still_work(collecting):
    window, root = collecting
    window.press("Escape")
    window.draw(seven())
    before = tree(root)
    hint = key(window, "x", "not_saved")
    assert hint == {"event": "not_saved", "key": "x", "reason": "not a class"}
    window.xdotool("key", "--clearmodifiers", "ctrl+z")
    window.wait_for(lambda e: e["event"] == "undo" and e["strokes"] == 0, 0)
    assert key(window, "7", "not_saved")["reason"] == "nothing drawn yet"
    window.draw(seven())
    assert window.press("c")["ink_pixels"] == 0  # C still clears: no class is called c
    assert tree(root) == before


def test_a_failed_save_is_one_line_and_the_window_goes_on(collecting):
    window, root = collecting
    window.press("Escape")
    window.draw(seven())
    failed = key(window, "4", "not_saved")
    assert failed["reason"] == f"not saved: cannot read or write {root / '4'}: a file of that name is in the way"
    assert f"mnistlab draw: {failed['reason']}" in window.output().splitlines()
    assert (root / "4").read_text() == "a file where class 4's folder goes"
    assert key(window, "5", "saved")["path"].startswith(str(root / "5"))  # the drawing was kept: saved as 5 now


def test_collect_refuses_a_file_and_classes_no_key_can_name(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    result = subprocess.run([sys.executable, "-m", "mnistlab", "draw", "--ckpt", SHIPPED, "--collect", blocker],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and result.stderr == f"mnistlab draw: error: --collect: {blocker} is a file, " \
                                                       "not a folder\n"
    with pytest.raises(Exception, match="no class of this checkpoint is a single character"):
        Collection.open(tmp_path / "fashion", ["T-shirt/top", "Trouser"])
    collection = Collection.open(tmp_path / "letters", ["A", "B", "ab"])
    assert collection.keys == ["A", "B"] and collection.keys_text() == "A B"


def test_write_new_file_without_hard_links(tmp_path, monkeypatch):
    """On a file system without hard links (FAT, some network shares) the free name is opened with O_EXCL."""
    def no_links(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.png").write_bytes(b"mine")
    assert write_new_file(tmp_path, "a", ".png", b"new", sep="-").name == "a-1.png"
    assert hashes(tmp_path) == {"a.png": hashlib.sha256(b"mine").hexdigest(),
                                "a-1.png": hashlib.sha256(b"new").hexdigest()}  # and no temporary file left
