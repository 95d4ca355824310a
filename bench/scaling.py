"""What a bigger experiment costs: seconds per training epoch against model size and batch size.

    python bench/scaling.py [--models iter5,cnn3_bn,...] [--device auto] [--steps 20]
                            [--channels-last [after_first_pool]] [--amp auto|off|bf16]

Times forward + backward + optimizer step on in-memory batches (the model's cost, no data work) and
scales it to one epoch of 54,000 images (MNIST's training set less a 10% validation split). Models:
iter5 -> cnn3_bn -> cnn_large -> vgg16 at 32x32 (or --models), at batch 64; then the first model at
batch 32 ... 1024.
--channels-last and --amp price the trainer's train.channels_last and train.amp settings; a last table
sets the layouts (NCHW, channels_last, channels_last after the first pool) against each other for each
model, alternating so that the machine's noise cancels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.errors import UserError  # noqa: E402
from mnistlab.training.engine import amp_dtype, autocast, keep_freed_host_memory, resolve_device  # noqa: E402
from mnistlab.models.layout import apply_layout  # noqa: E402
from mnistlab.models import count_params, create_model, list_models  # noqa: E402

EPOCH_IMAGES = 54_000
LAYOUT_NAMES = {False: "NCHW", True: "channels_last", "after_first_pool": "channels_last after the first pool"}
LAYOUTS = tuple(LAYOUT_NAMES)  # train.channels_last's values


def training_step(name: str, batch: int, device: torch.device, channels_last: bool | str = False,
                  amp: str = "auto"):
    """One forward + backward + SGD step of `name` on a fixed in-memory batch, warmed up; returns the step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = apply_layout(create_model(name).to(device), channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = amp_dtype(amp, device)

    def step():
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    return step


def clocked(step, steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def seconds_per_step(name: str, batch: int, steps: int, device: torch.device, **setting) -> float:
    return clocked(training_step(name, batch, device, **setting), steps, device)


def layout_times(name: str, steps: int, rounds: int, device: torch.device, amp: str) -> list[float]:
    """Seconds per step in each of LAYOUTS, alternating, median of each: a busy machine slows rounds,
    not one layout."""
    steppers = [training_step(name, 64, device, layout, amp) for layout in LAYOUTS]
    times = [[] for _ in LAYOUTS]
    for _ in range(rounds):
        for i, step in enumerate(steppers):
            times[i].append(clocked(step, steps, device))
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="iter5,cnn3_bn,cnn_large,vgg16", help="registry names, smallest first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels-last", nargs="?", const=True, default=False, choices=(True, "after_first_pool"),
                        help="as train.channels_last: true, or after_first_pool")
    parser.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"), help="as train.amp")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_models()]
    if unknown or not models:
        parser.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; see `mnistlab models`")
    try:
        device = resolve_device(args.device)
    except UserError as exc:  # one line, as from mnistlab
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    dtype = amp_dtype(args.amp, device)
    keep_freed_host_memory()  # as mnistlab train does
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{LAYOUT_NAMES[args.channels_last]}, "
          f"{str(dtype).removeprefix('torch.') + ' autocast' if dtype else 'fp32'}; one epoch = {EPOCH_IMAGES:,} images")
    setting = {"channels_last": args.channels_last, "amp": args.amp}

    print("\nmodel size (batch 64):")
    print(f"  {'model':<10} {'params':>12} {'s/step':>8} {'s/epoch':>9} {'x ' + models[0]:>8}")
    base = None
    for name in models:
        params = count_params(name)
        steps = max(3, args.steps // (10 if name == "vgg16" and device.type == "cpu" else 1))
        per_step = seconds_per_step(name, 64, steps, device, **setting)
        per_epoch = per_step * EPOCH_IMAGES / 64
        base = base or per_epoch
        print(f"  {name:<10} {params:>12,} {per_step:>8.4f} {per_epoch:>9.1f} {per_epoch / base:>8.1f}")

    print(f"\nbatch size ({models[0]}):")
    print(f"  {'batch':>6} {'s/step':>8} {'s/epoch':>9} {'images/s':>10}")
    for batch in (32, 64, 128, 256, 512, 1024):
        per_step = seconds_per_step(models[0], batch, args.steps, device, **setting)
        print(f"  {batch:>6} {per_step:>8.4f} {per_step * EPOCH_IMAGES / batch:>9.1f} {batch / per_step:>10,.0f}")

    print("\ntrain.channels_last (batch 64, s/step and speed-up over NCHW; the layouts alternate, 5 rounds, median):")
    print(f"  {'model':<10} {'NCHW':>8} {'true':>16} {'after_first_pool':>16}")
    for name in models:
        steps = max(1, args.steps // (20 if name == "vgg16" and device.type == "cpu" else 4))
        nchw, nhwc, after = layout_times(name, steps, 5, device, args.amp)
        print(f"  {name:<10} {nchw:>8.4f} {nhwc:>8.4f} ({nchw / nhwc:.2f}x) {after:>8.4f} ({nchw / after:.2f}x)")


if __name__ == "__main__":
    main()
