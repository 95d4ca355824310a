"""Collecting a user's own digits: `mnistlab predict IMAGES --sort-into DIR` (copies into DIR/<prediction>/).

`mnistlab draw --collect DIR` is tested in tests/test_draw.py, where the window's helpers are. Digits here
are drawn as the drawing window draws them (tests/drawn_digits.py) and read by the shipped model.
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

import pytest

from conftest import REPO
from drawn_digits import DIGITS, render
from mnistlab.files import folder_name, write_new_file
from mnistlab.reading.predict import SHIPPED


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
