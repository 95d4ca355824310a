"""Data: the datasets (IDX files, the seeded validation split), augmentation, and batches.

datasets: reading and checking the files, normalization, the split.
augment:  batched affine augmentation on the device, its torchvision twin, test-time views.
pipeline: training and evaluation batches, device-resident or through a DataLoader.
"""

from .datasets import DATASETS, DataBundle, DatasetSpec, load_data, load_split, resolve_root, split_indices

__all__ = ["DATASETS", "DataBundle", "DatasetSpec", "load_data", "load_split", "resolve_root", "split_indices"]
