"""The worked example of docs/own-data.md: the shipped model fine-tuned on a few digits of one writer.

    python bench/own_digits.py OUT_DIR [--shots 5,10,20] [--seed 0] [--epochs 15] [--mix-repeat 20]
                                       [--mix-epochs 2] [--no-mix] [--data-dir DIR]

A writer the shipped model reads poorly (bench/writer.py: one hand in shapes MNIST seldom has) writes 100
digits of each class (seed --seed). They are split by file, once: 50 of each class are the held-out test
part, 10 the validation part, and the first N of the remaining 40 the training part, for each N of --shots
(--test, --val and --pool change the 50, 10 and 40).
For each N the shipped model is fine-tuned as a user would (`data.dataset: folder`, `model.init: default`,
the epoch chosen on the writer's validation part, the test part scored once):

- on the writer's digits alone (--epochs epochs), and
- with MNIST's training images mixed in (`data.mix`, the writer's repeated --mix-repeat times; --mix-epochs).

Each fine-tuned model is then scored on all 10,000 MNIST test images (`eval --data mnist`): what it
forgot. Prints one table (and the commands' configs are written into OUT_DIR/configs). MNIST is read from
--data-dir or $MNISTLAB_DATA_DIR. Nothing is timed; the figures repeat on the same machine and library
versions (the training runs on one thread: OMP_NUM_THREADS=1 is set here).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: a run repeats exactly with one thread

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402

import mnistlab  # noqa: E402
from writer import write  # noqa: E402  (bench/writer.py)

def split_writer(source: Path, out: Path, shots: list[int], seed: int, test: int, val: int) -> dict[int, Path]:
    """OUT/shots-N/{train,val,test}/<digit>/: the same test and validation files for every N (split by file)."""
    sets = {}
    rng = random.Random(seed)
    files = {d: sorted((source / str(d)).glob("*.png")) for d in range(10)}
    for d in files:
        rng.shuffle(files[d])
    for n in shots:
        root = out / f"shots-{n}"
        for d, names in files.items():
            parts = {"test": names[:test], "val": names[test:test + val], "train": names[test + val:][:n]}
            for part, chosen in parts.items():
                (root / part / str(d)).mkdir(parents=True, exist_ok=True)
                for f in chosen:
                    shutil.copyfile(f, root / part / str(d) / f.name)
        sets[n] = root
    return sets


def config(name: str, path: Path, epochs: int, mix_repeat: int | None, seed: int) -> dict:
    """Fine-tuning the shipped model on a folder: small steps, light augmentation, the epoch chosen on the
    writer's validation part (val_loss)."""
    data = {"dataset": "folder", "path": str(path), "augment": {"rotate": 8, "translate": 0.08}}
    if mix_repeat:
        data["mix"] = {"dataset": "mnist", "repeat": mix_repeat}
    return {"name": name, "seed": seed, "data": data, "model": {"init": "default"},
            "train": {"epochs": epochs, "batch_size": 128 if mix_repeat else 16,
                      "optimizer": {"name": "adam", "lr": 3e-4}, "checkpoint_monitor": "val_loss"}}


def fine_tune(cfg: dict, out: Path, data_dir: str | None) -> dict:
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "configs" / f"{cfg['name']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = mnistlab.train(cfg, data_dir=data_dir, out_dir=out / "runs")
    best = Path(summary["run_dir"]) / "best.pt"
    mnist = mnistlab.evaluate(best, data="mnist", data_dir=data_dir)["accuracy"]
    return {"writer": summary["test_acc"], "mnist": mnist, "val": summary["val_acc"],
            "epoch": f"{summary['best_epoch']}/{summary['epochs_run']}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="a new folder")
    parser.add_argument("--shots", default="5,10,20", help="training digits per class, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="the writer's samples, the split and the runs")
    parser.add_argument("--epochs", type=int, default=15, help="epochs on the writer's digits alone")
    parser.add_argument("--mix-repeat", type=int, default=20, help="the writer's digits repeated among MNIST's")
    parser.add_argument("--mix-epochs", type=int, default=2, help="epochs with MNIST mixed in")
    parser.add_argument("--no-mix", action="store_true", help="skip the runs with MNIST mixed in")
    parser.add_argument("--data-dir", help="MNIST's root (default: $MNISTLAB_DATA_DIR)")
    parser.add_argument("--test", type=int, default=50, help="held-out test digits per class (default 50)")
    parser.add_argument("--val", type=int, default=10, help="validation digits per class (default 10)")
    parser.add_argument("--pool", type=int, default=40, help="digits per class the training parts are taken from "
                        "(default 40; the writer draws test + val + pool per class, in that order of its seed)")
    args = parser.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    if args.out_dir.exists():
        parser.error(f"{args.out_dir} exists: give a new folder")
    if max(shots) > args.pool or min(shots) < 1:
        parser.error(f"--shots must be from 1 to --pool ({args.pool})")
    write(args.out_dir / "writer", args.test + args.val + args.pool, args.seed)
    sets = split_writer(args.out_dir / "writer", args.out_dir, shots, args.seed, args.test, args.val)
    before = mnistlab.evaluate("default", data=sets[shots[0]] / "test")["accuracy"]
    before_mnist = mnistlab.evaluate("default", data="mnist", data_dir=args.data_dir)["accuracy"]
    rows = [("shipped model", "-", before, before_mnist, None, "-")]
    for n in shots:
        alone = fine_tune(config(f"writer-{n}", sets[n], args.epochs, None, args.seed), args.out_dir, args.data_dir)
        rows.append((f"fine-tuned on {n} per class", "no", alone["writer"], alone["mnist"], alone["val"],
                     alone["epoch"]))
        if not args.no_mix:
            mixed = fine_tune(config(f"writer-{n}-mix", sets[n], args.mix_epochs, args.mix_repeat, args.seed),
                              args.out_dir, args.data_dir)
            rows.append((f"fine-tuned on {n} per class", f"x{args.mix_repeat}", mixed["writer"], mixed["mnist"],
                         mixed["val"], mixed["epoch"]))
    print(f"\nwriter (bench/writer.py, seed {args.seed}): {args.test * 10} held-out test digits, {args.val * 10} "
          "validation")
    print("| model | MNIST mixed in | writer's test | MNIST test | writer's val | best epoch |")
    print("|---|---|---:|---:|---:|---|")
    for name, mix, writer, mnist, val, epoch in rows:
        print(f"| {name} | {mix} | {writer:.2%} | {mnist:.2%} | {'-' if val is None else format(val, '.2%')} | {epoch} |")


if __name__ == "__main__":
    main()
