"""Speedrun: wall time of training to >= 99.0% mean test accuracy, over several seeds.

    MNISTLAB_DATA_DIR=../shared/data python bench/speedrun.py [--config configs/speedrun.yaml]
        [--seeds 5] [--device auto] [--set KEY=VALUE ...]

The config's whole schedule is trained once per seed with mnistlab's own pieces (data on the
device, batched augmentation, the engine's train_one_epoch) and timed from the first step to the
last, with the device synchronized at both ends. Loading the dataset onto the device, building the
model and scoring are outside the clock; one untimed warm-up run first pays for kernel selection and
torch.compile. Each seed's model is then scored once on all 10,000 test images. No model selection
happens: the schedule is fixed, the last step is the model.

Prints per-seed time and accuracy (validation, to tune on, and test), the mean ± sd, the device, and
whether the mean test accuracy reached the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.config import load_config  # noqa: E402
from mnistlab.data import load_data, resolve_root  # noqa: E402
from mnistlab.training.engine import amp_dtype, keep_freed_host_memory, resolve_device, score, train_one_epoch  # noqa: E402
from mnistlab.errors import UserError  # noqa: E402
from mnistlab.training.optim import build_optimizer, build_scheduler  # noqa: E402
from mnistlab.data.pipeline import DeviceBatches, eval_batches  # noqa: E402
from mnistlab.training.trainer import compile_if_asked, create_training_model, resolve_batch_size  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_and_score(cfg, data, on_device: dict, device, seed: int) -> tuple[float, float, float | None]:
    """(training seconds, val accuracy, test accuracy) for one seed; `on_device` holds the splits moved there."""
    torch.manual_seed(seed)
    model = create_training_model(cfg, data.num_classes, device)
    net = compile_if_asked(model, cfg.train.compile)
    dtype = amp_dtype(cfg.train.amp, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    batch_size = resolve_batch_size(cfg.train.batch_size, len(data.train_y))
    batches = DeviceBatches(*on_device["train"], batch_size, data.mean, data.std, cfg.data.augment, generator,
                            limit=cfg.train.limit_train_batches)
    optimizer = build_optimizer(cfg.train.optimizer, model.parameters())
    scheduler, when = build_scheduler(cfg.train.scheduler, optimizer, cfg.train.epochs, len(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(cfg.train.epochs):
        train_one_epoch(net, batches, optimizer, device, label_smoothing=cfg.train.label_smoothing, dtype=dtype,
                        batch_scheduler=scheduler if when == "batch" else None, show_progress=False)
        if scheduler is not None and when == "epoch":
            scheduler.step()
    synchronize(device)
    seconds = time.perf_counter() - start

    def accuracy(split):
        return score(model, eval_batches(*on_device[split], cfg.train.eval_batch_size, data.mean, data.std),
                     device, dtype).acc

    return seconds, accuracy("val") if len(data.val_y) else None, accuracy("test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "speedrun.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    args = parser.parse_args()

    try:  # a config, device or data mistake: one line, as from mnistlab
        cfg = load_config(args.config, args.overrides)
        if cfg.data.pipeline != "device":
            raise UserError(f"{args.config}: the speedrun times the device pipeline; set data.pipeline: device")
        device = resolve_device(args.device if args.device != "auto" else cfg.device)
        data = load_data(cfg.data, cfg.seed, resolve_root(None, cfg.data.root))
    except UserError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    torch.backends.cudnn.benchmark = True
    keep_freed_host_memory()  # as mnistlab train does
    on_device = {"train": (data.train_x.to(device), data.train_y.to(device)),
                 "val": (data.val_x.to(device), data.val_y.to(device)),
                 "test": (data.test_x.to(device), data.test_y.to(device))}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"speedrun: {cfg.name} ({cfg.model.name}), {cfg.train.epochs} epochs of {len(data.train_y):,} images, "
          f"batch {cfg.train.batch_size}, on {device} ({name}), torch {torch.__version__}")

    warm_s, _, warm_acc = train_and_score(cfg, data, on_device, device, seed=0)
    print(f"  warm-up (seed 0, not counted): {warm_s:.2f} s, test {warm_acc:.2%}")
    times, accs, vals = [], [], []
    for seed in range(1, args.seeds + 1):
        seconds, val, acc = train_and_score(cfg, data, on_device, device, seed)
        times.append(seconds)
        accs.append(acc)
        vals.append(val)
        shown = f"val {val:.2%} ({len(data.val_y):,} images), " if val is not None else ""
        print(f"  seed {seed}: {seconds:.2f} s of training, {shown}test {acc:.2%} ({len(data.test_y):,} images)")
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    mean = statistics.mean(accs)
    verdict = "reached" if mean >= args.target else "MISSED"
    if None not in vals:  # tune a recipe on this line, not on the test accuracy below it
        print(f"mean validation accuracy {statistics.mean(vals):.2%}")
    print(f"mean over {len(accs)} seeds: {statistics.mean(times):.2f} s of training "
          f"(min {min(times):.2f}, max {max(times):.2f}), test accuracy {mean:.2%} ± {sd:.2%}: "
          f"target {args.target:.1%} {verdict}")


if __name__ == "__main__":
    main()
