"""The `mnistlab` command: argument parsing only, each command's work imported when it runs.

Torch is imported lazily, so `mnistlab --help` and `--version` are instant.
A UserError prints as one line and exits with its code (2 for usage mistakes);
anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ._version import __version__
from .errors import UserError, one_line
from .style import paint


EXAMPLES = """examples:
  mnistlab predict my_digit.jpg                  read your own digit image with the shipped model
  mnistlab draw                                  draw digits with the mouse, read as you draw
  mnistlab train iter5                           train a packaged config (mnistlab configs lists them)
  mnistlab train iter5 --set train.epochs=3      ... with a key changed for this run
  mnistlab train --resume checkpoints/iter5/RUN  finish a run that was stopped
  mnistlab eval checkpoints/iter5/RUN/best.pt --plots out/
  mnistlab eval default --data my_digits/        score a model on your own digits (a folder per class)
  mnistlab compare iter5 mlp compact8k --seeds 1,2,3
  mnistlab sweep sweeps/iter5_lr.yaml --jobs 2   search hyperparameters on validation data
  mnistlab runs --sort test_acc                  every run so far, best first
"""
NAMED_CHECKPOINTS = ("default (the model shipped with mnistlab), latest or best (the newest / most accurate "
                     "finished run under ./checkpoints), as for predict --ckpt")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        self.exit(2, paint(f"{self.prog}: error: {message} (see {self.prog} --help)", "error", sys.stderr) + "\n")


def build_parser() -> Parser:
    parser = Parser(prog="mnistlab", description="Config-driven experiments for handwritten-digit classification.",
                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for add in (add_train, add_lr_find, add_eval, add_compare, add_sweep, add_runs, add_predict, add_draw, add_models,
                add_summary, add_configs, add_init, add_export, add_serve):
        add(commands)
    return parser


def add_train(commands) -> None:
    p = commands.add_parser("train", help="train one config; keep the best checkpoint; score it on the test set")
    p.add_argument("config", nargs="?", help="YAML config file (see configs/); with --resume, the run's own")
    add_config_options(p)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the config's device)")
    add_data_dir_option(p)
    p.add_argument("--out-dir", default="checkpoints", help="root of run directories (default: checkpoints)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish a run stopped at any moment (its directory); "
                   "its config.yaml is the config, --set may raise train.epochs")
    p.set_defaults(handler=cmd_train)


def add_lr_find(commands) -> None:
    p = commands.add_parser("lr-find", help="the learning-rate range test: loss against a rising lr, a suggested lr "
                            "and lr_find.png")
    p.add_argument("config", help="YAML config file (its data, model, initial weights and optimizer are used)")
    add_config_options(p)
    p.add_argument("--start", type=float, default=1e-7, help="the first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=1.0, help="the last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=100, help="training steps, one per learning rate (default 100)")
    add_data_dir_option(p)
    p.add_argument("-o", "--output", metavar="FILE", help="where to draw the curve (a new file; default: lr_find.png "
                   "here, lr_find_1.png if that is taken)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=cmd_lr_find)


def add_eval(commands) -> None:
    p = commands.add_parser("eval", help="score a checkpoint: accuracy, loss, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help=f"a best.pt / last.pt file, or {NAMED_CHECKPOINTS}")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="test (default), or the run's own validation or training images (its seeded split)")
    p.add_argument("--data-dir", help="dataset root (default: the checkpoint config's, then $MNISTLAB_DATA_DIR)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average over the image, its one-pixel shifts and +-6 degree "
                   "turns (default: as the run's train.tta)")
    p.add_argument("--plots", metavar="DIR", help="also write a confusion-matrix image and a grid of the "
                   "misclassified digits into DIR")
    p.add_argument("--data", metavar="PATH", help="score your own digits instead: a folder of class folders (its "
                   "test/ part if it has train/), a labelled Kaggle CSV or an npz file (its test part); classes "
                   "matched to the checkpoint's by name; or a built-in dataset's name (mnist) for its test set")
    p.add_argument("--prepare", choices=["reading", "resize"], default="reading", help="with --data, a folder's "
                   "images: reading (as predict reads them, default) or resize (already MNIST-like)")
    p.add_argument("--skip-bad", action="store_true", help="with --data, skip unreadable images and bad CSV rows "
                   "(counted and named) instead of stopping")
    p.set_defaults(handler=cmd_eval)


def add_compare(commands) -> None:
    p = commands.add_parser("compare", help="train (or reuse) several configs; write a comparison table and plots")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config files, e.g. configs/*.yaml")
    add_config_options(p)
    p.add_argument("--seeds", metavar="S1,S2,..", help="train each config once per seed (overrides `seed`); "
                   "the table shows mean ± sd")
    p.add_argument("--folds", type=positive_int, metavar="K", help="k-fold cross-validation: each config (and "
                   "seed) trained k times, fold i of the training set as validation; mean ± sd over folds")
    p.add_argument("--out-dir", default="checkpoints", help="root of run directories, searched for finished "
                   "runs to reuse; the table and plots go here too (default: checkpoints)")
    p.add_argument("--no-reuse", action="store_true", help="train every config even if a finished identical run exists")
    p.add_argument("--wide", action="store_true", help="the terminal table with every column (layer counts, train "
                   "loss, time per epoch), as comparison.md has them")
    p.add_argument("--sort", metavar="COLUMN", help="config, model, params, test_acc, val_acc, train_acc, test_loss, "
                   "train_loss, train_time or time_per_epoch (best first); default: the order given")
    add_data_dir_option(p)
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="train up to N runs at once, each in "
                   "its own process: one GPU each where there are GPUs, else the CPU cores shared out (default: 1, "
                   "one after another in this process)")
    p.set_defaults(handler=cmd_compare)


def add_sweep(commands) -> None:
    p = commands.add_parser("sweep", help="search hyperparameters with Optuna (pruning, cross-validation, "
                            "workers on one machine or many); the best trial is chosen on validation data")
    p.add_argument("sweep_file", metavar="FILE", help="a sweep file (see sweeps/): base config, objective, space")
    p.add_argument("--n-trials", type=positive_int, metavar="N", help="trials in the study (overrides n_trials; "
                   "a larger number continues a finished study)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="worker processes on this machine "
                   "(one GPU each where there are GPUs, else the CPU cores shared; default 1)")
    p.add_argument("--storage", metavar="URL", help="postgresql://user@host/db: workers on every machine join one "
                   "study (default: $MNISTLAB_STORAGE, which keeps a password off the command line, else a journal "
                   "file in the sweep folder, for this machine's workers)")
    p.add_argument("--study", metavar="NAME", help="the study's name, a folder: 1 to 100 letters, digits, '.', '_' "
                   "and '-', the first a letter or digit (default: the file's `study`, else the file's name without "
                   ".yaml, other characters made '-')")
    p.add_argument("--out-dir", metavar="DIR", help="the sweep folder: trials' runs, tables, plots, best.yaml "
                   "(default: checkpoints/sweeps/STUDY)")
    add_config_options(p)
    add_data_dir_option(p)
    p.add_argument("--confirm-seeds", metavar="S1,S2,..", help="retrain the best config with these seeds, scored "
                   "on the test set: mean ± sd")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_sweep)


def add_runs(commands) -> None:
    from .experiments.history import FILTER_KEYS, SORT_COLUMNS  # torch-free, like this module

    p = commands.add_parser("runs", help="every run (finished or not) under ./checkpoints or the folders given: "
                            "name, model, accuracy, time, state, directory")
    p.add_argument("roots", nargs="*", metavar="ROOT", help="folders searched for run directories (default: "
                   "checkpoints); compare and sweep output folders too")
    p.add_argument("--sort", choices=list(SORT_COLUMNS), default="date", metavar="COLUMN",
                   help=f"{', '.join(SORT_COLUMNS)} (best first: accuracy high, params and time low; "
                   "default: date, newest first)")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="KEY=VALUE",
                   help=f"only runs whose KEY ({', '.join(FILTER_KEYS)}) matches VALUE (shell wildcards "
                   "allowed, e.g. model='iter*'; repeatable: all must match)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects (fractions, seconds, full paths)")
    p.set_defaults(handler=cmd_runs)


def add_predict(commands) -> None:
    p = commands.add_parser("predict", help="classify digit images (photos, scans, drawings) with a checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|DIR", help="image files, or folders of them")
    add_ckpt_option(p)
    p.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="show the K likeliest classes")
    p.add_argument("--json", action="store_true", help="print JSON: one object per input")
    p.add_argument("--no-preprocess", action="store_true",
                   help="the images are already MNIST-style (white digit on black, 28x28): no framing")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the model saw, per input")
    p.add_argument("--multi", action="store_true", help="several digits per image (a row written on a page): "
                   "read each, in reading order; --json then gives a list of digits per file")
    p.add_argument("--sort-into", metavar="DIR", help="copy each image read into DIR/<its prediction>/ (its name "
                   "kept, or name-1 etc. when taken; nothing written over): move the wrong ones, then fine-tune on DIR")
    p.add_argument("--jobs", type=positive_int, metavar="N", help="prepare up to N images at once (default: one "
                   "per CPU core, at most 8; threads, worker processes from 256 files on; N over 64 counts as "
                   "64); 1: one after another")
    p.add_argument("--submission", metavar="FILE", help="with a Kaggle CSV file (test.csv: one 28x28 image a "
                   "row), write Kaggle's ImageId,Label file (never over an existing file)")
    p.set_defaults(handler=cmd_predict)


def add_draw(commands) -> None:
    p = commands.add_parser("draw", help="a window to draw digits in with the mouse, read by a checkpoint as you draw")
    add_ckpt_option(p)
    p.add_argument("--collect", metavar="DIR", help="save each drawing into DIR/<class>/ as a PNG when you press "
                   "its class's key (0-9), to fine-tune on DIR; nothing written over")
    p.set_defaults(handler=cmd_draw)


def add_models(commands) -> None:
    p = commands.add_parser("models", help="list the registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'iter*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--layers", action="store_true",
                   help="print each matching model's exact layers (PyTorch's module tree: sizes, padding, strides)")
    p.set_defaults(handler=cmd_models)


def add_summary(commands) -> None:
    p = commands.add_parser("summary", help="print a model's layer table (torchsummary)")
    p.add_argument("target", help="a config file or a model name")
    add_config_options(p)
    p.set_defaults(handler=cmd_summary)


def add_export(commands) -> None:
    p = commands.add_parser("export", help="write a checkpoint as an ONNX model (checked against PyTorch first)")
    p.add_argument("checkpoint", help=f"a best.pt / last.pt file, or {NAMED_CHECKPOINTS}")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default: the checkpoint's name "
                   "with .onnx, beside it; default.onnx here for the shipped model)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only one, for now)")
    p.add_argument("--data-dir", help="dataset root holding the test images the export is checked on "
                   "(default: the checkpoint config's, then $MNISTLAB_DATA_DIR, then ./data)")
    p.add_argument("--check", type=positive_int, default=1000, metavar="N",
                   help="test images to compare PyTorch and onnxruntime on (default: 1000; at most 10,000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ONNX model at the output "
                   "(never a checkpoint, nor the one exported)")
    p.set_defaults(handler=cmd_export)


def add_serve(commands) -> None:
    p = commands.add_parser("serve", help="a web service reading digits: POST /predict, GET /health, "
                            "and a page to draw in at /")
    add_ckpt_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                   "machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=port_number, default=8000, help="default: 8000")
    p.add_argument("--max-upload-mb", type=positive_int, default=16, metavar="MB",
                   help="largest request body accepted (default: 16)")
    p.add_argument("--body-timeout", type=positive_float, default=30.0, metavar="SECONDS",
                   help="answer 408 to a request whose head or body has not all come in this time (default: 30)")
    p.set_defaults(handler=cmd_serve)


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {text}")
    return value


def add_configs(commands) -> None:
    p = commands.add_parser("configs", help="list the configs that ship with mnistlab (train them by name)")
    p.set_defaults(handler=cmd_configs)


def add_init(commands) -> None:
    p = commands.add_parser("init", help="write a commented config to start from (never over an existing file)")
    p.add_argument("name", help="the new config: NAME writes NAME.yaml here")
    p.add_argument("--from", dest="source", metavar="CONFIG", help="start from this config (a path or packaged "
                   "name, comments kept) instead of the commented template")
    p.set_defaults(handler=cmd_init)


def add_data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset root (default: data.root, then $MNISTLAB_DATA_DIR, then ./data)")


def add_ckpt_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", metavar="default|latest|best|PATH", help="the model: default (shipped with mnistlab), "
                   "latest or best (finished runs under ./checkpoints), a checkpoint or an exported .onnx file; "
                   "without it, the best test accuracy among full finished runs and the shipped model")


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.optimizer.lr=0.01 (repeatable; YAML values)")


def load_checked_config(path: str, overrides: list[str]):
    """The config file plus overrides, validated, with the model name and options checked against the registry."""
    from .config import load_config

    cfg = load_config(path, overrides)  # a typo is reported before torch is imported (seconds on a busy machine)
    from .models import check_model
    from .training.finetune import resolved_config

    cfg = resolved_config(cfg)  # model.init's checkpoint names a model left out
    try:
        check_model(cfg.model.name, cfg.model.kwargs)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return cfg


def train_config_path(args) -> str:
    """The config to train: the one given, else (with --resume alone) the run's own config.yaml."""
    if args.config:
        return args.config
    if not args.resume:
        raise UserError("give a config file (e.g. configs/iter5.yaml), or --resume RUN_DIR to finish a run")
    from .runfolder import CONFIG, given_run_dir

    return str(given_run_dir(args.resume) / CONFIG)


def cmd_train(args) -> int:
    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    cfg = load_checked_config(train_config_path(args), overrides)
    if args.print_config:
        from .config import config_to_yaml

        print(config_to_yaml(cfg), end="")
        return 0
    from .training.trainer import run_training

    run_training(cfg, data_dir=args.data_dir, out_dir=args.out_dir, quiet=args.quiet, resume=args.resume)
    return 0


def cmd_lr_find(args) -> int:
    from pathlib import Path

    from .training.lr_find import check_range

    check_range(args.start, args.end, args.steps)  # before the data loads
    if args.output and (Path(args.output).exists() or Path(args.output).is_symlink()):
        raise UserError(f"--output: {args.output} exists; mnistlab never writes over it (give another name)")
    cfg = load_checked_config(args.config, args.overrides)
    from .report import lr_find_curve
    from .training.lr_find import lr_range_test

    found = lr_range_test(cfg, start=args.start, end=args.end, steps=args.steps, data_dir=args.data_dir,
                          quiet=args.quiet)
    import os

    path = lr_find_curve(found.lrs, found.losses, found.suggestion, found.method, cfg.name, args.output)
    path = os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else path
    print(f"suggested lr {found.suggestion:.2g} ({found.method}; {len(found.lrs)} steps from {found.lrs[0]:.2g} "
          f"to {found.lrs[-1]:.2g}, {found.stopped}); curve: {path}")
    return 0


def named_checkpoint(value: str) -> str:
    """`default`, `latest` or `best` as predict --ckpt reads them (a line on stderr says which file); anything
    else is a path."""
    if value not in ("default", "latest", "best"):
        return value
    from .training.choice import find_checkpoint

    path, source = find_checkpoint(value, said_as="")
    print(f"checkpoint: {path} ({source})", file=sys.stderr)
    return str(path)


def cmd_eval(args) -> int:
    from .experiments.evaluate import evaluate_checkpoint, format_report

    if args.data and args.split != "test":
        raise UserError("--split picks one of the run's own splits; --data scores your own set instead: give one")
    args.checkpoint = named_checkpoint(args.checkpoint)
    if sys.stderr.isatty():  # loading the data and scoring 10,000 images (7 views each with --tta) takes a while
        views = " with test-time augmentation (7 views each)" if args.tta else ""
        what = args.data if args.data else f"the {args.split} split"
        print(f"evaluating {args.checkpoint} on {what}{views}…", file=sys.stderr)

    report = evaluate_checkpoint(args.checkpoint, split=args.split, data_dir=args.data_dir, device=args.device,
                                 plots_dir=args.plots, tta=args.tta, data=args.data, prepare=args.prepare,
                                 skip_bad=args.skip_bad)
    for note in report.get("notes", []):
        print(note, file=sys.stderr)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if args.plots:
            print(f"\nwrote {', '.join(report['plots'])}")
    return 0


def cmd_compare(args) -> int:
    from .experiments.compare import run_compare

    return run_compare(args.configs, overrides=args.overrides, seeds=args.seeds, out_dir=args.out_dir,
                       reuse=not args.no_reuse, sort=args.sort, data_dir=args.data_dir, jobs=args.jobs,
                       folds=args.folds, wide=args.wide)


def cmd_sweep(args) -> int:
    from .experiments.sweep import run_sweep

    return run_sweep(args.sweep_file, n_trials=args.n_trials, jobs=args.jobs, storage=args.storage,
                     study=args.study, out_dir=args.out_dir, overrides=args.overrides, data_dir=args.data_dir,
                     confirm_seeds=args.confirm_seeds, worker=args.worker)


def cmd_runs(args) -> int:
    from .experiments.history import format_history, run_history

    records = run_history(args.roots, sort=args.sort, filters=args.filters)
    if args.json:
        import json

        print(json.dumps(records, indent=2))
    elif not records:
        where = ", ".join(args.roots) or "checkpoints"
        print(f"no runs under {where}" + (f" match {' '.join(args.filters)}" if args.filters else ""))
    else:
        print(format_history(records))
    return 0


def cmd_predict(args) -> int:
    from .reading.predict import (expand_inputs, format_result, is_table, load_classifier, predict_files,
                                  predict_table, write_submission)
    from .training.choice import find_checkpoint

    # Mistakes in the inputs or the output folder are reported before the model loads.
    if args.multi and args.no_preprocess:
        raise UserError("--multi finds the digits by preparing the image; it cannot be used with --no-preprocess")
    if args.multi and args.sort_into:
        raise UserError("--sort-into files each image under its one digit; it cannot be used with --multi")
    if not expand_inputs(args.inputs):
        raise UserError(f"no image files in {', '.join(args.inputs)}")
    if args.save_preprocessed:
        from .files import make_dir

        make_dir(args.save_preprocessed, "--save-preprocessed")
    if args.sort_into:
        from .files import make_dir

        make_dir(args.sort_into, "--sort-into")
    tables = [item for item in args.inputs if is_table(item)]
    images = [item for item in args.inputs if not is_table(item)]
    check_submission(args.submission, tables, images)
    if args.sort_into and tables:
        raise UserError("--sort-into copies image files into class folders; a CSV file's rows are not files")
    path, source = find_checkpoint(args.ckpt)
    classifier = load_classifier(path)
    print(f"checkpoint: {path} ({source})", file=sys.stderr)
    results = predict_files(images, classifier, top_k=args.top_k, frame=not args.no_preprocess,
                            save_dir=args.save_preprocessed, multi=args.multi, jobs=args.jobs) if images else []
    for table in tables:  # a CSV file's rows, after the images
        results += predict_table(table, classifier, args.top_k)
    if args.submission:
        print(f"wrote {write_submission(args.submission, results)} ({len(results):,} rows)", file=sys.stderr)
    sorting = sort_results(results, args.sort_into)
    if args.json:
        import json

        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(format_result(result))
    if isinstance(sorting, UserError):
        raise sorting
    if args.sort_into:
        print(sorting, file=sys.stderr if args.json else sys.stdout)
    return 1 if any("error" in r for r in results) else 0


def sort_results(results: list[dict], sort_into: str | None) -> str | UserError | None:
    """predict --sort-into: the copies made (each result gets `sorted_into`) and the line that says so, or the
    error that stopped them, raised once the results are printed."""
    if not sort_into:
        return None
    from .reading.predict import sort_into as copy_sorted, sorted_summary

    try:
        return sorted_summary(copy_sorted(results, sort_into), sort_into)
    except UserError as exc:
        return exc


def check_submission(submission: str | None, tables: list[str], images: list[str]) -> None:
    """--submission needs exactly one CSV file and nothing else, and a new file name (said before any work)."""
    if submission is None:
        return
    if len(tables) != 1 or images:
        raise UserError("--submission writes Kaggle's file for one CSV file of images (test.csv); give that alone")
    from pathlib import Path

    if Path(submission).exists() or Path(submission).is_symlink():
        raise UserError(f"--submission: {submission} exists; mnistlab never writes over it (give another name)")


def cmd_draw(args) -> int:
    from .reading.draw import run_draw

    return run_draw(args.ckpt, collect=args.collect)


def cmd_configs(args) -> int:
    from .config import PACKAGED, packaged_configs

    names = packaged_configs()
    width = max(map(len, names))
    print(f"{'config':<{width}}  what it trains (`mnistlab train NAME`; a file of yours always wins over a name)")
    for name in names:
        lines = (PACKAGED / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        first = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
        print(f"{name:<{width}}  {first if len(first) <= 118 - width else first[:117 - width] + '…'}")
    return 0


def cmd_init(args) -> int:
    from pathlib import Path

    from .config import folder_name_problem, load_config
    from .yamlfile import parse_yaml

    path = Path(args.name if args.name.endswith((".yaml", ".yml")) else f"{args.name}.yaml")
    name = path.stem
    problem = folder_name_problem(name, f"{name!r}, the run name,")
    if problem:
        raise UserError(problem)
    if path.exists() or path.is_symlink():
        raise UserError(f"{path} exists; mnistlab never writes over it (give another name)")
    if args.source:
        text = init_from(args.source, name)
    else:
        template = Path(__file__).resolve().parent / "configs" / "_template.yaml.txt"
        text = template.read_text(encoding="utf-8").format(name=name, path=path)
    load_config(raw=parse_yaml(text, str(path)))  # what is written must load: checked before anything is written
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}; train it with: mnistlab train {path}")
    return 0


def init_from(source: str, name: str) -> str:
    """The text of --from's config (comments kept) with `name:` set; a source that is not a config that loads
    (not a regular file, too big, not UTF-8, not YAML, invalid) is one line naming it, and nothing is written."""
    import re

    import yaml

    from .config import load_config, read_composed, resolve_config
    from .files import read_small_text
    from .yamlfile import MAX_BYTES

    found = resolve_config(source)
    try:
        load_config(found)  # the source's own problems, named as its own
        text = read_small_text(found, MAX_BYTES)
        composed = read_composed(found)
        if "base" in (yaml.safe_load(text) or {}):  # built on a base: copied merged, standing on its own
            return yaml.safe_dump({**composed, "name": name}, sort_keys=False)
    except UserError as exc:  # the config's own messages name it, mostly
        raise UserError(f"--from: {exc}" if str(found) in str(exc) else f"--from {source}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--from {source}: cannot read {found}: {one_line(exc, 120)}") from None
    return re.sub(r"(?m)^name:.*$", f"name: {name}", text) if re.search(r"(?m)^name:", text) \
        else f"name: {name}\n{text}"


def cmd_models(args) -> int:
    import fnmatch
    import json
    import textwrap
    from pathlib import Path

    from importlib import metadata

    catalog = json.loads((Path(__file__).resolve().parent / "models" / "catalog.json").read_text(encoding="utf-8"))
    if metadata.entry_points(group="mnistlab.models"):  # models/_registry.py's group; torch only when plugins exist
        from .models.catalog import plugin_rows

        catalog += plugin_rows()
    rows = [r for r in catalog if fnmatch.fnmatchcase(r["name"], args.pattern)]
    if not rows:
        raise UserError(f"no model matches {args.pattern!r}; `mnistlab models` lists them all")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.layers:
        from .models import create_model

        for r in rows:  # as a checkpoint rebuilds them: 10 classes, 1 input channel, default options
            print(f"{r['name']} ({r['params']:,} parameters):\n{create_model(r['name'], num_classes=10, in_channels=1)}")
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'parameters':>11}  what it is (10 classes, 1x28x28 input; `mnistlab summary NAME` "
          f"shows its layers)")
    for origin, title in (("mnistlab", "mnistlab's own"), ("reference", "from the projects mnistlab started from"),
                          ("plugin", "plugins (from installed packages' mnistlab.models entry points)")):
        group = [r for r in rows if r["origin"] == origin]
        if group:
            print(f"-- {title}")
        for r in group:
            text = textwrap.wrap(r["description"], 118 - width - 15) or [""]
            params = "?" if r["params"] is None else f"{r['params']:,}"
            print(f"{r['name']:<{width}}  {params:>11}  {text[0]}")
            for more in text[1:]:
                print(" " * (width + 15) + more)
    return 0


def cmd_summary(args) -> int:
    from pathlib import Path

    from .config import load_config
    from .data.datasets import dataset_classes
    from .models import check_model, create_model, list_models
    from .models._registry import is_import_path, plugin_names

    named = args.target in list_models() or args.target in plugin_names() or is_import_path(args.target)
    if named and not Path(args.target).is_file():
        cfg = load_config(None, args.overrides, raw={"model": {"name": args.target}})  # --set applies here too
        check_model(cfg.model.name, cfg.model.kwargs)
    elif Path(args.target).exists():
        cfg = load_checked_config(args.target, args.overrides)
    else:
        raise UserError(f"{args.target!r} is neither a config file nor a model name; "
                        f"`mnistlab models` lists the models")
    name, kwargs = cfg.model.name, cfg.model.kwargs
    num_classes = len(dataset_classes(cfg.data))
    import warnings

    import torchsummary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(name, num_classes=num_classes, in_channels=1, **kwargs)
    print(f"{name}{' ' + str(kwargs) if kwargs else ''}, {num_classes} classes, input 1x28x28")
    torchsummary.summary(model, (1, 28, 28), device="cpu")
    return 0


def cmd_export(args) -> int:
    from .reading.export import export_onnx

    if args.checkpoint == "default" and not args.output:
        args.output = "default.onnx"  # not beside the shipped model, inside the installed package
    args.checkpoint = named_checkpoint(args.checkpoint)
    report = export_onnx(args.checkpoint, args.output, data_dir=args.data_dir, check=args.check,
                         overwrite=args.overwrite)
    print(f"{report['summary']}")
    print(f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB, ONNX opset {report['opset']}; input "
          f"N x 1 x 28 x 28 in [0, 1], normalization inside the graph; classes in its metadata)")
    return 0


def cmd_serve(args) -> int:
    from .reading.serve import run_server

    return run_server(args.ckpt, host=args.host, port=args.port, max_upload=args.max_upload_mb * 2**20,
                      body_timeout=args.body_timeout)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except UserError as exc:
        print_error(f"mnistlab {args.command}: error: {one_line(exc)}")
        return exc.exit_code
    except BrokenPipeError:  # `mnistlab runs --json | head` (an OSError: caught before the next clause)
        sys.stderr.close()
        return 0
    except OSError as exc:  # the environment (a full disk, a deleted folder, a permission): not our bug
        from .files import environment_error

        print_error(f"mnistlab {args.command}: error: {one_line(environment_error(exc))}")
        return 1
    except KeyboardInterrupt:
        print(f"mnistlab {args.command}: interrupted", file=sys.stderr)
        return 130


def print_error(line: str) -> None:
    print(paint(line, "error", sys.stderr), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
