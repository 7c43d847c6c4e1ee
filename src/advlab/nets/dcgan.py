"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image shape.

Both halve/double the resolution twice, so any (C, H, W) with H and W multiples of 4 works:
28x28x1 MNIST starts from 7x7, 32x32x3 CIFAR-10 from 8x8. Given `num_classes`, both become
class-conditional as in Miyato & Koyama 2018: the generator's BatchNorm layers take a scale and
shift per class, and the discriminator adds a projection of its features onto the class
embedding. Without it they are exactly the unconditional networks (same weights, same keys).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

#: the networks change the resolution by this factor (two stride-2 layers)
SCALE = 4


class ClassBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (conditional BatchNorm).

    Args:
        features: channels (or features) of the input.
        num_classes: number of classes; each has its own scale (initially 1) and shift (0).
        dims: 1 for (N, F) inputs, 2 for (N, C, H, W).
    """

    def __init__(self, features: int, num_classes: int, dims: int) -> None:
        super().__init__()
        self.norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features, affine=False)
        self.scale = nn.Embedding(num_classes, features)
        self.shift = nn.Embedding(num_classes, features)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shape = (len(x), x.shape[1]) + (1,) * (x.dim() - 2)
        return self.norm(x) * self.scale(labels).view(shape) + self.shift(labels).view(shape)


class LabelSequential(nn.Sequential):
    """`nn.Sequential` that hands the labels to its class-conditional layers."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, labels) if isinstance(layer, ClassBatchNorm) else layer(x)
        return x


def check_labels(labels: torch.Tensor | None, num_classes: int | None, who: str) -> None:
    """A conditional network needs labels and an unconditional one must not get any: silently
    ignoring either would train or sample something other than what was asked for."""
    if num_classes is None and labels is not None:
        raise ValueError(f"{who} is unconditional (num_classes=None) but got labels")
    if num_classes is not None and labels is None:
        raise ValueError(f"{who} is class-conditional ({num_classes} classes): pass labels")


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
    """Noise (N, latent_dim) [+ labels (N,)] -> images (N, C, H, W) in [-1, 1] (tanh).

    Linear projection to (2*width, H/4, W/4), then two stride-2 transposed convolutions with
    BatchNorm and ReLU, as in DCGAN; with `num_classes`, the BatchNorm layers are
    class-conditional (`ClassBatchNorm`) and `forward` needs the labels.

    Args:
        latent_dim: size of the noise vector.
        image_shape: (channels, height, width) of the images to produce.
        width: channels of the last hidden layer (the first has twice as many).
        num_classes: classes to condition on (None: unconditional).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        image_shape: Sequence[int] = (1, 28, 28),
        width: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, width_px = check_image_shape(image_shape)
        self.latent_dim = latent_dim
        self.image_shape = (channels, height, width_px)
        self.num_classes = num_classes
        self.start = (2 * width, height // SCALE, width_px // SCALE)
        projected = 2 * width * self.start[1] * self.start[2]

        def norm(features: int, dims: int) -> nn.Module:
            if num_classes is not None:
                return ClassBatchNorm(features, num_classes, dims)
            return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features)

        self.project = LabelSequential(
            nn.Linear(latent_dim, projected, bias=False), norm(projected, 1), nn.ReLU(inplace=True)
        )
        self.upsample = LabelSequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            norm(width, 2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, type(self).__name__)
        return self.upsample(self.project(z, labels).view(-1, *self.start), labels)


class DCGANDiscriminator(nn.Module):
    """Images (N, C, H, W) in [-1, 1] [+ labels (N,)] -> one real/fake logit per image (N,).

    Two stride-2 convolutions with LeakyReLU(0.2) and a linear head. No BatchNorm: spectral
    normalization (Miyato et al. 2018) is what keeps it in check, and nothing needs syncing
    across processes. With `num_classes` it is a projection discriminator (Miyato & Koyama
    2018): logit = head(f(x)) + <embed(y), f(x)>, so it judges whether x looks like class y.

    Args:
        image_shape: (channels, height, width) of the images to judge.
        width: channels of the first convolution (the second has twice as many).
        spectral_norm: spectrally normalize every layer's weight (the class embedding too).
        num_classes: classes to condition on (None: unconditional).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        width: int = 64,
        spectral_norm: bool = True,
        num_classes: int | None = None,
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
        features = 2 * width * (height // SCALE) * (width_px // SCALE)
        self.head = norm(nn.Linear(features, 1))
        self.num_classes = num_classes
        self.embed = None if num_classes is None else norm(nn.Embedding(num_classes, features))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, type(self).__name__)
        features = self.features(x)
        logits = self.head(features).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * features).sum(1)
        return logits
