"""The experiment config: the YAML contract users write, validated in one place.

Torch-free on purpose, so `--print-config` and error reporting are instant.
Every mistake becomes a UserError naming the dotted key, the bad value, what is
allowed and, for near misses, what the user probably meant.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError, did_you_mean
from .yamlfile import parse_yaml, read_yaml_file

def _not_a_bool(value):
    if isinstance(value, bool):  # pydantic would take true as 1
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]


class Strict(BaseModel):
    """Unknown keys are errors and numbers are finite (Int and Float fields also refuse true/false)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _section_or_null(value, example: str):
    if value is None or isinstance(value, dict):
        return value
    raise ValueError(f"must be null or a section such as {example}")


def _switch_or_section(value, example: str):
    """A section that `true` turns on with its defaults and `false` turns off."""
    if value is None or isinstance(value, (bool, dict)):
        return {} if value is True else None if value is False else value
    raise ValueError(f"must be true, false, null or a section such as {example}")


class CenterCropConfig(Strict):
    size: Int = Field(22, ge=4, le=28)
    p: Float = Field(1.0, ge=0.0, le=1.0)


class ElasticConfig(Strict):
    """torchvision's ElasticTransform: a displacement field of uniform noise in [-1, 1] blurred by a
    Gaussian of `sigma` pixels, times alpha / side in [-1, 1] coordinates (alpha / 2 pixels per unit
    of blurred noise); applied to each image with probability p, after the affine augmentation."""

    alpha: Float = Field(50.0, gt=0.0, le=1000.0)  # the defaults are torchvision's
    # the blur's kernel, int(8 sigma + 1) pixels wide, is reflected at the border: half of it must
    # stay under the 28-pixel side
    sigma: Float = Field(5.0, gt=0.0, le=6.0)
    p: Float = Field(1.0, ge=0.0, le=1.0)


class ImageMixConfig(Strict):
    """data.augment.mixup / cutmix: a batch is mixed with probability p, lam drawn from Beta(alpha, alpha)."""

    alpha: Float = Field(1.0, gt=0)
    p: Float = Field(1.0, ge=0, le=1)


class AugmentConfig(Strict):
    """Everything off unless given. Geometry is applied to the [0, 1] image, before normalization."""

    rotate: Optional[tuple[Float, Float]] = None  # degrees; a single number d means [-d, d]
    center_crop: Optional[CenterCropConfig] = None
    translate: Optional[Float] = Field(None, ge=0.0, le=0.5)  # fraction of the side
    scale: Optional[tuple[Float, Float]] = None
    elastic: Optional[ElasticConfig] = None
    # timm's Mixup: the batch mixed with itself reversed, soft targets in the loss (data/augment.py mix_batch)
    mixup: Optional[ImageMixConfig] = None
    cutmix: Optional[ImageMixConfig] = None

    @field_validator("elastic", mode="before")
    @classmethod
    def _elastic_section(cls, value):
        return _section_or_null(value, "{alpha: 34, sigma: 4, p: 0.5}")

    @field_validator("mixup", "cutmix", mode="before")
    @classmethod
    def _mix_section(cls, value):
        return _section_or_null(value, "{alpha: 1.0, p: 1.0}")

    @field_validator("rotate", mode="before")
    @classmethod
    def _symmetric_rotation(cls, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 <= value <= 180:
                raise ValueError("must be a number of degrees in [0, 180] or a pair [min, max]")
            return (-float(value), float(value))
        return value

    @field_validator("rotate")
    @classmethod
    def _ordered_rotation(cls, value):
        if value is not None and not (-180 <= value[0] <= value[1] <= 180):
            raise ValueError("must be [min, max] degrees with -180 <= min <= max <= 180")
        return value

    @field_validator("scale")
    @classmethod
    def _ordered_scale(cls, value):
        if value is not None and not (0 < value[0] <= value[1] <= 4):
            raise ValueError("must be [min, max] with 0 < min <= max <= 4")
        return value

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.rotate, self.center_crop, self.translate, self.scale, self.elastic))


class NormalizeConfig(Strict):
    mean: Float
    std: Float = Field(gt=0)


BuiltinDataset = Literal["mnist", "fashion-mnist", "emnist-balanced", "kmnist", "qmnist"]
UserDataset = Literal["folder", "csv", "npz"]  # a user's own files, read from data.path
USER_DATASETS = typing.get_args(UserDataset)


def _fraction_or_count(value):
    """val_split and test_split: a fraction in [0, 1) or a whole number of images."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("must be a fraction in [0, 1) or a whole number of training images")
    if value < 0 or (value >= 1 and value != int(value)):
        raise ValueError("must be a fraction in [0, 1) or a whole number of training images")
    return value


class MixConfig(Strict):
    """data.mix: a built-in dataset's training images added to a user's set (the user's repeated `repeat` times)."""

    dataset: BuiltinDataset = "mnist"
    # how many times the user's training images go in; auto: until they are about 5% of the mixed set
    # (data/datasets.py MIX_SHARE, measured there)
    repeat: Union[Int, Literal["auto"]] = "auto"

    @field_validator("repeat", mode="before")
    @classmethod
    def _repeat_count(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000):
            return value
        raise ValueError("must be a whole number from 1 to 1000, or auto (your images about 5% of the mixed set)")


class DataConfig(Strict):
    dataset: Literal[BuiltinDataset, UserDataset] = "mnist"  # one Literal (nested ones flatten): one message
    path: Optional[str] = None  # the user's folder, .csv or .npz file (data.dataset folder, csv or npz)
    prepare: Literal["reading", "resize"] = "reading"  # a folder's images: as predict reads them, or resized only
    test_split: Float = 0.2  # a user's set without a test part: held out with a fixed seed (not data.seed's)
    skip_bad: bool = False  # a user's set: skip unreadable images and bad CSV rows (counted and named) instead
    mix: Optional[MixConfig] = None
    root: Optional[str] = None
    download: bool = True
    val_split: Float = 0.1
    # k-fold cross-validation: with folds k, fold i (0 .. k-1) of the seeded k-way split of the training
    # images is the validation set, and val_split is not used
    folds: Optional[Int] = Field(None, ge=2, le=100)
    fold: Optional[Int] = Field(None, ge=0)
    normalize: Union[Literal["dataset", "minus1to1", "none"], NormalizeConfig] = "dataset"
    pipeline: Literal["device", "classic"] = "device"
    num_workers: Int = Field(2, ge=0, le=64)
    pin_memory: bool = True
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("val_split", "test_split", mode="before")
    @classmethod
    def _fraction_or_count(cls, value):
        return _fraction_or_count(value)

    @field_validator("mix", mode="before")
    @classmethod
    def _mix_section(cls, value):
        return _section_or_null(value, "{dataset: mnist, repeat: 5}")

    @model_validator(mode="after")
    def _path_for_own_files(self):
        own = self.dataset in USER_DATASETS
        if own and not self.path:
            raise _KeyError("data.path", None, f"data.dataset {self.dataset} reads your own files: give data.path "
                            f"(a {'folder' if self.dataset == 'folder' else '.' + self.dataset + ' file'})")
        if not own and self.path is not None:
            raise _KeyError("data.path", self.path, f"is for data.dataset folder, csv or npz; {self.dataset} is "
                            "read from data.root")
        if not own and self.mix is not None:
            raise _KeyError("data.mix", None, "mixes a built-in dataset into your own files: it needs data.dataset "
                            "folder, csv or npz")
        return self

    @model_validator(mode="after")
    def _fold_of_folds(self):
        if (self.folds is None) != (self.fold is None):
            key = "data.fold" if self.folds is not None else "data.folds"
            raise _KeyError(key, None, "data.folds and data.fold go together: fold i (0 .. k-1) of k folds")
        if self.folds is not None and self.fold >= self.folds:
            raise _KeyError("data.fold", self.fold, f"must be below data.folds ({self.folds}): folds count from 0")
        return self

    @property
    def has_validation(self) -> bool:
        return self.folds is not None or self.val_split > 0

    @field_validator("augment", mode="before")
    @classmethod
    def _none_means_off(cls, value):
        return {} if value is None else value

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_choice(cls, value):
        names = ["dataset", "minus1to1", "none"]
        if value is None:
            return "none"
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"allowed: {', '.join(names)} or {{mean: .., std: ..}}{did_you_mean(value, names)}")
            return value
        if isinstance(value, dict):
            try:
                return NormalizeConfig.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(map(str, first["loc"]))
                raise ValueError(f"{{mean, std}}: {where}: {first['msg'].lower()}") from None
        raise ValueError("must be dataset, minus1to1, none or {mean: .., std: ..}")


class ModelConfig(BaseModel):
    """`name` picks the registry entry; every other key goes to its builder."""

    model_config = ConfigDict(extra="allow")
    name: Optional[str] = None  # with `init` and no name, the checkpoint's architecture (training/finetune.py)
    # the weights to start from: default (the shipped model), latest, best (as --ckpt names them) or a .pt path
    init: Optional[str] = None

    @model_validator(mode="after")
    def _name_or_init(self):
        if self.name is None and self.init is None:
            raise _KeyError("model.name", _NOT_GIVEN, "required unless model.init names a checkpoint")
        if self.init is not None and not self.init.strip():
            raise _KeyError("model.init", self.init, "give default, latest, best or a checkpoint's path")
        return self

    @model_validator(mode="after")
    def _finite_options(self):
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise _KeyError(f"model.{key}", value, "must be a finite number")
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _AdamFamily(Strict):
    """What Adam and AdamW share; subclasses set the name and weight decay (fields keep this order)."""

    name: str
    lr: Float = Field(1e-3, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    betas: tuple[Float, Float] = (0.9, 0.999)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value):
        if not all(0 <= b < 1 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class AdamConfig(_AdamFamily):
    name: Literal["adam"]
    weight_decay: Float = Field(0.0, ge=0)


class AdamWConfig(_AdamFamily):
    name: Literal["adamw"]
    weight_decay: Float = Field(0.01, ge=0)


class SGDConfig(Strict):
    name: Literal["sgd"]
    lr: Float = Field(0.01, gt=0)
    momentum: Float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0")
        return self


class NoSchedulerConfig(Strict):
    name: Literal["none"]


class WarmupFields(Strict):
    """A linear warm-up before an epoch-stepped schedule (onecycle has its own): the rate rises from
    lr * warmup_start to lr over the first warmup_epochs epochs; the schedule then counts its epochs
    from the warm-up's end (timm's warmup_prefix)."""

    warmup_epochs: Int = Field(0, ge=0)
    warmup_start: Float = Field(0.01, gt=0, le=1)


class StepLRConfig(WarmupFields):
    name: Literal["step"]
    step_size: Int = Field(ge=1)
    gamma: Float = Field(0.1, gt=0, le=1)


class MultiStepLRConfig(WarmupFields):
    name: Literal["multistep"]
    milestones: list[Annotated[Int, Field(ge=1)]]
    gamma: Float = Field(0.1, gt=0, le=1)


class PlateauLRConfig(Strict):
    name: Literal["plateau"]
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    factor: Float = Field(0.1, gt=0, lt=1)
    patience: Int = Field(3, ge=0)
    min_lr: Float = Field(0.0, ge=0)


class CosineLRConfig(WarmupFields):
    name: Literal["cosine"]
    t_max: Optional[Int] = Field(None, ge=1)  # epochs; default: train.epochs less the warm-up
    eta_min: Float = Field(0.0, ge=0)


class OneCycleLRConfig(Strict):
    name: Literal["onecycle"]
    max_lr: Optional[Float] = Field(None, gt=0)  # default: the optimizer's lr
    pct_start: Float = Field(0.25, gt=0, lt=1)
    div_factor: Float = Field(25.0, gt=0)
    final_div_factor: Float = Field(1e4, gt=0)


OptimizerConfig = Annotated[Union[AdamConfig, AdamWConfig, SGDConfig], Field(discriminator="name")]
SchedulerConfig = Annotated[
    Union[NoSchedulerConfig, StepLRConfig, MultiStepLRConfig, PlateauLRConfig, CosineLRConfig, OneCycleLRConfig], Field(discriminator="name")
]


class EarlyStoppingConfig(Strict):
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    patience: Int = Field(3, ge=1)
    min_delta: Float = Field(0.0, ge=0)


SHORTHAND_SECTIONS = ("model", "optimizer", "scheduler")


class EmaConfig(Strict):
    """An exponential moving average of the weights, scored and checkpointed as the model (training/ema.py)."""

    decay: Float = Field(0.999, ge=0.0, lt=1.0)  # per optimizer step
    # the decay rises to `decay` over the first updates (timm's ModelEmaV3 warm-up), so an early
    # epoch's average is not still its random start; false: `decay` from the first update
    warmup: bool = True


class MlflowConfig(Strict):
    """Where train.mlflow logs a run (training/mlflow_logger.py); `mlflow: true` is every default."""

    tracking_uri: Optional[str] = None  # http(s)://host:port of an MLflow server; null: $MLFLOW_TRACKING_URI
    experiment: str = Field("mnistlab", min_length=1)
    run_name: Optional[str] = None  # null: the config's name


def expand_shorthand(value):
    """The string shorthand of a named section: `optimizer: sgd` stands for `optimizer: {name: sgd}`."""
    return {"name": value} if isinstance(value, str) else value


class TrainConfig(Strict):
    epochs: Int = Field(10, ge=1, le=100_000)
    batch_size: Union[Int, Literal["auto"]] = 64
    eval_batch_size: Int = Field(1024, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=lambda: AdamConfig(name="adam"))
    scheduler: SchedulerConfig = Field(default_factory=lambda: NoSchedulerConfig(name="none"))
    early_stopping: Optional[EarlyStoppingConfig] = None
    checkpoint_monitor: Literal["val_loss", "val_acc", "test_acc", "last"] = "val_loss"
    allow_test_selection: bool = False
    label_smoothing: Float = Field(0.0, ge=0, lt=1)
    # the largest total L2 norm of the gradients of the parameters the optimizer steps (clipped after
    # backward, before the step; fp16's scaled gradients are unscaled first); null: no clipping
    clip_grad_norm: Optional[Float] = Field(None, gt=0)
    # Test-time augmentation for the final scores of the selected checkpoint (val and test): the mean
    # prediction over the image, its four one-pixel shifts and +-6 degree turns. Selection stays single-view.
    tta: bool = False
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    # torch.compile for the training steps; reduce-overhead adds CUDA graphs (GPU only, fixed batch shapes)
    compile: Union[bool, Literal["reduce-overhead", "max-autotune"]] = False
    # NHWC weights and activations (faster convolutions on tensor-core GPUs and CPUs); after_first_pool
    # keeps the stem NCHW, which is faster on CPUs for narrow batch-normalized stems (see layout.py)
    channels_last: Union[bool, Literal["after_first_pool"]] = False
    limit_train_batches: Optional[Int] = Field(None, ge=1)
    limit_eval_batches: Optional[Int] = Field(None, ge=1)  # smoke tests only: the test score then is partial
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm statistics over all ranks' batches
    # TensorBoard event files in the run directory (the optional extra mnistlab[tensorboard]): per-epoch
    # metrics, the step loss every 50 steps, the hyperparameters with the final scores
    tensorboard: bool = False
    mlflow: Optional[MlflowConfig] = None  # an MLflow tracking server's run (`mlflow: true`: the defaults)
    ema: Optional[EmaConfig] = None  # `ema: true` is {decay: 0.999}
    # parameters that do not train: body (all but the classifier head, its BatchNorm kept in eval mode)
    # or a list of parameter-name prefixes (checked against the model's names when it is built)
    freeze: Union[Literal["body"], list[str], None] = None

    @model_validator(mode="after")
    def _warmup_leaves_epochs(self):
        warmup = getattr(self.scheduler, "warmup_epochs", 0)
        if warmup >= self.epochs:
            raise _KeyError("train.scheduler.warmup_epochs", warmup,
                            f"the warm-up must end before the last epoch: at most train.epochs - 1 ({self.epochs - 1})")
        return self

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_choice(cls, value):
        if value is None or value == "body":
            return value
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]  # one prefix
        if isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                     and str(v).strip() for v in value):
            return [str(v) for v in value]  # a Sequential's layers are named 0, 1, ...: [0, 1] means them
        raise ValueError("must be null, body, or a list of parameter-name prefixes such as [features.0, features.1]")

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_switch(cls, value):
        return _switch_or_section(value, "{decay: 0.999}")

    @field_validator("mlflow", mode="before")
    @classmethod
    def _mlflow_switch(cls, value):
        return _switch_or_section(value, "{tracking_uri: http://127.0.0.1:5000, experiment: mnistlab}")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _positive_or_auto(cls, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("must be a positive whole number or 'auto' (= min(4096, training-set size))")
        return value

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, value):
        return "off" if value is False else value  # YAML reads a bare `off` (or `no`, `false`) as false

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value):
        if not (isinstance(value, bool) or value in ("reduce-overhead", "max-autotune")):  # not 1, not "yes"
            raise ValueError("allowed: true, false, reduce-overhead, max-autotune"
                             + did_you_mean(value, ["reduce-overhead", "max-autotune"]))
        return value

    @field_validator("channels_last", mode="before")
    @classmethod
    def _layout(cls, value):
        if not (isinstance(value, bool) or value == "after_first_pool"):
            raise ValueError("allowed: true, false, after_first_pool" + did_you_mean(value, ["after_first_pool"]))
        return value

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_shorthand(cls, value):
        return expand_shorthand(value)

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, value):
        return {"name": "none"} if value is None else expand_shorthand(value)


class ExperimentConfig(Strict):
    name: Optional[str] = None
    seed: Int = Field(0, ge=0, le=2**32 - 1)
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _usable_as_folder(cls, value):
        problem = folder_name_problem(value, "the run name")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value):
        problem = device_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value):
        return expand_shorthand(value)

    @model_validator(mode="after")
    def _selection_is_honest(self):
        train, has_val = self.train, self.data.has_validation
        if train.checkpoint_monitor == "test_acc" and not train.allow_test_selection:
            raise _KeyError(
                "train.checkpoint_monitor",
                "test_acc",
                "selecting the checkpoint on the test set leaks it into model selection; "
                "use val_loss or val_acc, or set train.allow_test_selection: true to do it knowingly",
            )
        needs_val = []
        if train.checkpoint_monitor in ("val_loss", "val_acc"):
            needs_val.append(("train.checkpoint_monitor", train.checkpoint_monitor))
        if train.early_stopping is not None:
            needs_val.append(("train.early_stopping.monitor", train.early_stopping.monitor))
        if isinstance(train.scheduler, PlateauLRConfig):
            needs_val.append(("train.scheduler.monitor", train.scheduler.monitor))
        if needs_val and not has_val:
            key, value = needs_val[0]
            raise _KeyError(
                key, value, "data.val_split is 0, so there is no validation set; set data.val_split > 0 "
                "(or checkpoint_monitor: last and early_stopping: null)"
            )
        return self


def folder_name_problem(value: str | None, what: str) -> str | None:
    """Names that become folders (runs, studies, `init`'s configs): what is wrong with one, or None."""
    if value is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
        return None
    return f"{what} becomes a folder: 1 to 100 letters, digits, '.', '_' and '-', the first a letter or digit"


def device_problem(value) -> str | None:
    """What is wrong with a device name (config `device`, --device), or None."""
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(value)):
        return None
    allowed = ["auto", "cpu", "cuda", "cuda:N", "mps"]
    return f"allowed: {', '.join(allowed)}{did_you_mean(value, allowed)}"


_NOT_GIVEN = object()  # a _KeyError's value for a key that is missing: its message then stands alone


class _KeyError(ValueError):
    """A cross-field problem that belongs to one specific dotted key."""

    def __init__(self, key: str, value: Any, message: str):
        super().__init__(message)
        self.key, self.value, self.message = key, value, message


# ---------------------------------------------------------------- loading

PACKAGED = Path(__file__).resolve().parent / "configs"  # the configs that ship with mnistlab
PACKAGED_SWEEPS = Path(__file__).resolve().parent / "sweeps"  # the sweep files that ship with it


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file: the path if it exists (a path always wins), else the packaged config of that name
    (`iter5` or `iter5.yaml`), else one UserError suggesting names."""
    return resolve_packaged(name_or_path, PACKAGED, "config file", "`mnistlab configs` lists the packaged ones")


def resolve_sweep(name_or_path: str | Path) -> Path:
    """A sweep file, found as a config is: the path, else the packaged sweep of that name (`iter5_lr`)."""
    return resolve_packaged(name_or_path, PACKAGED_SWEEPS, "sweep file", "the packaged ones: "
                            + ", ".join(sorted(p.stem for p in PACKAGED_SWEEPS.glob("*.yaml"))))


def resolve_packaged(name_or_path: str | Path, folder: Path, what: str, listing: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):
        packaged = folder / f"{path.stem}.yaml"
        if packaged.is_file():
            return packaged
    hint = did_you_mean(path.stem, sorted(p.stem for p in folder.glob("*.yaml"))) or f"; {listing}"
    raise UserError(f"{what} not found: {path}{hint}")


def read_yaml(path: str | Path) -> dict:
    raw = read_yaml_file(path, "config")
    if raw is None:
        raise UserError(f"{path}: the config is empty; it needs at least `model: {{name: ...}}`")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of keys (name, seed, data, model, train), "
                        f"not a {type(raw).__name__}")
    return raw


MAX_BASES = 8  # a chain of `base:` configs this long is surely a mistake


def read_composed(path: Path, chain: tuple[Path, ...] = (), files: list | None = None) -> dict:
    """A config with its `base:` merged under it: the base (a path, relative to this file's folder
    first, or a packaged name) is read the same way, then this file's keys override it key by key
    (merge_config). The base's `name` is not inherited: a run is named after its own file. `files`
    collects (path, keys) of this file and then its bases, for key_origin."""
    raw = read_yaml(path)
    if files is not None:
        files.append((Path(path), _deep_copy(raw)))
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise UserError(f"{path}: base: got {base!r}; expected a packaged config name (iter5) or a path")
    beside = [Path(path).parent / name for name in (base, f"{base}.yaml")]
    try:
        base_path = next((p for p in beside if p.is_file()), None) or resolve_config(base)
    except UserError as exc:
        raise UserError(f"{path}: base: {exc}") from None
    seen = [p.resolve() for p in (*chain, Path(path))]
    if base_path.resolve() in seen:
        cycle = " -> ".join(str(p) for p in (*chain, path, base_path))
        raise UserError(f"{path}: base: {base} makes a cycle: {cycle}")
    if len(seen) >= MAX_BASES:
        raise UserError(f"{path}: base: {base}: more than {MAX_BASES} configs in a chain of bases")
    inherited = read_composed(base_path, (*chain, Path(path)), files)
    inherited.pop("name", None)
    return merge_config(inherited, raw)


def key_origin(key: str, files: list[tuple[Path, dict]], default: str) -> str:
    """The file a bad key came from: the first of a config and its bases that sets it."""
    for path, raw in files:
        node = raw
        for part in re.sub(r"\[\d+\]", "", key).split("."):
            node = expand_shorthand(node).get(part) if isinstance(node, (dict, str)) else None
        if node is not None:
            return str(path)
    return default


def merge_config(base: dict, override: dict) -> dict:
    """`override` on top of `base`: sections merge key by key, anything else (lists too) replaces.
    A shorthand section (`scheduler: cosine`) merges as the section it stands for."""
    merged = _deep_copy(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(value, dict) and key in SHORTHAND_SECTIONS and isinstance(below, str):
            below = expand_shorthand(below)
        merged[key] = merge_config(below, value) if isinstance(value, dict) and isinstance(below, dict) \
            else _deep_copy(value)
    return merged


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`train.optimizer.lr=0.01` sets one dotted key; the value is parsed as YAML."""
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.optimizer.lr=0.01")
        try:
            value = parse_yaml(text, f"--set {key}") if text.strip() else None
        except UserError:
            value = text  # not YAML: the plain string (validation says if a string will not do)
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or (isinstance(child, str) and part in SHORTHAND_SECTIONS):
                child = {} if child is None else expand_shorthand(child)
                node[part] = child
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise UserError(f"--set {item!r}: {where} is {child!r}, not a section with keys")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] = (), raw: dict | None = None) -> ExperimentConfig:
    """Read, override and validate. `name` defaults to the config file's stem."""
    files: list[tuple[Path, dict]] = []
    if raw is None:
        path = resolve_config(path)
        raw = read_composed(path, files=files)
    source = str(path) if path is not None else "config"
    raw = apply_overrides(raw, list(overrides))
    if raw.get("name") is None and path is not None:
        raw["name"] = Path(path).stem
    return validate_config(raw, lambda key: key_origin(key, files, source))


def validate_config(raw: dict, source: str | Callable[[str], str] = "config") -> ExperimentConfig:
    """`source` names the file in an error, or is a function of the bad dotted key that names it."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        # An unknown key first: a misspelt `modle:` also makes `model` missing, and the typo is the news.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        message = _describe(errors[0], raw)
        if callable(source):
            source = source(_dotted(errors[0]["loc"])[0])
        more = len({_dotted(e["loc"])[0] for e in errors}) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        raise UserError(f"{source}: {message}{suffix}") from None


def config_to_dict(cfg: ExperimentConfig) -> dict:
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# ---------------------------------------------------------------- error messages

def _dotted(loc: tuple) -> tuple[str, type | None]:
    """Turn pydantic's location into a dotted key, skipping union tags; return the model class at the end."""
    cls: Any = ExperimentConfig
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            continue
        candidates = _model_classes(cls)
        tagged = [c for c in candidates if item in _tag_values(c)]
        if tagged and not any(item in c.model_fields for c in candidates):
            cls = tagged[0]
            continue
        owner = next((c for c in candidates if item in c.model_fields), None)
        if owner is None and candidates and not all(c.model_config.get("extra") == "allow" for c in candidates):
            if cls is not None and not tagged and loc[-1] != item:
                continue  # a union branch label such as 'int' or "literal['auto']"
        text = str(item) if str(item).isprintable() and str(item).strip() == str(item) else repr(item)
        parts.append(text if len(text) <= 40 else text[:39] + "…")  # a key pasted by mistake can be huge
        cls = owner.model_fields[item].annotation if owner else None
    return ".".join(parts), cls


def _model_classes(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found.extend(_model_classes(arg))
    return found


def _tag_values(cls: type[BaseModel]) -> tuple:
    field = cls.model_fields.get("name")
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return ()
    return typing.get_args(field.annotation)


def _allowed_keys(annotation) -> list[str]:
    keys: list[str] = []
    for cls in _model_classes(annotation):
        keys.extend(k for k in cls.model_fields if k not in keys)
    return keys


def _literal_values(annotation) -> list:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    values = []
    for arg in typing.get_args(annotation):
        values.extend(_literal_values(arg))
    return values


def _describe(error: dict, raw: dict) -> str:
    kind, loc, value = error["type"], error["loc"], error.get("input")
    ctx = error.get("ctx") or {}
    original = ctx.get("error")
    if isinstance(original, _KeyError) and original.value is _NOT_GIVEN:
        return f"{original.key}: {original.message}"
    if isinstance(original, _KeyError):
        return f"{original.key}: got {original.value!r}; {original.message}"
    key, annotation = _dotted(loc)
    if kind == "extra_forbidden":
        parent_key, parent = _dotted(loc[:-1])
        allowed = _allowed_keys(parent)
        where = f"in {parent_key}" if parent_key else "at the top level"
        return f"{key}: unknown key {where}{did_you_mean(loc[-1], allowed)} (allowed: {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", ctx.get("expected_tags", ""))
        return (f"{key}.name: unknown {key.rsplit('.', 1)[-1]} {ctx.get('tag')!r}; allowed: "
                f"{', '.join(tags)}{did_you_mean(ctx.get('tag'), tags)}")
    if kind == "union_tag_not_found":
        return f"{key}: needs a `name` (e.g. {key}: {{name: ...}})"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        allowed = _literal_values(annotation) or re.findall(r"'([^']+)'", ctx.get("expected", ""))
        return (f"{key}: got {value!r}; allowed: {', '.join(map(str, allowed))}"
                f"{did_you_mean(value, allowed)}")
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    if message and message[0].isupper():
        message = message[0].lower() + message[1:]
    return f"{key}: got {value!r}; {message}"
