"""What engine.keep_freed_host_memory buys: a model's training step with glibc's default allocator
settings against mnistlab's, each in fresh processes (the setting is process-wide), alternating.

    python bench/allocator.py [--model iter5] [--batch-size 64] [--steps 300] [--rounds 5]

Prints each process's images/s (forward + backward + Adam step on in-memory batches, NCHW fp32), the
medians and their ratio (mnistlab's setting over glibc's default), and the page faults per step.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistlab.training.engine import keep_freed_host_memory  # noqa: E402
from mnistlab.models import create_model  # noqa: E402

SETTINGS = ("glibc default", "mnistlab")


def measure(model_name: str, batch: int, steps: int) -> tuple[float, float]:
    """(images/s, page faults per step) of `steps` warmed-up training steps in this process."""
    torch.manual_seed(0)
    model = create_model(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    xs, ys = torch.randn(8, batch, 1, 28, 28), torch.randint(0, 10, (8, batch))

    def run(n):
        for i in range(n):
            loss = F.cross_entropy(model(xs[i % 8]), ys[i % 8])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(10)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run(steps)
    rate = steps * batch / (time.perf_counter() - start)
    return rate, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="iter5")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)  # a child process's setting
    args = parser.parse_args()
    if args.one:
        if args.one == "mnistlab" and not keep_freed_host_memory():
            sys.exit("keep_freed_host_memory: not glibc, nothing to compare")
        print(*measure(args.model, args.batch_size, args.steps))
        return

    print(f"model {args.model}, batch {args.batch_size}, {args.steps} steps per process, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--one", name, "--model", args.model, "--batch-size",
                                  str(args.batch_size), "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=True).stdout.split()
            results[name].append((float(out[0]), float(out[1])))
    for name, runs in results.items():
        print(f"  {name:<14} images/s {', '.join(f'{r:,.0f}' for r, _ in runs)}; median "
              f"{statistics.median(r for r, _ in runs):,.0f}; page faults per step "
              f"{', '.join(f'{f:.0f}' for _, f in runs)}")
    ratio = statistics.median(r for r, _ in results["mnistlab"]) / statistics.median(r for r, _ in results[SETTINGS[0]])
    print(f"mnistlab's allocator setting / glibc's default: {ratio:.2f}x (medians)")


if __name__ == "__main__":
    main()
