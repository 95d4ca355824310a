"""The benchmark scripts run and say what they measured (their figures belong in README, not in tests)."""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

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
    assert result.returncode == 2 and "data.pipeline: device" in result.stderr and "Traceback" not in result.stderr
    result = run_bench("speedrun.py", "--seeds", "1", "--set", "train.amp=fast", data_dir=mnist_root)
    assert result.returncode == 2 and "train.amp: got 'fast'" in result.stderr and "Traceback" not in result.stderr


def test_throughput_prints_every_method_and_the_ratios(mnist_root):
    result = run_bench("throughput.py", "--batches", "5", "--rounds", "1", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr
    rates = dict(re.findall(r"^  (\S.*?\S)\s+([\d,]+) images/s$", result.stdout, re.M))
    assert {"model only, fp32", "mnistlab device, fp32", "model only, channels_last", "mnistlab device, channels_last",
            "mnistlab classic, fp32", "reference loop, fp32", "reference loop, mnistlab's allocator"} <= set(rates)
    assert all(int(v.replace(",", "")) > 0 for v in rates.values())
    ratios = re.findall(r"^mnistlab device, (\S+): ([\d.]+)x the reference loop \(goal >= 2.5x; ([\d.]+)x given the "
                        r"same allocator\), ([\d.]+) of its model-only ceiling",
                        result.stdout, re.M)
    assert {r[0] for r in ratios} == {k.removeprefix("mnistlab device, ") for k in rates if "device" in k}
    assert re.search(r"^mnistlab device / mnistlab classic pipeline, fp32: [\d.]+x$", result.stdout, re.M)
    assert "on cpu (CPU threads" in result.stdout


def test_throughput_and_scaling_refuse_a_gpu_that_is_not_there():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for script in ("throughput.py", "scaling.py"):
        result = run_bench(script, "--device", "cuda", data_dir="unused")
        assert result.returncode == 2 and "no CUDA GPU is usable here" in result.stderr, script
        assert "Traceback" not in result.stderr, script


def test_scaling_prices_models_and_batch_sizes_in_the_asked_setting():
    result = run_bench("scaling.py", "--models", "iter5,cnn3_bn", "--steps", "1", "--channels-last", data_dir="unused")
    assert result.returncode == 0, result.stderr
    assert "channels_last, fp32" in result.stdout and "x iter5" in result.stdout
    result = run_bench("scaling.py", "--models", "iter5,cnn3_bn", "--steps", "1", "--channels-last", "after_first_pool",
                       data_dir="unused")
    assert result.returncode == 0, result.stderr
    assert "channels_last after the first pool, fp32" in result.stdout
    for name in ("iter5", "cnn3_bn"):
        assert re.search(rf"^  {name}\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", result.stdout, re.M), name
    assert len(re.findall(r"^\s+(32|64|128|256|512|1024)\s+[\d.]+\s+[\d.]+\s+[\d,]+$", result.stdout, re.M)) == 6
    speedups = re.findall(r"^  (\S+)\s+[\d.]+\s+[\d.]+ \(([\d.]+)x\)\s+[\d.]+ \(([\d.]+)x\)$", result.stdout, re.M)
    assert [name for name, *_ in speedups] == ["iter5", "cnn3_bn"]
    assert all(float(x) > 0 for _, *xs in speedups for x in xs)
    result = run_bench("scaling.py", "--models", "iter5,nope", data_dir="unused")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith("unknown nope; see `mnistlab models`")


def test_allocator_compares_both_settings_in_fresh_processes():
    result = run_bench("allocator.py", "--steps", "3", "--rounds", "1", data_dir="unused")
    assert result.returncode == 0, result.stderr
    for name in ("glibc default", "mnistlab"):
        assert re.search(rf"^  {name}\s+images/s [\d,]+; median [\d,]+; page faults per step \d+$", result.stdout, re.M)
    assert re.search(r"^mnistlab's allocator setting / glibc's default: [\d.]+x \(medians\)$", result.stdout, re.M)


def test_launches_counts_fewer_operations_when_batches_are_grouped_and_adam_fused(mnist_root):
    result = run_bench("launches.py", "--configs", "configs/iter5.yaml", "--steps", "4", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"(batch by batch|grouped|grouped \+ fused|grouped \+ fused \+ bf16) ([\d.]+)",
                             result.stdout))
    one, grouped, fused, bf16 = (float(counts[k]) for k in ("batch by batch", "grouped", "grouped + fused",
                                                             "grouped + fused + bf16"))
    assert 30 < fused < grouped < one and bf16 > fused  # casts are operations too


def test_gpu_script_says_what_it_needs_and_measures_nothing_without_a_gpu(tmp_path):
    """bench/gpu.sh's own checks; its steps are rehearsed with --rehearse (README, Performance)."""
    script = str(REPO / "bench" / "gpu.sh")
    result = subprocess.run(["bash", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and 'bash bench/gpu.sh "$OUT"' in result.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    result = subprocess.run(["bash", script, "--work", str(tmp_path / "work"), str(out)], capture_output=True,
                            text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [row[:3] for row in rows] == [["env", "ok", "0"], ["no-gpu", "FAILED", "2"]]
    assert "nothing measured" in rows[1][4] and "--rehearse" in rows[1][4]
    assert "| no-gpu | FAILED | 2 |" in (out / "summary.md").read_text()
    with tarfile.open(out / "logs.tar.gz") as logs:
        assert logs.getnames() == ["logs/env.log"]


def test_sweep_scale_prints_both_tables(mnist_root):
    result = run_bench("sweep_scale.py", "--trials", "5", "--workers", "2", "--repeats", "1", "--batches", "3",
                       data_dir=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("command: python bench/sweep_scale.py --trials 5") and "\nmachine: " in out
    stores = ["journal file"] + (["PostgreSQL"] if "PostgreSQL: skipped: " not in out else [])
    for store in stores:  # every study ends with exactly its trials, all complete
        assert re.search(rf"^  {store}\s+5\s+[\d.]+\s+[\d.]+ ms\s+[\d.]+ ms\s+[\d.]+ ms\s+\d+ ms   5 complete$", out,
                         re.M), (store, out)
        assert re.search(rf"^  {store}: a trial's extra time \(its total less the trainer inside it\) [\d.]+ ms = "
                         rf"[\d.]+% of the trainer alone \(goal < 5%: (met|MISSED)\); difference of the medians "
                         rf"[-+]\d+ ms \([-+][\d.]+%\); trials complete$", out, re.M), (store, out)
    assert re.search(r"^  trainer alone\s+[\d.]+   [\d.]+$", out, re.M)
    assert "every trial and every training alone reached the same val_acc: yes" in out


def test_frontier_cost_prices_elastic_and_the_weight_average(mnist_root):
    result = run_bench("frontier_cost.py", "--images", "256", "--classic-images", "20", "--steps", "2",
                       "--model", "compact8k", "--batch-size", "64", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("affine", "affine \\+ elastic p 0.5", "affine \\+ elastic p 1"):
        assert re.search(rf"^  {name}\s+[\d,]+ images/s   [\d.]+x the time of affine alone$", out, re.M), (name, out)
    assert re.search(r"^  with ema\s+[\d.]+ ms/step$", out, re.M)
    assert re.search(r"^  the average's update adds [-+][\d.]+% to a step$", out, re.M)


def test_predict_speed_prices_pngs_and_photos(mnist_root):
    # Each part with the real mnistlab predict runs it times (a notebook loop over Image.open()ed files included,
    # which Pillow 13 broke once), on a few files and one round.
    result = run_bench("predict_speed.py", "--n", "40", "--photos", "12", "--rounds", "1", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("mnistlab predict", "notebook loop"):
        assert re.search(rf"^  {name}\s+[\d.]+ s\s+[\d,]+ images/s  accuracy (\d+\.\d+)%$", out, re.M), (name, out)
    assert re.search(r"^accuracy [\d.]+% vs [\d.]+%: equal; 0 of 40 predictions differ$", out, re.M), out
    photos = re.search(r"^12 600x800 JPEG photos .* bare decode ([\d.]+) ms/photo; accuracy ([\d.]+)%$", out, re.M)
    assert photos and float(photos.group(1)) > 0 and float(photos.group(2)) >= 75, out  # 9 of 12 at the least
    assert re.search(r"^  mnistlab predict: .* marginal -?[\d.]+ ms/photo; ratio -?[\d.]+x the decode$", out, re.M)
    assert re.search(r"^  with --jobs 1 .* ratio -?[\d.]+x the decode$", out, re.M), out


def test_read_fonts_scores_each_font_and_names_its_misses(tmp_path):
    fonts = sorted(p for folder in ("/usr/share/fonts", "/usr/local/share/fonts") if os.path.isdir(folder)
                   for p in Path(folder).rglob("*.ttf"))[:2]
    if not fonts:
        pytest.skip("no .ttf font installed on this machine to draw digits with")
    result = run_bench("read_fonts.py", *fonts, "--per-digit", "1", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(\S+) +(\d+)/10  ?((?:\d->-?\d ?)*)$", result.stdout, re.MULTILINE)
    assert [r[0] for r in rows] == [f.stem for f in fonts]
    assert all(int(score) + len(misses.split()) == 10 for _, score, misses in rows)  # every miss is named
    total = re.search(r"^total: (\d+)/20 = ", result.stdout, re.MULTILINE)
    assert total and int(total.group(1)) == sum(int(r[1]) for r in rows)
    assert int(total.group(1)) >= 12  # typed digits in plain fonts: most of them read right, whatever the font


def test_writer_writes_the_folder_layout_and_scores_each_class(tmp_path):
    out = tmp_path / "writer"
    result = run_bench("writer.py", out, "--per-class", "2", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == \
        sorted(f"{d}/{n}.png" for d in range(10) for n in range(2))
    sizes = {Image.open(p).size for p in out.rglob("*.png")}
    assert all(80 <= w == h <= 400 for w, h in sizes) and len(sizes) > 1  # canvases of their own sizes
    rows = re.findall(r"^  (\d): +(\d)/2 = +[\d.]+%  ((?:\d->-?\d x\d ?)*)$", result.stdout, re.M)
    assert [r[0] for r in rows] == [str(d) for d in range(10)]
    assert all(int(hits) + sum(int(m) for m in re.findall(r"x(\d)", misses)) == 2 for _, hits, misses in rows)
    total = re.search(r"^total: (\d+)/20 = [\d.]+%$", result.stdout, re.M)
    assert total and int(total[1]) == sum(int(r[1]) for r in rows)
    again = run_bench("writer.py", out, "--per-class", "2", data_dir=tmp_path)  # never over the first set
    assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr


def test_own_digits_fine_tunes_the_shipped_model_and_prints_its_table(tmp_path, mnist_root):
    """bench/own_digits.py on a tiny writer (3 test, 1 val, 2 training digits per class), one epoch, no mix."""
    out = tmp_path / "own"
    result = run_bench("own_digits.py", out, "--shots", "2", "--test", "3", "--val", "1", "--pool", "2",
                       "--epochs", "1", "--no-mix", data_dir=mnist_root)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (shipped model|fine-tuned on \d per class) \| (-|no) \| ([\d.]+)% \| ([\d.]+)% \|",
                      result.stdout, re.M)
    assert [r[0] for r in rows] == ["shipped model", "fine-tuned on 2 per class"]
    assert float(rows[0][3]) > 99  # the shipped model on all of MNIST's test set
    assert all(0 <= float(r[2]) <= 100 for r in rows)
    assert len(list((out / "shots-2" / "train").rglob("*.png"))) == 20 and (out / "configs" / "writer-2.yaml").is_file()
