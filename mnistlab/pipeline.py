"""Batches for training and evaluation.

`device` pipeline: the whole split lives on the training device as uint8; each
batch is gathered, scaled, augmented and normalized there in a few tensor ops.
`classic` pipeline: the seeds' way, PIL images through torchvision transforms
in DataLoader workers. Evaluation always uses plain tensor batches: with no
augmentation both pipelines compute exactly x / 255 then normalize.
"""

from __future__ import annotations

import torch
from PIL import Image

from .augment import augment_batch, classic_transform


class DeviceBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: float, std: float,
                 aug=None, generator: torch.Generator | None = None, shuffle: bool = True,
                 limit: int | None = None):
        self.images = images.unsqueeze(1) if images.ndim == 3 else images
        self.labels = labels
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.aug = aug if aug is not None and aug.active else None
        self.generator, self.shuffle = generator, shuffle
        full = -(-len(labels) // batch_size)
        self.num_batches = min(full, limit) if limit else full

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        n, device = len(self.labels), self.labels.device
        order = (torch.randperm(n, generator=self.generator, device=device) if self.shuffle
                 else torch.arange(n, device=device))
        scale = 1.0 / (255.0 * self.std)
        shift = self.mean / self.std
        for i in range(self.num_batches):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx].float()
            if self.aug is not None:
                x = augment_batch(x.mul_(1.0 / 255.0), self.aug, self.generator).mul_(1.0 / self.std).sub_(shift)
            else:
                x = x.mul_(scale).sub_(shift)
            yield x, self.labels[idx]


class PILDigits(torch.utils.data.Dataset):
    """What torchvision's MNIST.__getitem__ does: a uint8 image to PIL, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.numpy(), labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


class LimitedLoader:
    """A DataLoader cut to its first `limit` batches (limit_train_batches)."""

    def __init__(self, loader, limit: int | None):
        self.loader, self.limit = loader, limit

    def __len__(self) -> int:
        return min(len(self.loader), self.limit) if self.limit else len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.limit and i >= self.limit:
                break
            yield batch


def classic_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: float, std: float, aug,
                    generator: torch.Generator, num_workers: int, pin_memory: bool, limit: int | None):
    dataset = PILDigits(images, labels, classic_transform(aug, mean, std, images.shape[-1]))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=num_workers > 0,
    )
    return LimitedLoader(loader, limit)


def eval_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: float, std: float,
                 limit: int | None = None):
    return DeviceBatches(images, labels, batch_size, mean, std, shuffle=False, limit=limit)
