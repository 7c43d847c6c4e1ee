"""The MNIST network of Wong et al. 2020 ("Fast is better than free"): two strided convolutions,
no pooling.

Single-step training (FGSM-RS) tends to teach max-pooling networks to mask gradients rather than
resist attacks; this pooling-free network is the one the paper trains that way, and the one
`experiment=mnist_fgsm_rs` uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.nets.normalize import Normalize


class StridedCNN(nn.Module):
    """conv4x4/2-ReLU-conv4x4/2-ReLU then a two-layer MLP head.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of logits.
        image_size: input height = width (divisible by 4); the head is sized from it.
        channels: widths of the two strided convolutions (Wong et al.: 16, 32).
        hidden: width of the hidden fully connected layer (Wong et al.: 100).
        mean, std: per-channel statistics used by the built-in `Normalize`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels: Sequence[int] = (16, 32),
        hidden: int = 100,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"StridedCNN needs two channel widths (one per conv), got {channels}")
        if image_size < 4 or image_size % 4:
            raise ValueError(
                f"StridedCNN needs a positive image size divisible by 4, got {image_size}"
            )
        c1, c2 = channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    def features_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Activations before the last linear layer (a feature space for FID-like metrics)."""
        return self.head[:-1](self.features(self.normalize(x)))
