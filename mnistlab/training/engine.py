"""The training and evaluation loops, shared by every model.

Per-step losses and hits stay on the device and are read once per epoch: a
`.item()` per step would make the host wait for the GPU at every batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError


@dataclass
class EpochStats:
    loss: float
    acc: float
    n: int
    nonfinite_step: int  # first step whose loss was NaN/inf, -1 if none


@dataclass
class Scores:
    loss: float
    acc: float
    n: int
    predictions: torch.Tensor  # class index per image, on the CPU
    labels: torch.Tensor


class NonFiniteLoss(UserError):
    """Training diverged; the run stops, keeping what it saved so far."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "a CUDA build" if torch.version.cuda else "a CPU-only build"
            raise UserError(f"device: got {name!r}, but no CUDA GPU is usable here (torch {torch.__version__}, "
                            f"{built}); use device: auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device: got {name!r}, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError("device: got 'mps', but Apple's MPS backend is not available here")
    return torch.device(name)


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed tensor buffers for reuse instead of handing them back to the kernel.

    By default every buffer over 128 KiB (a batch's activations) is a fresh mmap that page-faults in
    on first touch, step after step (bench/allocator.py counts the faults). Buffers up to 32 MiB now
    come from the heap, and up to 1 GiB of freed heap is kept. What jemalloc/tcmalloc would do, without preloading them. Set for every device (on a GPU
    only host-side buffers are concerned); False where libc is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the GPU supports it, else fp16. On the CPU only an explicit bf16 autocasts (it pays
    on CPUs with bf16 kernels, e.g. AVX512-BF16 or AMX, and costs elsewhere); fp16 there means fp32."""
    if setting == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if setting == "bf16" else None
    if device.type != "cuda":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


REFRESH_S = 0.5  # the progress bar's running loss and accuracy, about twice a second
# Into a log file (stderr not a terminal) there is no bar: a plain line this often instead, so a long
# epoch (38 minutes once, on a loaded machine) shows it is alive
LOG_EVERY_S = 60.0


def progress(batches, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, total=len(batches), leave=False, dynamic_ncols=True, unit="batch",
                disable=not (enabled and sys.stderr.isatty()))


def train_one_epoch(model, batches, optimizer, device, *, label_smoothing=0.0, dtype=None, scaler=None,
                    batch_scheduler=None, clip_grad_norm=None, mix=None, desc="train", show_progress=True,
                    on_step=None) -> EpochStats:
    """One pass over `batches`: mean training loss, training accuracy, first non-finite step.

    `on_step(step, loss)` is called after each step with the step's loss still on the device; reading it
    waits for the device, so a callback reads it only now and then (tb_logger: every 50 steps).
    `clip_grad_norm` caps the total L2 norm of the stepped parameters' gradients (None: no clipping).
    `mix(x, y) -> (x, targets)` mixes a batch (mixup/cutmix); soft targets go into the loss, and a
    prediction is a hit when it is the mixed target's dominant label."""
    model.train()
    # Each step's loss and hit count go into a slot on the device (one small op each); the sums and
    # the first non-finite step are worked out once, after the epoch.
    losses = torch.zeros(len(batches), device=device)
    hits = torch.zeros(len(batches), dtype=torch.int64, device=device)
    sizes = []
    bar = progress(batches, desc, show_progress)
    next_refresh, next_line = 0.0, time.monotonic() + LOG_EVERY_S
    log_lines = show_progress and not sys.stderr.isatty()
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        target = y
        if mix is not None:
            x, target = mix(x, y)
        with autocast(device, dtype):
            logits = model(x)
            loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        optimizer_step(loss, optimizer, scaler, clip_grad_norm)
        if batch_scheduler is not None:
            batch_scheduler.step()
        losses[step] = loss.detach()
        hits[step] = (logits.detach().argmax(1) == (target.argmax(1) if target.ndim == 2 else target)).sum()
        sizes.append(len(y))
        if on_step is not None:
            on_step(step, losses[step])
        if not bar.disable and time.monotonic() >= next_refresh:  # reading the figures waits for the device
            next_refresh = time.monotonic() + REFRESH_S
            loss_now, acc_now = running(losses, hits, sizes)
            bar.set_postfix(loss=f"{loss_now:.4f}", acc=f"{acc_now:.2%}",
                            lr=f"{optimizer.param_groups[0]['lr']:.1e}", refresh=False)
        if log_lines and time.monotonic() >= next_line:
            next_line = time.monotonic() + LOG_EVERY_S
            loss_now, acc_now = running(losses, hits, sizes)
            print(f"  {desc}: {step + 1:,}/{len(batches):,} batches, loss {loss_now:.4f}, acc {acc_now:.2%}",
                  file=sys.stderr, flush=True)
    bar.close()
    n, seen = len(sizes), sum(sizes)
    weights = torch.tensor(sizes, dtype=torch.float64, device=device)  # a short last batch weighs less
    loss_sum = (losses[:n].double() @ weights).item() if n else 0.0
    nonfinite = (~torch.isfinite(losses[:n])).nonzero()
    return EpochStats(loss_sum / max(seen, 1), hits[:n].sum().item() / max(seen, 1), seen,
                      int(nonfinite[0, 0]) if len(nonfinite) else -1)


def optimizer_step(loss: torch.Tensor, optimizer, scaler=None, clip_grad_norm: float | None = None) -> None:
    """Backward and one optimizer step, through the gradient scaler with fp16 autocast; with
    `clip_grad_norm` the gradients' total norm is capped first (unscaled first under fp16)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients; step() then does not unscale again
            clip_gradients(optimizer, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm is not None:
            clip_gradients(optimizer, clip_grad_norm)
        optimizer.step()


def clip_gradients(optimizer, max_norm: float) -> None:
    """Scale the gradients of the parameters `optimizer` steps so their total L2 norm is at most
    `max_norm` (frozen parameters have no gradient and are left out)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)


def running(losses: torch.Tensor, hits: torch.Tensor, sizes: list[int]) -> tuple[float, float]:
    """The epoch's mean loss and accuracy so far (over the len(sizes) steps done; reads the device)."""
    n = len(sizes)
    return losses[:n].mean().item(), hits[:n].sum().item() / max(sum(sizes), 1)


@torch.inference_mode()
def score(model, batches, device, dtype=None, views=None) -> Scores:
    """Mean cross-entropy (no label smoothing) and accuracy over every image in `batches`.

    With `views` (a batch -> iterable of batches, e.g. data.augment.tta_views) the prediction for an
    image is the mean of its views' softmax outputs, and the loss is that mean's cross-entropy.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    predictions, labels = [], []
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast(device, dtype):
            if views is None:
                logits = model(x).float()
            else:
                probs = [model(v).float().softmax(1) for v in views(x)]
                logits = (sum(probs) / len(probs)).clamp_min(1e-12).log()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        predictions.append(logits.argmax(1))
        labels.append(y)
    pred = torch.cat(predictions).cpu() if predictions else torch.zeros(0, dtype=torch.long)
    true = torch.cat(labels).cpu() if labels else torch.zeros(0, dtype=torch.long)
    n = len(true)
    return Scores(loss=loss_sum.item() / max(n, 1), acc=(pred == true).sum().item() / max(n, 1), n=n,
                      predictions=pred, labels=true)


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def monitor_mode(monitor: str) -> str:
    """Losses improve downwards, accuracies upwards."""
    return "min" if monitor.endswith("loss") else "max"


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without an improvement of more than `min_delta`."""

    monitor: str
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    bad_epochs: int = 0

    def step(self, value: float) -> bool:
        if is_improvement(value, self.best, monitor_mode(self.monitor), self.min_delta):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
