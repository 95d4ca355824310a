"""`mnistlab runs`: every run directory under the roots, finished or not, as a table and as JSON.

Two runs are trained for real (a finished smoke run and one interrupted after its first epoch), so
the listing reads what the trainer writes; the rest are written by hand from the trainer's own config,
to have full runs, sweep trials, a run being trained now and damaged files without training them.
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from mnistlab.config import config_to_yaml, load_config

ESC = "\033["


def write_run(run_dir: Path, config: str = "iter5", overrides=(), summary=None, rows=(), trial=None) -> Path:
    """A run directory as the trainer leaves one: config.yaml, and metrics.csv, summary.json, trial.json."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(load_config(config, list(overrides))))
    if rows:
        lines = ["epoch,train_loss,train_acc,val_loss,val_acc,test_acc,lr,time_s,train_images_per_s"]
        lines += [f"{i},0.1,0.9,{loss},{acc},,0.001,{seconds},9000" for i, (loss, acc, seconds) in enumerate(rows, 1)]
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if trial is not None:
        (run_dir / "trial.json").write_text(json.dumps(trial))
    return run_dir


def full_summary(name, model, params, test_acc, val_acc, epochs, seconds, finished_at):
    return {"name": name, "model": model, "params": params, "dataset": "mnist", "test_acc": test_acc,
            "test_loss": 0.02, "test_n": 10_000, "val_acc": val_acc, "val_loss": 0.02, "best_epoch": epochs,
            "epochs_run": epochs, "train_time_s": seconds, "device": "cpu", "finished_at": finished_at}


@pytest.fixture(scope="module")
def roots(mnist_root, tmp_path_factory):
    """checkpoints/ with real and written runs of every state, and a sweep folder beside it."""
    from mnistlab.cli import main
    from mnistlab.training.trainer import run_training

    base = tmp_path_factory.mktemp("history")
    ckpt, sweep = base / "checkpoints", base / "sweeps" / "lr"
    tiny = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=3", "--set", "train.limit_eval_batches=1"]
    assert main(["train", "iter5", *tiny, "--quiet", "--out-dir", str(ckpt), "--data-dir", str(mnist_root)]) == 0

    def stop(row):
        raise KeyboardInterrupt

    cfg = load_config("compact8k", ["train.epochs=3", "train.limit_train_batches=2", "train.limit_eval_batches=1"])
    try:
        run_training(cfg, data_dir=str(mnist_root), out_dir=ckpt, quiet=True, log=lambda *a: None, on_epoch=stop)
    except KeyboardInterrupt:
        pass
    gc.collect()  # the interrupted run's lock goes with its last reference

    write_run(ckpt / "iter5" / "20261120-101500", rows=[(0.05, 0.985, 7.0)] * 20,
              summary=full_summary("iter5", "iter5", 18_422, 0.9942, 0.9931, 20, 140.0, "2026-11-20T10:18:00+00:00"))
    write_run(ckpt / "best" / "20261121-090000", "best", rows=[(0.03, 0.996, 34.0)] * 20,
              summary=full_summary("best", "cnn5_bn", 87_346, 0.9970, 0.9963, 20, 686.0, "2026-11-21T09:12:00+00:00"))
    write_run(ckpt / "iter5" / "20261122-080000", rows=[(0.30, 0.95, 7.0), (0.10, 0.97, 7.0), (0.20, 0.96, 7.0)])
    write_run(ckpt / "mlp" / "20261122-090000", "mlp", rows=[(0.3, 0.9, 3.0)],
              summary=full_summary("mlp", "mlp", 669_706, 0.9393, 0.9350, 50, 145.0, "2026-11-22T09:05:00+00:00"))
    (ckpt / "mlp" / "20261122-090000" / "summary.json").write_text('{"test_acc": 0.9')  # cut short
    for number, state in ((1, "pruned"), (2, "complete")):
        trial = {"study": "lr", "trial": number, "state": state, "objective": "val_acc"}
        write_run(sweep / "trials" / f"lr-trial{number:04d}" / "20261123-100000", "iter5",
                  [f"name=lr-trial{number:04d}"], rows=[(0.1, 0.97, 7.0)] * number, trial=trial,
                  summary=full_summary(f"lr-trial{number:04d}", "iter5", 18_422, None, 0.975, 2, 14.0,
                                       "2026-11-23T10:02:00+00:00") if state == "complete" else None)
    (base / "sweeps" / "lr" / "trials.csv").write_text("not a run\n")
    return base


def runs_json(cli, *args) -> list[dict]:
    code, out, err = cli("runs", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def by_dir(records) -> dict:
    return {Path(r["directory"]).relative_to(Path(r["directory"]).parents[1]).as_posix(): r for r in records}


def test_every_run_and_its_state(cli, roots):
    records = by_dir(runs_json(cli, roots / "checkpoints", roots / "sweeps"))
    assert sorted(r["state"] for r in records.values()) == ["damaged", "finished", "finished", "finished",
                                                              "finished", "pruned", "unfinished", "unfinished"]
    real = next(r for r in records.values() if r["smoke"] and r["state"] == "finished")
    summary = json.loads((Path(real["directory"]) / "summary.json").read_text())
    assert (real["name"], real["model"], real["params"]) == ("iter5", "iter5", 18_422)
    assert real["test_acc"] == summary["test_acc"] and real["test_n"] == summary["test_n"] == 1024
    assert real["time_s"] == summary["train_time_s"] and real["epochs_run"] == real["epochs"] == 1
    stopped = next(r for r in records.values() if r["model"] == "compact8k")
    assert (stopped["state"], stopped["smoke"], stopped["epochs_run"], stopped["epochs"]) == ("unfinished", True, 1, 3)
    assert stopped["resume"] == f"mnistlab train --resume {stopped['directory']}"
    assert stopped["test_acc"] is None and stopped["val_acc"] is not None
    written = records["iter5/20261122-080000"]  # unfinished, not a smoke run: the best val_loss epoch so far
    assert (written["state"], written["smoke"], written["best_epoch"], written["val_acc"]) == \
        ("unfinished", False, 2, 0.97)
    assert written["time_s"] == 21.0 and written["params"] is None
    assert records["lr-trial0001/20261123-100000"]["state"] == "pruned"
    complete = records["lr-trial0002/20261123-100000"]
    assert complete["state"] == "finished" and complete["study"] == "lr" and complete["trial"] == 2
    damaged = records["mlp/20261122-090000"]
    assert damaged["state"] == "damaged" and damaged["problem"].startswith("summary.json is damaged: ")
    assert damaged["name"] == "mlp" and damaged["model"] == "mlp"  # what the other files say is still shown


def test_the_table_fits_120_columns_and_says_what_rows_mean(cli, roots):
    code, out, err = cli("runs", roots / "checkpoints", roots / "sweeps", "--sort", "test_acc")
    assert code == 0 and err == ""
    lines = out.rstrip("\n").split("\n")
    assert max(map(len, lines)) <= 120
    assert lines[0].split() == ["name", "model", "params", "epochs", "val", "acc", "test", "acc", "time", "date",
                                "state", "directory"]
    rows = lines[2:lines.index("")]
    assert len(rows) == 8
    assert rows[0].startswith("best ") and "cnn5_bn" in rows[0] and "87,346" in rows[0] and "99.70%" in rows[0]
    assert "20/20" in rows[0] and "11m 26s" in rows[0] and " finished " in rows[0]
    assert "Nov 21" in rows[0] or "2026-11-21" in rows[0]  # as ls -l: the year once it is old
    assert rows[1].startswith("iter5 ") and "99.42%" in rows[1]
    assert all("…/" in row and str(roots) not in row for row in rows)  # long paths shortened, their ends kept
    assert all(row.rstrip().endswith(("20261120-101500", "20261121-090000")) for row in rows[:2])
    assert sum(" finished, smoke" in row for row in rows) == 1 and sum("unfinished, smoke" in row for row in rows) == 1
    notes = lines[lines.index("") + 1:]
    unfinished = sorted(f"  mnistlab train --resume {r['directory']}" for r in runs_json(cli, roots)
                        if r["state"] == "unfinished")
    assert len(unfinished) == 2 and sorted(n for n in notes if n.startswith("  mnistlab train")) == unfinished
    assert any(n.startswith("smoke:") for n in notes) and any(n.startswith("pruned / failed:") for n in notes)
    assert any(n.startswith("damaged: ") and "mlp/20261122-090000: summary.json is damaged" in n for n in notes)
    assert ESC not in out  # not a terminal


def test_sorting_is_best_first_with_blanks_last(cli, roots):
    def column(sort, key):
        return [r[key] for r in runs_json(cli, roots, "--sort", sort)]

    test_acc = column("test_acc", "test_acc")
    present = [a for a in test_acc if a is not None]
    assert present == sorted(present, reverse=True) and present[0] == 0.997
    assert test_acc[len(present):] == [None] * (len(test_acc) - len(present))
    params = [p for p in column("params", "params") if p is not None]
    assert params == sorted(params) and params[-1] == 87_346
    dates = column("date", "date")
    assert dates == sorted(dates, reverse=True)  # newest first, the default
    assert column("name", "name") == sorted(column("name", "name"))


def test_filters(cli, roots):
    def names(*filters):
        args = [a for f in filters for a in ("--filter", f)]
        return sorted((r["name"], r["state"]) for r in runs_json(cli, roots, *args))

    assert names("model=iter5", "state=finished", "smoke=false") == [("iter5", "finished"),
                                                                   ("lr-trial0002", "finished")]
    assert names("name=lr-*") == [("lr-trial0001", "pruned"), ("lr-trial0002", "finished")]
    assert names("state=unfinished", "dataset=mnist") == [("compact8k", "unfinished"), ("iter5", "unfinished")]
    assert names("study=lr", "state=pruned") == [("lr-trial0001", "pruned")]
    assert names("dataset=fashion-mnist") == []
    code, out, _ = cli("runs", roots, "--filter", "model=vgg16")
    assert code == 0 and out == f"no runs under {roots} match model=vgg16\n"


@pytest.mark.parametrize("args, message", [
    (["--filter", "modle=iter5"], "mnistlab runs: error: --filter: unknown key 'modle'; allowed: name, model, "
                                  "dataset, state, smoke, device, study; did you mean 'model'?"),
    (["--filter", "model"], "mnistlab runs: error: --filter 'model': expected KEY=VALUE, e.g. model=iter5"),
    (["--filter", "state=finshed"], "mnistlab runs: error: --filter state=finshed: allowed: finished, unfinished, "
                                    "running, pruned, failed, damaged; did you mean 'finished'?"),
    (["--sort", "accuracy"], "mnistlab runs: error: argument --sort: invalid choice: 'accuracy'"),
    (["no/such/folder"], "mnistlab runs: error: no/such/folder: no such folder"),
])
def test_mistakes_are_one_line(cli, roots, args, message):
    code, out, err = cli("runs", *([roots] if not args[0].startswith("no/") else []), *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_default_root_is_checkpoints_here(cli, roots, tmp_path, monkeypatch):
    monkeypatch.chdir(roots)
    code, out, _ = cli("runs", "--filter", "name=best")
    assert code == 0 and "checkpoints/best/20261121-090000" in out  # relative to the working folder, whole
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("runs")
    assert code == 2 and out == "" and err.startswith("mnistlab runs: error: no ./checkpoints folder here: give "
                                                      "the folder your runs are in") and err.count("\n") == 1
    (tmp_path / "checkpoints").mkdir()
    assert cli("runs") == (0, "no runs under checkpoints\n", "")
    assert cli("runs", "--json") == (0, "[]\n", "")


def test_a_run_being_trained_is_running_and_listing_writes_nothing(cli, tmp_path):
    from mnistlab.runfolder import lock_run_dir, unlock

    run = write_run(tmp_path / "iter5" / "20261124-120000", rows=[(0.1, 0.97, 7.0)])
    old = write_run(tmp_path / "iter5" / "20261124-110000", rows=[(0.1, 0.97, 7.0)])  # no .lock: older version
    lock = lock_run_dir(run)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    try:
        states = {Path(r["directory"]).name: r["state"] for r in runs_json(cli, tmp_path)}
    finally:
        unlock(lock)
    assert states == {run.name: "running", old.name: "unfinished"}
    assert {Path(r["directory"]).name: r["state"] for r in runs_json(cli, tmp_path)}[run.name] == "unfinished"
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing created or written


HOSTILE = {
    "config.yaml": [b"\xff\xfe binary", b"- a list\n- not a mapping\n", b"a: [unclosed\n", b"a: 1\na: 2\n",
                    b"&a [*a]\n", b"model: iter5\ntrain: {epochs: -3}\n", b"model: iter5\nseed: " + b"9" * 60 + b"\n"],
    "summary.json": [b"", b"[1, 2]", b'{"test_acc": "99%"}', b'{"params": true}', b'{"test_acc": NaN}', b"\xff",
                     # out of range: each once printed nonsense or raised while the table was drawn
                     b'{"test_acc": 2.5}', b'{"val_acc": -0.1}', b'{"params": ' + b"9" * 400 + b"}",
                     b'{"params": -5}', b'{"epochs_run": 1.5}', b'{"train_time_s": 1e999}', b'{"test_acc": Infinity}',
                     b'{"finished_at": "yesterday"}', b'{"finished_at": 12}', b'{"finished_at": "0001-01-01T00:00:00"}',
                     b'{"finished_at": "9999-12-31T23:59:59-12:00"}'],
    "metrics.csv": [b"epoch,val_acc\n1,abc\n", b"\x00\x01\x02", b"just,some\nwords,here\n", b"",
                    b"epoch\n" + b"1\n" * 3,
                    b"epoch,val_acc\nnan,0.9\n", b"epoch,val_acc\ninf,0.9\n", b"epoch,val_acc\n1e400,0.9\n",
                    b"epoch,val_acc\n-1,0.9\n", b"epoch,val_acc\n1.5,0.9\n", b"epoch,val_acc\n1,inf\n",
                    b"epoch,val_acc\n1,7\n", b"epoch,time_s\n1,-3\n", b"epoch,time_s\n1,nan\n",
                    b"epoch,val_acc\n1,nan\n"],
    "trial.json": [b"{", b'"a string"'],
}


def test_damaged_files_make_their_row_say_so(cli, tmp_path):
    cases = [(name, content) for name, contents in HOSTILE.items() for content in contents]
    for i, (name, content) in enumerate(cases):
        run = write_run(tmp_path / f"case{i:02d}" / "20261124-120000", rows=[(0.1, 0.97, 7.0)])
        (run / name).write_bytes(content)
    fifos = {"config.yaml": "case97", "summary.json": "case98", "metrics.csv": "case99"}
    for name, case in fifos.items():  # reading one would keep the listing waiting forever
        run = write_run(tmp_path / case / "20261124-120000")
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    code, out, err = cli("runs", tmp_path, "--json")
    assert code == 0, err
    records = {Path(r["directory"]).parent.name: r for r in json.loads(out)}
    for i, (name, content) in enumerate(cases):
        record = records[f"case{i:02d}"]
        if name == "metrics.csv" and content.startswith(b"epoch\n"):
            assert record["state"] == "unfinished" and record["epochs_run"] == 3  # odd but readable
            continue
        assert record["state"] == "damaged", (name, content, record)
        assert record["problem"].startswith(name) or name in record["problem"], (name, record["problem"])
        assert record["name"] == (f"case{i:02d}" if name == "config.yaml" else "iter5")
    for name, case in fifos.items():
        assert records[case]["state"] == "damaged" and name in records[case]["problem"]
    code, out, err = cli("runs", tmp_path)
    assert code == 0 and err == "" and max(map(len, out.splitlines())) <= 120
    damaged = len(cases) - 1 + len(fifos)  # all but the readable metrics.csv
    assert sum(line.startswith("damaged: ") for line in out.splitlines()) == damaged


def test_an_unfinished_sweep_trial_is_not_resumed_outside_its_sweep(cli, tmp_path):
    """A trial killed mid-run has no trial.json yet; `train --resume` would finish it where the study never
    counts it, so the listing sends people to the sweep instead."""
    killed = write_run(tmp_path / "sweeps" / "lr" / "trials" / "lr-trial0003" / "20261124-120000", "iter5",
                       ["name=lr-trial0003"], rows=[(0.1, 0.97, 7.0)])
    alone = write_run(tmp_path / "checkpoints" / "iter5" / "20261124-120000", rows=[(0.1, 0.97, 7.0)])
    records = {r["directory"]: r for r in runs_json(cli, tmp_path)}
    trial, run = records[str(killed)], records[str(alone)]
    assert trial["state"] == run["state"] == "unfinished" and trial["study"] == "lr"
    assert trial["resume"] is None and run["resume"] == f"mnistlab train --resume {alone}"
    code, out, err = cli("runs", tmp_path)
    assert code == 0 and f"--resume {killed}" not in out and "lr-trial0003" not in out.split("unfinished:")[-1]
    assert "unfinished sweep trials: their sweep finishes them" in out


def test_listing_imports_no_torch(roots):
    code = ("import sys\nfrom mnistlab.cli import main\n"
            f"assert main(['runs', {str(roots)!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr


def test_long_names_keep_their_ends_and_short_tables_are_whole():
    from mnistlab.experiments.history import format_history

    def record(name, model, directory):
        return {"name": name, "model": model, "state": "finished", "smoke": True, "params": 18_422,
                "epochs_run": 3, "epochs": 3, "val_acc": 0.9, "test_acc": None, "time_s": 12.0,
                "date": "2026-11-23T10:02:00+00:00", "directory": directory, "problem": None}

    deep = "/srv/experiments/checkpoints/sweeps/iter5-lr/trials/iter5-lr-trial0003/20261123-100000"
    lines = format_history([record("iter5-lr-trial0003", "baseline_cnn_small", deep)]).splitlines()
    assert max(map(len, lines)) <= 120
    name, model, *_, directory = lines[2].split()
    # cut in the middle at folders: the start (the root) and the timestamp folder kept
    assert directory == "/srv/…/20261123-100000" and deep.endswith(directory.split("…")[1])
    study = "iter5-batch-size-and-rotation-search-trial0003"
    lines = format_history([record(study, "baseline_cnn_small", deep)]).splitlines()
    name, model, *_ = lines[2].split()
    assert max(map(len, lines)) <= 120 and "…" in name and "…" in model
    assert name.startswith("iter5-") and name.endswith("0003")  # which study, which trial: start and end
    assert model.startswith("bas") and model.endswith("mall")  # the model gives up characters before the path
    short = format_history([record("iter5", "iter5", "/srv/iter5/20261123-100000")]).splitlines()
    assert short[2].split()[0] == "iter5" and short[2].endswith("/srv/iter5/20261123-100000")  # nothing clipped


def test_runs_under_several_roots_show_paths_to_paste(cli, tmp_path, monkeypatch):
    """Four iter5 runs with the same start time under four roots: each row's directory is the path to paste
    (relative to here), told apart by the root; a long one is cut in the middle, keeping root and timestamp."""
    roots = ["checkpoints", "quick", "tb_runs", "api/checkpoints"]
    for root in roots:
        write_run(tmp_path / root / "iter5" / "20261207-101010")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("runs", *roots)
    assert code == 0, err
    rows = out.splitlines()[2:6]
    assert sorted(row.split()[-1] for row in rows) == sorted(f"{r}/iter5/20261207-101010" for r in roots)
    for root in roots:
        code, out, _ = cli("runs", f"{root}/iter5")
        assert out.splitlines()[2].split()[-1] == f"{root}/iter5/20261207-101010"

    from mnistlab.experiments.history import clip_path, format_history, run_history

    deep = "api/checkpoints/experiments/2026/december/the-long-study-of-iteration-five/iter5/20261207-101010"
    write_run(tmp_path / deep)
    records = run_history(["api"])
    lines = format_history(records).splitlines()
    assert max(map(len, lines)) <= 120
    shown = lines[2].split()[-1]
    assert shown == "api/checkpoints/…/iter5/20261207-101010"  # the root given, the run's name and time
    assert clip_path("/srv/a/b/c/iter5/20261207-101010", 29) == "/srv/…/iter5/20261207-101010"
    assert clip_path("/srv/a/b/c/iter5/20261207-101010", 21) == "…/20261207-101010"
