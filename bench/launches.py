"""Tensor operations per training step: what a small model's GPU step time is made of, counted on any machine.

    python bench/launches.py [--configs configs/iter5.yaml,configs/speedrun.yaml] [--steps 32]

A model as small as iter5 keeps a GPU busy for microseconds per kernel, so its step time is set by how
many kernels the host launches, one per tensor operation. This script runs the config's training steps
(its model, batch size, augmentation and optimizer, on random images) under torch.profiler on the CPU
and counts the operations that would each launch at least one kernel on a GPU (views and other
metadata-only operations are left out), per step, for:
  batch by batch     each batch prepared on its own (pipeline.CHUNK_IMAGES = 1), the optimizer's foreach
                     path (the GPU default before mnistlab asked for fused)
  grouped            batches prepared 1,024 images at a time (mnistlab's default)
  grouped + fused    and Adam/AdamW's fused kernel (what mnistlab uses on CUDA)
  ... + bf16         and train.amp's bf16 autocast (its casts)
It is a count, not a time: some operations launch several kernels, and a GPU's time per launch is
its own. What it shows is which changes remove launches, and how many.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mnistlab.data.pipeline as pipeline  # noqa: E402
from mnistlab.config import load_config  # noqa: E402
from mnistlab.training.engine import train_one_epoch  # noqa: E402
from mnistlab.training.optim import build_scheduler  # noqa: E402
from mnistlab.models import create_model  # noqa: E402
from mnistlab.training.trainer import resolve_batch_size  # noqa: E402

# Operations that only make a new view of a tensor, read a CPU scalar or allocate: no kernel
NO_KERNEL = {"aten::view", "aten::detach", "aten::select", "aten::slice", "aten::t", "aten::unsqueeze",
             "aten::reshape", "aten::expand", "aten::item", "aten::_local_scalar_dense", "aten::empty",
             "aten::as_strided", "aten::alias", "aten::transpose", "aten::permute", "aten::empty_like",
             "aten::flatten", "aten::result_type", "aten::lift_fresh", "aten::split", "aten::split_with_sizes",
             "aten::unbind", "aten::_unsafe_view", "aten::empty_strided", "aten::resolve_conj", "aten::resolve_neg"}


def operations_per_step(cfg, steps: int, chunk_images: int, fused: bool, dtype) -> tuple[float, collections.Counter]:
    torch.manual_seed(0)
    model = create_model(cfg.model.name)
    batch = resolve_batch_size(cfg.train.batch_size, 60_000)
    n = batch * steps
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    pipeline.CHUNK_IMAGES = chunk_images
    batches = pipeline.DeviceBatches(images, labels, batch, 0.1307, 0.3081, cfg.data.augment,
                                     torch.Generator().manual_seed(0))
    opt_cfg = cfg.train.optimizer
    if opt_cfg.name == "sgd":  # mnistlab fuses Adam and AdamW only (optim.fused_on): SGD stays foreach
        optimizer = torch.optim.SGD(model.parameters(), lr=opt_cfg.lr, momentum=opt_cfg.momentum, foreach=True)
    else:
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[opt_cfg.name]
        optimizer = cls(model.parameters(), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay,
                        **({"fused": True} if fused else {"foreach": True}))
    scheduler, when = build_scheduler(cfg.train.scheduler, optimizer, 2, steps)
    cpu = torch.device("cpu")

    def epoch():
        train_one_epoch(model, batches, optimizer, cpu, label_smoothing=cfg.train.label_smoothing, dtype=dtype,
                        batch_scheduler=scheduler if when == "batch" else None, show_progress=False)

    epoch()  # first steps create the optimizer's state
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        epoch()
    top = [e.name for e in prof.events() if e.name.startswith("aten::") and e.name not in NO_KERNEL
           and e.name != "aten::to" and outermost(e)]
    return len(top) / steps, collections.Counter(top)


def outermost(event) -> bool:
    """Not called by another counted operation (`to` counts only where it copies: its _to_copy)."""
    parent = event.cpu_parent
    while parent is not None and parent.name == "aten::to":
        parent = parent.cpu_parent
    return parent is None or not parent.name.startswith("aten::")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/iter5.yaml,configs/speedrun.yaml")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--show", type=int, default=0, help="also list the N most frequent operations")
    args = parser.parse_args()
    default_chunk = pipeline.CHUNK_IMAGES
    settings = {"batch by batch": (1, False, None), "grouped": (default_chunk, False, None),
                "grouped + fused": (default_chunk, True, None),
                "grouped + fused + bf16": (default_chunk, True, torch.bfloat16)}
    print(f"tensor operations per training step (each one or more GPU kernel launches), counted on the CPU "
          f"over {args.steps} steps, torch {torch.__version__}")
    for path in args.configs.split(","):
        cfg = load_config(path)
        counts = {label: operations_per_step(cfg, args.steps, *setting) for label, setting in settings.items()}
        line = ", ".join(f"{label} {per_step:.1f}" for label, (per_step, _) in counts.items())
        print(f"  {cfg.name} ({cfg.model.name}, batch {cfg.train.batch_size}): {line}")
        if args.show:
            for label, (_, counter) in counts.items():
                print(f"    {label}: " + ", ".join(f"{name[6:]} {c / args.steps:.1f}"
                                                   for name, c in counter.most_common(args.show)))


if __name__ == "__main__":
    main()
