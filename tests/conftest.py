import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# The fuzz tests draw the same cases on every run, so CI is never red by chance; set
# HYPOTHESIS_PROFILE=explore to draw new ones (and add what they find as tests).
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

REPO = Path(__file__).resolve().parents[1]

# Fixtures shared by several test modules live in these modules; pytest finds them here, so no test
# module imports a fixture by name (mnist_cnn: real MNIST digits and a small CNN trained on them once)
pytest_plugins = ["mnist_cnn"]


def data_dir() -> Path | None:
    """Real MNIST: $MNISTLAB_DATA_DIR, else ../shared/data beside the repo."""
    for candidate in (os.environ.get("MNISTLAB_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = data_dir()
    if root is None:
        pytest.skip("real MNIST not found: set MNISTLAB_DATA_DIR (CI uses ../shared/data)")
    return root


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from mnistlab.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_subprocess(*args, env=None, timeout=300):
    """The CLI as a user runs it, in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=3", "--set", "train.limit_eval_batches=1",
        "--quiet"]


@pytest.fixture(scope="module")
def display():
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"cannot make a display: {' and '.join(missing)} not installed (apt-get install xvfb xdotool)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()  # Xvfb writes its display number once it accepts clients
    if not number:
        server.kill()
        pytest.skip("cannot make a display: Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=30)
