"""A small CNN for 28x28 digits, fast enough to adversarially train on a laptop CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.nets.normalize import Normalize


class SmallCNN(nn.Module):
    """Two conv blocks (each: conv-ReLU-conv-ReLU-maxpool) and a two-layer MLP head.

    The shape of the TRADES paper's MNIST network, so results compare with the papers that use
    it; widths are arguments so recipes can trade accuracy for speed.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of logits.
        image_size: input height = width; the head is sized from it.
        channels: widths of the two conv blocks.
        hidden: width of the hidden fully connected layers.
        mean, std: per-channel statistics used by the built-in `Normalize`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels: Sequence[int] = (32, 64),
        hidden: int = 200,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"SmallCNN needs two channel widths (one per block), got {channels}")
        side = ((image_size - 4) // 2 - 4) // 2  # two unpadded 3x3 convs, then a 2x2 pool, twice
        if side < 1:
            raise ValueError(f"SmallCNN needs images of at least 16x16 pixels, got {image_size}")
        c1, c2 = channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3), nn.ReLU(), nn.Conv2d(c1, c1, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.Conv2d(c2, c2, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    def features_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Activations before the last linear layer (a feature space for FID-like metrics)."""
        return self.head[:-1](self.features(self.normalize(x)))
