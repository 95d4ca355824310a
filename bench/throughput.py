"""Training throughput: mnistlab's device pipeline against the reference loop, in one run.

    MNISTLAB_DATA_DIR=../shared/data python bench/throughput.py [--model iter5] [--batch-size 64]

Prints images/s for
  model only      forward + backward + step on batches already in memory: the ceiling
  mnistlab device mnistlab's default pipeline (uint8 on the device, batched augmentation)
  mnistlab classic mnistlab's classic pipeline (PIL + torchvision transforms + DataLoader)
  reference loop  an independent copy of the seven-iteration 1x1-conv study's notebook training loop:
                  torchvision MNIST, per-image transforms, DataLoader(num_workers=2, pin_memory),
                  loss.item() and a tqdm update every step, run in a child process as the study ran it
                  (glibc's default allocator), and again in this process with mnistlab's allocator
                  setting, so that setting's share is visible
and the ratios: device / reference loop (goal >= 2.5x) and device / model only (goal >= 0.85).
All use the same model, batch size and the study's augmentation. The model-only and device figures come
in each compute setting the trainer offers on a CPU: fp32 NCHW (the reference projects'),
train.channels_last: true and after_first_pool, and after_first_pool with train.amp: bf16 where the CPU
has bf16 kernels (AVX512-BF16/AMX).
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
from mnistlab.training.engine import autocast, keep_freed_host_memory, train_one_epoch  # noqa: E402
from mnistlab.models.layout import apply_layout  # noqa: E402
from mnistlab.data.pipeline import DeviceBatches, classic_batches  # noqa: E402
from mnistlab.models import create_model  # noqa: E402

STUDY_AUGMENT = AugmentConfig(center_crop={"size": 22, "p": 0.1}, rotate=15)
MEAN, STD = 0.1307, 0.3081


def fresh(model_name: str, channels_last: bool | str = False):
    torch.manual_seed(0)
    model = apply_layout(create_model(model_name), channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=0.002)


def timed(fn, images: int) -> float:
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def model_only(model_name: str, batch: int, batches: int, channels_last: bool | str = False, dtype=None) -> float:
    model, opt = fresh(model_name, channels_last)
    model.train()
    xs = torch.randn(8, batch, 1, 28, 28)
    ys = torch.randint(0, 10, (8, batch))

    def loop(n):
        for i in range(n):
            with autocast(torch.device("cpu"), dtype):
                loss = F.cross_entropy(model(xs[i % 8]), ys[i % 8])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    loop(10)
    return timed(lambda: loop(batches), batches * batch)


def mnistlab_pipeline(kind: str, model_name: str, batch: int, batches: int, x, y,
                      channels_last: bool | str = False, dtype=None) -> float:
    model, opt = fresh(model_name, channels_last)
    gen = torch.Generator().manual_seed(0)
    if kind == "device":
        make = lambda n: DeviceBatches(x, y, batch, MEAN, STD, STUDY_AUGMENT, gen, limit=n)  # noqa: E731
    else:
        make = lambda n: classic_batches(x, y, batch, MEAN, STD, STUDY_AUGMENT, gen, 2, False, n)  # noqa: E731
    cpu = torch.device("cpu")
    train_one_epoch(model, make(10), opt, cpu, dtype=dtype, show_progress=False)
    return timed(lambda: train_one_epoch(model, make(batches), opt, cpu, dtype=dtype, show_progress=False),
                 batches * batch)


def reference_loop(model_name: str, batch: int, batches: int, root: Path) -> float:
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
    model, opt = fresh(model_name)
    model.train()

    def loop(n):
        pbar = tqdm(loader, total=n, disable=True)
        correct = processed = 0
        for i, (data, target) in enumerate(pbar):
            if i >= n:
                break
            opt.zero_grad()
            pred = model(data)
            loss = F.nll_loss(F.log_softmax(pred, dim=1), target)
            loss.backward()
            opt.step()
            correct += pred.argmax(dim=1).eq(target).sum().item()
            processed += len(data)
            pbar.set_description(f"Train: Loss={loss.item():0.4f} Batch_id={i} Accuracy={100 * correct / processed:0.2f}")

    loop(10)
    return timed(lambda: loop(batches), batches * batch)


def reference_loop_in_own_process(args) -> float:
    """The reference loop in a fresh interpreter: none of this process's settings (allocator, threads)."""
    command = [sys.executable, __file__, "--only-reference-loop", "--model", args.model,
               "--batch-size", str(args.batch_size), "--batches", str(args.batches)]
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
    parser.add_argument("--only-reference-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = resolve_root(args.data_dir, None)
    if args.only_reference_loop:
        print(reference_loop(args.model, args.batch_size, args.batches, root))
        return
    x, y = load_split(DATASETS["mnist"], root, train=True, download=False)
    keep_freed_host_memory()  # as mnistlab train does

    print(f"model {args.model}, batch {args.batch_size}, {args.batches} batches, the study's augmentation, "
          f"CPU threads {torch.get_num_threads()} of {os.cpu_count()} cores, torch {torch.__version__}")
    # The compute settings mnistlab's trainer offers on a CPU: the reference projects' fp32 NCHW,
    # train.channels_last's layouts, and train.amp: bf16 (only where oneDNN has bf16 kernels; emulated bf16
    # is slower).
    settings = {"fp32": (False, None), "channels_last": (True, None), "after_first_pool": ("after_first_pool", None)}
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        settings["after_first_pool+bf16"] = ("after_first_pool", torch.bfloat16)
    methods = {}
    for label, (cl, dtype) in settings.items():
        methods[f"model only, {label}"] = lambda cl=cl, dtype=dtype: model_only(
            args.model, args.batch_size, args.batches, cl, dtype)
        methods[f"mnistlab device, {label}"] = lambda cl=cl, dtype=dtype: mnistlab_pipeline(
            "device", args.model, args.batch_size, args.batches, x, y, cl, dtype)
    methods["mnistlab classic, fp32"] = lambda: mnistlab_pipeline("classic", args.model, args.batch_size,
                                                                  args.batches, x, y)
    methods["reference loop, fp32"] = lambda: reference_loop_in_own_process(args)
    methods["reference loop, mnistlab's allocator"] = lambda: reference_loop(args.model, args.batch_size,
                                                                            args.batches, root)
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


if __name__ == "__main__":
    main()
