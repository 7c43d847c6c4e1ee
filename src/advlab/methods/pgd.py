"""PGD adversarial training (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.methods.base import TrainingMethod


class PGDAT(TrainingMethod):
    """Cross-entropy on the examples the attack (PGD-k) finds: min_w E max_delta CE(x + delta).

    Args:
        attack: the inner maximization, typically attack/pgd.
        eps_warmup_epochs: see `TrainingMethod`.
    """

    def __init__(self, attack: Mapping[str, Any], eps_warmup_epochs: float = 0.0) -> None:
        super().__init__(attack, eps_warmup_epochs)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(attack(x, y))
        return F.cross_entropy(logits, y), logits
