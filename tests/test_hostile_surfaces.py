"""Hostile input at the edges people touch: run files read by every command, `init --from`, `export -o`,
ONNX files that are not what their metadata says, the Python API's arguments.

The promise is test_hostile_inputs.py's: one line, a non-zero exit, no traceback, nothing lost, fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_hostile_inputs import cli_process, one_line_error

SHIPPED = REPO / "mnistlab" / "reading" / "weights" / "default.pt"


# ---------------------------------------------------------------- every reader of run files

def hostile_run(run_dir: Path, kind: str) -> Path:
    """A run directory whose config.yaml, summary.json and metrics.csv are FIFOs (reading one waits for a writer
    that never comes) or sparse 40 MB files."""
    run_dir.mkdir(parents=True)
    for name in ("config.yaml", "summary.json", "metrics.csv", ".lock"):
        if kind == "fifo":
            os.mkfifo(run_dir / name)
        else:
            with open(run_dir / name, "wb") as f:
                f.truncate(40 << 20)
    return run_dir


READERS = """
import json, sys
from pathlib import Path
from mnistlab.errors import UserError
from mnistlab.experiments import history, runs, sweep_report
from mnistlab.training import choice
from mnistlab import runfolder

root = Path(sys.argv[1])
run_dir = next(root.glob("*/trials/x-trial0001/*"))
config = {"name": "x-trial0001"}
calls = {
    "runs": lambda: history.read_run(run_dir)["state"],
    "compare reuse": lambda: runs.find_finished_run(run_dir.parent.parent, config, "cpu"),
    "compare finish": lambda: runs.find_unfinished_run(run_dir.parent.parent, config),
    "compare summary": lambda: runfolder.finished_summary(run_dir),
    "sweep summary": lambda: sweep_report.row_summary(run_dir),
    "--ckpt best": lambda: choice.finished_runs(root),
    "resume": lambda: runfolder.read_summary(run_dir),
    "curves": lambda: runfolder.read_metrics(run_dir),
    "lock probe": lambda: runfolder.being_trained(run_dir),
    "lock": lambda: runfolder.unlock(runfolder.lock_run_dir(run_dir)),
}
for name, call in calls.items():
    try:
        print(name, "->", call())
    except (UserError, OSError) as exc:
        print(name, "-> refused:", exc)
"""


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_every_reader_of_run_files_refuses_pipes_and_huge_files(tmp_path, kind):
    hostile_run(tmp_path / kind / "sweeps" / "trials" / "x-trial0001" / "20261124-120000", kind)
    result = subprocess.run([sys.executable, "-c", READERS, str(tmp_path / kind)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)  # a FIFO read would wait here for ever
    assert result.returncode == 0, result.stderr[-3000:]
    said = dict(line.split(" -> ", 1) for line in result.stdout.splitlines())
    assert said["runs"] == "damaged"
    assert said["compare reuse"] == said["compare finish"] == "None" and said["--ckpt best"] == "[]"
    assert said["sweep summary"] == "{}"
    for name in ("compare summary", "resume", "curves"):
        assert said[name].startswith("refused: ") and ("not a regular file" in said[name] or "MB" in said[name])
    assert said["lock probe"] == "False"
    if kind == "huge":
        assert said["lock"] == "None"
    else:  # a FIFO is no lock: refused at once, never waited on
        assert said["lock"].startswith("refused: ") and "/.lock is not a regular file" in said["lock"], said["lock"]


# ---------------------------------------------------------------- init --from

INIT_SOURCES = {
    "an unknown key": ("bad.yaml", "model: {name: iter5}\ntrian: {epochs: 1}\n", "trian: unknown key"),
    "not YAML": ("bad.yaml", "model: [iter5\n", "YAML syntax error"),
    "not UTF-8": ("bad.yaml", b"model: \xff\xfe\n", "not UTF-8"),
    "a pipe": ("pipe.yaml", None, "not a regular file"),
    "a huge file": ("huge.yaml", "model: {name: iter5}\n# " + "x" * (2 << 20) + "\n", "at most 1024 KB"),
    "a list": ("list.yaml", "- model\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", list(INIT_SOURCES))
def test_init_from_a_broken_config_writes_nothing_and_names_it(tmp_path, case):
    name, content, words = INIT_SOURCES[case]
    source = tmp_path / name
    if content is None:
        os.mkfifo(source)
    elif isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    result = cli_process("init", tmp_path / "mine", "--from", source)
    err = one_line_error(result.returncode, result.stdout, result.stderr, "init")
    assert result.returncode == 2 and str(source) in err and words in err, err
    assert not (tmp_path / "mine.yaml").exists() and sorted(os.listdir(tmp_path)) == [name]


def test_init_from_a_good_config_still_works(tmp_path):
    result = cli_process("init", tmp_path / "mine", "--from", "iter5")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "mine.yaml").read_text()
    assert "name: mine" in text and "#" in text  # comments kept


# ---------------------------------------------------------------- predict --multi on a picture of thousands of marks

def test_multi_on_thousands_of_marks_is_not_quadratic(tmp_path):
    """5,000 dots: each blob was once checked against each digit so far with a pass over the whole picture
    (a minute and more; 400 dots took 12 s). Now a few seconds; the timeout is only a generous bound."""
    from PIL import Image, ImageDraw

    side = 71  # 71 x 71 > 5,000 places
    image = Image.new("L", (side * 24 + 40, side * 24 + 40), 255)
    draw = ImageDraw.Draw(image)
    for i in range(5000):
        y, x = divmod(i, side)
        draw.ellipse([20 + x * 24, 20 + y * 24, 28 + x * 24, 28 + y * 24], fill=0)
    image.save(tmp_path / "dots.png")
    result = cli_process("predict", tmp_path / "dots.png", "--multi", "--json", "--ckpt", SHIPPED, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    (found,) = json.loads(result.stdout)
    assert len(found["digits"]) > 500
