"""What the accuracy frontier's parts cost: elastic distortion in both pipelines, and the weight average.

    python bench/frontier_cost.py [--images 8192] [--steps 60] [--model cnn5_bn] [--batch-size 128]

On random 28x28 images (the cost does not depend on the pixels), on the CPU, prints
  device pipeline  images/s preparing batches (gather, augment, normalize) with best.yaml's affine
                   augmentation (tilt 12, shift 0.08, size 0.85-1.1), with elastic on half the images
                   (alpha 34, sigma 4, p 0.5) and on all of them; the ratio against affine alone
  classic          images/s of the per-image torchvision transforms, with and without ElasticTransform
  training step    ms per forward + backward + AdamW step of the model at the batch size, with and without
                   train.ema's update after it (decay 0.999); the ratio
Each figure is the fastest of 3 rounds, so a busy machine shows less in it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.config import AugmentConfig, EmaConfig  # noqa: E402
from mnistlab.data.augment import classic_transform  # noqa: E402
from mnistlab.data.pipeline import DeviceBatches  # noqa: E402
from mnistlab.models import create_model  # noqa: E402
from mnistlab.training.ema import build_ema  # noqa: E402

AFFINE = {"rotate": 12, "translate": 0.08, "scale": [0.85, 1.1]}
ELASTIC = {"alpha": 34, "sigma": 4}


def fastest(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def device_rates(images: torch.Tensor, batch: int) -> dict[str, float]:
    labels = torch.zeros(len(images), dtype=torch.long)
    augs = {"affine": AugmentConfig(**AFFINE),
            "affine + elastic p 0.5": AugmentConfig(**AFFINE, elastic={**ELASTIC, "p": 0.5}),
            "affine + elastic p 1": AugmentConfig(**AFFINE, elastic={**ELASTIC, "p": 1.0})}
    rates = {}
    for name, aug in augs.items():
        batches = DeviceBatches(images, labels, batch, 0.1307, 0.3081, aug, torch.Generator().manual_seed(0))
        rates[name] = len(images) / fastest(lambda: [x for x, _ in batches])
    return rates


def classic_rates(images: torch.Tensor) -> dict[str, float]:
    pictures = [Image.fromarray(im.numpy(), mode="L") for im in images]
    rates = {}
    for name, aug in {"affine": AugmentConfig(**AFFINE),
                      "affine + elastic p 1": AugmentConfig(**AFFINE, elastic=ELASTIC)}.items():
        transform = classic_transform(aug, 0.1307, 0.3081)
        rates[name] = len(pictures) / fastest(lambda: [transform(p) for p in pictures])
    return rates


def step_times(model_name: str, batch: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(model_name).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = build_ema(EmaConfig(decay=0.999), model)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def train(with_ema: bool):
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if with_ema:
                ema.update_parameters(model)

    train(True)  # warm-up: oneDNN primitives, the optimizer's state
    return {"without ema": fastest(lambda: train(False)) / steps * 1e3,
            "with ema": fastest(lambda: train(True)) / steps * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--classic-images", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--model", default="cnn5_bn")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    images = torch.randint(0, 256, (args.images, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; fastest of 3 rounds")
    rates = device_rates(images, args.batch_size)
    print(f"device pipeline ({args.images:,} images, batch {args.batch_size}):")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:>10,.0f} images/s   {rates['affine'] / rate:.2f}x the time of affine alone")
    rates = classic_rates(images[:args.classic_images])
    print(f"classic pipeline ({args.classic_images:,} images, per-image torchvision transforms, one process):")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:>10,.0f} images/s   {rates['affine'] / rate:.2f}x the time of affine alone")
    times = step_times(args.model, args.batch_size, args.steps)
    print(f"training step ({args.model}, batch {args.batch_size}, AdamW, channels_last, {args.steps} steps):")
    for name, ms in times.items():
        print(f"  {name:<24} {ms:>10.2f} ms/step")
    print(f"  the average's update adds {times['with ema'] / times['without ema'] - 1:+.1%} to a step")


if __name__ == "__main__":
    main()
