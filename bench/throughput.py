"""Training throughput: mnistlab's device pipeline against the reference loop, in one run.

    MNISTLAB_DATA_DIR=../shared/data python bench/throughput.py [--model iter5] [--batch-size 64] [--device auto]

Prints images/s for
  model only      forward + backward + step on batches already in memory: the ceiling
  mnistlab device mnistlab's default pipeline (uint8 on the device, batched augmentation)
  mnistlab classic mnistlab's classic pipeline (PIL + torchvision transforms + DataLoader)
  reference loop  an independent copy of the seven-iteration 1x1-conv study's notebook training loop:
                  torchvision MNIST, per-image transforms, DataLoader(num_workers=2, pin_memory),
                  loss.item() and a tqdm update every step, run in a child process as the study ran it
                  (glibc's default allocator), and again in this process with mnistlab's allocator
                  setting, so that setting's share is visible
and the ratios: device / reference loop (goal >= 2.5x), device / model only (goal >= 0.85) and device /
classic. All use the same model, batch size and the study's augmentation. The model-only and device figures
come in each compute setting the trainer offers: fp32 NCHW (the reference projects'), train.channels_last:
true and after_first_pool, and after_first_pool with train.amp: bf16 where the CPU has bf16 kernels
(AVX512-BF16/AMX) or the GPU supports bf16. On a GPU (--device cuda, or auto where there is one) every
method trains there: the reference loop moves each batch to it, as the study's notebook did on its GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.config import AugmentConfig  # noqa: E402
from mnistlab.data import DATASETS, load_split, resolve_root  # noqa: E402
from mnistlab.errors import UserError  # noqa: E402
from mnistlab.training.engine import autocast, keep_freed_host_memory, resolve_device, train_one_epoch  # noqa: E402
from mnistlab.models.layout import apply_layout  # noqa: E402
from mnistlab.data.pipeline import DeviceBatches, classic_batches  # noqa: E402
from mnistlab.models import create_model  # noqa: E402

STUDY_AUGMENT = AugmentConfig(center_crop={"size": 22, "p": 0.1}, rotate=15)
MEAN, STD = 0.1307, 0.3081


def fresh(model_name: str, device: torch.device, channels_last: bool | str = False):
    torch.manual_seed(0)
    model = apply_layout(create_model(model_name).to(device), channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=0.002)


def timed(fn, images: int, device: torch.device) -> float:
    """Images per second of fn(), the device's queued work included (a GPU is synchronized at both ends)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return images / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(model_name: str, batch: int, batches: int, device: torch.device, channels_last: bool | str = False,
               dtype=None) -> float:
    model, opt = fresh(model_name, device, channels_last)
    model.train()
    xs = torch.randn(8, batch, 1, 28, 28, device=device)
    ys = torch.randint(0, 10, (8, batch), device=device)

    def loop(n):
        for i in range(n):
            with autocast(device, dtype):
                loss = F.cross_entropy(model(xs[i % 8]), ys[i % 8])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    loop(10)
    return timed(lambda: loop(batches), batches * batch, device)


def mnistlab_pipeline(kind: str, model_name: str, batch: int, batches: int, x, y, device: torch.device,
                      channels_last: bool | str = False, dtype=None) -> float:
    """`device`: x and y already on the device; `classic`: x and y on the CPU, batches copied over."""
    model, opt = fresh(model_name, device, channels_last)
    gen = torch.Generator(device=x.device).manual_seed(0)
    if kind == "device":
        make = lambda n: DeviceBatches(x, y, batch, MEAN, STD, STUDY_AUGMENT, gen, limit=n)  # noqa: E731
    else:
        pin = device.type == "cuda"
        make = lambda n: classic_batches(x, y, batch, MEAN, STD, STUDY_AUGMENT, gen, 2, pin, n)  # noqa: E731
    train_one_epoch(model, make(10), opt, device, dtype=dtype, show_progress=False)
    return timed(lambda: train_one_epoch(model, make(batches), opt, device, dtype=dtype, show_progress=False),
                 batches * batch, device)


def reference_loop(model_name: str, batch: int, batches: int, root: Path, device: torch.device) -> float:
    """The reference loop: the study's notebook training loop, as written there (independent of mnistlab's
    pipeline code)."""
    from torchvision import datasets, transforms
    from tqdm import tqdm

    transform = transforms.Compose([
        transforms.RandomApply([transforms.CenterCrop(22)], p=0.1),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-15.0, 15.0), fill=0),
        transforms.ToTensor(),
        transforms.Normalize((MEAN,), (STD,)),
    ])
    train = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, num_workers=2,
                                         pin_memory=torch.cuda.is_available())  # the study: True, on its GPU
    model, opt = fresh(model_name, device)
    model.train()

    def loop(n):
        pbar = tqdm(loader, total=n, disable=True)
        correct = processed = 0
        for i, (data, target) in enumerate(pbar):
            if i >= n:
                break
            data, target = data.to(device), target.to(device)
            opt.zero_grad()
            pred = model(data)
            loss = F.nll_loss(F.log_softmax(pred, dim=1), target)
            loss.backward()
            opt.step()
            correct += pred.argmax(dim=1).eq(target).sum().item()
            processed += len(data)
            pbar.set_description(f"Train: Loss={loss.item():0.4f} Batch_id={i} Accuracy={100 * correct / processed:0.2f}")

    loop(10)
    return timed(lambda: loop(batches), batches * batch, device)


def reference_loop_in_own_process(args) -> float:
    """The reference loop in a fresh interpreter: none of this process's settings (allocator, threads)."""
    command = [sys.executable, __file__, "--only-reference-loop", "--model", args.model,
               "--batch-size", str(args.batch_size), "--batches", str(args.batches), "--device", args.device]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="iter5")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="methods alternate; each one's best round counts")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (every method trains there)")
    parser.add_argument("--only-reference-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = resolve_root(args.data_dir, None)
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bench/speedrun.py
    if args.only_reference_loop:
        print(reference_loop(args.model, args.batch_size, args.batches, root, device))
        return
    x, y = load_split(DATASETS["mnist"], root, train=True, download=False)
    x_dev, y_dev = x.to(device), y.to(device)
    keep_freed_host_memory()  # as mnistlab train does

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU threads {torch.get_num_threads()} of {os.cpu_count()} cores")
    print(f"model {args.model}, batch {args.batch_size}, {args.batches} batches, the study's augmentation, "
          f"on {device} ({where}), torch {torch.__version__}")
    # The compute settings mnistlab's trainer offers: the reference projects' fp32 NCHW, train.channels_last's
    # layouts, and train.amp: bf16 (on a CPU only where oneDNN has bf16 kernels; emulated bf16 is slower).
    settings = {"fp32": (False, None), "channels_last": (True, None), "after_first_pool": ("after_first_pool", None)}
    if bf16_pays(device):
        settings["after_first_pool+bf16"] = ("after_first_pool", torch.bfloat16)
    methods = {}
    for label, (cl, dtype) in settings.items():
        methods[f"model only, {label}"] = lambda cl=cl, dtype=dtype: model_only(
            args.model, args.batch_size, args.batches, device, cl, dtype)
        methods[f"mnistlab device, {label}"] = lambda cl=cl, dtype=dtype: mnistlab_pipeline(
            "device", args.model, args.batch_size, args.batches, x_dev, y_dev, device, cl, dtype)
    methods["mnistlab classic, fp32"] = lambda: mnistlab_pipeline("classic", args.model, args.batch_size,
                                                                  args.batches, x, y, device)
    methods["reference loop, fp32"] = lambda: reference_loop_in_own_process(args)
    methods["reference loop, mnistlab's allocator"] = lambda: reference_loop(args.model, args.batch_size,
                                                                            args.batches, root, device)
    # Alternating rounds, best of each: a busy neighbour on the machine slows one round, not one method.
    figures = {name: 0.0 for name in methods}
    for _ in range(args.rounds):
        for name, measure in methods.items():
            figures[name] = max(figures[name], measure())
    for name, rate in figures.items():
        print(f"  {name:<40} {rate:8,.0f} images/s")
    reference = figures["reference loop, fp32"]
    reference_same_allocator = figures["reference loop, mnistlab's allocator"]
    for label in settings:
        device, ceiling = figures[f"mnistlab device, {label}"], figures[f"model only, {label}"]
        print(f"mnistlab device, {label}: {device / reference:.2f}x the reference loop (goal >= 2.5x; "
              f"{device / reference_same_allocator:.2f}x given the same allocator), "
              f"{device / ceiling:.2f} of its model-only ceiling (goal >= 0.85)")
    print(f"mnistlab device / mnistlab classic pipeline, fp32: "
          f"{figures['mnistlab device, fp32'] / figures['mnistlab classic, fp32']:.2f}x")


def bf16_pays(device: torch.device) -> bool:
    """bf16 autocast is worth timing on GPUs that support it and on CPUs with bf16 kernels."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


if __name__ == "__main__":
    main()
