"""What only a CUDA GPU can check: bf16 and fp16 autocast, Adam/AdamW's fused kernel, the device pipeline
on CUDA, eval agreeing with summary.json there, and a checkpoint written on the GPU loaded on a CPU.

Marked `gpu` (`pytest -m gpu`) and skipped wherever torch sees no CUDA GPU, as in CI; bench/gpu.sh runs
them on one.
"""

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_subprocess
from mnistlab.config import AugmentConfig, load_config
from mnistlab.data.pipeline import DeviceBatches
from mnistlab.models import create_model
from mnistlab.training.checkpoint import load_checkpoint, model_from_checkpoint
from mnistlab.training.engine import amp_dtype, autocast
from mnistlab.training.optim import build_optimizer

NO_GPU = (f"needs a CUDA GPU, and torch {torch.__version__} sees none here "
          f"({'a CUDA build' if torch.version.cuda else 'a CPU-only build'}); bench/gpu.sh runs these on one")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

CUDA = torch.device("cuda")
MEAN, STD = 0.1307, 0.3081


def train_on_gpu(out: Path, mnist_root: Path, *extra: str) -> Path:
    """iter5 for 2 epochs of 25 batches on the GPU, scored on all 10,000 test images; its run directory."""
    from mnistlab.cli import main

    code = main(["train", str(REPO / "configs" / "iter5.yaml"), "--device", "cuda", "--quiet", "--set",
                 "train.epochs=2", "--set", "train.limit_train_batches=25", *extra, "--out-dir", str(out),
                 "--data-dir", str(mnist_root)])
    assert code == 0
    (run_dir,) = (out / "iter5").iterdir()
    return run_dir


def train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def gpu_run(mnist_root, tmp_path_factory):
    return train_on_gpu(tmp_path_factory.mktemp("gpu_runs"), mnist_root)


def test_autocast_runs_the_model_in_bf16_and_fp16():
    assert amp_dtype("auto", CUDA) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert amp_dtype("off", CUDA) is None and amp_dtype("fp16", CUDA) == torch.float16
    model = create_model("iter5").to(CUDA)
    x = torch.randn(8, 1, 28, 28, device=CUDA)
    for dtype in (torch.bfloat16, torch.float16):
        with autocast(CUDA, dtype):
            assert model(x).dtype == dtype
    assert model(x).dtype == torch.float32


def test_bf16_and_fp16_train_on_the_gpu_and_say_so(tmp_path, mnist_root, gpu_run):
    fp32 = json.loads((gpu_run / "summary.json").read_text())
    assert fp32["amp"] == "off" and fp32["device"].startswith("cuda (")  # iter5.yaml says amp: off
    for setting, name in (("bf16", "bfloat16"), ("fp16", "float16")):  # fp16 steps through the GradScaler
        run = train_on_gpu(tmp_path / setting, mnist_root, "--set", f"train.amp={setting}")
        summary = json.loads((run / "summary.json").read_text())
        assert summary["amp"] == name and summary["test_n"] == 10_000 and summary["test_acc"] > 0.5
        # the same 50 steps; rounding differences grow over them (on the CPU bf16 stays within 5%), and the
        # GradScaler skips the first fp16 steps whose gradients overflow
        assert train_losses(run) == pytest.approx(train_losses(gpu_run), rel=0.15)
        assert train_losses(run) != train_losses(gpu_run)  # it did autocast


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_and_adamw_are_fused_on_cuda_and_step_as_the_foreach_path_does(name):
    cfg = load_config(REPO / "configs" / "iter5.yaml", [f"train.optimizer.name={name}"]).train.optimizer
    torch.manual_seed(0)
    fused_model = create_model("iter5").to(CUDA)
    plain_model = create_model("iter5").to(CUDA)
    plain_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(cfg, fused_model.parameters())
    assert fused.param_groups[0]["fused"] is True
    assert build_optimizer(cfg, create_model("iter5").parameters()).param_groups[0]["fused"] is None  # CPU
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    plain = cls(plain_model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                foreach=True)
    x, y = torch.randn(64, 1, 28, 28, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    for _ in range(3):  # the same gradients into both (cuDNN's backward may round differently run to run)
        fused.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(fused_model(x), y).backward()
        for a, b in zip(fused_model.parameters(), plain_model.parameters()):
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def digits(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_device_pipeline_prepares_batches_on_the_gpu():
    images, labels = digits()
    gpu = DeviceBatches(images.to(CUDA), labels.to(CUDA), 64, MEAN, STD,
                        generator=torch.Generator(device=CUDA).manual_seed(0))
    batches = list(gpu)
    assert len(batches) == len(gpu) == 5 and [len(y) for _, y in batches] == [64, 64, 64, 64, 44]
    for x, y in batches:
        assert x.device.type == y.device.type == "cuda" and x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values.cpu(), labels.sort().values)  # each once
    # unshuffled, the GPU's pixels are the CPU's: x / 255, normalized
    ordered = [DeviceBatches(im, lb, 64, MEAN, STD, shuffle=False) for im, lb in
               ((images.to(CUDA), labels.to(CUDA)), (images, labels))]
    for (xg, yg), (xc, yc) in zip(*ordered):
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
        assert torch.equal(yg.cpu(), yc)


def test_augmentation_on_the_gpu_is_seeded_and_changes_the_images():
    images, labels = digits()
    aug = AugmentConfig(rotate=12, translate=0.08, scale=[0.85, 1.1], center_crop={"size": 22, "p": 0.1})

    def epoch(augment, seed=0):
        g = torch.Generator(device=CUDA).manual_seed(seed)
        return torch.cat([x for x, _ in DeviceBatches(images.to(CUDA), labels.to(CUDA), 64, MEAN, STD, augment, g)])

    first, again, plain = epoch(aug), epoch(aug), epoch(None)
    assert torch.equal(first, again) and not torch.equal(first, epoch(aug, seed=1))
    assert torch.isfinite(first).all() and first.shape == plain.shape == (300, 1, 28, 28)
    assert not torch.allclose(first, plain)  # same shuffle (same seed), other pixels
    background = -MEAN / STD  # zoomed and shifted digits fill their borders with the background value
    assert first.min() >= background - 1e-4 and first.max() <= (1 - MEAN) / STD + 1e-4


def test_eval_on_the_gpu_equals_the_summary(gpu_run, cli, mnist_root):
    summary = json.loads((gpu_run / "summary.json").read_text())
    assert summary["test_n"] == 10_000 and summary["pipeline"] == "device"
    code, out, err = cli("eval", gpu_run / "best.pt", "--json", "--device", "cuda", "--data-dir", mnist_root)
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 10_000 and report["accuracy"] == summary["test_acc"]
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    code, out, _ = cli("eval", gpu_run / "best.pt", "--json", "--split", "val", "--device", "cuda",
                       "--data-dir", mnist_root)
    assert code == 0 and json.loads(out)["accuracy"] == summary["val_acc"]


def test_a_checkpoint_written_on_the_gpu_loads_and_scores_on_a_cpu(gpu_run, mnist_root):
    ckpt = load_checkpoint(gpu_run / "best.pt")
    assert all(t.device.type == "cpu" for t in ckpt["state_dict"].values())
    model = model_from_checkpoint(ckpt, gpu_run / "best.pt")
    assert all(p.device.type == "cpu" for p in model.parameters())
    # in a process that sees no GPU at all, as a user's laptop
    result = run_subprocess("eval", gpu_run / "best.pt", "--json", "--device", "cpu", "--data-dir", mnist_root,
                            env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    summary = json.loads((gpu_run / "summary.json").read_text())
    assert report["n"] == 10_000
    assert report["accuracy"] == pytest.approx(summary["test_acc"], abs=3e-4)  # CPU rounding: a few digits at most
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-3)
