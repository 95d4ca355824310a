"""Fine-tuning: `model.init` (the weights a run starts from) and `train.freeze` (what does not train).

`model.init` names a checkpoint as --ckpt does (default, latest, best or a path: training/choice.py).
The checkpoint decides the architecture: `model.name` may be left out, and a name or option that
differs from the checkpoint's is refused. Inputs are normalised as the checkpoint was trained unless
`data.normalize` is given as {mean, std}. The run's config.yaml keeps `init` as given with the
resolved name, options and normalization, so --resume and compare's reuse read it as any other.

The weights are loaded into the new model before anything else sees it (the weight average of
train.ema copies them). When the data's classes differ from the checkpoint's the classifier head
(the last layer with parameters, and any parameter whose shape does not fit) starts afresh; the same
names in another order keep the head, its rows put in the data's order.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import NormalizeConfig
from ..errors import UserError, did_you_mean, one_line
from .checkpoint import load_checkpoint
from .choice import SHIPPED, find_checkpoint

PACKAGE = SHIPPED.parent.parent.parent  # mnistlab/: the shipped model's path is recorded from here


@dataclass
class Start:
    """The checkpoint a run starts from: as given, where it was found, its content hash and contents."""

    given: str
    path: Path
    sha256: str
    ckpt: dict

    @property
    def record(self) -> dict:
        """What summary.json and the run's checkpoints keep: no machine path for the shipped model."""
        inside = self.path.resolve().is_relative_to(PACKAGE)
        shown = f"{PACKAGE.name}/{self.path.resolve().relative_to(PACKAGE).as_posix()}" if inside else str(self.path)
        return {"from": self.given, "path": shown, "sha256": self.sha256}


def read_start(given: str) -> Start:
    """The checkpoint `model.init` names, loaded and checked; every problem one line."""
    if Path(given).suffix.lower() == ".onnx":
        raise UserError(f"model.init: {given} is an exported ONNX model, which holds no weights to train; "
                        f"give the .pt checkpoint it was exported from")
    path, _ = find_checkpoint(given, said_as="model.init: ")
    try:
        ckpt = load_checkpoint(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except UserError as exc:
        raise UserError(f"model.init: {exc}") from None
    except OSError as exc:
        raise UserError(f"model.init: cannot read {path}: {exc.strerror}") from None
    if list(ckpt["input_size"]) != [1, 28, 28]:
        raise UserError(f"model.init: {path} expects {list(ckpt['input_size'])} inputs; the datasets are 1x28x28")
    return Start(given, path, digest, ckpt)


def resolve_init(cfg, start: Start):
    """The config with the checkpoint's architecture and normalization filled in (see the module's notes)."""
    from ..config import ModelConfig
    from ..models import check_model, model_options

    spec = start.ckpt["model"]
    name, kwargs = spec["name"], dict(spec.get("kwargs", {}))
    try:
        check_model(name, kwargs)
    except UserError as exc:
        raise UserError(f"model.init: {start.path}: {exc}") from None
    if cfg.model.name is not None and cfg.model.name != name:
        raise UserError(f"model.name: got {cfg.model.name!r}, but model.init's checkpoint {start.path} holds a "
                        f"{name!r}; leave model.name out (the checkpoint decides) or start from a "
                        f"{cfg.model.name} checkpoint")
    defaults = model_options(name)
    for key, value in cfg.model.kwargs.items():
        held = kwargs.get(key, defaults.get(key))
        if key not in defaults or held != value:
            raise UserError(f"model.{key}: got {one_line(repr(value), 60)}, but model.init's checkpoint "
                            f"{start.path} was trained with {key}: {held!r}; with model.init the weights decide "
                            f"the architecture: leave model.{key} out")
    normalize = cfg.data.normalize
    if not isinstance(normalize, NormalizeConfig):
        normalize = NormalizeConfig(**start.ckpt["normalize"])
    return cfg.model_copy(update={"model": ModelConfig(name=name, init=cfg.model.init, **kwargs),
                                  "data": cfg.data.model_copy(update={"normalize": normalize})})


def head_names(model: torch.nn.Module) -> list[str]:
    """The classifier head's parameters: those of the last layer that has parameters of its own."""
    owners = [(name, m) for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    prefix, module = owners[-1]
    return [f"{prefix}.{p}" if prefix else p for p, _ in module.named_parameters(recurse=False)]


def load_start(model: torch.nn.Module, start: Start, classes) -> str | None:
    """The checkpoint's weights into `model`, for the data's `classes`; the line saying what became of the
    classifier head when the classes differ (None when they are the same)."""
    state, own = start.ckpt["state_dict"], model.state_dict()
    theirs, ours = [str(c) for c in start.ckpt["classes"]], [str(c) for c in classes]
    head = head_names(model)
    misfit = sorted(k for k in own if k in state and state[k].shape != own[k].shape and k not in head)
    if set(own) != set(state) or misfit:
        odd = misfit or sorted(set(own) ^ set(state))
        raise UserError(f"model.init: {start.path}: its weights do not fit model {start.ckpt['model']['name']!r} "
                        f"({len(odd)} entries such as {odd[0]!r}): a damaged checkpoint?")
    named = ", ".join(head)
    if theirs == ours:
        model.load_state_dict(state)
        return None
    if sorted(theirs) == sorted(ours) and len(set(ours)) == len(ours):
        rows = torch.tensor([theirs.index(c) for c in ours])
        model.load_state_dict({k: v[rows] if k in head else v for k, v in state.items()})
        return f"  model.init: the same classes in another order: the head's rows ({named}) follow the data's"
    model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    # one line within 120 columns: "classes 0..9 (10) -> T-shirt/top..Ankle boot (10): the classifier head ..."
    return (f"  model.init: classes {span(theirs)} ({len(theirs)}) -> {span(ours)} ({len(ours)}): the classifier "
            f"head ({named}) starts afresh")


def span(classes: list[str]) -> str:
    """A class list as its first and last names (0..9), each cut short."""
    ends = [one_line(c, 16) for c in (classes[:1] + classes[-1:] if len(classes) > 1 else classes)]
    return "..".join(ends)


def apply_freeze(model: torch.nn.Module, setting, model_name: str) -> int:
    """train.freeze: the named parameters stop training (requires_grad False, and the optimizer never sees
    them); a BatchNorm layer whose parameters are all frozen stays in eval mode, so its running statistics
    do not drift on a small set. Returns how many parameter values still train."""
    names = [n for n, _ in model.named_parameters()]
    if setting == "body":
        head = set(head_names(model))
        frozen = {n for n in names if n not in head}
    else:
        frozen = set()
        for prefix in setting or []:
            hits = {n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")}
            if not hits:
                layers = sorted({n.rsplit(".", 1)[0] for n in names} | set(names) | {"body"})
                raise UserError(f"train.freeze: {prefix!r} names no parameter of model {model_name!r}"
                                f"{did_you_mean(prefix, layers)} (its parameters: {one_line(', '.join(names), 160)})")
            frozen |= hits
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and own and not any(p.requires_grad for p in own):
            hold_in_eval(module)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise UserError(f"train.freeze: {setting!r} freezes every parameter of model {model_name!r}; nothing "
                        f"would train")
    return trainable


def hold_in_eval(module: torch.nn.Module) -> None:
    """`model.train()` leaves this module in eval mode (nn.Module.train calls each child's train, so the
    instance's own method decides): a frozen BatchNorm normalises with its stored statistics."""
    module.train = types.MethodType(lambda self, mode=True: torch.nn.Module.train(self, False), module)
    module.eval()


def resolved_config(cfg):
    """A config that leaves model.name to model.init, with the checkpoint's architecture and normalization
    filled in (what a run's config.yaml holds); any other config as it is. The commands that plan or
    check runs before training them (train, compare, sweep, the Python API) ask this."""
    if cfg.model.name is not None or cfg.model.init is None:
        return cfg
    return resolve_init(cfg, read_start(cfg.model.init))
