"""The benchmark scripts run and say what they measured (their figures belong in README, not in tests)."""

import os
import re
import subprocess
import sys

from conftest import REPO


def run_bench(script, *args, data_dir):
    env = {**os.environ, "MNISTLAB_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)


def test_speedrun_times_each_seed_and_scores_all_test_images(mnist_root):
    result = run_bench("speedrun.py", "--seeds", "2", "--set", "train.epochs=1", "--set",
                       "train.limit_train_batches=20", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "on cpu" in out and "warm-up" in out
    seeds = re.findall(r"seed (\d): ([\d.]+) s of training, val ([\d.]+)% \(5,000 images\), "
                       r"test ([\d.]+)% \(10,000 images\)", out)
    assert [s[0] for s in seeds] == ["1", "2"]
    assert all(float(s[1]) > 0 and 50 < float(s[3]) <= 100 for s in seeds)  # 20 steps: far from 99%, far above chance
    assert re.search(r"mean over 2 seeds: [\d.]+ s of training .* target 99.0% MISSED", out)


def test_speedrun_refuses_the_classic_pipeline(mnist_root):
    result = run_bench("speedrun.py", "--seeds", "1", "--set", "data.pipeline=classic", data_dir=mnist_root)
    assert result.returncode != 0 and "data.pipeline: device" in result.stderr
