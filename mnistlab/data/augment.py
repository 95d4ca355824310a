"""Augmentation: one geometry, two implementations.

`augment_batch` draws independent parameters per image and applies them to a
whole batch (or several at once) with one sampling grid + grid_sample, on
whatever device the batch is on. `classic_transform` is the per-image
torchvision pipeline of the reference projects, with the same semantics: optional centre crop resized back
to full size (a zoom), then rotation, translation and scale about the centre, then an elastic
distortion (torchvision's ElasticTransform), background filled with 0 (the unnormalized black of
MNIST), bilinear sampling. The device path folds the elastic displacement into the affine grid, so
it samples the image once where the classic pipeline samples it twice: the same distortions, a
little less blur (tests/test_augment.py compares the two in distribution).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def augment_params(sizes: list[int], aug, height: int, width: int, generator: torch.Generator,
                   device) -> dict[str, torch.Tensor]:
    """Per-image angle (degrees), zoom, translation (pixels), scale and, with elastic, the noise of the
    displacement field (N x 2 x H x W in [0, 1)) and whether to apply it, for consecutive batches of `sizes`.

    One draw from the generator, ordered as batch-by-batch draws would be (for each batch: angles,
    crop coin flips, x and y shifts, scales, then elastic coin flips and noise). A CPU generator draws
    sequentially, so there the numbers do not depend on how batches are grouped (tests/test_augment.py);
    on a GPU, grouping saves launches. Without elastic the draws are those of earlier versions.
    """
    kinds = ((["angle"] if aug.rotate else []) + (["crop"] if aug.center_crop is not None else [])
             + (["tx", "ty"] if aug.translate else []) + (["scale"] if aug.scale else []))
    field = 2 * height * width if aug.elastic is not None else 0  # per image: a coin, then the x and y noise
    per_image = len(kinds) + (1 + field if field else 0)
    draws, extra = {}, []
    if per_image:
        flat = torch.rand(per_image * sum(sizes), generator=generator, device=device)
        chunks = [(chunk[:len(kinds) * n], chunk[len(kinds) * n:])
                  for chunk, n in zip(flat.split([per_image * n for n in sizes]), sizes)]
        if kinds:
            draws = dict(zip(kinds, torch.cat([a.view(len(kinds), -1) for a, _ in chunks], dim=1)))
        extra = [b for _, b in chunks]
    params = affine_values(draws, aug, width, torch.ones(sum(sizes), device=device))
    if field:
        params["elastic_on"] = torch.cat([b[:n] for b, n in zip(extra, sizes)]) < aug.elastic.p
        params["elastic_noise"] = torch.cat([b[n:].view(n, 2, height, width) for b, n in zip(extra, sizes)])
    return params


def affine_values(draws: dict[str, torch.Tensor], aug, size: int, ones: torch.Tensor) -> dict[str, torch.Tensor]:
    """The affine parameters from their uniform draws in [0, 1)."""
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


def gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    """torchvision's gaussian_blur kernel for ElasticTransform: odd size int(8 sigma + 1), normalized."""
    size = int(8 * sigma + 1) | 1
    x = torch.linspace(-(size // 2), size // 2, size, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur_matrix(n: int, sigma: float, device, dtype) -> torch.Tensor:
    """n x n: row i holds the Gaussian weights output pixel i takes from each input pixel, the kernel
    reflected at the border as F.pad(mode="reflect") reflects it (the edge pixel not repeated).
    One reflection covers the kernel while its half-width stays under n (config.ElasticConfig)."""
    k = gaussian_kernel(sigma, device, dtype)
    half = len(k) // 2
    source = (torch.arange(n, device=device)[:, None] + torch.arange(-half, half + 1, device=device)).abs()
    source = torch.where(source > n - 1, 2 * (n - 1) - source, source)
    return torch.zeros(n, n, device=device, dtype=dtype).scatter_add_(1, source, k.expand(n, -1).contiguous())


def elastic_displacement(noise: torch.Tensor, on: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """N x 2 x H x W displacements in normalized coordinates from uniform noise in [0, 1), as
    torchvision's ElasticTransform makes them: noise in [-1, 1] blurred by a Gaussian of `sigma`
    pixels (reflected at the border), times alpha / width for x and alpha / height for y; zero where
    `on` is False. The blur is separable, so it is two matrix products (rows, then columns), which
    a CPU does many times faster than a one-channel convolution with a long kernel (bench/frontier_cost.py)."""
    n, _, h, w = noise.shape
    rows, cols = (blur_matrix(side, sigma, noise.device, noise.dtype) for side in (h, w))
    # each product is one large GEMM over all 2N fields: (2N*H) x W times W x W, then the same with
    # the fields transposed; a batched (N, 2, H, W) @ (H, H) would be 2N tiny ones
    d = ((noise * 2 - 1).reshape(-1, w) @ cols.T).view(n * 2, h, w).transpose(1, 2).reshape(-1, h)
    d = (d @ rows.T).view(n, 2, w, h).transpose(2, 3)
    scale = torch.tensor([alpha / w, alpha / h], device=d.device, dtype=d.dtype).view(1, 2, 1, 1)
    return d * scale * on.view(n, 1, 1, 1)


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
    as much on a CPU. The same numbers up to float rounding (tests/test_augment.py checks within 1e-6):
    on torch 2.13 they were equal bit for bit, on 2.14 affine_grid rounds some coordinates differently.
    """
    xs, ys = base_coords(width, theta), base_coords(height, theta).view(-1, 1)
    t = theta.reshape(-1, 6, 1, 1)
    return t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]


def apply_affine(x: torch.Tensor, theta: torch.Tensor, zoom: torch.Tensor | None = None,
                 displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Sample x through the affine map theta, then (optionally) an N x 2 x H x W elastic displacement.

    The affine map sends an output point p to A p; the elastic distortion applied after it looks up
    p + d(p) instead, and A(p + d) = A p + L d with L the linear part of theta: one grid, one sampling.
    """
    theta = theta.to(x.dtype)
    gx, gy = sampling_grid(theta, x.shape[-2], x.shape[-1])
    if displacement is not None:
        dx, dy = displacement[:, 0], displacement[:, 1]
        t = theta.reshape(-1, 6, 1, 1)
        gx, gy = gx + t[:, 0] * dx + t[:, 1] * dy, gy + t[:, 3] * dx + t[:, 4] * dy
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
    (whose random parameters are drawn as for batch after batch; see augment_params)."""
    params = augment_params(sizes or [x.shape[0]], aug, x.shape[-2], x.shape[-1], generator, x.device)
    displacement = None
    if aug.elastic is not None:
        displacement = elastic_displacement(params.pop("elastic_noise").to(x.dtype), params.pop("elastic_on"),
                                            aug.elastic.alpha, aug.elastic.sigma)
    theta = affine_theta(**params, size=x.shape[-1])
    return apply_affine(x, theta, params["zoom"] if aug.center_crop is not None else None, displacement)


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
    if aug is not None and aug.elastic is not None:
        elastic = T.ElasticTransform(alpha=aug.elastic.alpha, sigma=aug.elastic.sigma,
                                     interpolation=T.InterpolationMode.BILINEAR, fill=0)
        steps.append(T.RandomApply([elastic], p=aug.elastic.p))
    steps += [T.ToTensor(), T.Normalize((mean,), (std,))]
    return T.Compose(steps)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup, cutmix, num_classes: int, rng):
    """timm's Mixup on a batch already on the device and augmented: each image is mixed with the image at
    the mirrored place in the batch (x.flip(0)), the targets the same way. With probability cutmix.p a
    box of the other image is pasted (lam = the share of the image kept), else with probability mixup.p
    the images are blended (lam*x + (1-lam)*flipped); lam ~ Beta(alpha, alpha). `rng` (numpy) draws on
    the host: no device sync. An unmixed batch is returned as it came, hard labels and all."""
    u = rng.random()
    if cutmix is not None and u < cutmix.p:
        lam = rng.beta(cutmix.alpha, cutmix.alpha)
        y1, y2, x1, x2 = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
        x = x.clone()
        x[..., y1:y2, x1:x2] = x.flip(0)[..., y1:y2, x1:x2]
        lam = 1 - (y2 - y1) * (x2 - x1) / (x.shape[-2] * x.shape[-1])  # the area actually pasted
    elif mixup is not None and u < (cutmix.p if cutmix is not None else 0) + mixup.p:
        lam = float(rng.beta(mixup.alpha, mixup.alpha))
        x = x * lam + x.flip(0) * (1 - lam)
    else:
        return x, y
    one_hot = F.one_hot(y, num_classes).to(x.dtype)
    return x, one_hot * lam + one_hot.flip(0) * (1 - lam)


def cutmix_box(h: int, w: int, lam: float, rng) -> tuple[int, int, int, int]:
    """timm's rand_bbox: a box of about (1 - lam) of the area, centred anywhere, clipped to the image."""
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    return (max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w))
