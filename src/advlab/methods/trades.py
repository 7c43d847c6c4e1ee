"""TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and
Accuracy")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError
from advlab.methods.base import TrainingMethod


class TRADES(TrainingMethod):
    """CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximizing the same KL term.

    Args:
        attack: the inner maximization; attack/tpgd maximizes the KL term, as the paper does.
        beta: weight of the robustness term (the paper: 6 on MNIST and CIFAR-10).
        eps_warmup_epochs: see `TrainingMethod`.
    """

    def __init__(
        self, attack: Mapping[str, Any], beta: float = 6.0, eps_warmup_epochs: float = 0.0
    ) -> None:
        super().__init__(attack, eps_warmup_epochs)
        if not beta >= 0:
            raise ConfigError(f"model.method.beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = attack(x, y)
        # two passes, as the authors': BatchNorm sees clean and attacked batches apart
        logits_clean, logits_adv = net(x), net(x_adv)
        robust = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits_clean, y) + self.beta * robust, logits_adv
