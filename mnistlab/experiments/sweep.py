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
  STALE_BEATS heartbeats is marked failed by whichever worker looks next and enqueued again with the same
  parameters (enqueue_retry), so the count still ends at n_trials. A worker that was only paused, and
  wakes to find its trial failed and retried, drops it and goes on (Superseded). Workers wait for the
  trials others are running before they leave, so none is left running while one worker lives.
- Running the same command again continues the study: finished trials are kept, the rest is run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import threading
import time
import warnings
import zlib
from pathlib import Path

from ..errors import UserError, one_line
from ..files import atomic_write_text
from ..runfolder import CONFIG, SUMMARY, TRIAL, read_summary
from .sweep_file import SweepConfig, fixed_overrides, grid_size, override
from .sweep_report import RETRIES, RETRY_OF
from .sweep_storage import describe, make_storage, storage_url, study_lock
from .sweep_tracking import mark_best, parent_run, trial_tags

HEARTBEAT_ENV = "MNISTLAB_SWEEP_HEARTBEAT_S"  # tests make it short
HEARTBEAT_DEFAULT_S, HEARTBEAT_BOUNDS_S = 10.0, (0.1, 3600.0)  # an hour's silence is the longest a trial may wait
STALE_BEATS = 6  # a trial whose worker missed this many heartbeats is taken for dead
MAX_RETRY = 3
BEAT = "mnistlab:heartbeat"


def heartbeat_s() -> float:
    """Seconds between a running trial's heartbeats: MNISTLAB_SWEEP_HEARTBEAT_S, checked."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip() or str(HEARTBEAT_DEFAULT_S)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = HEARTBEAT_BOUNDS_S
    if not low <= value <= high:  # nan and inf fail here too
        raise UserError(f"{HEARTBEAT_ENV}: got {text!r}; give seconds between heartbeats, from {low:g} to {high:g} "
                        f"(default {HEARTBEAT_DEFAULT_S:g})")
    return value


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's warnings (experimental features, deprecations) are about our code, not the user's: kept
    off the terminal; what the user must know, mnistlab says in its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", module=r"optuna(\.|$)")  # e.g. importances from too few trials
        warnings.filterwarnings("ignore", message=r".*(deprecated|removed) in v\d", category=FutureWarning)
        yield


# ---------------------------------------------------------------- the study

def study_definition(sweep: SweepConfig) -> dict:
    """What makes two sweeps one search: the resolved base config (its settings, not its file's name),
    the objective, the folds, the fixed settings (but train.mlflow: where it is logged) and the space."""
    fixed = sorted(item for item in fixed_overrides(sweep) if not item.startswith("train.mlflow"))
    return {"base": sweep.base_config() or sweep.base, "objective": sweep.objective, "folds": sweep.folds,
            "set": fixed, "space": json.loads(sweep.model_dump_json())["space"]}


def open_study(sweep: SweepConfig, storage):
    """Create or load the study; a loaded one must be the same search (study_definition). Workers open
    it under the study lock, so exactly one of them is the study's first (see make_sampler)."""
    import optuna

    with quiet_optuna():
        study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                    pruner=make_pruner(sweep), load_if_exists=True)
        definition = study_definition(sweep)
        stored = study.user_attrs.get("mnistlab:definition")
        if stored is not None and isinstance(stored.get("base"), str) and stored["base"] == sweep.base:
            stored = {**stored, "base": definition["base"]}  # a study of an earlier mnistlab: only the name kept
            study.set_user_attr("mnistlab:definition", stored)
        if stored is None:
            study.set_user_attr("mnistlab:definition", definition)
        elif stored != definition:  # trials trained another way (a machine without the others' --set) are no rivals
            changed = ", ".join(f"`{key}`" for key in definition if stored.get(key) != definition[key])
            raise UserError(f"study {sweep.study!r} already exists with another {changed}; give the sweep another "
                            f"`study:` name (or --study), or run it with the files and --set it was started with")
        if study.metric_names is None:  # optuna-dashboard and the plots label the objective with it
            study.set_metric_names([sweep.objective])
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


# Optuna has no public route from a Trial to its storage's trial id, nor to a study's storage: the
# heartbeat, the stale check and the "is it still mine" check use study._storage and trial._trial_id.

def beat(study, trial_id: int) -> None:
    study._storage.set_trial_system_attr(trial_id, BEAT, time.time())


def still_running(study, trial) -> bool:
    """The trial is still this worker's: no other worker took it for dead (this one was paused, say)."""
    from optuna.trial import TrialState

    return study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING


def fail_stale_trials(study, log) -> None:
    """Running trials whose worker has been silent for STALE_BEATS heartbeats: failed, and enqueued again."""
    from optuna.trial import TrialState

    now, stale_s = time.time(), STALE_BEATS * heartbeat_s()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = max(t.system_attrs.get(BEAT, 0.0), t.datetime_start.timestamp() if t.datetime_start else 0.0)
        if now - last < stale_s:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001  (it finished, or another worker failed it first)
            continue
        retried = enqueue_retry(study, t)
        log(f"trial {t.number}: its worker stopped sending heartbeats {now - last:.0f}s ago; marked failed"
            + (" and enqueued again with the same parameters" if retried else f", retried {MAX_RETRY} times already"))


def enqueue_retry(study, failed) -> bool:
    """A trial its worker lost (killed, interrupted), waiting to run again with the same parameters (and
    grid point), up to MAX_RETRY times; its user attributes name the first trial of the chain. Optuna's
    RetryFailedTrialCallback did this; Optuna 6 removes it, and its successor is experimental."""
    import optuna
    from optuna.trial import TrialState

    retries = failed.user_attrs.get(RETRIES, len(failed.system_attrs.get("retry_history", []))) + 1
    if retries > MAX_RETRY:
        return False
    first = failed.user_attrs.get(RETRY_OF, failed.system_attrs.get("failed_trial", failed.number))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs={RETRY_OF: first, RETRIES: retries},
        system_attrs={k: v for k, v in failed.system_attrs.items() if k != BEAT}))  # grid_id: the same point
    return True


class Heartbeat:
    """A thread that tells the storage, every heartbeat_s(), that this worker still runs the trial."""

    def __init__(self, study, trial_id: int):
        self.study, self.trial_id, self.stop = study, trial_id, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.every = heartbeat_s()

    def run(self) -> None:
        while not self.stop.wait(self.every):
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
            time.sleep(min(heartbeat_s(), 5.0))  # a running trial may still fail and come back to be retried
            continue
        run_trial(study, trial, sweep, base, sweep_dir, data_dir, worker, log, storage=storage)
        ran += 1


def others_running(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


# ---------------------------------------------------------------- one trial

class Superseded(Exception):
    """This worker's trial was taken for dead (the worker was paused, or cut off) and failed by another."""


def suggest(trial, key: str, space) -> object:
    if isinstance(space, list):
        return trial.suggest_categorical(key, space)
    if space.whole:
        return trial.suggest_int(key, int(space.low), int(space.high), step=int(space.step or 1))
    return trial.suggest_float(key, space.low, space.high, log=space.log, step=space.step)


def run_trial(study, trial, sweep: SweepConfig, base: Path, sweep_dir: Path, data_dir, worker: int, log,
              storage=None) -> None:
    """Train the trial (each fold, with folds), report every epoch to the pruner, tell Optuna the outcome."""
    import optuna
    from optuna.trial import TrialState

    params = {key: suggest(trial, key, space) for key, space in sweep.space.items()}
    shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                      for k, v in params.items())
    name = f"trial {trial.number} (worker {worker}): {shown}"
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    started = time.monotonic()
    end = TrialEnd(study, trial, sweep, sweep_dir, storage if storage is not None else study._storage)
    with Heartbeat(study, trial._trial_id):
        try:
            value = objective(trial, sweep, base, sweep_dir, data_dir, params)
        except Superseded:
            log(f"{name}: taken for dead while this worker was stopped, and retried by another: this worker's "
                f"run of it is left as it is")
            return
        except optuna.TrialPruned as exc:
            end.tell(TrialState.PRUNED, None, str(exc), log, f"{name}: pruned {exc}", {"note": f"pruned {exc}"})
            return
        except UserError as exc:  # this trial's own problem (a value that does not train): failed, counted
            end.tell(TrialState.FAIL, None, one_line(exc), log, f"{name}: FAILED: {one_line(exc)}",
                     {"error": one_line(exc)})
            return
        except BaseException:  # Ctrl-C, SIGTERM (or our bug): failed, and enqueued again for the next run to finish
            with contextlib.suppress(Exception):  # the interruption is what the user must see, not a second error
                if end.tell(TrialState.FAIL, None, "interrupted", lambda line: None, ""):
                    enqueue_retry(study, study._storage.get_trial(trial._trial_id))
            raise
    shown_value = f"{value:.2%}" if sweep.objective == "val_acc" else f"{value:.4f}"
    end.tell(TrialState.COMPLETE, value, None, log,
             f"{name}: {sweep.objective} {shown_value} ({time.monotonic() - started:.0f}s)")


class TrialEnd:
    """Tells Optuna a trial's outcome, if the trial is still this worker's: under the study lock, where
    no other worker can fail it between the look and the tell."""

    def __init__(self, study, trial, sweep: SweepConfig, sweep_dir: Path, storage):
        self.study, self.trial, self.sweep, self.sweep_dir, self.storage = study, trial, sweep, sweep_dir, storage

    def tell(self, state, value, note: str | None, log, line: str, user_attrs: dict | None = None) -> bool:
        with study_lock(self.storage, self.sweep_dir, self.sweep.study):
            if not still_running(self.study, self.trial):
                log(f"trial {self.trial.number}: taken for dead while its worker was stopped, and retried by "
                    f"another: its outcome here is not told")
                return False
            for key, attr in (user_attrs or {}).items():
                self.trial.set_user_attr(key, attr)
            mark_runs(self.trial, self.sweep_dir, self.sweep, state.name.lower().replace("fail", "failed"),
                      value, note)
            self.study.tell(self.trial, value, state=state)
        if line:
            log(line)
        return True


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
            if not still_running(trial.study, trial):  # this worker was stopped, and its trial given to another
                raise Superseded()
            step = first_step + row["epoch"]
            trial.report(row[sweep.objective], step)
            if step < last_step and trial.should_prune():  # after the last epoch, pruning would save nothing
                where = f" of fold {fold}" if fold is not None else ""
                raise optuna.TrialPruned(f"at epoch {row['epoch']}{where} ({sweep.objective} "
                                         f"{row[sweep.objective]:.4g})")

        try:
            summary = run_training(cfg, data_dir=data_dir, out_dir=sweep_dir / "trials", quiet=True,
                                   log=lambda *a, **k: None, on_epoch=report, score_test=False,
                                   mlflow_tags=trial_tags(sweep.study, trial.number))
        except NonFiniteLoss as exc:  # a hopeless trial, not a broken one: pruned
            raise optuna.TrialPruned(f"(diverged: {one_line(exc, 80)})") from None
        values.append(summary[sweep.objective])
    return statistics.fmean(values)


def mark_runs(trial, sweep_dir: Path, sweep: SweepConfig, state: str, value, note: str | None) -> None:
    """trial.json in each of the trial's run directories; a finished run's summary.json gets it too.
    Called before Optuna is told the outcome: a finished trial's attributes cannot change. The study
    records the run directories relative to the sweep folder (trials/NAME/STAMP): it can be continued
    and reported from any folder, and on any machine that mounts the sweep folder elsewhere."""
    record = {"study": sweep.study, "trial": trial.number, "state": state, "objective": sweep.objective,
              "value": value, "params": trial.params, "note": note}
    run_dirs = sorted((sweep_dir / "trials" / f"{sweep.study}-trial{trial.number:04d}").glob(f"*/{CONFIG}"))
    trial.set_user_attr("run_dirs", [p.parent.relative_to(sweep_dir).as_posix() for p in run_dirs])
    for config_file in run_dirs:
        run_dir = config_file.parent
        atomic_write_text(run_dir / TRIAL, json.dumps(record, indent=2) + "\n")
        summary = read_summary(run_dir)  # damaged: one UserError naming it
        if summary is not None:
            atomic_write_text(run_dir / SUMMARY, json.dumps({**summary, "trial": record}, indent=2) + "\n")


# ---------------------------------------------------------------- the command

def run_sweep(path: str, *, n_trials: int | None = None, jobs: int = 1, storage: str | None = None,
              study: str | None = None, out_dir: str | None = None, overrides: list[str] = (),
              data_dir: str | None = None, confirm_seeds: str | None = None, worker: int | None = None,
              log=print) -> int:
    """`mnistlab sweep`: workers here until the study is done, then the report (and --confirm-seeds); the
    exit code."""
    return sweep_study(path, n_trials=n_trials, jobs=jobs, storage=storage, study=study, out_dir=out_dir,
                       overrides=overrides, data_dir=data_dir, confirm_seeds=confirm_seeds, worker=worker, log=log)[0]


def sweep_study(path: str, *, n_trials: int | None = None, jobs: int = 1, storage: str | None = None,
                study: str | None = None, out_dir: str | None = None, overrides: list[str] = (),
                data_dir: str | None = None, confirm_seeds: str | None = None, worker: int | None = None,
                log=print) -> tuple[int, dict | None]:
    """run_sweep's work: the exit code and the best trial's row (None: no trial completed, interrupted, or a
    worker), with its study, sweep folder, best.yaml and its test accuracy (scored once) added."""
    from ..config import folder_name_problem
    from ..files import make_dir
    from .parallel import stop_on_signals
    from .plan import parse_seeds
    from .sweep_file import load_sweep

    heartbeat_s()  # the environment and every option are checked before any trial
    parse_seeds(confirm_seeds, "--confirm-seeds")
    problem = folder_name_problem(study, "--study: the study name")
    if problem:
        raise UserError(problem)
    storage = storage_url(storage)
    sweep, base = load_sweep(path, list(overrides))
    sweep = sweep.model_copy(update={k: v for k, v in (("study", study), ("n_trials", n_trials)) if v is not None})
    sweep_dir = make_dir(Path(out_dir) if out_dir else Path("checkpoints") / "sweeps" / sweep.study, "--out-dir")
    with quiet_optuna(), stop_on_signals():  # SIGTERM and SIGHUP stop it as Ctrl-C does
        if worker is not None:  # one of the processes started below
            run_worker(sweep, base, sweep_dir, storage, data_dir, worker, log)
            return 0, None
        return run_study(path, sweep, base, sweep_dir, storage, list(overrides), data_dir, jobs, confirm_seeds, log)


def run_study(path, sweep: SweepConfig, base: Path, sweep_dir: Path, storage, overrides, data_dir, jobs: int,
              confirm_seeds, log) -> tuple[int, dict | None]:
    """Workers here (this process, or `jobs` processes) until the study is done; then the report."""
    check_data(base, data_dir)
    make_storage(storage, sweep_dir)  # a storage refused here is one line, not one per worker
    log(f"sweep {sweep.study}: {sweep.n_trials} trials of {base} on {sweep.objective} ({sweep.sampler} sampler, "
        f"{sweep.pruner} pruner{f', {sweep.folds} folds' if sweep.folds else ''})")  # two lines: 120 columns
    log(f"  storage {describe(storage, sweep_dir)}, {jobs} worker(s) here; results in {sweep_dir}")
    code = 0
    with parent_run(base, sweep, sweep_dir, log) as tracker:  # train.mlflow: the study's run, parent of the trials'
        try:
            if jobs == 1:
                run_worker(sweep, base, sweep_dir, storage, data_dir, 0, log)
            else:
                code = run_workers(path, sweep, sweep_dir, storage, overrides, data_dir, jobs, log)
        except KeyboardInterrupt as exc:
            log("interrupted: the study keeps every finished trial; continue it with the same command")
            if tracker is not None:
                tracker.end("KILLED")
            return getattr(exc, "code", 130), None
        reported, best = report_and_confirm(sweep, sweep_dir, storage, data_dir, confirm_seeds, log, tracker)
        return reported or code, best


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
    """`jobs` worker processes of this command (a GPU each where there are GPUs, else the cores shared).
    The storage URL goes to them in their environment: a command line is readable by every user."""
    import subprocess
    import sys

    from .parallel import STOP_GRACE_S, kill_left, stop_processes, worker_setup, worker_threads
    from .sweep_storage import STORAGE_ENV

    gpus = gpu_count()
    common = ["--out-dir", str(sweep_dir), "--study", sweep.study, "--n-trials", str(sweep.n_trials),
              *(["--data-dir", data_dir] if data_dir else []), *(a for o in overrides for a in ("--set", o))]
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    env.update({"OMP_NUM_THREADS": str(worker_threads(jobs)), **({STORAGE_ENV: storage} if storage else {})})
    procs = []
    try:
        for i in range(jobs):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mnistlab", "sweep", str(path), "--worker", str(i), *common],
                stdin=subprocess.DEVNULL, env={**env, **({"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {})},
                start_new_session=True, preexec_fn=worker_setup(os.getpid())))
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: each worker fails its trial and enqueues it again, then ends
        stop_processes(procs, STOP_GRACE_S)
        raise
    finally:
        kill_left(procs)  # after an unexpected error, or a second interrupt: no worker outlives this process
    failed = [c for c in codes if c != 0]
    if failed:
        log(f"{len(failed)} of {jobs} workers stopped with an error (above); the report covers what finished")
    return 1 if failed else 0


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def report_and_confirm(sweep: SweepConfig, sweep_dir: Path, storage_url, data_dir, confirm_seeds, log,
                       tracker=None) -> tuple[int, dict | None]:
    from .sweep_report import write_report

    storage = make_storage(storage_url, sweep_dir)
    study = open_study(sweep, storage)
    best, best_yaml = write_report(study, sweep, sweep_dir, data_dir,
                                   lambda: study_lock(storage, sweep_dir, sweep.study), log)
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    log(f"sweep {sweep.study}: {len(states)} trials: "
        + ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s)))
    if best is None:
        log(f"no trial completed; wrote {sweep_dir / 'trials.md'}")
        return 1, None
    scored = study.user_attrs.get("mnistlab:test_scored", [])
    test = next((s for s in scored if s["trial"] == best["trial"]), None)
    value = best[f"objective_{sweep.objective}"]
    if tracker is not None:
        mark_best(tracker, sweep, best["trial"], value)
    log(f"best: trial {best['trial']}, {sweep.objective} "
        + (f"{value:.2%}" if sweep.objective == "val_acc" else f"{value:.4f}") + " on validation data"
        + (f"; its test accuracy {test['test_acc']:.2%} (scored once, after the choice)" if test else ""))
    log(f"wrote {sweep_dir / 'trials.md'}, trials.csv, the plots" + (f" and {best_yaml}" if best_yaml else ""))
    best = {**best, "study": sweep.study, "sweep_dir": str(sweep_dir), "best_yaml": best_yaml and str(best_yaml),
            "test_acc": test["test_acc"] if test else None}
    if confirm_seeds and best_yaml is None:
        log("--confirm-seeds: skipped: best.yaml needs the best trial's run directory, which is not on this machine")
        return 1, best
    if confirm_seeds:
        from .compare import run_compare

        return run_compare([str(best_yaml)], seeds=confirm_seeds, out_dir=sweep_dir / "confirm",
                           data_dir=data_dir, log=log), best
    return 0, best
