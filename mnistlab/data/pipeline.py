"""Batches for training and evaluation.

`device` pipeline: the whole split lives on the training device as uint8; each
batch is gathered, scaled, augmented and normalized there in a few tensor ops.
`classic` pipeline: the reference projects' way, PIL images through torchvision transforms
in DataLoader workers. Evaluation always uses plain tensor batches: with no
augmentation both pipelines compute exactly x / 255 then normalize.
"""

from __future__ import annotations

import torch
from PIL import Image

from .augment import augment_batch, classic_transform


class DeviceBatches:
    """Shuffled, augmented, normalized batches from uint8 images already on the training device,
    prepared CHUNK_IMAGES at a time.

    Under torch.distributed every rank walks the same global order (same shuffle generator)
    and takes every `world`-th image of each global batch: together the ranks see exactly
    the batches one process would.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: float, std: float,
                 aug=None, generator: torch.Generator | None = None, shuffle: bool = True,
                 limit: int | None = None, aug_generator: torch.Generator | None = None,
                 rank: int = 0, world: int = 1):
        self.images = images.unsqueeze(1) if images.ndim == 3 else images
        self.labels = labels
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.aug = aug if aug is not None and aug.active else None
        self.generator, self.shuffle = generator, shuffle
        self.aug_generator = aug_generator or generator
        self.rank, self.world = rank, world
        n = len(labels)
        full = n // batch_size + (1 if n % batch_size >= world else 0)  # no rank may get an empty batch
        self.num_batches = min(full, limit) if limit else full

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        n, device = len(self.labels), self.labels.device
        order = (torch.randperm(n, generator=self.generator, device=device) if self.shuffle
                 else torch.arange(n, device=device))
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
                   for i in range(self.num_batches)]
        for group in _groups(batches, max(1, CHUNK_IMAGES // self.batch_size)):
            sizes = [len(idx) for idx in group]
            idx = torch.cat(group) if len(group) > 1 else group[0]
            yield from zip(self._prepare(idx, sizes).split(sizes), self.labels[idx].split(sizes))

    def _prepare(self, idx: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        x = self.images[idx].float()
        shift = self.mean / self.std
        if self.aug is None:
            return x.mul_(1.0 / (255.0 * self.std)).sub_(shift)
        x = augment_batch(x.mul_(1.0 / 255.0), self.aug, self.aug_generator, sizes)
        return x.mul_(1.0 / self.std).sub_(shift)


# Batches are prepared this many images at a time: one gather, one parameter draw and one grid_sample
# for several batches. On a GPU that is one set of small kernels per group instead of per batch
# (bench/launches.py counts them); on a CPU the preparation gets cheaper too (bench/throughput.py).
# On a CPU the pixels are the same, bit for bit, however batches are grouped (tests/test_augment.py).
CHUNK_IMAGES = 1024


def _groups(batches: list[torch.Tensor], most: int):
    """Runs of up to `most` consecutive batches of equal size (a short last batch goes alone)."""
    group: list[torch.Tensor] = []
    for idx in batches:
        if group and (len(group) == most or len(idx) != len(group[0])):
            yield group
            group = []
        group.append(idx)
    if group:
        yield group


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
                    generator: torch.Generator, num_workers: int, pin_memory: bool, limit: int | None,
                    rank: int = 0, world: int = 1):
    """The reference projects' DataLoader. Workers are not persistent: each epoch draws their seeds afresh from
    `generator`, so reseeding it per epoch makes the epoch reproducible (and resumable)."""
    dataset = PILDigits(images, labels, classic_transform(aug, mean, std, images.shape[-1]))
    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=world, rank=rank,
                                                                  shuffle=True, drop_last=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=max(1, batch_size // world), shuffle=sampler is None, sampler=sampler,
        generator=generator, num_workers=num_workers, pin_memory=pin_memory,
    )
    return LimitedLoader(loader, limit)


def eval_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: float, std: float,
                 limit: int | None = None, rank: int = 0, world: int = 1):
    """In order, no augmentation; under torch.distributed each rank scores every `world`-th image."""
    return DeviceBatches(images[rank::world], labels[rank::world], batch_size, mean, std, shuffle=False, limit=limit)
