"""Batch-level image augmentation on uint8/float tensors (runs on whatever device holds the batch).

Doing crop and flip on the whole batch avoids the per-image PIL round-trip of torchvision
transforms, which dominates the cost of a small network's training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad each image by `padding` pixels and crop back to its size at a random offset.

    Same distribution as `torchvision.transforms.RandomCrop(size, padding)`, per image.
    """
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=images.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def random_horizontal_flip(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (the input contract of every advlab model)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
