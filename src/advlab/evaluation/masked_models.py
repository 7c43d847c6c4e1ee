"""Classifiers that mask their gradients on purpose, each an honest network behind one trick.

Canaries for an evaluation: `advlab.evaluate` must call each SUSPECT (or report an honest
headline), and the attack adapted to each trick (noted per class) gives its true robustness.
The tests and `scripts/masking_demo.py` use them; so can a fork checking its own attacks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Quantized(nn.Module):
    """`levels` grey levels in front of the network: zero input gradients almost everywhere.
    Adapted attack: BPDA, i.e. the same model with `straight_through=True` (quantize forward,
    identity backward)."""

    def __init__(self, net: nn.Module, levels: int = 4, straight_through: bool = False) -> None:
        super().__init__()
        self.net, self.levels, self.straight_through = net, levels, straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x * (self.levels - 1)) / (self.levels - 1)
        if self.straight_through:
            q = x + (q - x).detach()
        return self.net(q)


class ScaledLogits(nn.Module):
    """Logits times `scale`: the softmax saturates and cross-entropy gradients underflow.
    Adapted attack: any gradient attack on the unscaled network (same predictions)."""

    def __init__(self, net: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x)


class NoisyInput(nn.Module):
    """Gaussian noise of `sigma` on the input at test time: a randomized model.
    Adapted attack: EOT (gradients averaged over noise draws)."""

    def __init__(self, net: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


class Probabilities(nn.Module):
    """Softmax probabilities instead of logits. Adapted attack: on their log (`LogOf`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(x), dim=1)


class LogOf(nn.Module):
    """log of a model's outputs: logits again for a model that returns probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.net(x).clamp_min(1e-30))


class SelfTraining(nn.Module):
    """Switches its BatchNorm back to training mode in every forward pass: a moving target."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.norm.train()
        return self.net(self.norm(x))
