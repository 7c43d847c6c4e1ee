"""The MNIST network of Wong et al.'s "Fast is better than free": two strided convolutions, no
pooling. FGSM-RS trains it without the gradient masking that max-pooling CNNs pick up at
eps 0.3 (their released FGSM model keeps ~88% under APGD-CE on MNIST test digits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.nets.knobs import check_dropout
from advlab.nets.normalize import Normalize


class StridedCNN(nn.Module):
    """[conv3x3-ReLU] conv4x4/2-ReLU-conv4x4/2-ReLU then a two-layer MLP head.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of logits.
        image_size: input height = width (divisible by 4); the head is sized from it.
        channels: widths of the two strided convolutions (Wong et al.: 16, 32).
        stem: width of a 3x3 stride-1 convolution before them (0 = none, Wong et al.'s
            network): features at full resolution, for 1.6x the cost. Under FGSM-RS at eps 0.3
            it made one seed robust all through training and not another (README "Fast AT").
        hidden: width of the hidden fully connected layer (Wong et al.: 100).
        dropout: dropout probability before each fully connected layer (0 = off). The head holds
            most of the weights and overfits a few thousand digits (clean training: 98.0% ->
            99.1% test accuracy with 0.5); attacks run in eval mode and see no dropout.
        mean, std: per-channel statistics used by the built-in `Normalize`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels: Sequence[int] = (16, 32),
        stem: int = 0,
        hidden: int = 100,
        dropout: float = 0.0,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"StridedCNN needs an image size divisible by 4, got {image_size}")
        check_dropout(dropout)
        if stem < 0:
            raise ConfigError(f"model.net.stem must be >= 0, got {stem}")
        c1, c2 = channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std)
        stem_layers: list[nn.Module] = []
        if stem:
            stem_layers = [nn.Conv2d(in_channels, stem, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(
            *stem_layers,
            nn.Conv2d(stem or in_channels, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        side = image_size // 4
        self.head = nn.Sequential(
            # dropout rides in the parameter-free slots, so checkpoints keep the keys they had
            # before the knob existed (head.1.*, head.3.*)
            nn.Sequential(nn.Flatten(), nn.Dropout(dropout)),
            nn.Linear(c2 * side * side, hidden),
            nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    def features_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Activations before the last linear layer (a feature space for FID-like metrics)."""
        return self.head[:-1](self.features(self.normalize(x)))
