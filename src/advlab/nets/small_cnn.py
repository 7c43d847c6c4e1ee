"""A small CNN for 28x28 digits, fast enough to adversarially train on a laptop CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.nets.knobs import check_dropout, check_flag
from advlab.nets.normalize import Normalize

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


POOLINGS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class SmallCNN(nn.Module):
    """Two conv blocks (each: conv-ReLU-conv-ReLU-maxpool) and a two-layer MLP head.

    The shape of the TRADES paper's MNIST network; widths are arguments so recipes can trade
    accuracy for speed.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of logits.
        image_size: input height = width; the head is sized from it.
        channels: widths of the two conv blocks.
        hidden: width of the hidden fully connected layers.
        batch_norm: BatchNorm after every convolution (faster, more stable training).
        dropout: dropout probability before each hidden fully connected layer (0 = off).
        activation: one of `ACTIVATIONS` (smooth ones give attacks, and single-step training,
            informative gradients where ReLU's are piecewise constant).
        pooling: `max` or `avg` after each conv block (average pooling passes gradient to every
            pixel of a window, max pooling only to the largest).
        mean, std: per-channel statistics used by the built-in `Normalize`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels: Sequence[int] = (32, 64),
        hidden: int = 200,
        batch_norm: bool = False,
        dropout: float = 0.0,
        activation: str = "relu",
        pooling: str = "max",
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.net.activation={activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        if pooling not in POOLINGS:
            raise ConfigError(f"model.net.pooling={pooling!r} is not one of {sorted(POOLINGS)}")
        check_dropout(dropout)
        check_flag("batch_norm", batch_norm)
        act, pool = ACTIVATIONS[activation], POOLINGS[pooling]
        c1, c2 = channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            *self._conv(in_channels, c1, batch_norm, act), *self._conv(c1, c1, batch_norm, act),
            pool(2),
            *self._conv(c1, c2, batch_norm, act), *self._conv(c2, c2, batch_norm, act),
            pool(2),
        )  # fmt: skip
        side = ((image_size - 4) // 2 - 4) // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c2 * side * side, hidden), act(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), act(),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    @staticmethod
    def _conv(
        in_channels: int, out_channels: int, batch_norm: bool, act: type[nn.Module]
    ) -> list[nn.Module]:
        conv = nn.Conv2d(in_channels, out_channels, 3, bias=not batch_norm)
        norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
        return [conv, *norm, act()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    def features_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Activations before the last linear layer (a feature space for FID-like metrics)."""
        return self.head[:-1](self.features(self.normalize(x)))
