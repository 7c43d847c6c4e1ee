"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image shape.

Both halve/double the resolution twice, so any (C, H, W) with H and W multiples of 4 works:
28x28x1 MNIST starts from 7x7, 32x32x3 CIFAR-10 from 8x8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

#: the networks change the resolution by this factor (two stride-2 layers)
SCALE = 4


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) as ints; ValueError unless H and W are positive multiples of 4."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {tuple(image_shape)}")
    channels, height, width = (int(v) for v in image_shape)
    if channels < 1 or height < SCALE or width < SCALE or height % SCALE or width % SCALE:
        raise ValueError(
            f"DCGAN networks make images whose height and width are multiples of {SCALE}, "
            f"got (channels, height, width) = {(channels, height, width)}"
        )
    return channels, height, width


class DCGANGenerator(nn.Module):
    """Noise (N, latent_dim) -> images (N, C, H, W) in [-1, 1] (tanh).

    Linear projection to (2*width, H/4, W/4), then two stride-2 transposed convolutions with
    BatchNorm and ReLU, as in DCGAN.

    Args:
        latent_dim: size of the noise vector.
        image_shape: (channels, height, width) of the images to produce.
        width: channels of the last hidden layer (the first has twice as many).
    """

    def __init__(
        self, latent_dim: int = 128, image_shape: Sequence[int] = (1, 28, 28), width: int = 64
    ) -> None:
        super().__init__()
        channels, height, width_px = check_image_shape(image_shape)
        self.latent_dim = latent_dim
        self.image_shape = (channels, height, width_px)
        self.start = (2 * width, height // SCALE, width_px // SCALE)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * self.start[1] * self.start[2], bias=False),
            nn.BatchNorm1d(2 * width * self.start[1] * self.start[2]),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, *self.start))


class DCGANDiscriminator(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> one real/fake logit per image (N,).

    Two stride-2 convolutions with LeakyReLU(0.2) and a linear head. No BatchNorm: spectral
    normalization (Miyato et al. 2018) is what keeps it in check, and nothing needs syncing
    across processes.

    Args:
        image_shape: (channels, height, width) of the images to judge.
        width: channels of the first convolution (the second has twice as many).
        spectral_norm: spectrally normalize every layer's weight.
    """

    def __init__(
        self, image_shape: Sequence[int] = (1, 28, 28), width: int = 64, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        channels, height, width_px = check_image_shape(image_shape)
        self.image_shape = (channels, height, width_px)
        norm = apply_spectral_norm if spectral_norm else (lambda layer: layer)
        self.features = nn.Sequential(
            norm(nn.Conv2d(channels, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        self.head = norm(nn.Linear(2 * width * (height // SCALE) * (width_px // SCALE), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)
