"""Gaussian noise augmentation (Cohen et al. 2019): the base classifier of randomized smoothing."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError
from advlab.methods.base import TrainingMethod


def check_sigma(sigma: Any) -> float:
    """The noise level: a finite number > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma):
        raise ConfigError(f"model.method.sigma must be a number > 0, got {sigma!r}")
    if sigma <= 0:
        raise ConfigError(
            f"model.method.sigma must be > 0 (the noise's standard deviation), got {sigma}"
        )
    return float(sigma)


def add_noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x + N(0, sigma^2 I), unclipped: the noise the smoothed classifier votes under."""
    return x + sigma * torch.randn_like(x)


class Gaussian(TrainingMethod):
    """Cross-entropy on x + N(0, sigma^2 I): a base network that classifies well under the noise
    it will be smoothed with (certify with the same sigma). No attack.

    Args:
        sigma: standard deviation of the noise, in pixel units of [0, 1] images (Cohen et al.:
            0.12 to 1.0; 0.25 certifies small radii best, larger sigmas reach larger radii).
    """

    needs_attack = False

    def __init__(self, sigma: float) -> None:
        super().__init__(attack=None)
        self.sigma = check_sigma(sigma)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(add_noise(x, self.sigma))
        return F.cross_entropy(logits, y), logits

    def __repr__(self) -> str:
        return f"Gaussian(sigma={self.sigma:g})"
