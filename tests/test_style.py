"""Colour: the best epoch's `*`, the final accuracy line and error lines are coloured on a terminal,
and plain with NO_COLOR, TERM=dumb or when the stream is not a terminal."""

import io
import sys

import pytest

from mnistlab.cli import main
from mnistlab.style import paint
from mnistlab.training.trainer import epoch_line, result_lines

ESC = "\033["


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def colour_env(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


ROW = {"epoch": 3, "train_loss": 0.1, "train_acc": 0.97, "val_loss": 0.05, "val_acc": 0.985, "test_acc": None,
       "lr": 1e-3, "time_s": 2.0, "train_images_per_s": 9000.0}
SUMMARY = {"test_n": 10_000, "selected_on": "val_loss", "test_acc": 0.9912, "test_loss": 0.03, "val_acc": 0.99,
           "best_epoch": 3, "epochs_run": 3, "train_time_s": 6.0}


def test_a_terminal_gets_colour(colour_env):
    colour_env.setattr(sys, "stdout", FakeTerminal())
    line = epoch_line(ROW, 10, improved=True)
    assert line.endswith(f"  {ESC}32m*{ESC}0m")
    assert epoch_line(ROW, 10, improved=False).count(ESC) == 0  # only the mark is coloured
    result = result_lines(SUMMARY, 10_000)[0]
    assert paint(result, "result").startswith(f"{ESC}1;32mtest accuracy 99.12%")


def test_the_result_lines_fit_120_columns_with_every_option():
    tta = {**SUMMARY, "tta": True, "test_acc_single_view": 0.9901, "test_n": 1_024, "train_time_s": 123_456.7,
           "best_epoch": 1_000, "epochs_run": 1_000}
    for summary in (SUMMARY, tta, {**SUMMARY, "test_acc": None}, {**tta, "selected_on": "last"}):
        lines = result_lines(summary, 10_000)
        assert all(len(line) <= 120 for line in lines), lines
    assert "single view 99.01%" in result_lines(tta, 10_000)[0] and "on 1,024 of 10,000 test images" in result_lines(tta, 10_000)[0]


def test_no_colour_with_no_color_or_dumb_terminal_or_a_pipe(colour_env):
    terminal = FakeTerminal()
    assert paint("x", "error", terminal) != "x"
    colour_env.setenv("NO_COLOR", "1")
    assert paint("x", "error", terminal) == "x"
    colour_env.setattr(sys, "stdout", terminal)
    assert epoch_line(ROW, 10, improved=True).endswith("  *")
    colour_env.delenv("NO_COLOR")
    colour_env.setenv("TERM", "dumb")
    assert paint("x", "best", terminal) == "x"
    colour_env.setenv("TERM", "xterm")
    assert paint("x", "best", io.StringIO()) == "x"  # not a terminal
    closed = io.StringIO()
    closed.close()
    assert paint("x", "best", closed) == "x"  # isatty() on a closed stream raises: no colour, no crash


def run_main_with_stderr(monkeypatch, stream, *args):
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, stream.getvalue()


def test_error_lines_are_red_on_a_terminal_only(colour_env, tmp_path):
    missing = tmp_path / "nope.yaml"
    code, err = run_main_with_stderr(colour_env, FakeTerminal(), "train", missing)
    assert code == 2
    assert err.startswith(f"{ESC}1;31mmnistlab train: error: config file not found: {missing}")
    assert err.endswith(f"{ESC}0m\n") and err.count("\n") == 1
    code, err = run_main_with_stderr(colour_env, FakeTerminal(), "models", "--frobnicate")
    assert code == 2 and err.startswith(f"{ESC}1;31mmnistlab: error: unrecognized arguments")
    colour_env.setenv("NO_COLOR", "yes")
    code, err = run_main_with_stderr(colour_env, FakeTerminal(), "train", missing)
    assert code == 2 and err.startswith(f"mnistlab train: error: config file not found: {missing}")
    assert ESC not in err
    colour_env.delenv("NO_COLOR")
    code, err = run_main_with_stderr(colour_env, io.StringIO(), "train", missing)
    assert code == 2 and ESC not in err
