"""runfolder.py, the run directory's one owner: its readers' one failure rule, the smoke rule, the lock.

Real files, no training: each test takes a fraction of a second.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from mnistlab import runfolder
from mnistlab.errors import UserError

READERS = {runfolder.SUMMARY: runfolder.read_summary, runfolder.TRIAL: runfolder.read_trial,
           runfolder.CONFIG: runfolder.read_config, runfolder.METRICS: runfolder.read_metrics}
DAMAGED = {runfolder.SUMMARY: b"[1, 2]", runfolder.TRIAL: b"{not json", runfolder.CONFIG: b"- a list\n",
           runfolder.METRICS: b"train_loss\n0.5\n"}


@pytest.mark.parametrize("name", list(READERS))
def test_absent_is_none_and_damaged_is_one_error_naming_the_file(tmp_path, name):
    read = READERS[name]
    assert read(tmp_path) is None
    (tmp_path / name).write_bytes(DAMAGED[name])
    with pytest.raises(UserError, match=f"{tmp_path / name}.* is damaged|{tmp_path / name}.*mapping"):
        read(tmp_path)
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)  # read plainly, a pipe nobody writes to would wait for ever
    with pytest.raises(UserError, match="not a regular file"):
        read(tmp_path)


def test_what_the_trainer_writes_reads_back(tmp_path):
    (tmp_path / runfolder.METRICS).write_text("epoch,val_acc,test_acc\n1,0.9,\n2,nan,\n")
    rows = runfolder.read_metrics(tmp_path)
    assert rows[0] == {"epoch": 1.0, "val_acc": 0.9, "test_acc": None} and rows[1]["val_acc"] != rows[1]["val_acc"]
    (tmp_path / runfolder.SUMMARY).write_text('{"test_acc": 0.99}')
    assert runfolder.finished_summary(tmp_path) == {"test_acc": 0.99}
    (tmp_path / runfolder.SUMMARY).unlink()
    with pytest.raises(UserError, match="is missing"):
        runfolder.finished_summary(tmp_path)


def test_a_smoke_run_is_one_with_a_limit():
    assert not runfolder.is_smoke({"train": {"epochs": 3}}) and not runfolder.is_smoke({})
    assert runfolder.is_smoke({"train": {"limit_train_batches": 5}})
    assert runfolder.is_smoke({"train": {"limit_eval_batches": 2}})
    assert runfolder.is_smoke({"train": ["not", "a", "mapping"]})  # a damaged section claims no full run


def test_the_lock_refuses_a_second_process_and_is_probed_without_writing(tmp_path):
    assert not runfolder.being_trained(tmp_path) and not (tmp_path / runfolder.LOCK).exists()  # nothing created
    lock = runfolder.lock_run_dir(tmp_path)
    try:
        assert runfolder.being_trained(tmp_path)
        code = (f"from mnistlab import runfolder\nfrom mnistlab.errors import UserError\n"
                f"try:\n    runfolder.lock_run_dir({str(tmp_path)!r})\nexcept UserError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
        assert out == f"{tmp_path} is being trained by another process right now\n"
    finally:
        runfolder.unlock(lock)
    assert not runfolder.being_trained(tmp_path)
    runfolder.unlock(runfolder.lock_run_dir(tmp_path))  # free again


def test_a_run_named_on_the_command_line(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        runfolder.given_run_dir(tmp_path)
    (tmp_path / runfolder.CONFIG).write_text("name: x\n")
    (tmp_path / runfolder.LAST).write_bytes(b"")
    assert runfolder.given_run_dir(tmp_path / runfolder.LAST) == tmp_path == runfolder.given_run_dir(tmp_path)
    assert runfolder.is_run(tmp_path)
