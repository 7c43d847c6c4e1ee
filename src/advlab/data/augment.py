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


def random_rotate_scale(
    images: torch.Tensor,
    degrees: float,
    scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] and zoom it by a uniform
    factor in [1 - scale, 1 + scale] about its centre (bilinear, zeros outside).

    Per image, as `torchvision.transforms.RandomAffine(degrees, scale=(1 - s, 1 + s))` would do
    one image at a time; here one `grid_sample` call handles the batch.
    """
    if degrees <= 0 and scale <= 0:
        return images
    n = images.shape[0]
    draws = torch.rand(2, n, device=images.device, generator=generator) * 2 - 1
    angle = torch.deg2rad(draws[0] * degrees)
    zoom = 1 + draws[1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
