"""Augmentation: one geometry, two implementations.

`augment_batch` draws independent parameters per image and applies them to a
whole batch (or several at once) with one sampling grid + grid_sample, on
whatever device the batch is on. `classic_transform` is the per-image
torchvision pipeline of the reference projects, with the same semantics: optional centre crop resized back
to full size (a zoom), then rotation, translation and scale about the centre,
background filled with 0 (the unnormalized black of MNIST), bilinear sampling.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def affine_params(sizes: list[int], aug, size: int, generator: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Per-image angle (degrees), zoom, translation (pixels) and scale for consecutive batches of `sizes`.

    One draw from the generator, ordered as batch-by-batch draws would be (for each batch: angles,
    crop coin flips, x and y shifts, scales). A CPU generator draws sequentially, so there the numbers
    do not depend on how batches are grouped (tests/test_augment.py); on a GPU, grouping saves launches.
    """
    kinds = ((["angle"] if aug.rotate else []) + (["crop"] if aug.center_crop is not None else [])
             + (["tx", "ty"] if aug.translate else []) + (["scale"] if aug.scale else []))
    total = sum(sizes)
    ones = torch.ones(total, device=device)
    draws = {}
    if kinds:
        flat = torch.rand(len(kinds) * total, generator=generator, device=device)
        per_batch = flat.split([len(kinds) * n for n in sizes])
        draws = dict(zip(kinds, torch.cat([chunk.view(len(kinds), -1) for chunk in per_batch], dim=1)))

    def uniform(kind: str, lo: float, hi: float) -> torch.Tensor:
        return draws[kind] * (hi - lo) + lo

    angle = uniform("angle", *aug.rotate) if aug.rotate else ones * 0
    zoom = ones
    if aug.center_crop is not None:
        zoom = torch.where(draws["crop"] < aug.center_crop.p, ones * (size / aug.center_crop.size), ones)
    if aug.translate:
        shift = aug.translate * size
        tx, ty = uniform("tx", -shift, shift), uniform("ty", -shift, shift)
    else:
        tx = ty = ones * 0
    scale = uniform("scale", *aug.scale) if aug.scale else ones
    return {"angle": angle, "zoom": zoom, "tx": tx, "ty": ty, "scale": scale}


def affine_theta(angle, zoom, tx, ty, scale, size: int) -> torch.Tensor:
    """The N x 2 x 3 output-to-input map for affine_grid (normalized coordinates, y down).

    Forward, an image point p goes to T + R(angle) * scale * zoom * p, with positive
    angles counter-clockwise on screen as in torchvision; grid_sample needs the inverse.
    """
    rad = angle * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    k = 1.0 / (zoom * scale)
    a, b = k * cos, -k * sin
    c, d = k * sin, k * cos
    txn, tyn = tx * (2.0 / size), ty * (2.0 / size)
    return torch.stack([
        torch.stack([a, b, -(a * txn + b * tyn)], dim=1),
        torch.stack([c, d, -(c * txn + d * tyn)], dim=1),
    ], dim=1)


def base_coords(n: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1], computed as F.affine_grid computes them (align_corners=False)."""
    if n <= 1:
        return torch.zeros(1, device=like.device, dtype=like.dtype)
    return torch.linspace(-1, 1, n, device=like.device, dtype=like.dtype) * (n - 1) / n


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The x and y planes (N x H x W) of F.affine_grid(theta, (N, C, H, W), align_corners=False).

    As broadcast multiply-adds instead of affine_grid's batched 3x2 matmul, which costs several times
    as much on a CPU. The same numbers bit for bit (tests/test_augment.py checks it), so augmented
    pixels, and the trained figures in README, do not move.
    """
    xs, ys = base_coords(width, theta), base_coords(height, theta).view(-1, 1)
    t = theta.reshape(-1, 6, 1, 1)
    return t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]


def apply_affine(x: torch.Tensor, theta: torch.Tensor, zoom: torch.Tensor | None = None) -> torch.Tensor:
    gx, gy = sampling_grid(theta.to(x.dtype), x.shape[-2], x.shape[-1])
    out = F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    if zoom is not None:
        # A crop discards what lies outside it: a later rotation or shift must bring in
        # background there, not the pixels the crop cut away.
        window = (1.0 / zoom).view(-1, 1, 1) + 1e-6
        out = out * ((gx.abs() <= window) & (gy.abs() <= window)).unsqueeze(1)
    return out


def augment_batch(x: torch.Tensor, aug, generator: torch.Generator, sizes: list[int] | None = None) -> torch.Tensor:
    """x: N x C x H x W floats in [0, 1] (background 0), one batch or consecutive batches of `sizes`
    (whose random parameters are drawn as for batch after batch; see affine_params)."""
    params = affine_params(sizes or [x.shape[0]], aug, x.shape[-1], generator, x.device)
    theta = affine_theta(**params, size=x.shape[-1])
    return apply_affine(x, theta, params["zoom"] if aug.center_crop is not None else None)


# (degrees, x pixels, y pixels): the image itself, its four one-pixel shifts and two small turns
TTA_VIEWS = ((0, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (-6, 0, 0), (6, 0, 0))


def tta_views(x: torch.Tensor, background: float):
    """Test-time augmentation: the views of a normalized batch whose predictions get averaged.

    Shifting `x - background` fills the uncovered border with the background's value, as the
    training augmentation does before normalization; one-pixel shifts move pixels exactly.
    """
    ones = torch.ones(x.shape[0], device=x.device)
    for angle, dx, dy in TTA_VIEWS:
        if angle == dx == dy == 0:
            yield x
            continue
        theta = affine_theta(ones * angle, ones, ones * dx, ones * dy, ones, size=x.shape[-1])
        yield apply_affine(x - background, theta) + background


def tta_for(mean: float, std: float):
    """`tta_views` for batches normalized with this mean and std, as engine.score's `views`."""
    return functools.partial(tta_views, background=-mean / std)


def classic_transform(aug, mean: float, std: float, size: int = 28):
    """The same augmentation as per-image torchvision transforms on PIL images (the reference projects' way)."""
    from torchvision import transforms as T

    steps = []
    if aug is not None and aug.center_crop is not None:
        zoom = T.Compose([T.CenterCrop(aug.center_crop.size),
                          T.Resize(size, interpolation=T.InterpolationMode.BILINEAR)])
        steps.append(T.RandomApply([zoom], p=aug.center_crop.p))
    if aug is not None and (aug.rotate or aug.translate or aug.scale):
        # RandomAffine turns clockwise for positive angles, RandomRotation (and we) counter-clockwise
        steps.append(T.RandomAffine(
            degrees=(-aug.rotate[1], -aug.rotate[0]) if aug.rotate else 0,
            translate=(aug.translate, aug.translate) if aug.translate else None,
            scale=aug.scale,
            interpolation=T.InterpolationMode.BILINEAR,
            fill=0,
        ))
    steps += [T.ToTensor(), T.Normalize((mean,), (std,))]
    return T.Compose(steps)
