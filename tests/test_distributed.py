"""torch.distributed on CPU: two gloo processes train one run, in step."""

import json
import subprocess
import sys

from conftest import REPO


def torchrun(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mnistlab", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_two_gloo_processes_train_one_run(tmp_path, mnist_root):
    result = torchrun("train", REPO / "configs" / "iter5.yaml", "--set", "train.epochs=1", "--set",
                      "train.limit_train_batches=40", "--device", "cpu", "--out-dir", tmp_path, "--data-dir",
                      mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "iter5").iterdir()  # one run directory, written by rank 0 alone
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["ranks_in_sync"] is True  # the ranks' weights were identical after the steps
    assert summary["test_n"] == 10_000 and summary["test_acc"] > 0.8
    assert result.stdout.count("test accuracy") == 1  # only rank 0 prints


def test_sharded_batches_cover_one_process_batches():
    import torch

    from mnistlab.data.pipeline import DeviceBatches

    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28).contiguous()
    labels = torch.arange(100)

    def batches(rank, world):
        gen = torch.Generator().manual_seed(7)
        return [y for _, y in DeviceBatches(images, labels, 10, 0.0, 1.0, generator=gen, rank=rank, world=world)]

    single = batches(0, 1)
    rank0, rank1 = batches(0, 2), batches(1, 2)
    assert len(rank0) == len(rank1) == len(single)
    for whole, a, b in zip(single, rank0, rank1):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.tolist())
        assert not set(a.tolist()) & set(b.tolist())
