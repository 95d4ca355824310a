"""What `mnistlab sweep`'s own machinery costs per trial, and what it adds to a real trial.

    MNISTLAB_DATA_DIR=../shared/data python bench/sweep_scale.py [--trials 10,100,1000] [--workers 8]
        [--storage postgresql://user@host/db] [--repeats 5] [--batches 100] [--threads 1]

(a) The study's overhead per trial: `--workers` processes each run mnistlab's worker loop (run_worker:
the study lock, stale trials failed, the next trial asked, its heartbeat thread, trial.json, tell) on
one study of sweeps/iter5_lr.yaml's search (TPE, median pruner), with an objective that returns at
once, so all the time is the sampler's and the storage's. On the journal file, then on PostgreSQL: a
throwaway server started as tests/test_sweep.py starts it, or --storage (its studies are deleted
afterwards); without either, the PostgreSQL rows are skipped with the reason. The clock starts once
every worker has imported mnistlab and opened the study once (tables and study made, as when a
worker joins a study under way) and stops at the last trial told. Printed: the study's wall clock per
trial; each worker's time per trial (from run_worker's own opening of the study, then between its
trials, waits for the lock included); that opening, which a worker pays once.

(b) A real tiny trial: iter5 for one epoch of --batches batches (validation on all 6,000 images),
taken and run by a worker's turn (take_trial, run_trial), against the trainer alone on the same config
(run_training without the test set, which trials never score), alternating in this process, one
untimed round first, in --threads torch threads. The trial's extra time is its total less the
trainer inside it; medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import mnistlab.experiments.sweep as sweep_module  # noqa: E402
from mnistlab.experiments.sweep_file import SweepConfig, load_sweep  # noqa: E402
from postgres_server import Unavailable, throwaway_postgres  # noqa: E402

SEARCH = REPO / "sweeps" / "iter5_lr.yaml"


def instant(trial, sweep, base, sweep_dir, data_dir, params) -> float:
    """The objective of part (a): no training; a value with a peak, so TPE has something to model."""
    return -abs(math.log(params["train.optimizer.lr"] / 0.004)) - params["data.augment.rotate"] / 100


# ---------------------------------------------------------------- (a) one study, many worker processes

def worker(spec: dict) -> None:
    """One worker process of part (a): ready, wait for go, run mnistlab's loop, print when each trial ended."""
    sweep = SweepConfig.model_validate(spec["sweep"])
    sweep_dir, url = Path(spec["dir"]), spec["url"]
    storage = sweep_module.make_storage(url, sweep_dir)  # imports done, tables and study made: off the clock
    with sweep_module.study_lock(storage, sweep_dir, sweep.study):
        sweep_module.open_study(sweep, storage)
    sweep_module.objective = instant
    told, opened, open_study = [], [], sweep_module.open_study

    def open_and_note(*args, **kwargs):
        study = open_study(*args, **kwargs)
        opened.append(time.time())
        return study

    sweep_module.open_study = open_and_note  # run_worker opens the study as every worker does: on the clock
    print("ready", flush=True)
    sys.stdin.readline()
    go = time.time()
    sweep_module.run_worker(sweep, Path(spec["base"]), sweep_dir, url, None, spec["index"],
                            log=lambda line: told.append(time.time()) if "(worker " in line else None)
    print(json.dumps({"go": go, "opened": opened[0], "told": told}), flush=True)


def run_study(url: str | None, n: int, workers: int, root: Path) -> dict:
    """Part (a) for one storage and trial count: the figures, and what the study holds afterwards."""
    sweep, base = load_sweep(SEARCH)
    sweep = sweep.model_copy(update={"study": f"scale-{n}-{os.getpid()}-{time.time_ns()}", "n_trials": n})
    sweep_dir = root / sweep.study
    sweep_dir.mkdir()
    procs = []
    for index in range(workers):
        spec = {"sweep": sweep.model_dump(mode="json"), "base": str(base), "dir": str(sweep_dir), "url": url,
                "index": index}
        procs.append(subprocess.Popen([sys.executable, __file__, "--as-worker", json.dumps(spec)], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=open(sweep_dir / f"worker{index}.err", "w"),  # noqa: SIM115
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for index, proc in enumerate(procs):
        if proc.stdout.readline().strip() != "ready":
            sys.exit(f"worker {index} did not start: {(sweep_dir / f'worker{index}.err').read_text()[-2000:]}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for index, proc in enumerate(procs):
        out, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"worker {index} failed: {(sweep_dir / f'worker{index}.err').read_text()[-2000:]}")
        results.append(json.loads(out.splitlines()[-1]))
    return figures(results, n) | {"states": study_states(sweep, url, sweep_dir)}


def figures(results: list[dict], n: int) -> dict:
    go = min(r["go"] for r in results)
    told = [t for r in results for t in r["told"]]
    gaps = [b - a for r in results for a, b in zip([r["opened"], *r["told"]], r["told"])]
    return {"trials": len(told), "wall": max(told) - go, "per_trial": (max(told) - go) / n,
            "open": statistics.median(r["opened"] - r["go"] for r in results), "gap_median": statistics.median(gaps),
            "gap_p90": statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else gaps[0]}


def study_states(sweep: SweepConfig, url: str | None, sweep_dir: Path) -> str:
    """How many trials the study holds, by state (exactly n complete is what the loop promises); a study
    in someone's own database is deleted afterwards."""
    import optuna

    storage = sweep_module.make_storage(url, sweep_dir)
    trials = optuna.load_study(study_name=sweep.study, storage=storage).get_trials(deepcopy=False)
    if url is not None:
        optuna.delete_study(study_name=sweep.study, storage=storage)
    states = [t.state.name.lower() for t in trials]
    return ", ".join(f"{states.count(s):,} {s}" for s in sorted(set(states)))


def print_overheads(stores: dict, counts: list[int], workers: int) -> None:
    print(f"\n(a) the study's own cost per trial: {workers} worker processes on one study, mnistlab's worker loop, "
          f"an objective that returns at once; the search of {SEARCH.relative_to(REPO)} (TPE, median pruner)\n")
    print(f"  {'storage':<14}{'trials':>7}{'wall s':>9}{'wall / trial':>15}{'a worker per trial':>21}"
          f"{'(p90)':>11}{'opening':>11}   the study afterwards")
    with tempfile.TemporaryDirectory(prefix="mnistlab-sweep-scale-") as tmp:
        for label, url in stores.items():
            for n in counts:
                row = run_study(url, n, workers, Path(tmp))
                print(f"  {label:<14}{n:>7,}{row['wall']:>9.2f}{row['per_trial'] * 1e3:>12.1f} ms"
                      f"{row['gap_median'] * 1e3:>18.1f} ms{row['gap_p90'] * 1e3:>8.1f} ms"
                      f"{row['open'] * 1e3:>8.0f} ms   {row['states']}", flush=True)


# ---------------------------------------------------------------- (b) a real tiny trial against the trainer alone

def tiny_sweep(batches: int) -> tuple[SweepConfig, Path]:
    """A sweep whose one choice is iter5's own learning rate: its trials train exactly iter5 (same seed)."""
    from mnistlab.config import resolve_config

    sweep = SweepConfig(base="iter5", study=f"tiny-{os.getpid()}-{time.time_ns()}", n_trials=1_000,
                        sampler="tpe", pruner="median", space={"train.optimizer.lr": [0.004]},
                        set={"train.epochs": 1, "train.limit_train_batches": batches})
    return sweep, resolve_config("iter5")


def trial_overhead(stores: dict, repeats: int, batches: int, threads: int, data_dir: str | None) -> None:
    import torch

    import mnistlab.training.trainer as trainer
    from mnistlab.config import load_config
    from mnistlab.experiments.sweep_file import fixed_overrides

    inside = []
    real_training = trainer.run_training

    def timed_training(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_training(*args, **kwargs)
        finally:
            inside.append(time.perf_counter() - start)

    trainer.run_training = timed_training  # the objective imports it when called: the trial's trainer is timed too
    torch.set_num_threads(threads)  # on cores that other work shares, fewer threads than cores wait less on each other
    sweep, base = tiny_sweep(batches)
    cfg = load_config(base, fixed_overrides(sweep))
    with tempfile.TemporaryDirectory(prefix="mnistlab-sweep-trial-") as tmp:
        studies = {label: open_tiny_study(sweep, url, Path(tmp) / label.replace(" ", "-"))
                   for label, url in stores.items()}
        sides = ["trainer alone", *studies]
        times = {side: [] for side in sides}
        values = {side: set() for side in sides}
        for rep in range(repeats + 1):  # round 0 is untimed: imports, the first Adam, the data's first read
            for side in sides[rep % len(sides):] + sides[:rep % len(sides)]:
                if side == "trainer alone":
                    summary = timed_training(cfg, data_dir=data_dir, out_dir=Path(tmp) / "train", quiet=True,
                                             log=lambda *a, **k: None, score_test=False)
                    total, value = inside[-1], summary["val_acc"]
                else:
                    total, value = one_trial(*studies[side], sweep, base, data_dir)
                if rep:
                    times[side].append((total, inside[-1]))
                    values[side].add(value)
        print_trial_overhead(times, values, repeats, batches, threads, studies)


def open_tiny_study(sweep: SweepConfig, url: str | None, sweep_dir: Path):
    sweep_dir.mkdir()
    storage = sweep_module.make_storage(url, sweep_dir)
    with sweep_module.study_lock(storage, sweep_dir, sweep.study):
        return sweep_module.open_study(sweep, storage), storage, sweep_dir, url


def one_trial(study, storage, sweep_dir: Path, url, sweep: SweepConfig, base: Path, data_dir) -> tuple[float, float]:
    """A worker's turn as run_worker takes it: (its seconds, the trial's value)."""
    n_trials = len(study.get_trials(deepcopy=False)) + 1
    start = time.perf_counter()
    trial = sweep_module.take_trial(study, storage, sweep_dir, sweep.study, n_trials, print)
    sweep_module.run_trial(study, trial, sweep, base, sweep_dir, data_dir, 0, lambda line: None)
    seconds = time.perf_counter() - start
    return seconds, study.get_trials(deepcopy=False)[trial.number].value


def print_trial_overhead(times: dict, values: dict, repeats: int, batches: int, threads: int, studies: dict) -> None:
    alone = statistics.median(t for t, _ in times["trainer alone"])
    print(f"\n(b) a real tiny trial against the trainer alone: iter5, 1 epoch of {batches} batches of 64, validation "
          f"on all 6,000 images, {threads} torch thread(s), {repeats} round(s) alternating (after an untimed one), "
          f"medians\n")
    print(f"  {'':<26}{'median s':>9}   each round (s)")
    for side, runs in times.items():
        print(f"  {side:<26}{statistics.median(t for t, _ in runs):>9.3f}   "
              + " ".join(f"{t:.3f}" for t, _ in runs))
    print()
    same = len(set().union(*values.values())) == 1
    for side in studies:
        extra = statistics.median(t - inner for t, inner in times[side])
        gap = statistics.median(t for t, _ in times[side]) - alone
        states = {t.state.name.lower() for t in studies[side][0].trials}
        print(f"  {side}: a trial's extra time (its total less the trainer inside it) {extra * 1e3:.1f} ms = "
              f"{extra / alone:.2%} of the trainer alone (goal < 5%: {'met' if extra / alone < 0.05 else 'MISSED'}); "
              f"difference of the medians {gap * 1e3:+.0f} ms ({gap / alone:+.1%}); trials {', '.join(states)}")
    print(f"  every trial and every training alone reached the same val_acc: {'yes' if same else 'NO'} "
          f"({', '.join(f'{v:.4%}' for v in sorted(set().union(*values.values())))})")


# ---------------------------------------------------------------- the command

def machine() -> str:
    import optuna
    import sqlalchemy
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} CPU cores ({platform.machine()}), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, optuna "
            f"{optuna.__version__}, SQLAlchemy {sqlalchemy.__version__}; load average at the start {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="10,100,1000", help="trial counts of part (a), comma-separated")
    parser.add_argument("--workers", type=int, default=8, help="worker processes of part (a)")
    parser.add_argument("--storage", metavar="URL", help="a PostgreSQL database to use instead of a throwaway server")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of part (b)")
    parser.add_argument("--batches", type=int, default=100, help="training batches of part (b)'s tiny trial")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of part (b) (a worker of "
                        "`--jobs N` gets cores / N)")
    parser.add_argument("--data-dir", help="dataset root (default: $MNISTLAB_DATA_DIR, then ./data)")
    parser.add_argument("--as-worker", help=argparse.SUPPRESS)  # a worker process of part (a)
    args = parser.parse_args()
    if args.as_worker:
        worker(json.loads(args.as_worker))
        return
    counts = [int(n) for n in args.trials.split(",")]
    print("command: python bench/sweep_scale.py " + " ".join(sys.argv[1:]))
    print(f"machine: {machine()}")
    if args.storage:
        measure(args, counts, args.storage)
        return
    try:
        with throwaway_postgres() as url:
            print("PostgreSQL: a throwaway server on this machine (fsync off), started as tests/test_sweep.py does")
            measure(args, counts, url)
    except Unavailable as exc:
        print(f"PostgreSQL: skipped: {exc}")
        measure(args, counts, None)


def measure(args, counts: list[int], url: str | None) -> None:
    stores = {"journal file": None}  # the URL of each storage (None: the journal file in the sweep folder)
    if url:
        stores["PostgreSQL" if url.startswith("postgresql") else url.split(":")[0]] = url
    print_overheads(stores, counts, args.workers)
    trial_overhead(stores, args.repeats, args.batches, args.threads, args.data_dir)


if __name__ == "__main__":
    main()
