"""`mnistlab sweep` with the real parts: a real Optuna study, real trainings, the journal file shared by two
local workers, a real PostgreSQL server with workers killed and joining; and broken sweep files.

Tiny settings (a few batches per epoch) keep every trial to seconds; what is checked is the machinery:
trial counts, unique numbers, nothing left running, pruning, the report, best.yaml training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, write_config
from postgres_server import Unavailable, throwaway_postgres

import optuna  # noqa: E402  (a dependency of mnistlab)

TINY = ["--set", "train.epochs=2", "--set", "train.limit_train_batches=12", "--set", "train.limit_eval_batches=2"]
SWEEP = """base: iter5
study: {study}
objective: val_acc
n_trials: 4
sampler: random
pruner: none
space:
  train.optimizer.lr: {{low: 0.002, high: 0.01, log: true}}
  train.batch_size: [64, 128]
"""


def sweep_file(tmp_path: Path, study: str = "tiny", text: str = SWEEP) -> Path:
    return write_config(tmp_path / f"{study}.yaml", text.format(study=study))


def mnistlab(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def load_study(storage, name: str):
    if isinstance(storage, Path):
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage)))
    return optuna.load_study(study_name=name, storage=storage)


# ---------------------------------------------------------------- broken sweep files: one line, exit 2, before any trial

BROKEN = {
    "unknown-key": ("base: iter5\nspce: {train.epochs: [1]}\n", "spce: unknown key"),
    "no-space": ("base: iter5\n", "space: required key is missing"),
    "empty-space": ("base: iter5\nspace: {}\n", "space"),
    "space-typo": ("base: iter5\nspace: {train.optimizer.lrr: [0.1]}\n", "space.train.optimizer.lrr"),
    "space-value": ("base: iter5\nspace: {train.batch_size: [64, -1]}\n", "space.train.batch_size = -1"),
    "range-order": ("base: iter5\nspace: {train.optimizer.lr: {low: 0.1, high: 0.01}}\n", "low (0.1) must be below"),
    "range-bad-end": ("base: iter5\nspace: {train.optimizer.lr: {low: -1, high: 0.01}}\n", "space.train.optimizer.lr"),
    "set-typo": ("base: iter5\nset: {train.epoch: 3}\nspace: {train.batch_size: [64]}\n", "set:"),
    "test-objective": ("base: iter5\nobjective: test_acc\nspace: {train.batch_size: [64]}\n", "objective"),
    "grid-range": ("base: iter5\nsampler: grid\nspace: {train.optimizer.lr: {low: 0.001, high: 0.01}}\n",
                   "grid sweep needs a list"),
    "no-base": ("base: nosuchconfig\nspace: {train.batch_size: [64]}\n", "config file not found"),
    "no-validation": ("base: iter5\nset: {data.val_split: 0, train.checkpoint_monitor: last, "
                      "train.early_stopping: null}\nspace: {train.batch_size: [64]}\n", "needs a validation set"),
    "bad-model": ("base: iter5\nspace: {model.name: [iter5, itr6]}\n", "space.model.name = 'itr6'"),
    "not-a-mapping": ("- base: iter5\n", "mapping"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_sweep_files_exit_2_with_the_key(cli, tmp_path, case):
    text, expected = BROKEN[case]
    path = write_config(tmp_path / "s.yaml", text)
    code, out, err = cli("sweep", path, "--out-dir", tmp_path / "out")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert expected in err, err
    assert not (tmp_path / "out" / "trials").exists()


# ---------------------------------------------------------------- one machine: two workers on the journal file

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, mnist_root):
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    result = mnistlab("sweep", sweep_file(tmp), "--jobs", "2", *TINY, "--out-dir", out, "--data-dir", mnist_root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return tmp, out, result


def test_two_local_workers_run_each_trial_once(local_sweep):
    _, out, result = local_sweep
    trials = load_study(out / "study.journal", "tiny").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["run_dirs"][0] for t in trials}) == 4  # each trial trained once, in its own run
    for t in trials:
        run = out / t.user_attrs["run_dirs"][0]  # recorded relative to the sweep folder
        record = json.loads((run / "trial.json").read_text())
        assert record["trial"] == t.number and record["params"] == t.params and record["state"] == "complete"
    lines = [x for x in result.stdout.splitlines() if x.startswith("trial ")]
    assert len(lines) == 4 and {"(worker 0)", "(worker 1)"} <= {x.split(":")[0][-10:] for x in lines}


def test_only_the_best_trial_sees_the_test_set_once(local_sweep):
    _, out, _ = local_sweep
    study = load_study(out / "study.journal", "tiny")
    best = study.best_trial
    for t in study.trials:
        summary = json.loads((out / t.user_attrs["run_dirs"][0] / "summary.json").read_text())
        if t.number == best.number:
            assert summary["test_n"] == 10_000 and "once, after the sweep chose" in summary["test_scored"]
        else:
            assert summary["test_acc"] is None and summary["test_n"] == 0
    assert [s["trial"] for s in study.user_attrs["mnistlab:test_scored"]] == [best.number]
    table = (out / "trials.md").read_text()
    assert f"Best: trial {best.number}" in table and "looked at 1 time(s)" in table
    assert (out / "trials.csv").read_text().count("\n") == 5
    for picture in ("optimization_history.png", "parallel_coordinates.png"):
        assert (out / picture).stat().st_size > 10_000


def test_best_yaml_trains_as_it_is(local_sweep, mnist_root):
    tmp, out, _ = local_sweep
    result = mnistlab("train", out / "best.yaml", "--quiet", "--out-dir", tmp / "again", "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr
    assert (tmp / "again" / "tiny-best").is_dir()


def test_the_same_command_with_more_trials_continues_the_study(local_sweep, mnist_root):
    tmp, out, _ = local_sweep
    before = {t.number: t.value for t in load_study(out / "study.journal", "tiny").trials}
    result = mnistlab("sweep", tmp / "tiny.yaml", "--jobs", "2", "--n-trials", "6", *TINY, "--out-dir", out,
                      "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_study(out / "study.journal", "tiny").trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.number: t.value for t in trials if t.number < 4} == before  # the finished ones are kept as they were


# ---------------------------------------------------------------- pruning, folds

def test_pruning_stops_a_hopeless_trial(tmp_path, mnist_root):
    from mnistlab.experiments.sweep import make_storage, open_study, run_worker
    from mnistlab.experiments.sweep_file import load_sweep

    text = SWEEP.replace("pruner: none", "pruner: median").replace("n_trials: 4", "n_trials: 3")
    path = sweep_file(tmp_path, "prune", text)
    sweep, base = load_sweep(path, ["train.epochs=4", "train.limit_train_batches=15", "train.limit_eval_batches=2"])
    out = tmp_path / "out"
    out.mkdir()
    storage = make_storage(None, out)
    study = open_study(sweep, storage)
    for lr in (0.004, 0.005, 1e-7):  # two good trials first: the median pruner needs them to compare with
        study.enqueue_trial({"train.optimizer.lr": lr, "train.batch_size": 64})
    lines = []
    run_worker(sweep, base, out, None, str(mnist_root), log=lines.append)
    trials = load_study(out / "study.journal", "prune").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"], lines
    (run,) = [out / p for p in trials[2].user_attrs["run_dirs"]]
    assert json.loads((run / "trial.json").read_text())["state"] == "pruned"
    assert (run / "metrics.csv").read_text().count("\n") < 1 + 4  # stopped before its last epoch
    assert not (run / "summary.json").exists()


def test_the_median_pruner_spares_the_first_and_the_last_epoch(tmp_path, monkeypatch):
    """Two good finished trials, then a hopeless one: pruned at epoch 2 of 4; with 2 epochs, never."""
    import mnistlab.training.trainer as trainer
    from mnistlab.experiments.sweep import make_storage, objective, open_study
    from mnistlab.experiments.sweep_file import load_sweep

    def training(cfg, *, on_epoch, **kwargs):  # epochs that score what the trial's learning rate says
        score = (lambda epoch: 0.9 + 0.01 * epoch) if cfg.train.optimizer.lr > 0.003 else (lambda epoch: 0.1)
        for epoch in range(1, cfg.train.epochs + 1):
            on_epoch({"epoch": epoch, "val_acc": score(epoch)})
        return {"val_acc": score(cfg.train.epochs)}

    monkeypatch.setattr(trainer, "run_training", training)
    sweep, base = load_sweep(sweep_file(tmp_path, "spare", SWEEP.replace("pruner: none", "pruner: median")))
    study = open_study(sweep, make_storage(None, tmp_path))
    for epochs, expected in ((4, "at epoch 2 "), (2, None)):
        sweep.set["train.epochs"] = epochs
        for lr in (0.005, 0.006, 0.002):
            trial = study.ask()
            try:
                value = objective(trial, sweep, base, tmp_path, None, {"train.optimizer.lr": lr})
            except optuna.TrialPruned as exc:
                assert lr == 0.002 and str(exc).startswith(expected or "never")
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                assert lr > 0.003 or expected is None
                study.tell(trial, value)


def test_a_cross_validated_sweep_averages_its_folds(tmp_path, mnist_root):
    text = SWEEP.replace("n_trials: 4", "n_trials: 1") + "folds: 3\n"
    result = mnistlab("sweep", sweep_file(tmp_path, "cv", text), "--set", "train.epochs=1",
                      "--set", "train.limit_train_batches=8", "--set", "train.limit_eval_batches=1",
                      "--out-dir", tmp_path / "out", "--data-dir", mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = load_study(tmp_path / "out" / "study.journal", "cv").trials
    runs = [tmp_path / "out" / p for p in trial.user_attrs["run_dirs"]]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert sorted(s["fold"] for s in summaries) == [0, 1, 2] and {s["folds"] for s in summaries} == {3}
    assert trial.value == pytest.approx(sum(s["val_acc"] for s in summaries) / 3)


def test_compare_folds_reports_mean_over_folds(cli, tmp_path, mnist_root):
    code, out, err = cli("compare", REPO / "configs" / "iter5.yaml", "--folds", "2", "--set", "train.epochs=1",
                         "--set", "train.limit_train_batches=8", "--set", "train.limit_eval_batches=1",
                         "--out-dir", tmp_path, "--data-dir", mnist_root)
    assert code == 0, err
    assert "seed 1, fold 0" in out and "seed 1, fold 1" in out and "Cross-validated" in out
    runs = list((tmp_path / "iter5").iterdir())
    folds = sorted(json.loads((r / "summary.json").read_text())["fold"] for r in runs)
    assert folds == [0, 1]


def instant_sweep(tmp_path, monkeypatch, n_trials: int, out: Path) -> list[tuple]:
    """The real worker loop with an objective that returns at once; the params of every trial so far."""
    import mnistlab.experiments.sweep as sweep_module
    from mnistlab.experiments.sweep_file import load_sweep

    monkeypatch.setattr(sweep_module, "objective", lambda trial, *rest: trial.number / 100)
    sweep, base = load_sweep(sweep_file(tmp_path, "seeds"))
    out.mkdir(exist_ok=True)
    sweep_module.run_worker(sweep.model_copy(update={"n_trials": n_trials}), base, out, None, None,
                            log=lambda line: None)
    return [tuple(t.params.values()) for t in load_study(out / "study.journal", "seeds").trials]


def test_a_continued_study_draws_new_parameters_and_a_fresh_one_repeats_itself(tmp_path, monkeypatch):
    first = instant_sweep(tmp_path, monkeypatch, 4, tmp_path / "a")
    assert instant_sweep(tmp_path, monkeypatch, 4, tmp_path / "b") == first  # the sweep's seed, both times
    continued = instant_sweep(tmp_path, monkeypatch, 8, tmp_path / "a")
    assert continued[:4] == first and len(set(continued)) == 8  # the worker that continues does not redraw them


GRID = """base: iter5
study: {study}
objective: val_acc
sampler: grid
pruner: none
n_trials: 6
space:
  train.optimizer.lr: [0.001, 0.002, 0.004]
  train.batch_size: [64, 128]
"""


def test_every_worker_of_a_grid_takes_another_point(tmp_path, monkeypatch):
    # GridSampler hands out grid ids and shuffles its grid with its seed: a worker that joined (its own
    # seed for TPE and random) must still read grid id k as the same point, or two trials train one point
    import mnistlab.experiments.sweep as sweep_module
    from mnistlab.experiments.sweep_file import load_sweep

    sweep, base = load_sweep(sweep_file(tmp_path, "grid", GRID))
    first, joined = sweep_module.make_sampler(sweep, first=True), sweep_module.make_sampler(sweep, first=False)
    assert first._all_grids == joined._all_grids
    monkeypatch.setattr(sweep_module, "objective", lambda trial, *rest: trial.number / 100)
    out = tmp_path / "out"
    out.mkdir()
    for n in (1, 3, 6):  # the study's first worker, then workers that join it
        sweep_module.run_worker(sweep.model_copy(update={"n_trials": n}), base, out, None, None, log=lambda line: None)
    points = [tuple(t.params.values()) for t in load_study(out / "study.journal", "grid").trials]
    assert len(points) == 6 and len(set(points)) == 6


def test_a_study_is_joined_only_by_the_same_search(tmp_path):
    from mnistlab.errors import UserError
    from mnistlab.experiments.sweep import make_storage, open_study
    from mnistlab.experiments.sweep_file import load_sweep

    path = sweep_file(tmp_path, "same", SWEEP + "set: {{train.epochs: 3}}\n")
    storage = make_storage(None, tmp_path)
    open_study(load_sweep(path)[0], storage)
    open_study(load_sweep(path, ["train.epochs=3"])[0], storage)  # the same value, written on the command line
    for other in ("train.epochs=4", "train.label_smoothing=0.1"):  # a machine that trains its trials another way
        with pytest.raises(UserError, match="another `set`"):
            open_study(load_sweep(path, [other])[0], storage)
    path.write_text(path.read_text().replace("[64, 128]", "[64, 256]"))
    with pytest.raises(UserError, match="another `space`"):
        open_study(load_sweep(path)[0], storage)


# ---------------------------------------------------------------- many machines: PostgreSQL, a worker killed, one joining

@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on a free localhost port, for this module's tests only."""
    try:
        with throwaway_postgres() as url:
            yield url
    except Unavailable as exc:
        pytest.skip(str(exc))


OPEN_AT_ONCE = """import sys, time
from pathlib import Path
from mnistlab.experiments.sweep import make_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
make_storage(sys.argv[1], Path("."))
"""


def test_workers_starting_together_on_a_fresh_database_all_open_it(postgres, tmp_path):
    """Optuna creates its tables when a storage first opens a database; several workers starting at the same
    moment (a Slurm array) must not collide there."""
    from sqlalchemy import create_engine, text

    base, _, _ = postgres.rpartition("/")
    engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE DATABASE fresh"))
    engine.dispose()
    at = time.time() + 4  # after every interpreter has imported mnistlab
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, f"{base}/fresh", str(at)], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 6, [e.strip().splitlines()[-1] for e in errors if e.strip()]


def start_worker(path, index, url, out, mnist_root, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnistlab", "sweep", str(path), "--worker", str(index),
                             "--storage", url, "--out-dir", str(out), *TINY, "--data-dir", str(mnist_root)],
                            cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_postgres_workers_one_killed_one_joining(tmp_path, mnist_root, postgres):
    env = {"MNISTLAB_SWEEP_HEARTBEAT_S": "1"}  # a silent worker is taken for dead after 6 s
    path = sweep_file(tmp_path, "pg", SWEEP.replace("n_trials: 4", "n_trials: 5"))
    first = start_worker(path, 0, postgres, tmp_path / "a", mnist_root, env)
    doomed = start_worker(path, 1, postgres, tmp_path / "b", mnist_root, env)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill worker 1 in the middle of one of its trials
        try:
            running = [t for t in load_study(postgres, "pg").trials if t.state.name == "RUNNING"
                       and t.user_attrs.get("worker", "").endswith(f":{doomed.pid}")]
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.2)
    assert running, "worker 1 never started a trial"
    time.sleep(1.5)
    doomed.kill()
    doomed.communicate()
    joining = start_worker(path, 2, postgres, tmp_path / "c", mnist_root, env)
    for proc in (first, joining):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    trials = load_study(postgres, "pg").trials
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("COMPLETE") + states.count("PRUNED") == 5
    assert states.count("FAIL") == 1  # the killed worker's trial, retried under a new number
    assert len({t.number for t in trials}) == len(trials)
    retried = [t for t in trials if t.user_attrs.get("mnistlab:retry_of") is not None]
    assert len(retried) == 1 and retried[0].params == trials[retried[0].user_attrs["mnistlab:retry_of"]].params
    assert retried[0].state.name in ("COMPLETE", "PRUNED")


def test_a_packaged_sweep_file_loads_by_name_as_configs_do(tmp_path, monkeypatch):
    from mnistlab.errors import UserError
    from mnistlab.experiments.sweep_file import load_sweep

    monkeypatch.chdir(tmp_path)  # nothing called iter5_lr here: the packaged one
    sweep, base = load_sweep("iter5_lr")
    assert base.name == "iter5.yaml" and sweep.study
    with pytest.raises(UserError, match="sweep file not found: iter5_lrr; did you mean 'iter5_lr'"):
        load_sweep("iter5_lrr")
