"""`mnistlab sweep` (and `compare --jobs`) against a hostile user and a hostile machine: storages that
lose the study, passwords in URLs, damaged journals, grids too large to list, signals to the parent,
a worker paused past its heartbeat, settings from the environment. Real parts, tiny settings.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, write_config
from test_sweep import postgres  # noqa: F401  (the fixture: a real PostgreSQL server for this module)

import optuna  # noqa: E402  (a dependency of mnistlab)

FAST = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=3", "--set", "train.limit_eval_batches=1"]
SLOW = ["--set", "train.epochs=100", "--set", "train.limit_train_batches=40", "--set", "train.limit_eval_batches=2",
        "--set", "train.early_stopping=null"]  # minutes: killed long before the end
SWEEP = """base: iter5
study: {study}
n_trials: {n}
sampler: random
pruner: none
space:
  train.optimizer.lr: {{low: 0.002, high: 0.01, log: true}}
  train.batch_size: [64, 128]
"""


def sweep_file(folder: Path, study: str = "hostile", n: int = 2, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder / f"{study}.yaml", SWEEP.format(study=study, n=n) + extra)


def mnistlab(*args, env=None, cwd=REPO, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          **kwargs)


def journal_study(path: Path, name: str):
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def one_line_error(code, err, *expected):
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


# ---------------------------------------------------------------- refused before any trial, in one line

@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:s?mode=memory&uri=true"])
def test_a_storage_that_dies_with_the_process_is_refused(cli, tmp_path, mnist_root, url):
    code, _, err = cli("sweep", sweep_file(tmp_path), "--storage", url, "--out-dir", tmp_path / "out",
                       "--data-dir", mnist_root, *FAST)
    one_line_error(code, err, "memory")
    assert not (tmp_path / "out" / "trials").exists()


SELECTING_ON_TEST = {
    "set": "set: {train.checkpoint_monitor: test_acc, train.allow_test_selection: true}\n",
    "allowance": "set: {train.allow_test_selection: true}\n",
}


@pytest.mark.parametrize("case", list(SELECTING_ON_TEST))
def test_trials_never_select_on_the_test_set(cli, tmp_path, case):
    code, _, err = cli("sweep", sweep_file(tmp_path, extra=SELECTING_ON_TEST[case]), "--out-dir", tmp_path / "out")
    one_line_error(code, err, "validation data only")
    path = sweep_file(tmp_path, "spaced")  # and not as a value of the space either
    path.write_text(path.read_text() + "  train.allow_test_selection: [false, true]\n")
    code, _, err = cli("sweep", path, "--out-dir", tmp_path / "out")
    one_line_error(code, err, "space.train.allow_test_selection = True", "validation data only")


@pytest.mark.parametrize("space", ["  data.augment.rotate: {low: 0, high: 1000000000000, step: 1}\n",
                                   "".join(f"  train.{k}: [{', '.join(str(v / 1000) for v in range(1, 31))}]\n"
                                           for k in ("label_smoothing", "optimizer.lr", "optimizer.weight_decay"))])
def test_a_grid_beyond_the_cap_is_refused_before_it_is_built(cli, tmp_path, space):
    text = "base: iter5\nsampler: grid\npruner: none\nspace:\n" + space
    code, _, err = cli("sweep", write_config(tmp_path / "grid.yaml", text), "--out-dir", tmp_path / "out")
    one_line_error(code, err, "10,000")


@pytest.mark.parametrize("stem", ["-starts-with-a-dash", "x" * 120])
def test_a_study_name_from_the_file_name_is_held_to_the_rule_of_study(cli, tmp_path, stem):
    path = write_config(tmp_path / f"{stem}.yaml", SWEEP.replace("study: {study}\n", "").format(n=1))
    code, _, err = cli("sweep", path, "--out-dir", tmp_path / "out")
    one_line_error(code, err, "from the file name", "the first a letter or digit", "`study:`")


@pytest.mark.parametrize("name", ["../escape", "-x", "a" * 101, ""])
def test_a_study_name_on_the_command_line_is_one_line(cli, tmp_path, name):
    code, _, err = cli("sweep", sweep_file(tmp_path), f"--study={name}", "--out-dir", tmp_path / "out")
    one_line_error(code, err, "--study: the study name becomes a folder")


def test_confirm_seeds_is_checked_before_the_sweep_and_named_as_given(cli, tmp_path, mnist_root):
    code, _, err = cli("sweep", sweep_file(tmp_path), "--confirm-seeds", "1,x", "--out-dir", tmp_path / "out",
                       "--data-dir", mnist_root, *FAST)
    one_line_error(code, err, "--confirm-seeds: got '1,x'")
    assert not (tmp_path / "out" / "trials").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e9"])
def test_the_heartbeat_setting_is_checked_with_bounds(cli, tmp_path, monkeypatch, value):
    monkeypatch.setenv("MNISTLAB_SWEEP_HEARTBEAT_S", value)
    code, _, err = cli("sweep", sweep_file(tmp_path), "--out-dir", tmp_path / "out")
    one_line_error(code, err, "MNISTLAB_SWEEP_HEARTBEAT_S", repr(value))


def test_a_bad_heartbeat_setting_is_no_traceback_in_a_fresh_process(tmp_path):
    result = mnistlab("sweep", sweep_file(tmp_path), "--out-dir", tmp_path / "out",
                      env={"MNISTLAB_SWEEP_HEARTBEAT_S": "ten"})
    one_line_error(result.returncode, result.stderr, "MNISTLAB_SWEEP_HEARTBEAT_S")


# ---------------------------------------------------------------- the study: what joins it, what it records

def test_a_study_is_joined_by_the_resolved_base_not_its_file_name(tmp_path):
    from mnistlab.errors import UserError
    from mnistlab.experiments.sweep import make_storage, open_study
    from mnistlab.experiments.sweep_file import load_sweep

    iter5 = (REPO / "configs" / "iter5.yaml").read_text()
    storage = make_storage(None, tmp_path)
    first = sweep_file(tmp_path / "a", "same", extra="").read_text().replace("base: iter5", "base: base.yaml")
    for folder, base_text in (("a", iter5), ("b", iter5), ("c", iter5.replace("seed: 1", "seed: 7"))):
        (tmp_path / folder).mkdir(exist_ok=True)
        write_config(tmp_path / folder / "base.yaml", base_text)
        write_config(tmp_path / folder / "same.yaml", first)
    write_config(tmp_path / "a" / "renamed.yaml", first.replace("base.yaml", "copy.yaml"))
    write_config(tmp_path / "a" / "copy.yaml", iter5)
    open_study(load_sweep(tmp_path / "a" / "same.yaml")[0], storage)
    open_study(load_sweep(tmp_path / "b" / "same.yaml")[0], storage)  # the same settings from another folder
    open_study(load_sweep(tmp_path / "a" / "renamed.yaml")[0], storage)  # the same settings by another name
    with pytest.raises(UserError, match="another `base`"):  # the same file name, other settings
        open_study(load_sweep(tmp_path / "c" / "same.yaml")[0], storage)


def test_the_study_names_its_metric_and_retries_without_optuna_s_deprecated_callback(tmp_path, monkeypatch):
    import warnings

    from mnistlab.experiments import sweep as sweep_module
    from mnistlab.experiments.sweep_file import load_sweep

    sweep, _ = load_sweep(sweep_file(tmp_path))
    study = sweep_module.open_study(sweep, sweep_module.make_storage(None, tmp_path))
    assert journal_study(tmp_path / "study.journal", "hostile").metric_names == ["val_acc"]
    trial = study.ask()
    params = {key: sweep_module.suggest(trial, key, space) for key, space in sweep.space.items()}
    study._storage.set_trial_system_attr(trial._trial_id, sweep_module.BEAT, time.time() - 3600)
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 3600)  # the trial's start is an hour ago
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning (deprecated) nor ExperimentalWarning on this path
        sweep_module.fail_stale_trials(study, lines.append)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"], lines
    assert trials[1].params == params and trials[1].user_attrs["mnistlab:retry_of"] == 0
    assert trials[1].user_attrs["mnistlab:retries"] == 1


# ---------------------------------------------------------------- a damaged journal: one line, left as it is

def damage_cut(data: bytes) -> bytes:
    return data[:-7]


def damage_binary_at_end(data: bytes) -> bytes:
    return data + b"\x00\xff\xfe garbage\n"


def damage_binary_in_middle(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join([*lines[:2], b"\x89PNG\r\n\x1a\n", *lines[2:]])


@pytest.mark.parametrize("damage", [damage_cut, damage_binary_at_end, damage_binary_in_middle])
def test_a_damaged_journal_is_refused_in_one_line_and_left_as_it_is(cli, tmp_path, mnist_root, damage):
    from mnistlab.experiments.sweep import make_storage, open_study
    from mnistlab.experiments.sweep_file import load_sweep

    path = sweep_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    study = open_study(load_sweep(path)[0], make_storage(None, out))
    study.tell(study.ask({"train.optimizer.lr": optuna.distributions.FloatDistribution(0.002, 0.01, log=True)}), 0.5)
    journal = out / "study.journal"
    journal.write_bytes(damage(journal.read_bytes()))
    before = journal.read_bytes()
    code, _, err = cli("sweep", path, "--out-dir", out, "--data-dir", mnist_root, *FAST)
    one_line_error(code, err, str(journal), "damaged at line", "truncate -s")
    assert journal.read_bytes() == before
    assert not (out / "trials").exists()


# ---------------------------------------------------------------- the sweep folder, from anywhere

def test_a_study_is_continued_and_reported_from_any_folder(tmp_path, mnist_root):
    path = sweep_file(tmp_path, "anywhere", n=1)
    (tmp_path / "a").mkdir()
    first = mnistlab("sweep", path, "--out-dir", "sweep", "--data-dir", mnist_root, *FAST, cwd=tmp_path / "a")
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "a" / "sweep").rename(tmp_path / "moved")  # another folder, or the share mounted elsewhere
    (tmp_path / "b").mkdir()
    again = mnistlab("sweep", path, "--n-trials", "2", "--out-dir", "../moved", "--data-dir", mnist_root, *FAST,
                     cwd=tmp_path / "b")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Warning" not in again.stderr, again.stderr  # Optuna's warnings are not the user's to read
    study = journal_study(tmp_path / "moved" / "study.journal", "anywhere")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert (tmp_path / "moved" / "best.yaml").is_file()
    with open(tmp_path / "moved" / "trials.csv") as table:
        assert all(row["epochs_run"] == "1" for row in csv.DictReader(table))  # each trial's run found, from here
    best = study.best_trial.user_attrs["run_dirs"][0]
    (tmp_path / "moved" / "best.yaml").unlink()
    (tmp_path / "moved" / best).rename(tmp_path / "elsewhere")  # the best trial ran on a machine with its own disk
    report = mnistlab("sweep", path, "--n-trials", "2", "--out-dir", tmp_path / "moved", "--data-dir", mnist_root,
                      *FAST)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr[-2000:]
    assert "not on this machine" in report.stdout and not (tmp_path / "moved" / "best.yaml").exists()


# ---------------------------------------------------------------- signals: no orphans; a paused worker steps aside

def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (read from /proc: psutil is not a dependency)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float = 120.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start(*args, cwd=REPO, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnistlab", *map(str, args)], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def wait_running(journal: Path, name: str, n: int) -> None:
    def running():
        try:
            return sum(t.state.name == "RUNNING" for t in journal_study(journal, name).trials) >= n
        except (KeyError, OSError, ValueError):  # not made yet
            return False

    wait_for(running, what=f"{n} running trial(s)")


def workers_of(parent: subprocess.Popen, n: int) -> set[int]:
    return wait_for(lambda: children(parent.pid) if len(children(parent.pid)) >= n else None, what="the workers")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_sweep_jobs_ends_its_workers(tmp_path, mnist_root, signum):
    parent = start("sweep", sweep_file(tmp_path, n=4), "--jobs", "2", "--out-dir", tmp_path / "out",
                   "--data-dir", mnist_root, *SLOW)
    workers = workers_of(parent, 2)
    wait_running(tmp_path / "out" / "study.journal", "hostile", 2)
    time.sleep(2)  # inside their first trials' training
    os.kill(parent.pid, signum)  # the parent only, as a process manager (or kill PID) does
    out, err = parent.communicate(timeout=120)
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "the workers to end")
    if signum != signal.SIGKILL:
        assert parent.returncode == 128 + signum and "Traceback" not in err, err[-2000:]
        assert "interrupted" in out
        study = journal_study(tmp_path / "out" / "study.journal", "hostile")
        assert "RUNNING" not in {t.state.name for t in study.trials}  # each worker failed its trial and enqueued it


def test_sigterm_to_compare_jobs_ends_its_workers(tmp_path, mnist_root):
    configs = [REPO / "configs" / "iter5.yaml", REPO / "configs" / "mlp.yaml"]
    parent = start("compare", *configs, "--jobs", "2", "--out-dir", tmp_path, "--data-dir", mnist_root, *SLOW)
    workers = workers_of(parent, 2)
    wait_for(lambda: len(list(tmp_path.glob("*/*/config.yaml"))) >= 2, what="the runs to start")
    time.sleep(2)
    os.kill(parent.pid, signal.SIGTERM)
    _, err = parent.communicate(timeout=120)
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "the workers to end")
    assert "Traceback" not in err, err[-2000:]


def test_a_paused_worker_whose_trial_was_retried_steps_aside(tmp_path, mnist_root):
    env = {"MNISTLAB_SWEEP_HEARTBEAT_S": "0.3"}  # a silent worker is taken for dead after 1.8 s
    path = sweep_file(tmp_path, "paused", n=1)
    args = ["--out-dir", tmp_path / "out", "--data-dir", mnist_root, "--set", "train.epochs=3",
            "--set", "train.limit_train_batches=30", "--set", "train.limit_eval_batches=2"]
    paused = start("sweep", path, "--worker", "0", *args, env=env)
    journal = tmp_path / "out" / "study.journal"
    wait_running(journal, "paused", 1)
    time.sleep(1)
    os.killpg(paused.pid, signal.SIGSTOP)
    try:
        other = mnistlab("sweep", path, "--worker", "1", *args, env=env)
        assert other.returncode == 0, other.stderr[-2000:]
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    out, err = paused.communicate(timeout=300)
    assert paused.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "retried by another" in out
    states = [t.state.name for t in journal_study(journal, "paused").trials]
    assert states == ["FAIL", "COMPLETE"], states


# ---------------------------------------------------------------- credentials: never shown, never on a command line

PASSWORD = "Hunter2-s3cret"


def test_a_storage_password_is_never_shown_nor_on_a_command_line(tmp_path, mnist_root, postgres):  # noqa: F811
    url = postgres.replace("postgres@", f"postgres:{PASSWORD}@")  # the server trusts localhost: any password works
    parent = start("sweep", sweep_file(tmp_path, n=2), "--jobs", "2", "--storage", url,
                   "--out-dir", tmp_path / "out", "--data-dir", mnist_root, *FAST)
    seen = []
    while parent.poll() is None:
        for pid in children(parent.pid):
            try:
                line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "--worker" in line:  # not a copy of this command between its fork and its exec
                seen.append(line)
        time.sleep(0.2)
    out, err = parent.communicate()
    assert parent.returncode == 0, err[-2000:]
    assert any("--worker" in line for line in seen), seen
    assert not [text for text in (out, err, *seen) if PASSWORD in text]
    assert "postgres:***@" in out
    unreachable = url.rsplit(":", 1)[0] + ":1/mnistlab"
    result = mnistlab("sweep", sweep_file(tmp_path, n=1), "--storage", unreachable, "--out-dir", tmp_path / "o2",
                      "--data-dir", mnist_root, *FAST)
    assert result.returncode == 2 and PASSWORD not in result.stdout + result.stderr, result.stderr
    assert "postgres:***@" in result.stderr


def test_a_study_of_an_earlier_mnistlab_is_still_continued(tmp_path):
    """Its definition named the base by its name only, and its run directories as its workers wrote them."""
    from mnistlab.experiments.sweep import make_storage, open_study
    from mnistlab.experiments.sweep_file import load_sweep
    from mnistlab.experiments.sweep_report import run_dir_path

    sweep, _ = load_sweep(sweep_file(tmp_path))
    study = open_study(sweep, make_storage(None, tmp_path))
    definition = study.user_attrs["mnistlab:definition"]
    study.set_user_attr("mnistlab:definition", {**definition, "base": "iter5"})
    assert open_study(sweep, make_storage(None, tmp_path)).user_attrs["mnistlab:definition"] == definition
    stamp = "trials/hostile-trial0003/20260101-120000"
    for stored in (f"/elsewhere/sweep/{stamp}", f"checkpoints/sweeps/hostile/{stamp}", stamp):
        assert run_dir_path(tmp_path / "sweep", stored) == tmp_path / "sweep" / stamp
