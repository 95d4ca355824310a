"""The sweep file: a public contract, validated like a config, before any trial starts.

    base: iter5                 # a config path or packaged name
    study: iter5-lr             # default: the file's stem
    objective: val_acc          # val_acc (maximize) | val_loss (minimize); never a test metric
    n_trials: 40
    sampler: tpe                # tpe | random | grid (grid: every combination of the listed values)
    pruner: median              # none | median | hyperband (on the per-epoch objective)
    folds: null                 # k: every trial is k-fold cross-validated, objective = mean over folds
    seed: 0                     # the sampler's random seed
    set: {train.epochs: 15}     # fixed overrides for every trial
    space:
      train.optimizer.lr: {low: 0.0003, high: 0.01, log: true}
      train.batch_size: [64, 128, 256]
      data.augment.rotate: {low: 0, high: 20, step: 5}

Every key of `set` and `space` is checked against the config schema with every value a trial can
take at its ends (each listed choice; a range's low and high), so a typo fails now, not at trial 17.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..config import (Float, Int, Strict, config_to_dict, folder_name_problem, load_config, resolve_config,
                      resolve_sweep)
from ..errors import UserError, one_line
from ..yamlfile import read_yaml_file

KEY = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
# The most points a grid sweep may have. Optuna's GridSampler builds every combination as a list in each
# worker, and a grid is meant to be run to its end: 10,000 trials of even a minute are a week of one
# worker. A larger space is a job for the random or TPE sampler, which draw from it without listing it.
GRID_CAP = 10_000


class RangeConfig(Strict):
    """A numeric range: whole numbers when low, high (and step) are whole, else real numbers."""

    low: Float
    high: Float
    log: bool = False
    step: Optional[Float] = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step do not go together")
        return self

    @property
    def whole(self) -> bool:
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)) and not self.log

    def points(self) -> float:
        """How many values grid() lists (a float: a tiny step gives more than an int should be built from)."""
        if self.step is None:
            raise ValueError("a grid needs a list of values, or a range with a step")
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1.0

    def grid(self) -> list:
        values = [self.low + i * self.step for i in range(int(self.points()))]
        return [int(v) for v in values] if self.whole else [round(v, 12) for v in values]


Choice = Union[str, Int, Float, bool, None]


class SweepConfig(Strict):
    base: str
    study: Optional[str] = None
    objective: Literal["val_acc", "val_loss"] = "val_acc"
    n_trials: Int = Field(20, ge=1, le=100_000)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "median"
    folds: Optional[Int] = Field(None, ge=2, le=20)
    seed: Int = Field(0, ge=0, le=2**32 - 1)
    set: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Union[list[Choice], RangeConfig]]
    _base_config: Optional[dict] = PrivateAttr(None)  # the base, resolved (load_sweep): what a study is joined by

    def base_config(self) -> dict | None:
        return self._base_config

    @field_validator("study")
    @classmethod
    def _usable_name(cls, value):
        problem = folder_name_problem(value, "the study name")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("set", "space")
    @classmethod
    def _dotted_keys(cls, value):
        for key in value:
            if not KEY.fullmatch(str(key)):
                raise ValueError(f"{key!r} is not a dotted config key such as train.optimizer.lr")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _choices_or_ranges(cls, value):
        if not isinstance(value, dict) or not value:
            raise ValueError("name at least one config key to search, each with a list of values or "
                             "{low, high} (optionally log: true, step: N)")
        parsed = {}
        for key, choices in value.items():
            if isinstance(choices, list):
                if not choices or not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
                    raise ValueError(f"{key}: a list of plain values (numbers, text, true/false), not empty")
                parsed[key] = choices
            elif isinstance(choices, dict):
                try:
                    parsed[key] = RangeConfig.model_validate(choices)
                except ValidationError as exc:
                    error = exc.errors()[0]
                    where = ".".join(map(str, error["loc"]))
                    raise ValueError(f"{key}{'.' + where if where else ''}: "
                                     f"{error['msg'].removeprefix('Value error, ')}") from None
            else:
                raise ValueError(f"{key}: got {choices!r}; give a list of values or {{low, high}}")
        return parsed

    @property
    def direction(self) -> str:
        return "maximize" if self.objective == "val_acc" else "minimize"


def load_sweep(path: str | Path, overrides: list[str] = ()) -> tuple[SweepConfig, Path]:
    """The validated sweep file (with --set overrides added to its `set`) and its base config's path."""
    path = resolve_sweep(path)  # a path, or the name of a packaged sweep file
    raw = read_yaml_file(path, "sweep file")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a sweep file is a mapping of keys (base, space, ...), not a {type(raw).__name__}")
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe(exc)}") from None
    if sweep.study is None:
        sweep.study = study_from_file_name(path)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not KEY.fullmatch(key.strip()):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=5")
        sweep.set[key.strip()] = value  # a YAML string: parsed like any --set value
    base = base_path(sweep.base, path)
    check_grid(sweep, path)
    check_against_schema(sweep, base, path)
    # what a study is joined by: the base's settings, not its file's name (nor `name`: each trial has its own;
    # nor train.mlflow: where runs are logged, which a study of an earlier mnistlab did not have)
    resolved = config_to_dict(load_config(base))
    resolved["train"].pop("mlflow", None)
    sweep._base_config = {k: v for k, v in resolved.items() if k != "name"}
    return sweep, base


def study_from_file_name(path: Path) -> str:
    """The study's default name: the file's stem, each character other than a letter, digit, '.', '_'
    or '-' made '-'; then held to the rule of `study:` and --study (it becomes a folder)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)
    shown = repr(name) if len(name) <= 40 else f"{name[:20]!r}... ({len(name)} characters)"
    problem = folder_name_problem(name, f"the study name {shown} (from the file name)")
    if problem:
        raise UserError(f"{path.name}: {problem}; give the sweep a `study:` name (or --study)")
    return name


def grid_size(sweep: SweepConfig) -> int | None:
    """The number of points of a grid sweep (None for the other samplers), counted without listing them."""
    if sweep.sampler != "grid":
        return None
    size = 1.0
    for values in sweep.space.values():
        size *= len(values) if isinstance(values, list) else values.points()
    return int(size) if size <= GRID_CAP else math.inf


def check_grid(sweep: SweepConfig, where: Path) -> None:
    """A grid sweep's ranges have steps, and its points are at most GRID_CAP (counted, not built)."""
    if sweep.sampler != "grid":
        return
    for key, choices in sweep.space.items():
        if isinstance(choices, RangeConfig) and choices.step is None:
            raise UserError(f"{where}: space.{key}: a grid sweep needs a list of values, or a range with a step")
    if grid_size(sweep) > GRID_CAP:
        sizes = " x ".join(f"{len(v) if isinstance(v, list) else v.points():,.0f}" for v in sweep.space.values())
        raise UserError(f"{where}: space: a grid of {sizes} points is more than {GRID_CAP:,}, the most a grid "
                        f"sweep runs; use fewer values or larger steps, or sampler: random or tpe")


def describe(exc: ValidationError) -> str:
    error = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    where = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("list[", "RangeConfig", "union")))
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(SweepConfig.model_fields)
        return f"{where}: unknown key (allowed: {allowed})"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own validators' messages say what and where
        nested = where == "space" and re.match(r"[\w.]+: ", message)  # the message starts with its own key
        return one_line(f"{where}.{message}" if nested else f"{where}: {message}")
    return one_line(f"{where}: got {error.get('input')!r}; {message}")


def base_path(base: str, sweep_file: Path) -> Path:
    """`base` beside the sweep file, else as given (from here, or a packaged name)."""
    beside = sweep_file.parent / base
    return beside if beside.is_file() else resolve_config(base)


def override(key: str, value) -> str:
    """A --set item for `value` (JSON is YAML, so any value survives the trip)."""
    import json

    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def fixed_overrides(sweep: SweepConfig) -> list[str]:
    """The sweep's `set` as --set items (strings as the user wrote them: YAML parses them)."""
    return [f"{k}={v}" if isinstance(v, str) else override(k, v) for k, v in sweep.set.items()]


def check_against_schema(sweep: SweepConfig, base: Path, where: Path) -> None:
    """Every value a trial can take, at the ends of each range, validated as a config (model included)."""
    from ..models import check_model
    from ..training.finetune import resolved_config

    fixed, folds = fixed_overrides(sweep), [f"data.folds={sweep.folds}", "data.fold=0"] if sweep.folds else []
    try:
        cfg = load_config(base, [*fixed, *folds])
    except UserError as exc:
        raise UserError(f"{where}: set: {exc}") from None
    check_selection(cfg, f"{where}: the base config with `set`")
    for key, choices in sweep.space.items():
        values = choices if isinstance(choices, list) else [choices.low, choices.high]
        if isinstance(choices, RangeConfig) and choices.whole:
            values = [int(v) for v in values]
        for value in values:
            try:
                cfg = resolved_config(load_config(base, [*fixed, *folds, override(key, value)]))
                check_model(cfg.model.name, cfg.model.kwargs)
            except UserError as exc:
                raise UserError(f"{where}: space.{key} = {value!r}: {exc}") from None
            check_selection(cfg, f"{where}: space.{key} = {value!r}")
            if not cfg.data.has_validation:
                raise UserError(f"{where}: the objective {sweep.objective} needs a validation set: "
                                f"data.val_split > 0 in the base config, or folds")


def check_selection(cfg, where: str) -> None:
    """A trial never chooses anything on the test set: not its checkpoint (checkpoint_monitor: test_acc),
    nor is it allowed to (allow_test_selection: true), whatever the base config or `set` says."""
    if cfg.train.checkpoint_monitor == "test_acc" or cfg.train.allow_test_selection:
        key = "checkpoint_monitor: test_acc" if cfg.train.checkpoint_monitor == "test_acc" else \
            "allow_test_selection: true"
        raise UserError(f"{where}: train.{key}: a sweep's trials select on validation data only "
                        f"(the test set is scored once, for the best trial); use val_loss, val_acc or last")
