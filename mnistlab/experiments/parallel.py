"""`mnistlab compare --jobs N`: the plan's trainings, up to N at once, each in its own `mnistlab train` process.

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

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import one_line
from ..runfolder import finished_summary
from .plan import (Comparison, Step, end_row, failure_message, interrupted_message, label, replicate_key,
                   replicate_overrides)
from .runs import Run

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
    """One training of the plan in its worker process."""

    step: Step
    slot: int = 0
    device: str = ""
    proc: subprocess.Popen | None = None
    output: object = None  # a temporary file: the child's stdout and stderr
    started: float = 0.0  # time.monotonic()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, taken as Ctrl-C is; `code` is the exit status a shell gives such a death."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


@contextlib.contextmanager
def stop_on_signals():
    """While this process runs workers: SIGTERM and SIGHUP (as SIGINT) raise KeyboardInterrupt, so the path
    that stops the workers on Ctrl-C runs for them too. By default they would end this process at once and
    leave its workers running, orphans in sessions of their own. An ignored SIGHUP (nohup) stays ignored."""
    def interrupt(signum, frame):
        raise Interrupted(signum)

    wanted = [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN
                                               else [])]
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread (a caller's thread): signals stay as they are
        for signum in wanted:
            previous[signum] = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                                             else interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def worker_setup(parent: int):
    """A worker's preexec_fn: it takes Ctrl-C as SIGINT from us, which it must not ignore even when this
    process does (a command started in the background of a script inherits SIGINT ignored); and on Linux
    the kernel sends it SIGTERM when this process ends, however it ends (SIGKILL included): no orphans."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, called after it
    except (OSError, AttributeError):  # not Linux
        prctl = None

    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent ended before the request took hold
                os._exit(1)

    return setup


def stop_processes(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGINT to each running process, then up to grace_s in all for them to end; SIGKILL to the rest."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_left(procs: list[subprocess.Popen]) -> None:
    """After an unexpected error or a second interrupt: whatever still runs is killed, and waited for."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def worker_error(returncode: int, output: str) -> str:
    """The row's one-line error from a failed child: its own message, or as the in-process path words a bug."""
    if ERROR_MARK in output:  # a UserError: a bad config, missing data, a diverged run
        return one_line(output.rsplit(ERROR_MARK, 1)[1])
    if returncode == 130:  # Ctrl-C sent to the child alone, not to compare
        return "the training process was interrupted (SIGINT)"
    if output.strip():
        sys.stderr.write(output if output.endswith("\n") else output + "\n")  # its traceback, as in-process
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return f"the training process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return f"{one_line(lines[-1]) if lines else f'exit code {returncode}'} (a bug in mnistlab; traceback above)"


def announced_run_dir(output: str) -> Path:
    """The run directory a finished child named on its last such line."""
    lines = [line for line in output.splitlines() if line.startswith(RUN_DIR_MARK)]
    if not lines:
        raise RuntimeError("the training process finished without naming its run directory")
    return Path(lines[-1][len(RUN_DIR_MARK):])


class ParallelRunner:
    """Consumes compare's plan with up to `jobs` trainings at once; leaves the rows as the in-process
    path does: each row's runs in seed order, ending at its first failure in seed order."""

    def __init__(self, comparison: Comparison, jobs: int, data_dir: str | None, log):
        import torch

        self.comparison, self.jobs, self.data_dir, self.log = comparison, jobs, data_dir, log
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.threads = worker_threads(jobs)
        self.running: list[Job] = []  # started, not yet finished
        self.free = list(range(jobs))  # worker slots
        self.outcomes: dict[tuple, Run | str] = {}  # (row, seed or (seed, fold)) -> its run, or its error
        self.planned: dict[int, list] = {}  # row -> the seeds (or (seed, fold)s) the plan gave it, in order

    def run(self, steps) -> None:
        with stop_on_signals():  # SIGTERM, SIGHUP: as Ctrl-C
            try:
                self.fill_slots(steps)
            except KeyboardInterrupt:  # stop the children as Ctrl-C stops `mnistlab train`
                self.stop_all()
            finally:
                kill_left([job.proc for job in self.running])  # after an unexpected error (or a second Ctrl-C)
        self.assemble()

    def fill_slots(self, steps) -> None:
        more = True
        while more or self.running:
            while more and self.free:
                step = next(steps, None)
                if step is None:
                    more = False
                else:
                    self.take(step)
            time.sleep(0.1)
            for job in [j for j in self.running if j.proc.poll() is not None]:
                self.running.remove(job)
                self.free = sorted([*self.free, job.slot])
                self.finish(job)

    def take(self, step: Step) -> None:
        self.planned.setdefault(step.index, []).append(replicate_key(step.seed, step.fold))
        if step.reused is not None:
            self.outcomes[step.index, replicate_key(step.seed, step.fold)] = step.reused
        elif not step.row.stopped:
            self.start(Job(step), self.free.pop(0))

    def start(self, job: Job, slot: int) -> None:
        step = job.step
        overrides = [*self.comparison.overrides, *replicate_overrides(self.comparison, step.seed, step.fold)]
        job.slot, job.started = slot, time.monotonic()
        if self.gpus and step.cfg.device in ("auto", "cuda"):
            job.device = f"cuda:{slot % self.gpus}"
            overrides.append(f"device={job.device}")
        else:
            from ..training.engine import resolve_device

            job.device = f"{resolve_device(step.cfg.device)}, {self.threads} thread{'s' if self.threads > 1 else ''}"
        data = ["--data-dir", str(self.data_dir)] if self.data_dir else []
        data += ["--resume", str(step.resume)] if step.resume is not None else []
        command = [sys.executable, "-m", "mnistlab", "train", *(a for o in overrides for a in ("--set", o)),
                   "--out-dir", str(self.comparison.out_dir), "--quiet", *data, "--", step.row.path]
        job.output = tempfile.TemporaryFile()
        # A session of its own: Ctrl-C reaches the child once, from stop_all, not also from the terminal.
        job.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=job.output, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": str(self.threads)},
                                    start_new_session=True, preexec_fn=worker_setup(os.getpid()))
        self.running.append(job)
        self.log(f"== {step.cfg.name} ({label(replicate_key(step.seed, step.fold))}): training in worker "
                 f"{slot + 1}/{self.jobs} ({job.device})")

    def finish(self, job: Job, interrupted: bool = False) -> None:
        job.output.seek(0)
        output = job.output.read().decode("utf-8", errors="replace")
        job.output.close()
        step, took = job.step, time.monotonic() - job.started
        name = f"{step.cfg.name} ({label(replicate_key(step.seed, step.fold))})"
        if job.proc.returncode == 0:
            try:
                run_dir = announced_run_dir(output)
                outcome = Run(step.seed, run_dir, finished_summary(run_dir), reused=False)
            except Exception as exc:  # noqa: BLE001
                sys.stderr.write(output)
                outcome = failure_message(exc)
            else:
                self.log(f"== {name}: finished in {took:.1f}s, test acc {outcome.summary['test_acc']:.2%}")
        elif interrupted:
            outcome = INTERRUPTED
            for line in output.splitlines():
                if line.startswith("interrupted: "):  # what was kept, and the resume command
                    self.log(f"== {name}: {line}")
        else:
            outcome = worker_error(job.proc.returncode, output)
        if not isinstance(outcome, Run) and outcome != INTERRUPTED:
            step.row.stopped = True
            self.log(f"== {name}: FAILED after {took:.1f}s: {outcome}")
        self.outcomes[step.index, replicate_key(step.seed, step.fold)] = outcome

    def stop_all(self) -> None:
        """Ctrl-C: SIGINT to every child (each keeps its last.pt and names its resume command), then wait."""
        self.comparison.interrupted = True
        self.comparison.skipped = len(self.comparison.paths) - len(self.comparison.rows)
        for job in self.running:
            job.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for job in self.running:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            self.finish(job, interrupted=True)
        self.running.clear()

    def assemble(self) -> None:
        planned = [self.planned.get(index, []) for index in range(len(self.comparison.rows))]
        assemble(self.comparison, self.outcomes, planned)


def assemble(comparison: Comparison, outcomes: dict, planned: list[list]) -> None:
    """Each row's runs in seed order, up to its first failure, as the in-process path leaves them."""
    for index, row in enumerate(comparison.rows):
        for key in planned[index]:
            outcome = outcomes.get((index, key))
            if isinstance(outcome, Run):
                row.runs.append(outcome)
                continue
            if outcome is None or outcome == INTERRUPTED:  # stopped by Ctrl-C, or never started because of it
                row.error = row.error or interrupted_message(row)
            else:  # the row's first failure in seed order wins over a later one (or a later load error)
                row.error = outcome
                end_row(row, key, comparison.runs_per_row > 1, lambda *args: None)  # adds "(seed N)"; logged
            break
        else:  # every seed planned so far is done; Ctrl-C may have come while the row was still being planned
            if comparison.interrupted and not row.error and index == len(comparison.rows) - 1 \
                    and len(planned[index]) < comparison.runs_per_row:
                row.error = interrupted_message(row)
