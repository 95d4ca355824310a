"""`mnistlab sweep`: hyperparameter search and cross-validation on Optuna, from one machine to many.

Each trial is an ordinary mnistlab run (the one trainer), judged on validation data only: trials never
score the test set; at the end the best trial alone is scored on it, once, and marked so
(sweep_report). Workers share one Optuna study through its storage: a journal file in the sweep
folder (several workers on this machine), or PostgreSQL (workers on any number of machines).

What holds, and how:
- Exactly n_trials trials are counted (complete, pruned, running, or waiting to be retried): a worker
  counts and asks for its next trial under a study-wide lock (a file lock beside the journal;
  PostgreSQL's advisory lock), so two workers never both take the last one.
- A worker killed at any moment loses nothing: every running trial sends a heartbeat; one silent for
  STALE_S is marked failed by whichever worker looks next and re-enqueued with the same parameters
  (Optuna's RetryFailedTrialCallback), so the count still ends at n_trials. Workers wait for the
  trials others are running before they leave, so none is left running while one worker lives.
- Running the same command again continues the study: finished trials are kept, the rest is run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import threading
import time
import zlib
from pathlib import Path

from ..errors import UserError, one_line
from ..files import atomic_write_text
from .sweep_file import SweepConfig, fixed_overrides, override

HEARTBEAT_S = float(os.environ.get("MNISTLAB_SWEEP_HEARTBEAT_S", "10"))  # tests make it short
STALE_S = 6 * HEARTBEAT_S
MAX_RETRY = 3
BEAT = "mnistlab:heartbeat"


# ---------------------------------------------------------------- the study

def make_storage(url: str | None, sweep_dir: Path):
    import optuna

    if url is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal")))
    if not url.startswith(("postgresql", "sqlite", "mysql")):
        raise UserError(f"--storage: got {url!r}; give postgresql://user@host/db (or leave it out: a journal file "
                        f"in the sweep folder)")
    try:
        return rdb_storage(url)
    except ImportError as exc:
        raise UserError(f"--storage: {one_line(exc, 80)}; for PostgreSQL: pip install 'mnistlab[postgres]'") from None
    except Exception as exc:  # noqa: BLE001  (SQLAlchemy's errors: a server that cannot be reached is the user's)
        raise UserError(f"--storage: cannot open {url}: {one_line(exc, 160)}") from None


def rdb_storage(url: str):
    """Optuna's storage on a database. The first to open a fresh PostgreSQL database creates Optuna's
    tables; workers that start together (an array job) would collide there, so they open it one at a time."""
    import optuna
    from sqlalchemy import create_engine

    if not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    engine = create_engine(url)
    try:
        with advisory_lock(engine, "mnistlab:schema"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    finally:
        engine.dispose()


@contextlib.contextmanager
def advisory_lock(engine, name: str):
    """PostgreSQL's advisory lock `name`, held by one connection for every client of the database."""
    from sqlalchemy import text

    key = zlib.crc32(name.encode())
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def open_study(sweep: SweepConfig, storage):
    """Create or load the study; a loaded one must be the same search (objective and space). Workers open
    it under the study lock, so exactly one of them is the study's first (see make_sampler)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                pruner=make_pruner(sweep), load_if_exists=True)
    definition = {"base": sweep.base, "objective": sweep.objective, "folds": sweep.folds,
                  "set": sorted(fixed_overrides(sweep)), "space": json.loads(sweep.model_dump_json())["space"]}
    stored = study.user_attrs.get("mnistlab:definition")
    if stored is None:
        study.set_user_attr("mnistlab:definition", definition)
    elif stored != definition:  # trials trained another way (a machine without the others' --set) are no rivals
        changed = ", ".join(f"`{key}`" for key in definition if stored.get(key) != definition[key])
        raise UserError(f"study {sweep.study!r} already exists with another {changed}; give the sweep another "
                        f"`study:` name (or --study), or run it with the file and --set it was started with")
    study.sampler = make_sampler(sweep, first=stored is None)
    return study


def make_sampler(sweep: SweepConfig, first: bool):
    """The process that starts the study samples with the sweep's seed (a one-worker sweep repeats
    itself); every other one mixes its own in (except for a grid, which the storage shares out). A
    seed per worker number would not do: the worker 0 of each machine, or of a continued study, would
    draw again the parameters of the study's first trials."""
    import optuna

    if sweep.sampler == "grid":
        # GridSampler shuffles its grid with its seed and hands out grid ids: every worker must shuffle
        # alike, or grid id 1 of one worker is grid id 0 of another, and both train the same point
        return grid_sampler({k: v if isinstance(v, list) else v.grid() for k, v in sweep.space.items()}, sweep.seed)
    seed = sweep.seed if first else zlib.crc32(f"{sweep.seed}:{socket.gethostname()}:{os.getpid()}".encode())
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def grid_sampler(grid: dict, seed: int):
    """Optuna's GridSampler without its stop: after the grid's last point it calls study.stop(), which
    Optuna allows only inside study.optimize. Workers here ask and tell, and stop by counting trials."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler(grid, seed=seed)


def make_pruner(sweep: SweepConfig):
    import optuna

    if sweep.pruner == "median":  # never on the first epoch (steps are epochs, from 1), and only once two
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)  # trials have finished
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def grid_size(sweep: SweepConfig) -> int | None:
    if sweep.sampler != "grid":
        return None
    size = 1
    for values in sweep.space.values():
        size *= len(values) if isinstance(values, list) else len(values.grid())
    return size


@contextlib.contextmanager
def study_lock(storage, sweep_dir: Path, study_name: str):
    """One worker at a time counts and asks: PostgreSQL's advisory lock across machines, a file lock
    among the workers of this machine otherwise."""
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        with advisory_lock(engine, f"mnistlab:{study_name}"):
            yield
        return
    import fcntl

    with open(sweep_dir / ".study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- one worker

def take_trial(study, storage, sweep_dir: Path, study_name: str, n_trials: int, log):
    """A worker's turn, under the study lock: fail silent workers' trials, then take the next one (or None)."""
    with study_lock(storage, sweep_dir, study_name):
        fail_stale_trials(study, log)
        return next_trial(study, n_trials)


def next_trial(study, n_trials: int):
    """A trial to run, or None when n_trials are taken (complete, pruned, running or waiting)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    taken = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
                or (t.state == TrialState.FAIL and "error" in t.user_attrs)  # a failed value, not a lost worker
                for t in trials)
    if not waiting and taken >= n_trials:
        return None
    trial = study.ask()
    beat(study, trial._trial_id)  # alive from its first second: no one may take it for stale
    return trial


def beat(study, trial_id: int) -> None:
    study._storage.set_trial_system_attr(trial_id, BEAT, time.time())


def fail_stale_trials(study, log) -> None:
    """Running trials whose worker has been silent for STALE_S: failed, and enqueued again."""
    import optuna
    from optuna.trial import TrialState

    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = max(t.system_attrs.get(BEAT, 0.0), t.datetime_start.timestamp() if t.datetime_start else 0.0)
        if now - last < STALE_S:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001  (it finished, or another worker failed it first)
            continue
        optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)(study, study._storage.get_trial(t._trial_id))
        log(f"trial {t.number}: its worker stopped sending heartbeats {now - last:.0f}s ago; "
            f"marked failed and enqueued again with the same parameters")


class Heartbeat:
    """A thread that tells the storage, every HEARTBEAT_S, that this worker still runs the trial."""

    def __init__(self, study, trial_id: int):
        self.study, self.trial_id, self.stop = study, trial_id, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # one missed beat is no reason to stop training
                beat(self.study, self.trial_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_worker(sweep: SweepConfig, base: Path, sweep_dir: Path, storage_url: str | None, data_dir: str | None,
               worker: int = 0, log=print) -> int:
    """Take trials until n_trials are taken and none of them is still running; the trials this one ran."""
    storage = make_storage(storage_url, sweep_dir)
    with study_lock(storage, sweep_dir, sweep.study):
        study = open_study(sweep, storage)
    n_trials = min(sweep.n_trials, grid_size(sweep) or sweep.n_trials)
    ran = 0
    while True:
        trial = take_trial(study, storage, sweep_dir, sweep.study, n_trials, log)
        if trial is None:
            if not others_running(study):
                return ran
            time.sleep(min(HEARTBEAT_S, 5.0))  # a running trial may still fail and come back to be retried
            continue
        run_trial(study, trial, sweep, base, sweep_dir, data_dir, worker, log)
        ran += 1


def others_running(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


# ---------------------------------------------------------------- one trial

def suggest(trial, key: str, space) -> object:
    if isinstance(space, list):
        return trial.suggest_categorical(key, space)
    if space.whole:
        return trial.suggest_int(key, int(space.low), int(space.high), step=int(space.step or 1))
    return trial.suggest_float(key, space.low, space.high, log=space.log, step=space.step)


def run_trial(study, trial, sweep: SweepConfig, base: Path, sweep_dir: Path, data_dir, worker: int, log) -> None:
    """Train the trial (each fold, with folds), report every epoch to the pruner, tell Optuna the outcome."""
    import optuna
    from optuna.trial import TrialState

    params = {key: suggest(trial, key, space) for key, space in sweep.space.items()}
    shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                      for k, v in params.items())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    started = time.monotonic()
    with Heartbeat(study, trial._trial_id):
        try:
            value = objective(trial, sweep, base, sweep_dir, data_dir, params)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("note", f"pruned {exc}")
            mark_runs(trial, sweep_dir, sweep, "pruned", None, str(exc))
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number} (worker {worker}): {shown}: pruned {exc}")
            return
        except UserError as exc:  # this trial's own problem (a value that does not train): failed, counted
            trial.set_user_attr("error", one_line(exc))
            mark_runs(trial, sweep_dir, sweep, "failed", None, one_line(exc))
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} (worker {worker}): {shown}: FAILED: {one_line(exc)}")
            return
        except BaseException:  # Ctrl-C (or our bug): failed, and enqueued again for the next run to finish
            mark_runs(trial, sweep_dir, sweep, "failed", None, "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)(
                study, study._storage.get_trial(trial._trial_id))
            raise
    mark_runs(trial, sweep_dir, sweep, "complete", value, None)
    study.tell(trial, value)
    shown_value = f"{value:.2%}" if sweep.objective == "val_acc" else f"{value:.4f}"
    log(f"trial {trial.number} (worker {worker}): {shown}: {sweep.objective} {shown_value} "
        f"({time.monotonic() - started:.0f}s)")


def objective(trial, sweep: SweepConfig, base: Path, sweep_dir: Path, data_dir, params: dict) -> float:
    """The mean over folds (or the one run) of the selected checkpoint's validation metric."""
    import optuna

    from ..config import load_config
    from ..training.engine import NonFiniteLoss
    from ..training.trainer import run_training

    values = []
    folds = list(range(sweep.folds)) if sweep.folds else [None]
    overrides = [*fixed_overrides(sweep), *(override(k, v) for k, v in params.items()),
                 f"name={sweep.study}-trial{trial.number:04d}"]
    for position, fold in enumerate(folds):
        extra = [f"data.folds={sweep.folds}", f"data.fold={fold}"] if fold is not None else []
        cfg = load_config(base, [*overrides, *extra])
        first_step, last_step = position * cfg.train.epochs, len(folds) * cfg.train.epochs

        def report(row: dict, fold=fold, first_step=first_step, last_step=last_step) -> None:
            step = first_step + row["epoch"]
            trial.report(row[sweep.objective], step)
            if step < last_step and trial.should_prune():  # after the last epoch, pruning would save nothing
                where = f" of fold {fold}" if fold is not None else ""
                raise optuna.TrialPruned(f"at epoch {row['epoch']}{where} ({sweep.objective} "
                                         f"{row[sweep.objective]:.4g})")

        try:
            summary = run_training(cfg, data_dir=data_dir, out_dir=sweep_dir / "trials", quiet=True,
                                   log=lambda *a, **k: None, on_epoch=report, score_test=False)
        except NonFiniteLoss as exc:  # a hopeless trial, not a broken one: pruned
            raise optuna.TrialPruned(f"(diverged: {one_line(exc, 80)})") from None
        values.append(summary[sweep.objective])
    return statistics.fmean(values)


def mark_runs(trial, sweep_dir: Path, sweep: SweepConfig, state: str, value, note: str | None) -> None:
    """trial.json in each of the trial's run directories; a finished run's summary.json gets it too.
    Called before Optuna is told the outcome: a finished trial's attributes cannot change."""
    record = {"study": sweep.study, "trial": trial.number, "state": state, "objective": sweep.objective,
              "value": value, "params": trial.params, "note": note}
    run_dirs = sorted((sweep_dir / "trials" / f"{sweep.study}-trial{trial.number:04d}").glob("*/config.yaml"))
    trial.set_user_attr("run_dirs", [str(p.parent) for p in run_dirs])
    for config_file in run_dirs:
        run_dir = config_file.parent
        atomic_write_text(run_dir / "trial.json", json.dumps(record, indent=2) + "\n")
        summary_file = run_dir / "summary.json"
        if summary_file.exists():
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            atomic_write_text(summary_file, json.dumps({**summary, "trial": record}, indent=2) + "\n")


# ---------------------------------------------------------------- the command

def run_sweep(path: str, *, n_trials: int | None = None, jobs: int = 1, storage: str | None = None,
              study: str | None = None, out_dir: str | None = None, overrides: list[str] = (),
              data_dir: str | None = None, confirm_seeds: str | None = None, worker: int | None = None,
              log=print) -> int:
    """`mnistlab sweep`: workers here until the study is done, then the report (and --confirm-seeds)."""
    from ..files import make_dir
    from .sweep_file import load_sweep

    sweep, base = load_sweep(path, list(overrides))
    sweep = sweep.model_copy(update={k: v for k, v in (("study", study), ("n_trials", n_trials)) if v is not None})
    if study is not None:
        type(sweep).model_validate({**sweep.model_dump(), "study": study})  # the name becomes a folder
    sweep_dir = make_dir(Path(out_dir) if out_dir else Path("checkpoints") / "sweeps" / sweep.study, "--out-dir")
    if worker is not None:  # one of the processes started below
        run_worker(sweep, base, sweep_dir, storage, data_dir, worker, log)
        return 0
    check_data(base, data_dir)
    log(f"sweep {sweep.study}: {sweep.n_trials} trials of {base} on {sweep.objective} ({sweep.sampler} sampler, "
        f"{sweep.pruner} pruner{f', {sweep.folds} folds' if sweep.folds else ''}), storage "
        f"{storage or sweep_dir / 'study.journal'}, {jobs} worker(s) here; results in {sweep_dir}")
    code = 0
    try:
        if jobs == 1:
            run_worker(sweep, base, sweep_dir, storage, data_dir, 0, log)
        else:
            code = run_workers(path, sweep, sweep_dir, storage, list(overrides), data_dir, jobs, log)
    except KeyboardInterrupt:
        log("interrupted: the study keeps every finished trial; continue it with the same command")
        return 130
    return report_and_confirm(sweep, sweep_dir, storage, data_dir, confirm_seeds, log) or code


def check_data(base: Path, data_dir) -> None:
    """The dataset is there (or can be fetched) before any worker starts: one line now, not N failed trials."""
    from ..config import USER_DATASETS, load_config
    from ..data.datasets import DATASETS, load_data, load_split, resolve_root

    cfg = load_config(base)
    if cfg.data.dataset in USER_DATASETS:  # a user's set is read, checked and its images prepared (and cached) now
        load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root))
        return
    load_split(DATASETS[cfg.data.dataset], resolve_root(data_dir, cfg.data.root), train=False,
               download=cfg.data.download)


def run_workers(path, sweep: SweepConfig, sweep_dir: Path, storage, overrides, data_dir, jobs: int, log) -> int:
    """`jobs` worker processes of this command (a GPU each where there are GPUs, else the cores shared)."""
    import signal
    import subprocess
    import sys

    from .parallel import sigint_default, worker_threads

    gpus = gpu_count()
    common = ["--out-dir", str(sweep_dir), "--study", sweep.study, "--n-trials", str(sweep.n_trials),
              *(["--storage", storage] if storage else []), *(["--data-dir", data_dir] if data_dir else []),
              *(a for o in overrides for a in ("--set", o))]
    procs = []
    for i in range(jobs):
        env = {**os.environ, "OMP_NUM_THREADS": str(worker_threads(jobs))}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "mnistlab", "sweep", str(path), "--worker", str(i),
                                       *common], stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                      preexec_fn=sigint_default))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    failed = [c for c in codes if c != 0]
    if failed:
        log(f"{len(failed)} of {jobs} workers stopped with an error (above); the report covers what finished")
    return 1 if failed else 0


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def report_and_confirm(sweep: SweepConfig, sweep_dir: Path, storage_url, data_dir, confirm_seeds, log) -> int:
    from .sweep_report import write_report

    storage = make_storage(storage_url, sweep_dir)
    study = open_study(sweep, storage)
    best = write_report(study, sweep, sweep_dir, data_dir, lambda: study_lock(storage, sweep_dir, sweep.study), log)
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    log(f"sweep {sweep.study}: {len(states)} trials: "
        + ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s)))
    if best is None:
        log(f"no trial completed; wrote {sweep_dir / 'trials.md'}")
        return 1
    scored = study.user_attrs.get("mnistlab:test_scored", [])
    test = next((s for s in scored if s["trial"] == best["trial"]), None)
    value = best[f"objective_{sweep.objective}"]
    log(f"best: trial {best['trial']}, {sweep.objective} "
        + (f"{value:.2%}" if sweep.objective == "val_acc" else f"{value:.4f}") + " on validation data"
        + (f"; its test accuracy {test['test_acc']:.2%} (scored once, after the choice)" if test else ""))
    log(f"wrote {sweep_dir / 'trials.md'}, trials.csv, the plots and {sweep_dir / 'best.yaml'}")
    if confirm_seeds:
        from .compare import run_compare

        return run_compare([str(sweep_dir / "best.yaml")], seeds=confirm_seeds, out_dir=sweep_dir / "confirm",
                           data_dir=data_dir, log=log)
    return 0
