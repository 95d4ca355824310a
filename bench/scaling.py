"""What a bigger experiment costs: seconds per training epoch against model size and batch size.

    python bench/scaling.py [--device auto] [--steps 20]

Times forward + backward + optimizer step on in-memory batches (the model's cost, no data work) and
scales it to one epoch of 54,000 images (MNIST's training set less a 10% validation split). Models:
iter5 -> cnn3_bn -> cnn_large -> vgg16 at 32x32, at batch 64; then iter5 at batch 32 ... 1024.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.engine import amp_dtype, autocast, resolve_device  # noqa: E402
from mnistlab.registry import count_params, create_model  # noqa: E402

EPOCH_IMAGES = 54_000


def seconds_per_step(name: str, batch: int, steps: int, device: torch.device) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(name).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = amp_dtype("auto", device)

    def step():
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"one epoch = {EPOCH_IMAGES:,} images")

    print("\nmodel size (batch 64):")
    print(f"  {'model':<10} {'params':>12} {'s/step':>8} {'s/epoch':>9} {'x iter5':>8}")
    base = None
    for name in ("iter5", "cnn3_bn", "cnn_large", "vgg16"):
        params = count_params(name)
        steps = max(3, args.steps // (10 if name == "vgg16" and device.type == "cpu" else 1))
        per_step = seconds_per_step(name, 64, steps, device)
        per_epoch = per_step * EPOCH_IMAGES / 64
        base = base or per_epoch
        print(f"  {name:<10} {params:>12,} {per_step:>8.4f} {per_epoch:>9.1f} {per_epoch / base:>8.1f}")

    print("\nbatch size (iter5):")
    print(f"  {'batch':>6} {'s/step':>8} {'s/epoch':>9} {'images/s':>10}")
    for batch in (32, 64, 128, 256, 512, 1024):
        per_step = seconds_per_step("iter5", batch, args.steps, device)
        print(f"  {batch:>6} {per_step:>8.4f} {per_step * EPOCH_IMAGES / batch:>9.1f} {batch / per_step:>10,.0f}")


if __name__ == "__main__":
    main()
