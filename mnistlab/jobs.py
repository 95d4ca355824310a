"""`mnistlab compare --jobs N`: up to N runs at once, each in its own `mnistlab train` process.

Each run is `python -m mnistlab train CONFIG --set ... --quiet` in a subprocess, not a task in a
`ProcessPoolExecutor` (spawn). That is the simpler and sturdier of the two here: a worker that dies
(out of memory, a segfault in a kernel) fails its own row only, where it would break the whole pool
and every run still queued in it; Ctrl-C is one SIGINT per child, which stops it the way it stops
`mnistlab train` (last.pt kept, the resume command printed), with no idle pool workers dying in their
queue reads; a child is exactly the command a user can rerun by hand; and its output goes to a file,
so progress bars never interleave. What comes back is the run's summary.json (its run directory is the
last line of the child's output) or the one-line error the child prints, so the rows are those of the
in-process path.

Each child gets max(1, cores // N) threads (OMP_NUM_THREADS, which sets torch.get_num_threads()), and,
when the config's device is auto or cuda and there are GPUs, `device=cuda:{slot % GPUs}` as an
override, so config.yaml and summary.json record the GPU it used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .compare import Comparison, Row, Run, end_row, failure_message, load_row, reusable_run

ERROR_MARK = "mnistlab train: error: "
RUN_DIR_MARK = "run directory: "
INTERRUPTED = "interrupted"
STOP_GRACE_S = 30  # after Ctrl-C, how long a child may take to save and exit before it is killed


def worker_threads(workers: int) -> int:
    """Torch threads per worker process: the cores this process may use, shared out."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


@dataclass
class Job:
    index: int  # the row's position
    seed: int
    cfg: object
    slot: int = 0
    device: str = ""
    proc: subprocess.Popen | None = None
    output: object = None  # a temporary file: the child's stdout and stderr
    started: float = 0.0  # time.monotonic()


def sigint_default() -> None:
    """In a worker, before exec: Ctrl-C reaches it as SIGINT from us, which it must not ignore even when
    this process does (a compare started in the background of a script inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def worker_error(returncode: int, output: str) -> str:
    """The row's one-line error from a failed child: its own message, or as the in-process path words a bug."""
    if ERROR_MARK in output:  # a UserError: a bad config, missing data, a diverged run
        return " ".join(output.rsplit(ERROR_MARK, 1)[1].split())
    if returncode == 130:  # Ctrl-C sent to the child alone, not to compare
        return "the training process was interrupted (SIGINT)"
    if output.strip():
        sys.stderr.write(output if output.endswith("\n") else output + "\n")  # its traceback, as in-process
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return f"the training process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return f"{lines[-1] if lines else f'exit code {returncode}'} (a bug in mnistlab; traceback above)"


def read_summary(output: str) -> dict:
    import json

    lines = [line for line in output.splitlines() if line.startswith(RUN_DIR_MARK)]
    if not lines:
        raise RuntimeError("the training process finished without naming its run directory")
    return json.loads((Path(lines[-1][len(RUN_DIR_MARK):]) / "summary.json").read_text(encoding="utf-8"))


def fill_rows_in_parallel(comparison: Comparison, paths: list[str], overrides: list[str], seeds: list[int] | None,
                          out_dir: Path, reuse: bool, data_dir: str | None, jobs: int, log) -> None:
    """What the in-process loop of compare_configs does, with up to `jobs` trainings at once.

    Configs are loaded and reused runs found in order, as slots free up; each row's runs are put in seed
    order, and a row ends at its first failure (in seed order), as in the in-process path."""
    import torch

    from .config import load_config
    from .engine import resolve_device

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = worker_threads(jobs)
    outcomes: dict[tuple[int, int], Run | str] = {}  # (row, seed) -> its run, or its error
    row_seeds: list[list[int]] = []
    failed: set[int] = set()

    def planned():
        """Each run to train, in order; reused runs and configs that fail to load are settled on the way."""
        for index, path in enumerate(paths):
            row = Row(config=Path(path).stem, path=str(path))
            comparison.rows.append(row)
            row_seeds.append([])
            seed = None
            try:
                cfg = load_row(row, overrides)
                for seed in seeds if seeds is not None else [cfg.seed]:
                    if index in failed:  # an earlier seed failed: the row ends there
                        break
                    cfg = load_config(row.path, [*overrides, f"seed={seed}"])
                    row_seeds[index].append(seed)
                    run = reusable_run(cfg, seed, out_dir, reuse, log)
                    if run is not None:
                        outcomes[index, seed] = run
                    else:
                        yield Job(index, seed, cfg)
            except Exception as exc:  # noqa: BLE001  (see failure_message)
                row.error = failure_message(exc)
                failed.add(index)
                end_row(row, seed, seeds, log)

    def start(job: Job, slot: int) -> None:
        job.slot, job.started = slot, time.monotonic()
        job_overrides = [*overrides, f"seed={job.seed}"]
        if gpus and job.cfg.device in ("auto", "cuda"):
            job_overrides.append(f"device=cuda:{slot % gpus}")
            job.device = f"cuda:{slot % gpus}"
        else:
            job.device = f"{resolve_device(job.cfg.device)}, {threads} thread{'s' if threads > 1 else ''}"
        command = [sys.executable, "-m", "mnistlab", "train", *(a for o in job_overrides for a in ("--set", o)),
                   "--out-dir", str(out_dir), "--quiet", *(["--data-dir", str(data_dir)] if data_dir else []),
                   "--", comparison.rows[job.index].path]
        job.output = tempfile.TemporaryFile()
        # A session of its own: Ctrl-C reaches the child once, from the KeyboardInterrupt handler below, not
        # also from the terminal.
        job.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=job.output, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": str(threads)}, start_new_session=True,
                                    preexec_fn=sigint_default)
        running.append(job)
        log(f"== {job.cfg.name} (seed {job.seed}): training in worker {slot + 1}/{jobs} ({job.device})")

    def finish(job: Job, interrupted: bool = False) -> None:
        job.output.seek(0)
        output = job.output.read().decode("utf-8", errors="replace")
        job.output.close()
        name, took = f"{job.cfg.name} (seed {job.seed})", time.monotonic() - job.started
        if job.proc.returncode == 0:
            try:
                summary = read_summary(output)
            except Exception as exc:  # noqa: BLE001
                sys.stderr.write(output)
                outcome = failure_message(exc)
            else:
                outcome = Run(job.seed, Path(summary["run_dir"]), summary, reused=False)
                log(f"== {name}: finished in {took:.1f}s, test acc {summary['test_acc']:.2%}")
        elif interrupted:
            outcome = INTERRUPTED
            for line in output.splitlines():
                if line.startswith("interrupted: "):  # what was kept, and the resume command
                    log(f"== {name}: {line}")
        else:
            outcome = worker_error(job.proc.returncode, output)
        if not isinstance(outcome, Run) and outcome != INTERRUPTED:
            failed.add(job.index)
            log(f"== {name}: FAILED after {took:.1f}s: {outcome}")
        outcomes[job.index, job.seed] = outcome

    running: list[Job] = []  # started, not yet finished
    try:
        queue = planned()
        free = list(range(jobs))
        more = True
        while more or running:
            while more and free:
                job = next(queue, None)
                if job is None:
                    more = False
                elif job.index not in failed:
                    start(job, free.pop(0))
            time.sleep(0.1)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                free.append(job.slot)
                free.sort()
                finish(job)
    except KeyboardInterrupt:  # stop the children as Ctrl-C stops `mnistlab train`; the table is written all the same
        comparison.interrupted = True
        comparison.skipped = len(paths) - len(comparison.rows)
        for job in running:
            job.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for job in running:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            finish(job, interrupted=True)
        running.clear()
    finally:
        for job in running:  # only after an unexpected error (or a second Ctrl-C): leave no orphans behind
            job.proc.kill()
            job.proc.wait()
    assemble(comparison, outcomes, row_seeds, seeds)


def assemble(comparison: Comparison, outcomes: dict, row_seeds: list[list[int]], seeds: list[int] | None) -> None:
    """Each row's runs in seed order, up to its first failure, as the in-process path leaves them."""
    for index, row in enumerate(comparison.rows):
        for seed in row_seeds[index]:
            outcome = outcomes.get((index, seed))
            if isinstance(outcome, Run):
                row.runs.append(outcome)
                continue
            if outcome is None or outcome == INTERRUPTED:  # stopped by Ctrl-C, or never started because of it
                if not row.error:
                    row.error = "interrupted" + (f" after {len(row.runs)} finished seed(s)" if row.runs else "")
            else:  # the row's first failure in seed order wins over a later one (or a later load error)
                row.error = outcome
                end_row(row, seed, seeds, lambda *args: None)  # adds "(seed N)"; logged when the run ended
            break
        else:  # every seed found so far is done; Ctrl-C may have come while the row was still being loaded
            if comparison.interrupted and not row.error and index == len(comparison.rows) - 1 \
                    and len(row_seeds[index]) < len(seeds or [None]):
                row.error = "interrupted" + (f" after {len(row.runs)} finished seed(s)" if row.runs else "")
