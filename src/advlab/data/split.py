"""The fixed-seed validation split of the training files.

The default `val_size` (5,000) is sized for the full datasets (60,000 MNIST or 50,000 CIFAR-10
training images). On a subset of the files it can take most of the training data without an
error, and a GAN or classifier then trains on a fraction of what it was meant to: that is worth
one warning that names the fix.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, random_split

from advlab.errors import ConfigError
from advlab.utils import get_logger

log = get_logger(__name__)

#: held-out shares above this are warned about (the full datasets hold out 8-10%)
WARN_SHARE = 0.25


def hold_out(dataset: Dataset, val_size: int, split_seed: int) -> tuple[Dataset, Dataset]:
    """(training, validation) subsets of `dataset`, the last `val_size` of a seeded shuffle."""
    total = len(dataset)  # type: ignore[arg-type]
    if val_size >= total:
        raise ConfigError(
            f"data.val_size={val_size} leaves no training images ({total} in the training files)"
        )
    if val_size > WARN_SHARE * total:
        log.warning(
            f"data.val_size={val_size} holds out {100 * val_size / total:.0f}% of the {total} "
            f"training images, leaving {total - val_size} to train on (a subset of the files?); "
            f"data.val_size={round(0.1 * total)} would hold out 10%"
        )
    generator = torch.Generator().manual_seed(split_seed)
    train, val = random_split(dataset, [total - val_size, val_size], generator=generator)
    return train, val
